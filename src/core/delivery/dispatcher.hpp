// The delivery engine's state, without I/O: which subscription gets which event, which
// requests to send next, what each outcome means (done, retry later, dead, disable), what
// must be written down, and up to which WAL position the logical queue may be confirmed.
// Pure C++: the worker feeds it events and HTTP results and does the I/O.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/delivery/feed_event.hpp"
#include "core/delivery/http_exchange.hpp"
#include "core/delivery/message_key.hpp"
#include "core/delivery/outcome_log.hpp"
#include "core/delivery/rate_limit.hpp"

namespace amebo::delivery {

// A subscription's state, as amebo.subscriptions holds it.
enum class SubscriptionState {
    kActive,   // delivered to
    kPaused,   // its messages are stored until it is resumed
    kDisabled, // gets nothing
};

// The state named text ("active", "paused", "disabled"); any other counts as paused.
SubscriptionState ParseSubscriptionState(std::string_view text);

// A subscription as the worker loaded it.
struct Subscription {
    int64_t id = 0;
    std::string pattern; // action name or pattern
    std::string handler;
    std::string secret;                // whsec_…
    std::string previous_secret;       // a rotated-out secret that still signs, or ""
    int64_t previous_secret_until = 0; // unix seconds: previous_secret signs before this
    int max_retries = 5;
    std::optional<nlohmann::json> filter;
    bool ordered = false;
    int batch_size = 1;
    int64_t start_position = 0;
    SubscriptionState state = SubscriptionState::kActive;
    double rate_limit = 0; // requests per second at most (see RateLimit); 0: no limit
};

// Limits and timings, from the amebo.* settings.
struct DispatchSettings {
    size_t max_requests = 64;                  // in flight overall
    size_t max_requests_per_subscription = 16; // in flight per unordered subscription
    int64_t hold_ms = 1000; // a new message not done by then is stored, freeing the slot
    // A batched subscription with a request in flight sends a batch that is not full only
    // after its first event has waited this long, so that batches fill under load.
    int64_t batch_linger_ms = 20;
    int64_t retry_base_ms = 1000; // first retry delay
    int64_t retry_max_ms = 3600 * 1000;
    int64_t request_timeout_ms = 10000;
    int shard = -1; // this database's shard of amebo_router (amebo.shard_identity), -1: none
};

// A message stored in amebo.deliveries that is due, with its events.
struct StoredMessage {
    MessageKey key;
    int attempts = 0;
    std::vector<FeedEvent> events;
};

// Per subscription figures for the status view.
struct SubscriptionFigures {
    int64_t subscription_id = 0;
    int in_flight = 0;
    int queued = 0;
};

// Times are microseconds since 2000-01-01 UTC (PostgreSQL's epoch).
class Dispatcher {
  public:
    explicit Dispatcher(DispatchSettings settings);
    ~Dispatcher();
    Dispatcher(const Dispatcher &) = delete;
    Dispatcher &operator=(const Dispatcher &) = delete;

    // Replaces the subscription list; messages of removed subscriptions are forgotten.
    void SetSubscriptions(std::vector<Subscription> subscriptions);

    // Ordered subscriptions with stored pending messages (their new events queue behind).
    void SetBlocked(const std::vector<int64_t> &subscription_ids);

    // Changes limits and timings.
    void Configure(DispatchSettings settings) {
        settings_ = settings;
        hold_scan_due_ = true;
    }

    // A committed event from the logical queue, in commit order.
    void AddEvent(FeedEvent event, int64_t now);

    // The end of the transaction whose events were just added, at WAL position lsn.
    void EndTransaction(uint64_t lsn);

    // The logical queue has been read up to lsn (everything before it was passed on).
    void ReadUpTo(uint64_t lsn);

    // A stored message that is due; ignored when it is in flight already.
    void AddStored(StoredMessage message);

    // Requests to start now, within the limits.
    std::vector<HttpRequest> TakeRequests(int64_t now, int64_t unix_seconds);

    // Records how a request ended.
    void Finish(const HttpResponse &response, int64_t now);

    // Stores new messages not done within the hold time, so that the queue can move on.
    void StoreHeld(int64_t now);

