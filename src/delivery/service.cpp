// Webhook delivery in the worker (see service.hpp).
//
// Start: find or create the slot. A new slot (first start, or a promoted standby, which has
// no slots in PostgreSQL 15) begins at "now", so events after the delivery checkpoint that
// committed before it are caught up from the events table first; events the slot will also
// carry are skipped there. Then: decode, dispatch, send, record, confirm.
#include "delivery/service.hpp"

#include <algorithm>
#include <ctime>
#include <cstring>
#include <map>

#include "core/error.hpp"
#include "pg/guard.hpp"
#include "settings.hpp"
#include "worker/sql_runner.hpp"
#include "worker/worker.hpp"

extern "C" {
#include "access/xlog.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
}

namespace amebo::delivery {

namespace {

// How many events the worker keeps in memory before it stops reading the queue.
constexpr size_t kMaxBacklog = 20000;
// Records decoded per read, and events caught up per chunk.
constexpr size_t kReadBatch = 5000;
constexpr int kCatchUpChunk = 1000;
// Stored messages fetched at once.
constexpr int kDueBatch = 500;
// Intervals, in microseconds.
constexpr int64_t kStartRetry = 5 * 1000000L;
constexpr int64_t kStopPause = 1000000L;
constexpr int64_t kSubscriptionReload = 5 * 1000000L;
constexpr int64_t kIdleDueFetch = 5 * 1000000L;
constexpr int64_t kRecordInterval = 20 * 1000L;
constexpr int64_t kCheckpointInterval = 200 * 1000L;
constexpr int64_t kPruneInterval = 60 * 1000000L;

// The columns of an event row, as the worker's queries select them.
constexpr char kEventColumns[] =
    "e.position, e.event_id, e.stream, e.version, e.action, e.payload::text, e.metadata::text, "
    "((extract(epoch FROM e.recorded_at) - 946684800) * 1000000)::bigint";

// An event from eight text columns starting at column first.
FeedEvent EventFromRow(const worker::SqlRow &row, size_t first) {
    FeedEvent event;
    event.position = std::stoll(row.at(first));
    event.event_id = row.at(first + 1);
    event.stream = row.at(first + 2);
    event.version = std::stoll(row.at(first + 3));
    event.action = row.at(first + 4);
    event.payload = row.at(first + 5);
    event.metadata = row.at(first + 6);
    event.recorded_at = std::stoll(row.at(first + 7));
    return event;
}

// The dispatcher's limits from the amebo.* settings.
DispatchSettings CurrentSettings() {
    DispatchSettings current;
    current.max_requests = settings::max_concurrent_requests;
    current.max_requests_per_subscription = settings::max_requests_per_subscription;
    current.retry_base_ms = settings::retry_base_delay;
    current.retry_max_ms = settings::retry_max_delay;
    current.request_timeout_ms = settings::delivery_timeout;
    return current;
}

// An integer setting or query result, or fallback when empty.
int64_t ToInt(const std::string &text, int64_t fallback = 0) {
    return text.empty() ? fallback : std::stoll(text);
}

// Lets this process use amebo as an output plugin where the server limits output plugins to
// a list (output_plugin_libraries, in recent minor releases): the worker decodes with its
// own library, which it trusts; other sessions keep the configured list.
void TrustOwnOutputPlugin() {
    pg::Call([] {
        const char *libraries = GetConfigOption("output_plugin_libraries", true, false);
        if (libraries == nullptr || strstr(libraries, "amebo") != nullptr)
            return;
        char *extended = psprintf("%s%samebo", libraries, libraries[0] ? ", " : "");
        SetConfigOption("output_plugin_libraries", extended, PGC_SUSET, PGC_S_SESSION);
    });
}

} // namespace

DeliveryService::DeliveryService() = default;

// Runs only while the worker exits through a C++ exception: closing the queue may raise a
// PostgreSQL error, which must not escape a destructor; the process ends anyway.
DeliveryService::~DeliveryService() {
    try {
        Stop();
    } catch (...) {
    }
}

int64_t DeliveryService::Now() const {
    return GetCurrentTimestamp();
}

void DeliveryService::Stop() {
    if (QueueIsOpen())
        CloseQueue();
    http_.reset();
    dispatcher_.reset();
    active_ = false;
    catching_up_ = false;
    next_start_check_ = Now() + kStopPause;
}

// Starts delivery when the extension is installed and wal_level allows; true when active.
bool DeliveryService::Start() {
    next_start_check_ = now_ + kStartRetry;
    if (!XLogLogicalInfoActive())
        return false;
    std::string installed = worker::RunSqlValue(
        "SELECT count(*) FROM pg_catalog.pg_extension x WHERE x.extname = 'amebo' "
        "AND pg_catalog.to_regclass('amebo.delivery_checkpoint') IS NOT NULL");
    slot_name_ = "amebo_" + std::to_string(MyDatabaseId);
    if (installed != "1") {
        // Without the extension, a slot left behind would keep WAL forever.
        worker::RunSql("SELECT pg_catalog.pg_drop_replication_slot(slot_name) "
                       "FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND NOT active",
                       {slot_name_});
        return false;
    }
    TrustOwnOutputPlugin();
    extension_ =
        worker::RunSqlValue("SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'amebo'");
    auto saved = worker::RunSql("SELECT position, catch_up_through, slot_skip_through "
                                "FROM amebo.delivery_checkpoint");
    dispatcher_ = std::make_unique<Dispatcher>(CurrentSettings());
    http_ = std::make_unique<HttpClient>(settings::max_concurrent_requests,
                                         settings::max_requests_per_subscription);
    LoadSubscriptions();
    skip_positions_.clear();
    checkpoint_candidates_.clear();
    confirmed_ = 0;
    checkpoint_ = saved.empty() ? 0 : ToInt(saved[0].at(0));
    if (saved.empty() && SlotExists(slot_name_.c_str())) {
        // A slot without a checkpoint is left from an earlier installation of amebo.
        worker::RunSql("SELECT pg_catalog.pg_drop_replication_slot($1)", {slot_name_});
    }
    DropLostSlot();
    if (!SlotExists(slot_name_.c_str())) {
        BeginCatchUp(saved.empty() ? -1 : checkpoint_);
    } else if (!saved.empty() && ToInt(saved[0].at(1)) > checkpoint_) {
        // The worker stopped during a catch-up: finish it before reading the slot.
        catch_up_after_ = checkpoint_;
        catch_up_through_ = ToInt(saved[0].at(1));
        skip_through_ = ToInt(saved[0].at(2));
        catching_up_ = true;
    } else {
        skip_through_ = checkpoint_;
        OpenQueue(slot_name_.c_str());
    }
    active_ = true;
    return true;
}

// Drops the slot if PostgreSQL invalidated it (its WAL passed max_slot_wal_keep_size), so
// that a new one is created and the events after the checkpoint come from the events table.
void DeliveryService::DropLostSlot() {
    auto lost = worker::RunSql("SELECT pg_catalog.pg_drop_replication_slot(slot_name) "
                               "FROM pg_catalog.pg_replication_slots "
                               "WHERE slot_name = $1 AND wal_status = 'lost' AND NOT active",
                               {slot_name_});
    if (!lost.empty())
        ereport(WARNING,
                (errmsg("amebo: replication slot \"%s\" was invalidated; catching up from the "
                        "delivery checkpoint (position %lld) instead",
                        slot_name_.c_str(), static_cast<long long>(checkpoint_)),
                 errhint("The slot kept more WAL than max_slot_wal_keep_size while delivery "
                         "lagged.")));
}

// Creates the slot and plans the catch-up of what committed before it, after checkpoint
// (-1: no checkpoint yet; then from the oldest subscription's start).
void DeliveryService::BeginCatchUp(int64_t checkpoint) {
    worker::RunSql("SELECT pg_catalog.pg_create_logical_replication_slot($1, 'amebo')",
                   {slot_name_});
    // Every position at or below settled committed before this point, after the slot's start.
    int64_t settled = ToInt(worker::RunSqlValue("SELECT amebo.settled_position()"));
    int64_t head = ToInt(worker::RunSqlValue("SELECT max(position) FROM amebo.events"));
    if (checkpoint < 0)
        checkpoint = ToInt(worker::RunSqlValue(
            "SELECT coalesce((SELECT min(start_position) FROM amebo.subscriptions), "
            "(SELECT max(position) FROM amebo.events), 0)"));
    skip_through_ = std::max(checkpoint, settled);
    catch_up_after_ = checkpoint;
    catch_up_through_ = head;
    checkpoint_ = checkpoint;
    catching_up_ = true;
    worker::RunSql("SELECT amebo_internal.plan_catch_up($1, $2::bigint, $3::bigint, $4::bigint)",
                   {slot_name_, std::to_string(checkpoint), std::to_string(head),
                    std::to_string(skip_through_)});
    ereport(LOG, (errmsg("amebo: created replication slot \"%s\"; catching up events %lld to "
                         "%lld from the events table",
                         slot_name_.c_str(), static_cast<long long>(checkpoint + 1),
                         static_cast<long long>(head))));
}

// Feeds the next chunk of caught-up events once the previous one is handled; opens the queue
// when all are.
void DeliveryService::CatchUp() {
    if (!dispatcher_->Settled())
        return;
    // Every event up to here is handled: at or below the checkpoint, or caught up.
    checkpoint_candidates_.push_back({std::min(catch_up_after_, skip_through_), 0});
    if (catch_up_after_ >= catch_up_through_) {
        catching_up_ = false;
        checkpoint_candidates_.push_back({skip_through_, 0});
        Record(true);
        worker::RunSql("SELECT amebo_internal.plan_catch_up($1, $2::bigint, 0, 0)",
                       {slot_name_, std::to_string(checkpoint_)});
        OpenQueue(slot_name_.c_str());
        return;
    }
    if (worker::SubscriptionChanges() != loaded_changes_)
        LoadSubscriptions();
    auto rows = worker::RunSql(
        (std::string("SELECT ") + kEventColumns +
         " FROM amebo.events e WHERE e.position > $1::bigint AND e.position <= $2::bigint "
         "ORDER BY e.position LIMIT " +
         std::to_string(kCatchUpChunk))
            .c_str(),
        {std::to_string(catch_up_after_), std::to_string(catch_up_through_)});
    for (const auto &row : rows) {
        FeedEvent event = EventFromRow(row, 0);
        catch_up_after_ = event.position;
        if (event.position > skip_through_)
            skip_positions_.insert(event.position);
        dispatcher_->AddEvent(std::move(event), now_);
    }
    dispatcher_->EndTransaction(0);
    if (rows.empty())
        catch_up_after_ = catch_up_through_;
}

// Loads subscriptions with their applications' secrets.
void DeliveryService::LoadSubscriptions() {
    next_subscription_load_ = now_ + kSubscriptionReload;
    loaded_changes_ = worker::SubscriptionChanges();
    std::string extension =
        worker::RunSqlValue("SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'amebo'");
    if (extension != extension_)
        pg::Call([] {
            ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                            errmsg("amebo was dropped or created again; webhook delivery "
                                   "starts over")));
        });
    auto rows = worker::RunSql(
        "SELECT s.id, s.action, s.handler, a.secret, s.max_retries, "
        "coalesce(s.filter::text, ''), s.ordered, s.batch_size, s.start_position, s.state "
        "FROM amebo.subscriptions s JOIN amebo.applications a ON a.name = s.application");
    std::vector<Subscription> subscriptions;
    for (const auto &row : rows) {
        Subscription subscription;
        subscription.id = std::stoll(row.at(0));
        subscription.pattern = row.at(1);
        subscription.handler = row.at(2);
        subscription.secret = row.at(3);
        subscription.max_retries = std::stoi(row.at(4));
        if (!row.at(5).empty())
            subscription.filter = nlohmann::json::parse(row.at(5), nullptr, false);
        subscription.ordered = row.at(6) == "t";
        subscription.batch_size = std::stoi(row.at(7));
        subscription.start_position = std::stoll(row.at(8));
        subscription.state = row.at(9);
        subscriptions.push_back(std::move(subscription));
    }
    dispatcher_->Configure(CurrentSettings());
    dispatcher_->SetSubscriptions(std::move(subscriptions));
}

