// The delivery service's turn and wait (see service.hpp): what runs when. Each turn takes in
// new events (from the queue, or the catch-up in slot.cpp), fetches stored messages that are
// due, sends requests, and writes outcomes and the checkpoint at their intervals; the wait
// ends at the earliest of those deadlines.
#include "delivery/service.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <ctime>

#include "core/error.hpp"
#include "pg/guard.hpp"
#include "settings.hpp"

extern "C" {
#include "storage/latch.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
}

namespace amebo::delivery {

namespace {

// How many units (an event for one subscription) the worker keeps in memory before it stops
// reading the queue.
constexpr size_t kMaxBacklog = 50000;
// Records decoded per read at most; fewer with many subscriptions (ReadBatch).
constexpr size_t kReadBatch = 5000;
// Stored messages fetched at once.
constexpr int kDueBatch = 500;
// Intervals, in microseconds.
constexpr int64_t kSubscriptionReload = 5 * 1000000L;
constexpr int64_t kIdleDueFetch = 5 * 1000000L;
constexpr int64_t kRecordInterval = 20 * 1000L;
constexpr int64_t kCheckpointInterval = 200 * 1000L;
constexpr int64_t kPruneInterval = 60 * 1000000L;
constexpr int64_t kCpuWindow = 1000000L;      // amebo.worker_cpu_limit is kept per second
constexpr int64_t kLongestCpuPause = 100000L; // a pause ends after this at most (interrupts)
// Checkpoint candidates kept at most.
constexpr size_t kMaxCheckpointCandidates = 10000;

// CPU time (user and system) this process has used, in microseconds.
int64_t ProcessCpuMicros() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    auto micros = [](const timeval &t) { return int64_t{t.tv_sec} * 1000000 + t.tv_usec; };
    return micros(usage.ru_utime) + micros(usage.ru_stime);
}

} // namespace

DeliveryService::DeliveryService(ChangeCounter subscription_changes)
    : subscription_changes_(subscription_changes) {}

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

// The dispatcher's limits from the amebo.* settings; requests in flight are capped by the
// sockets the open-file limit leaves (SocketBudget).
DispatchSettings DeliveryService::CurrentSettings() {
    DispatchSettings current;
    current.max_requests =
        std::min(static_cast<size_t>(settings::max_concurrent_requests), SocketBudget());
    current.max_requests_per_subscription = settings::max_requests_per_subscription;
    current.retry_base_ms = settings::retry_base_delay;
    current.retry_max_ms = settings::retry_max_delay;
    current.request_timeout_ms = settings::delivery_timeout;
    return current;
}

// Loads subscriptions with their applications' secrets.
void DeliveryService::LoadSubscriptions() {
    next_subscription_load_ = now_ + kSubscriptionReload;
    loaded_changes_ = subscription_changes_();
    if (ExtensionOid() != extension_)
        pg::Call([] {
            ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                            errmsg("amebo was dropped or created again; webhook delivery "
                                   "starts over")));
        });
    std::vector<Subscription> subscriptions = delivery::LoadSubscriptions();
    DispatchSettings current = CurrentSettings();
    current.shard = delivery::LoadShard();
    dispatcher_->Configure(current);
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
    if (subscription_changes_() != loaded_changes_)
        LoadSubscriptions();
    uint64_t end = ReadQueue(this, ReadBatch(), flushed);
    dispatcher_->ReadUpTo(end);
    more_to_read_ = end < flushed;
    read_up_to_ = end;
    Confirm();
}

// Records to decode next: as many as fit in the backlog when every subscription wants each
// one, so that many subscriptions do not multiply a read into millions of units in memory.
size_t DeliveryService::ReadBatch() const {
    size_t room = kMaxBacklog - std::min(kMaxBacklog, dispatcher_->Backlog());
    size_t per_event = std::max<size_t>(1, dispatcher_->SubscriptionCount());
    return std::clamp<size_t>(room / per_event, 1, kReadBatch);
}