    // True when outcomes wait to be written down.
    bool HasRecords() const { return log_.HasRecords() || !settling_.empty(); }

    // The outcomes as a JSON object for amebo_internal.record_deliveries() (see
    // OutcomeLog::Take()); moves them to "being recorded".
    std::string TakeRecords();

    // The last TakeRecords() batch is durable: its messages count as handled.
    void RecordsCommitted();

    // The highest WAL position the logical queue may be confirmed to; 0 for none yet.
    uint64_t ConfirmableLsn() const;

    // The keys (MessageKey::Text()) of stored messages in flight, in memory, or changed by
    // records not yet committed.
    std::vector<std::string> StoredKeysInMemory() const;

    // Events and messages held in memory (the worker reads more only below a limit).
    size_t Backlog() const { return backlog_; }

    // Requests in flight.
    size_t InFlight() const { return in_flight_.size(); }

    // Subscriptions loaded (each may want every event).
    size_t SubscriptionCount() const { return queues_.size(); }

    // Stored messages loaded and waiting to be sent.
    size_t StoredQueued() const;

    // The earliest next attempt among pending messages stored since the last call, or
    // INT64_MAX.
    int64_t TakeEarliestRetry() { return log_.TakeEarliestRetry(); }

    // True when every transaction added so far is handled.
    bool Settled() const { return transactions_.empty() && open_ == nullptr; }

    // Microseconds until the earliest hold or batch linger deadline, or -1 when none.
    int64_t NextDeadline(int64_t now) const;

    // Figures per subscription.
    std::vector<SubscriptionFigures> Figures() const;

  private:
    struct Transaction; // a committed transaction of the queue, until handled
    struct Unit;        // one event for one subscription
    struct Message;     // one request's worth of units
    struct Queue;       // a subscription's state

    void StoreUnits(Queue &queue, int64_t next_attempt_at);
    void StoreUnit(Queue &queue, const Unit &unit, int64_t next_attempt_at);
    nlohmann::json &Record(const Message &message, int attempt);
    void Settle(Message &message);
    void Settle(Transaction *transaction);
    void Advance();
    void Send(Queue &queue, std::unique_ptr<Message> message, int64_t now, int64_t unix_seconds,
              std::vector<HttpRequest> *requests);
    size_t Limit(const Subscription &subscription) const;
    void ShareRequests();
    bool Lingers(const Queue &queue, int64_t now) const;
    bool Matches(const Subscription &subscription, const FeedEvent &event,
                 std::optional<nlohmann::json> &payload) const;
    int64_t RetryAt(int attempt, const HttpResponse &response, int64_t now);
    void Succeed(Message &message, const HttpResponse &response, int64_t now);
    void Fail(Queue &queue, Message &message, const HttpResponse &response, int64_t now);
    void Disable(Queue &queue);
    void StoreBeyondRate(Queue &queue, int64_t now);
    void HoldNoEarlierThan(int64_t now);
    int64_t EarliestHold() const;

    DispatchSettings settings_;
    std::map<int64_t, std::unique_ptr<Queue>> queues_;
    std::deque<std::unique_ptr<Transaction>> transactions_;
    Transaction *open_ = nullptr;
    std::unordered_map<uint64_t, std::unique_ptr<Message>> in_flight_;
    OutcomeLog log_;
    std::vector<Transaction *> settling_;  // units handled once the next records commit
    std::vector<Transaction *> recording_; // units handled once the records taken commit
    uint64_t confirmable_ = 0;
    uint64_t next_tag_ = 1;
    uint64_t read_up_to_ = 0;
    size_t backlog_ = 0;
    size_t round_robin_ = 0;
    int64_t hold_check_at_ = INT64_MAX; // once scanned, StoreHeld has nothing to store before
    bool hold_scan_due_ = true;         // StoreHeld must scan (settings or subscriptions changed)
    size_t fair_share_ = SIZE_MAX;      // requests in flight per busy subscription (ShareRequests)
    bool batching_ = false;             // some subscription sends batches (lingers)
    bool rate_limiting_ = false;        // some subscription has a rate limit
    std::mt19937_64 random_;
};

} // namespace amebo::delivery