void DeliveryService::Event(std::string_view record) {
    FeedEvent event;
    std::string error;
    if (!DecodeFeedEvent(record, &event, &error))
        throw Error(sqlstate::kInternalError, "amebo's logical queue sent a bad record", error);
    if (event.position <= skip_through_ || skip_positions_.count(event.position) > 0)
        return;
    dispatcher_->AddEvent(std::move(event), now_);
}

void DeliveryService::Commit(uint64_t lsn) {
    dispatcher_->EndTransaction(lsn);
}

// Decodes what committed since the last read, unless the backlog is full.
void DeliveryService::ReadNew() {
    if (dispatcher_->Backlog() >= kMaxBacklog)
        return;
    // A subscription that committed before a transaction we are about to read changed the
    // counter before that transaction began, so before this flush position was read.
    uint64_t flushed = FlushedWal();
    if (worker::SubscriptionChanges() != loaded_changes_)
        LoadSubscriptions();
    uint64_t end = ReadQueue(this, kReadBatch, flushed);
    dispatcher_->ReadUpTo(end);
    more_to_read_ = end < flushed;
    read_up_to_ = end;
    Confirm();
}

// Loads stored messages that are due, and which ordered subscriptions are blocked.
void DeliveryService::FetchDue() {
    next_due_fetch_ = now_ + kIdleDueFetch;
    if (dispatcher_->StoredQueued() >= kDueBatch / 2)
        return;
    nlohmann::json skip = dispatcher_->StoredKeysInMemory();
    auto rows = worker::RunSql(
        (std::string("SELECT d.subscription_id, d.webhook_id, d.attempts, d.message_id, "
                     "d.event_position, d.event_id, d.stream, d.version, d.action, d.payload, "
                     "d.metadata, d.recorded_at FROM amebo_internal.due_deliveries(") +
         std::to_string(kDueBatch) +
         ", ARRAY(SELECT pg_catalog.jsonb_array_elements_text($1::jsonb))) d")
            .c_str(),
        {skip.dump()});
    std::map<int64_t, StoredMessage> messages;
    for (const auto &row : rows) {
        StoredMessage &message = messages[std::stoll(row.at(3))];
        message.subscription_id = std::stoll(row.at(0));
        message.webhook_id = row.at(1);
        message.attempts = std::stoi(row.at(2));
        message.events.push_back(EventFromRow(row, 4));
    }
    // A full batch means more are due: fetch again as soon as these are on their way.
    if (messages.size() >= static_cast<size_t>(kDueBatch))
        next_due_fetch_ = now_;
    for (auto &[id, message] : messages)
        dispatcher_->AddStored(std::move(message));
    // Which ordered subscriptions are blocked, and when the next stored message is due.
    skip = dispatcher_->StoredKeysInMemory();
    auto schedule = worker::RunSql(
        "SELECT (SELECT pg_catalog.array_to_json(pg_catalog.array_agg(b))::text "
        "        FROM amebo_internal.blocked_subscriptions() b), "
        "amebo_internal.next_due_at(ARRAY(SELECT pg_catalog.jsonb_array_elements_text($1::jsonb)))",
        {skip.dump()});
    std::vector<int64_t> blocked;
    if (!schedule.at(0).at(0).empty())
        blocked = nlohmann::json::parse(schedule[0][0]).get<std::vector<int64_t>>();
    dispatcher_->SetBlocked(blocked);
    if (!schedule[0].at(1).empty())
        next_due_fetch_ = std::min(next_due_fetch_, std::max(now_, ToInt(schedule[0][1])));
}

