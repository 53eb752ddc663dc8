// The delivery engine's state machine (see dispatcher.hpp). Pure C++.
//
// Bookkeeping in one picture: each committed transaction from the logical queue becomes a
// Transaction that counts its open units (event x subscription). A unit closes when its
// message was delivered or stored in amebo.deliveries, and the record of that is committed.
// The queue may be confirmed up to the last transaction with no open units before it. What
// is written down about each message is kept by the outcome log (outcome_log.hpp).
#include "core/delivery/dispatcher.hpp"

#include <algorithm>
#include <set>
#include <utility>

#include "core/delivery/envelope.hpp"
#include "core/delivery/matching.hpp"
#include "core/delivery/retry_schedule.hpp"
#include "core/delivery/signing.hpp"
#include "core/error.hpp"

namespace amebo::delivery {

namespace {

// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
constexpr int64_t kPostgresEpochUnixSeconds = 946684800;

// The event id without dashes, as used in webhook ids.
std::string CompactId(const std::string &event_id) {
    std::string compact;
    compact.reserve(32);
    for (char c : event_id)
        if (c != '-')
            compact += c;
    return compact;
}

// The webhook id of a message whose first event is first: "msg_", on a shard of amebo_router
// "s" and the shard and "_" (event ids may repeat across shards), the event id without dashes,
// and for a batching subscription "_" and the number of events.
std::string WebhookId(const FeedEvent &first, int batch_size, size_t events, int shard) {
    std::string id = "msg_";
    if (shard >= 0)
        id += "s" + std::to_string(shard) + "_";
    id += CompactId(first.event_id);
    if (batch_size > 1)
        id += "_" + std::to_string(events);
    return id;
}

// The deliver_after time an event's metadata asks for, or 0.
int64_t NotBefore(const FeedEvent &event) {
    if (event.metadata.find("\"deliver_after\"") == std::string::npos)
        return 0;
    auto metadata = nlohmann::json::parse(event.metadata, nullptr, false);
    if (!metadata.is_object() || !metadata.contains("deliver_after") ||
        !metadata["deliver_after"].is_string())
        return 0;
    int64_t when = 0;
    return ParseTimestamp(metadata["deliver_after"].get<std::string>(), &when) ? when : 0;
}

// When the attempt that ended at now with response began.
int64_t StartedAt(const HttpResponse &response, int64_t now) {
    return now - static_cast<int64_t>(response.duration_ms * 1000);
}

} // namespace

SubscriptionState ParseSubscriptionState(std::string_view text) {
    if (text == "active")
        return SubscriptionState::kActive;
    if (text == "disabled")
        return SubscriptionState::kDisabled;
    return SubscriptionState::kPaused;
}

struct Dispatcher::Transaction {
    uint64_t lsn = 0;
    bool ended = false;
    int open_units = 0;
};

struct Dispatcher::Unit {
    std::shared_ptr<const FeedEvent> event;
    Transaction *transaction = nullptr; // null once settled, and for stored messages
    int64_t queued_at = 0;
};

struct Dispatcher::Message {
    MessageKey key;
    std::vector<Unit> units;
    bool stored = false; // a row for it exists, or is about to, in amebo.deliveries
    int attempts = 0;    // attempts made before the one in flight
    int64_t started_at = 0;
};

struct Dispatcher::Queue {
    Subscription subscription;
    std::deque<Unit> waiting;
    std::deque<std::unique_ptr<Message>> stored_waiting;
    int in_flight = 0;
    bool blocked = false;      // ordered, with stored pending messages: new events queue behind
    int64_t last_finished = 0; // when a request of this subscription last ended
    RateLimit rate;            // the subscription's rate limit
    int64_t paced_until = 0;   // when the messages stored by the rate limit are all due
};

Dispatcher::Dispatcher(DispatchSettings settings)
    : settings_(settings), random_(std::random_device{}()) {}

Dispatcher::~Dispatcher() = default;

void Dispatcher::SetSubscriptions(std::vector<Subscription> subscriptions) {
    std::map<int64_t, std::unique_ptr<Queue>> next;
    for (auto &subscription : subscriptions) {
        auto found = queues_.find(subscription.id);
        std::unique_ptr<Queue> queue =
            found != queues_.end() ? std::move(found->second) : std::make_unique<Queue>();
        queue->subscription = std::move(subscription);
        queue->rate.SetRate(queue->subscription.rate_limit);
        next[queue->subscription.id] = std::move(queue);
    }
    // Units of removed subscriptions are handled: nobody wants them any more.
    for (auto &[id, queue] : queues_) {
        if (!queue)
            continue;
        for (auto &unit : queue->waiting)
            Settle(unit.transaction);
        backlog_ -= queue->waiting.size() + queue->stored_waiting.size();
    }
    queues_ = std::move(next);
    batching_ = std::any_of(queues_.begin(), queues_.end(), [](const auto &entry) {
        return entry.second->subscription.batch_size > 1;
    });
    rate_limiting_ = std::any_of(queues_.begin(), queues_.end(),
                                 [](const auto &entry) { return entry.second->rate.Limited(); });
    hold_scan_due_ = true;
    Advance();
}

void Dispatcher::SetBlocked(const std::vector<int64_t> &subscription_ids) {
    std::set<int64_t> blocked(subscription_ids.begin(), subscription_ids.end());
    for (auto &[id, queue] : queues_) {
        bool has_stored_in_memory = !queue->stored_waiting.empty() || queue->in_flight > 0;
        queue->blocked = queue->subscription.ordered &&
                         (blocked.count(id) > 0 || (queue->blocked && has_stored_in_memory));
    }
}

// True when subscription wants event (payload parsed on first need).
bool Dispatcher::Matches(const Subscription &subscription, const FeedEvent &event,
                         std::optional<nlohmann::json> &payload) const {
    if (subscription.state == SubscriptionState::kDisabled ||
        event.position <= subscription.start_position ||
        !ActionMatches(subscription.pattern, event.action))
        return false;
    if (!subscription.filter)
        return true;
    if (!payload)
        payload = nlohmann::json::parse(event.payload, nullptr, false);
    return JsonContains(*payload, *subscription.filter);
}

void Dispatcher::AddEvent(FeedEvent event, int64_t now) {
    if (open_ == nullptr) {
        transactions_.push_back(std::make_unique<Transaction>());
        open_ = transactions_.back().get();
    }
    auto shared = std::make_shared<const FeedEvent>(std::move(event));
    std::optional<nlohmann::json> payload;
    int64_t not_before = NotBefore(*shared);
    for (auto &[id, queue] : queues_) {
        if (!Matches(queue->subscription, *shared, payload))
            continue;
        open_->open_units++;
        Unit unit{shared, open_, now};
        if (not_before > now || queue->blocked ||
            queue->subscription.state != SubscriptionState::kActive) {
            StoreUnit(*queue, unit, std::max(not_before, now));
            continue;
        }
        queue->waiting.push_back(std::move(unit));
        backlog_++;
        HoldNoEarlierThan(now);
        if (queue->rate.Limited())
            hold_scan_due_ = true; // StoreHeld stores what is beyond the rate (StoreBeyondRate)
    }
}

void Dispatcher::EndTransaction(uint64_t lsn) {
    if (open_ == nullptr)
        return;
    open_->lsn = lsn;
    open_->ended = true;
    open_ = nullptr;
    Advance();
}

void Dispatcher::ReadUpTo(uint64_t lsn) {
    read_up_to_ = std::max(read_up_to_, lsn);
    Advance();
}

// Drops handled transactions from the front and moves the confirmable position.
void Dispatcher::Advance() {
    while (!transactions_.empty() && transactions_.front()->ended &&
           transactions_.front()->open_units == 0) {
        confirmable_ = std::max(confirmable_, transactions_.front()->lsn);
        transactions_.pop_front();
    }
    if (transactions_.empty())
        confirmable_ = std::max(confirmable_, read_up_to_);
}

uint64_t Dispatcher::ConfirmableLsn() const {
    return confirmable_;
}

void Dispatcher::AddStored(StoredMessage stored) {
    auto found = queues_.find(stored.key.subscription_id);
    if (found == queues_.end() || stored.events.empty())
        return;
    Queue &queue = *found->second;
    for (const auto &[tag, message] : in_flight_)
        if (message->stored && message->key.subscription_id == stored.key.subscription_id &&
            message->key.webhook_id == stored.key.webhook_id)
            return;
    for (const auto &message : queue.stored_waiting)
        if (message->key.webhook_id == stored.key.webhook_id)
            return;
    if (log_.Changing(stored.key))
        return;
    auto message = std::make_unique<Message>();
    message->key = std::move(stored.key);
    message->stored = true;
    message->attempts = stored.attempts;
    for (auto &event : stored.events)
        message->units.push_back(Unit{std::make_shared<const FeedEvent>(std::move(event))});
    queue.stored_waiting.push_back(std::move(message));
    backlog_++;
}

std::vector<std::string> Dispatcher::StoredKeysInMemory() const {
    std::vector<std::string> keys;
    for (const auto &[tag, message] : in_flight_)
        if (message->stored)
            keys.push_back(message->key.Text());
    for (const auto &[id, queue] : queues_)
        for (const auto &message : queue->stored_waiting)
            keys.push_back(message->key.Text());
    log_.AppendChangingKeys(&keys);
    return keys;
}

// Signs and sends one message (or fails it at once when it cannot be signed).
void Dispatcher::Send(Queue &queue, std::unique_ptr<Message> message, int64_t now,
                      int64_t unix_seconds, std::vector<HttpRequest> *requests) {
    std::vector<const FeedEvent *> events;
    for (const auto &unit : message->units)
        events.push_back(unit.event.get());
    HttpRequest request;
    request.tag = next_tag_++;
    request.url = queue.subscription.handler;
    request.body = queue.subscription.batch_size > 1
                       ? BuildBatch(events, settings_.shard)
                       : BuildEnvelope(*events.front(), settings_.shard);
    message->started_at = now;
    HoldNoEarlierThan(now);
    queue.in_flight++;
    Message &sent = *message;
    in_flight_[request.tag] = std::move(message);
    try {
        request.headers = {
            "webhook-id: " + sent.key.webhook_id,
            "webhook-timestamp: " + std::to_string(unix_seconds),
            "webhook-signature: " +
                SignatureHeaderValue(queue.subscription.secret, queue.subscription.previous_secret,
                                     queue.subscription.previous_secret_until, sent.key.webhook_id,
                                     unix_seconds, request.body)};
    } catch (const Error &error) {
        Finish(HttpResponse{request.tag, 0, std::string("cannot sign: ") + error.what(), 0, ""},
               now);
        return;
    }
    requests->push_back(std::move(request));
}

// Splits the requests allowed in flight evenly among the subscriptions that have work, so
// that slow handlers (each holding its requests for their whole answer time) cannot take
// every slot and leave a fast one waiting for its turn.
void Dispatcher::ShareRequests() {
    size_t busy = 0;
    for (const auto &[id, queue] : queues_)
        if (queue->in_flight > 0 || !queue->waiting.empty() || !queue->stored_waiting.empty())
            busy++;
    fair_share_ = std::max<size_t>(1, settings_.max_requests / std::max<size_t>(1, busy));
}

std::vector<HttpRequest> Dispatcher::TakeRequests(int64_t now, int64_t unix_seconds) {
    std::vector<HttpRequest> requests;
    ShareRequests();
    bool progress = true;
    while (progress && in_flight_.size() < settings_.max_requests && !queues_.empty()) {
        progress = false;
        size_t count = queues_.size();
        auto it = queues_.begin();
        std::advance(it, round_robin_ % count);
        for (size_t i = 0; i < count && in_flight_.size() < settings_.max_requests; i++) {
            Queue &queue = *it->second;
            if (++it == queues_.end())
                it = queues_.begin();
            if (queue.subscription.state != SubscriptionState::kActive ||
                static_cast<size_t>(queue.in_flight) >= Limit(queue.subscription) ||
                !queue.rate.Ready(now)) // rate limit: skipped, the others go on
                continue;
            std::unique_ptr<Message> message;
            if (!queue.stored_waiting.empty()) {
                message = std::move(queue.stored_waiting.front());
                queue.stored_waiting.pop_front();
                backlog_--;
            } else if (!queue.waiting.empty() && !queue.blocked && !Lingers(queue, now)) {
                message = std::make_unique<Message>();
                message->key.subscription_id = queue.subscription.id;
                size_t take = std::min<size_t>(queue.waiting.size(),
                                               std::max(1, queue.subscription.batch_size));
                for (size_t n = 0; n < take; n++) {
                    message->units.push_back(std::move(queue.waiting.front()));
                    queue.waiting.pop_front();
                }
                backlog_ -= take;
                message->key.webhook_id =
                    WebhookId(*message->units.front().event, queue.subscription.batch_size, take,
                              settings_.shard);
            } else {
                continue;
            }
            queue.rate.Take(now);
            Send(queue, std::move(message), now, unix_seconds, &requests);
            progress = true;
        }
        round_robin_++;
    }
    return requests;
}

// The outcome record of a message's attempt, appended to the records.
nlohmann::json &Dispatcher::Record(const Message &message, int attempt) {
    nlohmann::json positions = nlohmann::json::array();
    for (const auto &unit : message.units)
        positions.push_back(unit.event->position);
    return log_.Add(message.key, std::move(positions), attempt);
}

// The message's units count as handled once the next records commit.
void Dispatcher::Settle(Message &message) {
    for (auto &unit : message.units) {
        Settle(unit.transaction);
        unit.transaction = nullptr;
    }
}

// One unit of transaction counts as handled once the next records commit.
void Dispatcher::Settle(Transaction *transaction) {
    if (transaction != nullptr)
        settling_.push_back(transaction);
}

// Stores one waiting unit as a message of its own, due at next_attempt_at.
void Dispatcher::StoreUnit(Queue &queue, const Unit &unit, int64_t next_attempt_at) {
    Message message;
    message.key = {queue.subscription.id,
                   WebhookId(*unit.event, queue.subscription.batch_size, 1, settings_.shard)};
    message.units.push_back(unit);
    message.stored = true;
    log_.Store(Record(message, 0), message.key, MessageState::kPending, 0, next_attempt_at);
    Settle(message);
    if (queue.subscription.ordered)
        queue.blocked = true;
}

// Stores every waiting unit of queue, in order.
void Dispatcher::StoreUnits(Queue &queue, int64_t next_attempt_at) {
    for (const auto &unit : queue.waiting)
        StoreUnit(queue, unit, next_attempt_at);
    backlog_ -= queue.waiting.size();
    queue.waiting.clear();
}

// Something started or queued at now: its hold ends no earlier than now plus the hold time.
void Dispatcher::HoldNoEarlierThan(int64_t now) {
    hold_check_at_ = std::min(hold_check_at_, now + settings_.hold_ms * 1000);
}

// Scanning every message and queue on every turn showed in the profile of each delivery, so
// the scan remembers the earliest time anything it saw could be stored (hold_check_at_), and
// what starts or queues later lowers that time (HoldNoEarlierThan); until then, nothing to do.
void Dispatcher::StoreHeld(int64_t now) {
    if (!hold_scan_due_ && now < hold_check_at_)
        return;
    int64_t hold = settings_.hold_ms * 1000;
    int64_t next_check = INT64_MAX;
    for (auto &[tag, message] : in_flight_) {
        auto found = queues_.find(message->key.subscription_id);
        if (!message->stored && now - message->started_at < hold)
            next_check = std::min(next_check, message->started_at + hold);
        if (message->stored || now - message->started_at < hold || found == queues_.end())
            continue;
        Queue &queue = *found->second;
        int64_t after_timeout = now + settings_.request_timeout_ms * 1000;
        log_.Store(Record(*message, message->attempts), message->key, MessageState::kPending,
                   message->attempts, after_timeout);
        message->stored = true;
        Settle(*message);
        if (queue.subscription.ordered) {
            queue.blocked = true;
            StoreUnits(queue, now);
        }
    }
    // Waiting events are stored only when their subscription is stuck: all its requests
    // (or all requests) in flight and none ended for the hold time. A busy subscription
    // that keeps answering keeps its events in memory, however long the line.
    for (auto &[id, queue] : queues_) {
        if (queue->waiting.empty())
            continue;
        bool full = static_cast<size_t>(queue->in_flight) >= Limit(queue->subscription) ||
                    in_flight_.size() >= settings_.max_requests;
        bool stuck = full && now - queue->last_finished >= hold &&
                     now - queue->waiting.front().queued_at >= hold;
        if (stuck || queue->subscription.state != SubscriptionState::kActive)
            StoreUnits(*queue, now);
        else {
            StoreBeyondRate(*queue, now);
            if (queue->waiting.empty())
                continue;
            // stuck at that time at the earliest, or as soon as it is full (now, for a rescan)
            next_check = std::min(
                next_check,
                std::max(now,
                         std::max(queue->waiting.front().queued_at, queue->last_finished) + hold));
        }
    }
    hold_check_at_ = next_check;
    hold_scan_due_ = false;
}

// The earliest hold deadline of new messages in flight and of waiting events.
int64_t Dispatcher::EarliestHold() const {
    int64_t hold = settings_.hold_ms * 1000;
    int64_t earliest = INT64_MAX;
    for (const auto &[tag, message] : in_flight_)
        if (!message->stored)
            earliest = std::min(earliest, message->started_at + hold);
    for (const auto &[id, queue] : queues_)
        if (!queue->waiting.empty())
            earliest = std::min(earliest, queue->waiting.front().queued_at + hold);
    return earliest;
}

// A rate-limited subscription keeps in memory only the events it may send within the hold
// time; the rest are stored (no attempt counted), each due when the limit will let it go,
// rounded up to a whole second so that the worker fetches them about once a second. A long
// line behind a limit then waits in amebo.deliveries, not in the worker's memory, whose
// limit would stop reading the queue for every subscription. An ordered subscription stores
// its whole line, which then goes out in order.
void Dispatcher::StoreBeyondRate(Queue &queue, int64_t now) {
    size_t batch_size = static_cast<size_t>(std::max(1, queue.subscription.batch_size));
    double sendable = queue.rate.AllowedWithin(now, settings_.hold_ms * 1000);
    if (!queue.rate.Limited() || queue.waiting.size() <= sendable * batch_size)
        return;
    size_t keep = queue.subscription.ordered ? 0 : static_cast<size_t>(sendable) * batch_size;
    // An ordered line is stored whole: its head is due now, unless earlier stores are paced.
    int64_t start = keep == 0 ? std::max(now, queue.paced_until)
                              : std::max(queue.rate.PaceAt(now, sendable), queue.paced_until);
    constexpr int64_t kSecond = 1000000;
    for (size_t i = keep; i < queue.waiting.size(); i++) {
        int64_t due = queue.rate.PaceAt(start, static_cast<double>(i - keep));
        StoreUnit(queue, queue.waiting[i], (due + kSecond - 1) / kSecond * kSecond);
    }
    queue.paced_until = queue.rate.PaceAt(start, static_cast<double>(queue.waiting.size() - keep));
    backlog_ -= queue.waiting.size() - keep;
    queue.waiting.erase(queue.waiting.begin() + static_cast<std::ptrdiff_t>(keep),
                        queue.waiting.end());
}

size_t Dispatcher::StoredQueued() const {
    size_t count = 0;
    for (const auto &[id, queue] : queues_)
        count += queue->stored_waiting.size();
    return count;
}

// Requests a subscription may have in flight.
size_t Dispatcher::Limit(const Subscription &subscription) const {
    return subscription.ordered ? 1
                                : std::min(settings_.max_requests_per_subscription, fair_share_);
}

// True when the queue's waiting events do not fill a batch and should wait for more: the
// subscription batches, has a request in flight, and its oldest event is within the linger.
bool Dispatcher::Lingers(const Queue &queue, int64_t now) const {
    size_t batch_size = static_cast<size_t>(std::max(1, queue.subscription.batch_size));
    return batch_size > 1 && queue.waiting.size() < batch_size && queue.in_flight > 0 &&
           now - queue.waiting.front().queued_at < settings_.batch_linger_ms * 1000;
}

int64_t Dispatcher::NextDeadline(int64_t now) const {
    int64_t earliest = -1;
    auto consider = [&](int64_t deadline) {
        int64_t left = std::max<int64_t>(0, deadline - now);
        earliest = earliest < 0 ? left : std::min(earliest, left);
    };
    // Once StoreHeld has scanned, it has nothing to do before hold_check_at_.
    int64_t hold_deadline = hold_scan_due_ ? EarliestHold() : hold_check_at_;
    if (hold_deadline != INT64_MAX)
        consider(hold_deadline);
    // The next request a limit lets go. A limit that lets one go now is not a deadline: what
    // could be sent was sent, and what waits for a request to end or a reload is woken then.
    if (rate_limiting_)
        for (const auto &[id, queue] : queues_) {
            int64_t wait = queue->rate.Limited() ? queue->rate.WaitUs(now) : 0;
            if (wait > 0 && (!queue->waiting.empty() || !queue->stored_waiting.empty()))
                consider(now + wait);
        }
    if (!batching_)
        return earliest;
    for (const auto &[id, queue] : queues_)
        if (!queue->waiting.empty() && Lingers(*queue, now))
            consider(queue->waiting.front().queued_at + settings_.batch_linger_ms * 1000);
    return earliest;
}

// When to try again after attempt failed: the schedule, or Retry-After for 429 and 503.
int64_t Dispatcher::RetryAt(int attempt, const HttpResponse &response, int64_t now) {
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    int64_t delay_ms =
        RetryDelayMs(attempt, settings_.retry_base_ms, settings_.retry_max_ms, unit(random_));
    if ((response.status == 429 || response.status == 503) && !response.retry_after.empty()) {
        int64_t asked =
            ParseRetryAfterMs(response.retry_after, now / 1000000 + kPostgresEpochUnixSeconds);
        if (asked >= 0)
            delay_ms = std::min(asked, settings_.retry_max_ms);
    }
    return now + delay_ms * 1000;
}

// Records a delivered message: logged, and its stored row (if any) removed.
void Dispatcher::Succeed(Message &message, const HttpResponse &response, int64_t now) {
    nlohmann::json &record = Record(message, message.attempts + 1);
    OutcomeLog::Logged(record, response, StartedAt(response, now), "");
    if (message.stored)
        log_.Delete(record, message.key);
    Settle(message);
}

// Stops a subscription that answered 410 Gone; its waiting events are dropped.
void Dispatcher::Disable(Queue &queue) {
    queue.subscription.state = SubscriptionState::kDisabled;
    for (auto &unit : queue.waiting)
        Settle(unit.transaction);
    backlog_ -= queue.waiting.size() + queue.stored_waiting.size();
    queue.waiting.clear();
    queue.stored_waiting.clear();
}

// Records a failed attempt: stored for a retry, or dead, or (410) the subscription disabled.
void Dispatcher::Fail(Queue &queue, Message &message, const HttpResponse &response, int64_t now) {
    int attempt = message.attempts + 1;
    nlohmann::json &record = Record(message, attempt);
    std::string error =
        response.error.empty() ? "HTTP " + std::to_string(response.status) : response.error;
    OutcomeLog::Logged(record, response, StartedAt(response, now), error);
    bool gone = response.status == 410;
    bool dead = gone || attempt > queue.subscription.max_retries;
    log_.Store(record, message.key, dead ? MessageState::kDead : MessageState::kPending, attempt,
               dead ? now : RetryAt(attempt, response, now));
    message.stored = true;
    Settle(message);
    if (gone) {
        OutcomeLog::Disable(record);
        Disable(queue);
    } else if (!dead && queue.subscription.ordered) {
        queue.blocked = true;
        StoreUnits(queue, now);
    }
}

void Dispatcher::Finish(const HttpResponse &response, int64_t now) {
    auto found = in_flight_.find(response.tag);
    if (found == in_flight_.end())
        return;
    std::unique_ptr<Message> message = std::move(found->second);
    in_flight_.erase(found);
    auto queue = queues_.find(message->key.subscription_id);
    if (queue == queues_.end()) {
        Settle(*message); // the subscription was dropped meanwhile
        return;
    }
    queue->second->in_flight--;
    queue->second->last_finished = now;
    if (response.error.empty() && response.status >= 200 && response.status <= 299)
        Succeed(*message, response, now);
    else
        Fail(*queue->second, *message, response, now);
}

std::string Dispatcher::TakeRecords() {
    std::string text = log_.Take();
    recording_.insert(recording_.end(), settling_.begin(), settling_.end());
    settling_.clear();
    return text;
}

void Dispatcher::RecordsCommitted() {
    for (Transaction *transaction : recording_)
        transaction->open_units--;
    recording_.clear();
    log_.Committed();
    Advance();
}

std::vector<SubscriptionFigures> Dispatcher::Figures() const {
    std::vector<SubscriptionFigures> figures;
    for (const auto &[id, queue] : queues_)
        figures.push_back({id, queue->in_flight,
                           static_cast<int>(queue->waiting.size() + queue->stored_waiting.size())});
    return figures;
}

} // namespace amebo::delivery
