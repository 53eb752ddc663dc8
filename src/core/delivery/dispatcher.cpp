// The delivery engine's state machine (see dispatcher.hpp). Pure C++.
//
// Bookkeeping in one picture: each committed transaction from the logical queue becomes a
// Transaction that counts its open units (event x subscription). A unit closes when its
// message was delivered or stored in amebo.deliveries, and the record of that is committed.
// The queue may be confirmed up to the last transaction with no open units before it.
#include "core/delivery/dispatcher.hpp"

#include <algorithm>
#include <climits>
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

// A time as JSON text for PostgreSQL.
nlohmann::json TimeJson(int64_t pg_microseconds) {
    return FormatTimestamp(pg_microseconds);
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
int64_t StartedAt(const Response &response, int64_t now) {
    return now - static_cast<int64_t>(response.duration_ms * 1000);
}

} // namespace

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
    int64_t subscription_id = 0;
    std::string webhook_id;
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
    if (subscription.state == "disabled" || event.position <= subscription.start_position ||
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
        if (not_before > now || queue->blocked || queue->subscription.state != "active") {
            StoreUnit(*queue, unit, std::max(not_before, now));
            continue;
        }
        queue->waiting.push_back(std::move(unit));
        backlog_++;
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
    auto found = queues_.find(stored.subscription_id);
    if (found == queues_.end() || stored.events.empty())
        return;
    Queue &queue = *found->second;
    for (const auto &[tag, message] : in_flight_)
        if (message->stored && message->subscription_id == stored.subscription_id &&
            message->webhook_id == stored.webhook_id)
            return;
    for (const auto &message : queue.stored_waiting)
        if (message->webhook_id == stored.webhook_id)
            return;
    std::string key = std::to_string(stored.subscription_id) + " " + stored.webhook_id;
    if (unrecorded_keys_.count(key) > 0 || recording_keys_.count(key) > 0)
        return;
    auto message = std::make_unique<Message>();
    message->subscription_id = stored.subscription_id;
    message->webhook_id = std::move(stored.webhook_id);
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
            keys.push_back(std::to_string(message->subscription_id) + " " + message->webhook_id);
    for (const auto &[id, queue] : queues_)
        for (const auto &message : queue->stored_waiting)
            keys.push_back(std::to_string(id) + " " + message->webhook_id);
    keys.insert(keys.end(), unrecorded_keys_.begin(), unrecorded_keys_.end());
    keys.insert(keys.end(), recording_keys_.begin(), recording_keys_.end());
    return keys;
}

// Signs and sends one message (or fails it at once when it cannot be signed).
void Dispatcher::Send(Queue &queue, std::unique_ptr<Message> message, int64_t now,
                      int64_t unix_seconds, std::vector<Request> *requests) {
    std::vector<const FeedEvent *> events;
    for (const auto &unit : message->units)
        events.push_back(unit.event.get());
    Request request;
    request.tag = next_tag_++;
    request.url = queue.subscription.handler;
    request.body =
        queue.subscription.batch_size > 1 ? BuildBatch(events) : BuildEnvelope(*events.front());
    message->started_at = now;
    queue.in_flight++;
    Message &sent = *message;
    in_flight_[request.tag] = std::move(message);
    try {
        request.headers = {
            "webhook-id: " + sent.webhook_id, "webhook-timestamp: " + std::to_string(unix_seconds),
            "webhook-signature: " + SignPayload(queue.subscription.secret, sent.webhook_id,
                                                unix_seconds, request.body)};
    } catch (const Error &error) {
        Finish(Response{request.tag, 0, std::string("cannot sign: ") + error.what(), 0, ""}, now);
        return;
    }
    requests->push_back(std::move(request));
}