// Writes outcomes and the checkpoint when due (or forced), then confirms the queue.
void DeliveryService::Record(bool force) {
    // The newest measured checkpoint whose WAL position the queue has handled.
    uint64_t confirmable = dispatcher_->ConfirmableLsn();
    int64_t checkpoint = checkpoint_;
    size_t usable = 0;
    for (const auto &[position, lsn] : checkpoint_candidates_) {
        if (lsn > confirmable)
            break;
        checkpoint = std::max(checkpoint, position);
        usable++;
    }
    if (checkpoint <= checkpoint_) { // nothing new to write: forget them
        checkpoint_candidates_.erase(checkpoint_candidates_.begin(),
                                     checkpoint_candidates_.begin() + usable);
        usable = 0;
    }
    bool records_due = dispatcher_->HasRecords() && now_ - last_record_ >= kRecordInterval;
    bool checkpoint_due = checkpoint > checkpoint_ && now_ - last_record_ >= kCheckpointInterval;
    if (!force && !records_due && !checkpoint_due)
        return;
    checkpoint_candidates_.erase(checkpoint_candidates_.begin(),
                                 checkpoint_candidates_.begin() + usable);
    std::string records = dispatcher_->TakeRecords();
    auto rows = worker::RunSql(
        "SELECT amebo.settled_position(), "
        "(pg_catalog.pg_current_wal_insert_lsn() - '0/0'::pg_catalog.pg_lsn)::bigint "
        "FROM amebo_internal.record_deliveries($1::jsonb, $2::bigint, $3)",
        {records,
         checkpoint > checkpoint_ || force ? std::optional<std::string>(std::to_string(checkpoint))
                                           : std::nullopt,
         slot_name_});
    dispatcher_->RecordsCommitted();
    next_due_fetch_ = std::min(next_due_fetch_, dispatcher_->TakeEarliestRetry());
    checkpoint_ = std::max(checkpoint_, checkpoint);
    last_record_ = now_;
    if (!catching_up_ && !rows.empty() && checkpoint_candidates_.size() < 10000)
        checkpoint_candidates_.push_back(
            {ToInt(rows[0].at(0)), static_cast<uint64_t>(ToInt(rows[0].at(1)))});
    Confirm();
}