// Loads stored messages that are due, and which ordered subscriptions are blocked.
void DeliveryService::FetchDue() {
    next_due_fetch_ = now_ + kIdleDueFetch;
    if (dispatcher_->StoredQueued() >= kDueBatch / 2)
        return;
    DueMessages messages = LoadDueMessages(dispatcher_->StoredKeysInMemory(), kDueBatch);
    // A full batch means more are due: fetch again as soon as these are on their way.
    if (messages.size() >= static_cast<size_t>(kDueBatch))
        next_due_fetch_ = now_;
    for (auto &[id, message] : messages)
        dispatcher_->AddStored(std::move(message));
    DueSchedule schedule = LoadDueSchedule(dispatcher_->StoredKeysInMemory());
    dispatcher_->SetBlocked(schedule.blocked);
    if (schedule.next_due_at)
        next_due_fetch_ = std::min(next_due_fetch_, std::max(now_, *schedule.next_due_at));
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
    std::optional<CheckpointMeasurement> measured = RecordDeliveries(
        records,
        checkpoint > checkpoint_ || force ? std::optional<int64_t>(checkpoint) : std::nullopt,
        slot_name_);
    dispatcher_->RecordsCommitted();
    next_due_fetch_ = std::min(next_due_fetch_, dispatcher_->TakeEarliestRetry());
    checkpoint_ = std::max(checkpoint_, checkpoint);
    last_record_ = now_;
    if (!catching_up_ && measured && checkpoint_candidates_.size() < kMaxCheckpointCandidates)
        checkpoint_candidates_.push_back(*measured);
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
    checkpoint_candidates_.push_back(delivery::MeasureCheckpoint());
}

// Confirms the queue up to what is handled.
void DeliveryService::Confirm() {
    uint64_t confirmable = dispatcher_->ConfirmableLsn();
    if (!QueueIsOpen() || confirmable <= confirmed_)
        return;
    ConfirmQueue(confirmable);
    confirmed_ = confirmable;
}

// Keeps the worker within amebo.worker_cpu_limit percent of a CPU per second: once it has used
// more than its share of the second so far, it pauses until the share catches up (at most
// kLongestCpuPause at a time, then interrupts are served and the next turn checks again).
void DeliveryService::LimitCpu() {
    int limit = settings::worker_cpu_limit;
    if (limit <= 0)
        return;
    int64_t cpu = ProcessCpuMicros();
    if (now_ - cpu_window_start_ >= kCpuWindow) {
        cpu_window_start_ = now_;
        cpu_at_window_start_ = cpu;
        return;
    }
    int64_t excess = (cpu - cpu_at_window_start_) - (now_ - cpu_window_start_) * limit / 100;
    if (excess <= 0)
        return;
    long pause_ms = static_cast<long>(std::min(excess * 100 / limit, kLongestCpuPause) / 1000);
    pg::Call([pause_ms] {
        (void)WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, std::max(1L, pause_ms),
                        PG_WAIT_EXTENSION);
        CHECK_FOR_INTERRUPTS();
    });
    now_ = Now();
}

// Removes delivery log rows past their retention.
void DeliveryService::Prune() {
    next_prune_ = now_ + kPruneInterval;
    PruneDeliveryLog(settings::delivery_log_retention);
}

// Rebuilds the target rules of new requests when their settings changed (by a reload).
void DeliveryService::RefreshTargetRules() {
    uint64_t version = settings::TargetRulesVersion();
    if (targets_ && version == targets_version_)
        return;
    targets_ = std::make_shared<const TargetRules>(settings::CurrentTargetRules());
    targets_version_ = version;
}

void DeliveryService::Step(bool subscriptions_changed) {
    now_ = Now();
    if (active_)
        LimitCpu();
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
    RefreshTargetRules();
    int64_t unix_seconds = static_cast<int64_t>(time(nullptr));
    for (HttpRequest &request : dispatcher_->TakeRequests(now_, unix_seconds)) {
        request.timeout_ms = settings::delivery_timeout;
        request.connect_timeout_ms = settings::connect_timeout;
        request.targets = targets_;
        http_->Submit(std::move(request));
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
    for (const HttpResponse &response : outcome.finished)
        dispatcher_->Finish(response, finished_at);
}

std::vector<SubscriptionFigures> DeliveryService::Figures() const {
    return dispatcher_ ? dispatcher_->Figures() : std::vector<SubscriptionFigures>{};
}

} // namespace amebo::delivery