std::vector<Request> Dispatcher::TakeRequests(int64_t now, int64_t unix_seconds) {
    std::vector<Request> requests;
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
            if (queue.subscription.state != "active" ||
                static_cast<size_t>(queue.in_flight) >= Limit(queue.subscription))
                continue;
            std::unique_ptr<Message> message;
            if (!queue.stored_waiting.empty()) {
                message = std::move(queue.stored_waiting.front());
                queue.stored_waiting.pop_front();
                backlog_--;
            } else if (!queue.waiting.empty() && !queue.blocked && !Lingers(queue, now)) {
                message = std::make_unique<Message>();
                message->subscription_id = queue.subscription.id;
                size_t take = std::min<size_t>(queue.waiting.size(),
                                               std::max(1, queue.subscription.batch_size));
                for (size_t n = 0; n < take; n++) {
                    message->units.push_back(std::move(queue.waiting.front()));
                    queue.waiting.pop_front();
                }
                backlog_ -= take;
                message->webhook_id = "msg_" + CompactId(message->units.front().event->event_id);
                if (queue.subscription.batch_size > 1)
                    message->webhook_id += "_" + std::to_string(take);
            } else {
                continue;
            }
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
    records_.push_back({{"subscription_id", message.subscription_id},
                        {"webhook_id", message.webhook_id},
                        {"positions", std::move(positions)},
                        {"attempt", attempt},
                        {"logged", false},
                        {"seq", record_seq_++}});
    return records_.back();
}

// Makes record store (or update) its message with state, attempts and next attempt time.
void Dispatcher::StoreRecord(nlohmann::json &record, const std::string &state, int attempts,
                             int64_t next_attempt_at) {
    record["op"] = "store";
    unrecorded_keys_.insert(record["subscription_id"].dump() + " " +
                            record["webhook_id"].get<std::string>());
    record["state"] = state;
    record["attempt"] = attempts;
    record["next_attempt_at"] = TimeJson(next_attempt_at);
    if (state == "pending")
        earliest_retry_ = std::min(earliest_retry_, next_attempt_at);
}