// Without outcomes to write no measurement comes with them: takes one (at most every
// checkpoint interval) once the queue was read further, so the checkpoint keeps moving.
void DeliveryService::MeasureCheckpoint() {
    if (catching_up_ || !checkpoint_candidates_.empty() || read_up_to_ <= measured_read_ ||
        now_ < next_measure_)
        return;
    measured_read_ = read_up_to_;
    next_measure_ = now_ + kCheckpointInterval;
    auto rows = worker::RunSql(
        "SELECT amebo.settled_position(), "
        "(pg_catalog.pg_current_wal_insert_lsn() - '0/0'::pg_catalog.pg_lsn)::bigint");
    checkpoint_candidates_.push_back(
        {ToInt(rows.at(0).at(0)), static_cast<uint64_t>(ToInt(rows[0].at(1)))});
}

// Confirms the queue up to what is handled.
void DeliveryService::Confirm() {
    uint64_t confirmable = dispatcher_->ConfirmableLsn();
    if (!QueueIsOpen() || confirmable <= confirmed_)
        return;
    ConfirmQueue(confirmable);
    confirmed_ = confirmable;
}

// Removes delivery log rows past their retention.
void DeliveryService::Prune() {
    next_prune_ = now_ + kPruneInterval;
    worker::RunSql(
        "SELECT amebo_internal.prune_delivery_log(pg_catalog.make_interval(secs => $1::int))",
        {std::to_string(settings::delivery_log_retention)});
}

