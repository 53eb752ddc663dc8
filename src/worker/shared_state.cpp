// The worker's shared state and the wake API (see shared_state.hpp and worker.hpp): other
// processes set the worker's latch and bump counters under the state's spinlock; the worker
// compares the counters across a pass.
#include "worker/shared_state.hpp"

#include <algorithm>

#include "pg/shared_memory.hpp"
#include "settings.hpp"
#include "worker/worker.hpp"

extern "C" {
#include "access/xact.h"
#include "storage/latch.h"
#include "storage/proc.h"
}

namespace amebo::worker {

namespace {

WorkerShared *g_shared = nullptr;
// Set by Wake(): wake the worker again when this transaction commits, so that it sees what
// the transaction changed (a new or resumed projection).
bool g_wake_at_commit = false;
// Set by NoteSubscriptionChange(): count this transaction's commit as a subscription change.
bool g_subscriptions_changed = false;

// The shared state's size.
Size SharedSize() {
    return sizeof(WorkerShared);
}

// Initializes the shared state once.
void AttachShared(void *memory, bool created) {
    g_shared = static_cast<WorkerShared *>(memory);
    if (created) {
        memset(g_shared, 0, sizeof(WorkerShared));
        SpinLockInit(&g_shared->mutex);
        g_shared->pgprocno = -1;
    }
}

const pg::SharedSegment kSegment = {"amebo worker", SharedSize, AttachShared};

// Counts a wake request and sets the worker's latch if it runs.
void SetWorkerLatch() {
    if (g_shared == nullptr)
        return;
    SpinLockAcquire(&g_shared->mutex);
    int pgprocno = g_shared->pgprocno;
    g_shared->wake_requests++;
    SpinLockRelease(&g_shared->mutex);
    if (pgprocno >= 0)
        SetLatch(&ProcGlobal->allProcs[pgprocno].procLatch);
}

// Wakes the worker at commit if Wake() asked for it in this transaction.
void WakeAtCommit(XactEvent event, void *) {
    if (event == XACT_EVENT_COMMIT && g_wake_at_commit && g_shared != nullptr) {
        SpinLockAcquire(&g_shared->mutex);
        g_shared->wakes++;
        if (g_subscriptions_changed)
            g_shared->changes++;
        SpinLockRelease(&g_shared->mutex);
        SetWorkerLatch();
    }
    if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT) {
        g_wake_at_commit = false;
        g_subscriptions_changed = false;
    }
}

} // namespace

void InitSharedState() {
    pg::RegisterSharedSegment(&kSegment);
    RegisterXactCallback(WakeAtCommit, nullptr);
}

WorkerShared *CopySharedState() {
    if (g_shared == nullptr)
        return nullptr;
    auto *copy = static_cast<WorkerShared *>(palloc(sizeof(WorkerShared)));
    SpinLockAcquire(&g_shared->mutex);
    memcpy(copy, g_shared, sizeof(WorkerShared));
    SpinLockRelease(&g_shared->mutex);
    return copy;
}

uint64 WakeRequests() {
    SpinLockAcquire(&g_shared->mutex);
    uint64 requests = g_shared->wake_requests;
    SpinLockRelease(&g_shared->mutex);
    return requests;
}

uint64 Wakes() {
    SpinLockAcquire(&g_shared->mutex);
    uint64 wakes = g_shared->wakes;
    SpinLockRelease(&g_shared->mutex);
    return wakes;
}

bool HasAsyncProjections() {
    SpinLockAcquire(&g_shared->mutex);
    bool has_async = g_shared->has_async_projections;
    SpinLockRelease(&g_shared->mutex);
    return has_async;
}

void PublishWorker(int pid, int pgprocno) {
    SpinLockAcquire(&g_shared->mutex);
    g_shared->pid = pid;
    g_shared->pgprocno = pgprocno;
    g_shared->started_at = pid ? GetCurrentTimestamp() : 0;
    g_shared->last_run_at = 0;
    strlcpy(g_shared->database, pid ? settings::database_name : "", NAMEDATALEN);
    SpinLockRelease(&g_shared->mutex);
}

void PublishDelivery(bool delivering, const std::vector<delivery::SubscriptionFigures> &figures) {
    int count = std::min<int>(figures.size(), kMaxFigures);
    SpinLockAcquire(&g_shared->mutex);
    g_shared->delivering = delivering;
    g_shared->figure_count = count;
    for (int i = 0; i < count; i++)
        g_shared->figures[i] = {figures[i].subscription_id, figures[i].in_flight,
                                figures[i].queued};
    SpinLockRelease(&g_shared->mutex);
}

void RecordRun(bool has_async_projections) {
    SpinLockAcquire(&g_shared->mutex);
    g_shared->has_async_projections = has_async_projections;
    g_shared->last_run_at = GetCurrentTimestamp();
    SpinLockRelease(&g_shared->mutex);
}

void WakeForCommittedEvents() {
    if (g_shared == nullptr)
        return;
    // One spinlock round per committing append: this runs on every append's commit.
    SpinLockAcquire(&g_shared->mutex);
    g_shared->append_ends++;
    bool asked = g_shared->wake_on_append_end; // the horizon pass waits for this end
    g_shared->wake_on_append_end = false;
    bool wanted = g_shared->has_async_projections || g_shared->delivering;
    if (wanted)
        g_shared->wake_requests++;
    int pgprocno = g_shared->pgprocno;
    SpinLockRelease(&g_shared->mutex);
    if ((asked || wanted) && pgprocno >= 0)
        SetLatch(&ProcGlobal->allProcs[pgprocno].procLatch);
}

uint64 AppendEnds() {
    SpinLockAcquire(&g_shared->mutex);
    uint64 ends = g_shared->append_ends;
    SpinLockRelease(&g_shared->mutex);
    return ends;
}

bool WakeAtNextAppendEnd(uint64 seen) {
    SpinLockAcquire(&g_shared->mutex);
    bool quiet = g_shared->append_ends == seen;
    g_shared->wake_on_append_end = quiet;
    SpinLockRelease(&g_shared->mutex);
    return quiet;
}

void Wake() {
    SetWorkerLatch();
    g_wake_at_commit = true;
}

uint64 SubscriptionChanges() {
    SpinLockAcquire(&g_shared->mutex);
    uint64 changes = g_shared->changes;
    SpinLockRelease(&g_shared->mutex);
    return changes;
}

void NoteSubscriptionChange() {
    Wake();
    g_subscriptions_changed = true;
}

int WorkerPidServing(const char *database) {
    if (g_shared == nullptr)
        return 0;
    SpinLockAcquire(&g_shared->mutex);
    int pid = strcmp(g_shared->database, database) == 0 ? g_shared->pid : 0;
    SpinLockRelease(&g_shared->mutex);
    return pid;
}

void HoldWorker(TimestampTz until) {
    SpinLockAcquire(&g_shared->mutex);
    g_shared->held_until = until;
    SpinLockRelease(&g_shared->mutex);
}

bool WorkerHeld() {
    SpinLockAcquire(&g_shared->mutex);
    TimestampTz until = g_shared->held_until;
    SpinLockRelease(&g_shared->mutex);
    return GetCurrentTimestamp() < until;
}

} // namespace amebo::worker