int64_t Dispatcher::TakeEarliestRetry() {
    int64_t earliest = earliest_retry_;
    earliest_retry_ = INT64_MAX;
    return earliest;
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
    message.subscription_id = queue.subscription.id;
    message.webhook_id = "msg_" + CompactId(unit.event->event_id);
    if (queue.subscription.batch_size > 1)
        message.webhook_id += "_1";
    message.units.push_back(unit);
    message.stored = true;
    StoreRecord(Record(message, 0), "pending", 0, next_attempt_at);
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

void Dispatcher::StoreHeld(int64_t now) {
    int64_t hold = settings_.hold_ms * 1000;
    for (auto &[tag, message] : in_flight_) {
        auto found = queues_.find(message->subscription_id);
        if (message->stored || now - message->started_at < hold || found == queues_.end())
            continue;
        Queue &queue = *found->second;
        int64_t after_timeout = now + settings_.request_timeout_ms * 1000;
        StoreRecord(Record(*message, message->attempts), "pending", message->attempts,
                    after_timeout);
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
        if (stuck || queue->subscription.state != "active")
            StoreUnits(*queue, now);
    }
}

size_t Dispatcher::StoredQueued() const {
    size_t count = 0;
    for (const auto &[id, queue] : queues_)
        count += queue->stored_waiting.size();
    return count;
}

// Requests a subscription may have in flight.
size_t Dispatcher::Limit(const Subscription &subscription) const {
    return subscription.ordered ? 1 : settings_.max_requests_per_subscription;
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
    int64_t hold = settings_.hold_ms * 1000;
    for (const auto &[tag, message] : in_flight_)
        if (!message->stored)
            consider(message->started_at + hold);
    for (const auto &[id, queue] : queues_) {
        if (queue->waiting.empty())
            continue;
        consider(queue->waiting.front().queued_at + hold);
        if (Lingers(*queue, now))
            consider(queue->waiting.front().queued_at + settings_.batch_linger_ms * 1000);
    }
    return earliest;
}

// When to try again after attempt failed: the schedule, or Retry-After for 429 and 503.
int64_t Dispatcher::RetryAt(int attempt, const Response &response, int64_t now) {
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
void Dispatcher::Succeed(Queue &queue, Message &message, const Response &response, int64_t now) {
    nlohmann::json &record = Record(message, message.attempts + 1);
    record["logged"] = true;
    record["status"] = response.status;
    record["duration_ms"] = response.duration_ms;
    record["attempted_at"] = TimeJson(StartedAt(response, now));
    if (message.stored) {
        record["op"] = "delete";
        unrecorded_keys_.insert(std::to_string(message.subscription_id) + " " + message.webhook_id);
    }
    Settle(message);
    (void)queue;
}

// Stops a subscription that answered 410 Gone; its waiting events are dropped.
void Dispatcher::Disable(Queue &queue) {
    queue.subscription.state = "disabled";
    for (auto &unit : queue.waiting)
        Settle(unit.transaction);
    backlog_ -= queue.waiting.size() + queue.stored_waiting.size();
    queue.waiting.clear();
    queue.stored_waiting.clear();
}

// Records a failed attempt: stored for a retry, or dead, or (410) the subscription disabled.
void Dispatcher::Fail(Queue &queue, Message &message, const Response &response, int64_t now) {
    int attempt = message.attempts + 1;
    nlohmann::json &record = Record(message, attempt);
    std::string error =
        response.error.empty() ? "HTTP " + std::to_string(response.status) : response.error;
    record["logged"] = true;
    if (response.status != 0)
        record["status"] = response.status;
    record["error"] = error;
    record["duration_ms"] = response.duration_ms;
    record["attempted_at"] = TimeJson(StartedAt(response, now));
    bool gone = response.status == 410;
    bool dead = gone || attempt > queue.subscription.max_retries;
    StoreRecord(record, dead ? "dead" : "pending", attempt,
                dead ? now : RetryAt(attempt, response, now));
    message.stored = true;
    Settle(message);
    if (gone) {
        record["disable"] = true;
        Disable(queue);
    } else if (!dead && queue.subscription.ordered) {
        queue.blocked = true;
        StoreUnits(queue, now);
    }
}

void Dispatcher::Finish(const Response &response, int64_t now) {
    auto found = in_flight_.find(response.tag);
    if (found == in_flight_.end())
        return;
    std::unique_ptr<Message> message = std::move(found->second);
    in_flight_.erase(found);
    auto queue = queues_.find(message->subscription_id);
    if (queue == queues_.end()) {
        Settle(*message); // the subscription was dropped meanwhile
        return;
    }
    queue->second->in_flight--;
    queue->second->last_finished = now;
    if (response.error.empty() && response.status >= 200 && response.status <= 299)
        Succeed(*queue->second, *message, response, now);
    else
        Fail(*queue->second, *message, response, now);
}

std::string Dispatcher::TakeRecords() {
    // Attempts to log, the last operation on each stored message, subscriptions to disable.
    nlohmann::json log = nlohmann::json::array();
    std::map<std::string, nlohmann::json> last_operations;
    std::set<int64_t> touched;
    nlohmann::json disable = nlohmann::json::array();
    for (auto &record : records_) {
        touched.insert(record["subscription_id"].get<int64_t>());
        if (record.value("disable", false))
            disable.push_back(record["subscription_id"]);
        if (record.contains("op")) {
            std::string key =
                record["subscription_id"].dump() + " " + record["webhook_id"].get<std::string>();
            nlohmann::json operation = record;
            // A message stored twice in one batch (held, then failed) keeps the place of its
            // first store: rows are inserted by seq, and an ordered subscription's stored
            // messages are sent again in the order of their rows.
            auto earlier = last_operations.find(key);
            if (earlier != last_operations.end())
                operation["seq"] = earlier->second["seq"];
            last_operations[key] = std::move(operation);
        }
        if (record["logged"].get<bool>())
            log.push_back(std::move(record));
    }
    nlohmann::json operations = nlohmann::json::array();
    for (auto &[key, record] : last_operations)
        operations.push_back(std::move(record));
    std::string text = nlohmann::json{
        {"log", std::move(log)},
        {"operations", std::move(operations)},
        {"disable", std::move(disable)},
        {"subscriptions",
         touched}}.dump();
    records_ = nlohmann::json::array();
    recording_.insert(recording_.end(), settling_.begin(), settling_.end());
    settling_.clear();
    recording_keys_.insert(unrecorded_keys_.begin(), unrecorded_keys_.end());
    unrecorded_keys_.clear();
    return text;
}

void Dispatcher::RecordsCommitted() {
    for (Transaction *transaction : recording_)
        transaction->open_units--;
    recording_.clear();
    recording_keys_.clear();
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