void DeliveryService::Step(bool subscriptions_changed) {
    now_ = Now();
    if (!active_) {
        if (!subscriptions_changed && now_ < next_start_check_)
            return;
        if (!Start())
            return;
    } else if (subscriptions_changed || now_ >= next_subscription_load_) {
        LoadSubscriptions();
    }
    if (catching_up_)
        CatchUp();
    else
        ReadNew();
    if (subscriptions_changed || now_ >= next_due_fetch_)
        FetchDue();
    dispatcher_->StoreHeld(now_);
    int64_t unix_seconds = static_cast<int64_t>(time(nullptr));
    for (auto &request : dispatcher_->TakeRequests(now_, unix_seconds)) {
        HttpRequest http;
        http.tag = request.tag;
        http.url = std::move(request.url);
        http.headers = std::move(request.headers);
        http.body = std::move(request.body);
        http.timeout_ms = settings::delivery_timeout;
        http.connect_timeout_ms = settings::connect_timeout;
        http.allow_private = settings::allow_private_targets;
        http_->Submit(std::move(http));
    }
    MeasureCheckpoint();
    Record(false);
    if (now_ >= next_prune_)
        Prune();
}

void DeliveryService::Wait(long timeout_ms) {
    if (!active_)
        return;
    int64_t now = Now();
    auto shorten = [&](int64_t at) {
        timeout_ms = std::min<long>(timeout_ms, std::max<int64_t>(0, (at - now + 999) / 1000));
    };
    int64_t deadline = dispatcher_->NextDeadline(now);
    if (deadline >= 0)
        shorten(now + deadline);
    if (dispatcher_->HasRecords())
        shorten(last_record_ + kRecordInterval);
    if (checkpoint_candidates_.size() > 0)
        shorten(last_record_ + kCheckpointInterval);
    shorten(next_due_fetch_);
    if ((catching_up_ && dispatcher_->Settled()) ||
        (more_to_read_ && dispatcher_->Backlog() < kMaxBacklog))
        timeout_ms = 0;
    WaitOutcome outcome = http_->Wait(timeout_ms);
    int64_t finished_at = Now();
    for (auto &result : outcome.finished)
        dispatcher_->Finish(Response{result.tag, result.status, std::move(result.error),
                                     result.duration_ms, std::move(result.retry_after)},
                            finished_at);
}

std::vector<SubscriptionFigures> DeliveryService::Figures() const {
    return dispatcher_ ? dispatcher_->Figures() : std::vector<SubscriptionFigures>{};
}

} // namespace amebo::delivery
