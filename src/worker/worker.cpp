// The background worker's life: connect, then loop: deliver webhooks (delivery/service),
// apply async projections, and wait on the latch, curl's sockets and timers together until a
// commit, a reply or the fallback timer wakes it. Never a transaction held while idle or
// across an HTTP call.
#include "worker/worker.hpp"

#include <sys/resource.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "delivery/service.hpp"
#include "pg/guard.hpp"
#include "pg/shared_memory.hpp"
#include "settings.hpp"
#include "worker/launcher.hpp"
#include "worker/sql_runner.hpp"

extern "C" {
#include "access/xact.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
}

namespace amebo::worker {

namespace {

// Events applied per projection per transaction.
constexpr int kBatchSize = 1000;
// Subscriptions whose live figures the worker publishes.
constexpr int kMaxFigures = 1024;

// One subscription's live figures, as the worker publishes them.
struct SharedFigures {
    int64 subscription_id;
    int32 in_flight;
    int32 queued;
};

// What the worker shares with other processes.
struct WorkerShared {
    slock_t mutex;
    int pid;
    int pgprocno;
    bool has_async_projections;
    bool delivering;        // webhook delivery is active: every commit of events wakes it
    uint64 wake_requests;   // counts wake-ups asked for; the worker compares it across a pass
    uint64 wakes;           // counts commits of transactions that called Wake()
    uint64 changes;         // counts committed changes of subscriptions or stored messages
    TimestampTz held_until; // DROP DATABASE keeps the launcher from starting the worker
    int figure_count;
    SharedFigures figures[kMaxFigures];
    TimestampTz started_at;
    TimestampTz last_run_at;
    char database[NAMEDATALEN];
};

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

// Sets the worker's latch if it runs and, unless always, if it has async projections.
void SetWorkerLatch(bool always) {
    if (g_shared == nullptr)
        return;
    SpinLockAcquire(&g_shared->mutex);
    int pgprocno = g_shared->pgprocno;
    bool wanted = always || g_shared->has_async_projections || g_shared->delivering;
    if (wanted)
        g_shared->wake_requests++;
    SpinLockRelease(&g_shared->mutex);
    if (pgprocno >= 0 && wanted)
        SetLatch(&ProcGlobal->allProcs[pgprocno].procLatch);
}

// How many wake-ups have been asked for so far.
uint64 WakeRequests() {
    SpinLockAcquire(&g_shared->mutex);
    uint64 requests = g_shared->wake_requests;
    SpinLockRelease(&g_shared->mutex);
    return requests;
}

// How many commits of transactions that called Wake() there were so far.
uint64 Wakes() {
    SpinLockAcquire(&g_shared->mutex);
    uint64 wakes = g_shared->wakes;
    SpinLockRelease(&g_shared->mutex);
    return wakes;
}

// How many committed changes of subscriptions there were so far.
uint64 Changes() {
    SpinLockAcquire(&g_shared->mutex);
    uint64 changes = g_shared->changes;
    SpinLockRelease(&g_shared->mutex);
    return changes;
}

// Publishes whether delivery is active and its figures per subscription.
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

// A consistent copy of the shared state, in the current memory context.
WorkerShared *CopyShared() {
    auto *copy = static_cast<WorkerShared *>(palloc(sizeof(WorkerShared)));
    SpinLockAcquire(&g_shared->mutex);
    memcpy(copy, g_shared, sizeof(WorkerShared));
    SpinLockRelease(&g_shared->mutex);
    return copy;
}

// Records that this process is the worker, or (pid 0) that it stopped.
void Publish(int pid, int pgprocno) {
    SpinLockAcquire(&g_shared->mutex);
    g_shared->pid = pid;
    g_shared->pgprocno = pgprocno;
    g_shared->started_at = pid ? GetCurrentTimestamp() : 0;
    g_shared->last_run_at = 0;
    strlcpy(g_shared->database, pid ? settings::database_name : "", NAMEDATALEN);
    SpinLockRelease(&g_shared->mutex);
}

// Withdraws the worker's publication when it exits.
void OnWorkerExit(int, Datum) {
    Publish(0, -1);
}

// The async projections to run; none while the extension (1.2 or later) is not installed.
std::vector<std::string> RunnableProjections() {
    std::vector<std::string> names;
    for (const auto &row :
         RunSql("SELECT p.name FROM pg_catalog.pg_extension x, amebo.projections p "
                "WHERE x.extname = 'amebo' AND p.mode = 'async' AND p.state = 'running' "
                "AND pg_catalog.to_regclass('amebo.projections') IS NOT NULL ORDER BY p.name"))
        names.push_back(row.at(0));
    return names;
}

// True when amebo.projections exists in this database.
bool ProjectionsInstalled() {
    return RunSqlValue("SELECT pg_catalog.to_regclass('amebo.projections') IS NOT NULL") == "t";
}

// Records a pass: when, and whether there are async projections to wake it for.
void RecordRun(bool has_async_projections) {
    SpinLockAcquire(&g_shared->mutex);
    g_shared->has_async_projections = has_async_projections;
    g_shared->last_run_at = GetCurrentTimestamp();
    SpinLockRelease(&g_shared->mutex);
}

// Applies one batch to every runnable projection; true when some batch was full.
bool RunProjections() {
    if (!ProjectionsInstalled()) {
        RecordRun(false);
        return false;
    }
    auto names = RunnableProjections();
    bool more = false;
    for (const auto &name : names) {
        auto applied = RunSqlValue("SELECT amebo_internal.run_projection($1, $2::integer)",
                                   {name, std::to_string(kBatchSize)});
        more = more || applied == std::to_string(kBatchSize);
    }
    RecordRun(!names.empty());
    return more;
}

// Wakes the worker at commit if Wake() asked for it in this transaction.
void WakeAtCommit(XactEvent event, void *) {
    if (event == XACT_EVENT_COMMIT && g_wake_at_commit && g_shared != nullptr) {
        SpinLockAcquire(&g_shared->mutex);
        g_shared->wakes++;
        if (g_subscriptions_changed)
            g_shared->changes++;
        SpinLockRelease(&g_shared->mutex);
        SetWorkerLatch(true);
    }
    if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT) {
        g_wake_at_commit = false;
        g_subscriptions_changed = false;
    }
}

// One pass; an error is logged and its transaction rolled back. True for "run again now".
bool RunProjectionsSafely() {
    ErrorData *failed = nullptr;
    bool more = false;
    try {
        more = RunProjections();
    } catch (const pg::PgError &error) {
        failed = error.data();
    }
    if (failed != nullptr) {
        failed->elevel = LOG;
        ThrowErrorData(failed);
        AbortCurrentTransaction();
        pgstat_report_activity(STATE_IDLE, nullptr);
    }
    return more;
}

// Runs one delivery step, or a wait; a PostgreSQL error (the extension dropped meanwhile,
// say) is logged, its transaction rolled back, and delivery starts again from its slot.
template <typename Body> void DeliverSafely(delivery::DeliveryService &deliveries, Body body) {
    ErrorData *failed = nullptr;
    try {
        body();
    } catch (const pg::PgError &error) {
        failed = error.data();
    }
    if (failed != nullptr) {
        failed->elevel = WARNING;
        ThrowErrorData(failed);
        AbortCurrentTransaction();
        pgstat_report_activity(STATE_IDLE, nullptr);
        deliveries.Stop();
    }
}

// Applies amebo.worker_nice. A process may raise its niceness but not lower it, so a lower
// setting ends the worker; the launcher starts it again from the postmaster's niceness.
void ApplyNice() {
    errno = 0;
    int current = getpriority(PRIO_PROCESS, 0);
    if (errno != 0 || current == settings::worker_nice)
        return;
    if (settings::worker_nice < current) {
        ereport(LOG, (errmsg("amebo worker: restarting to lower its niceness to %d",
                             settings::worker_nice)));
        proc_exit(0);
    }
    if (setpriority(PRIO_PROCESS, 0, settings::worker_nice) != 0)
        ereport(WARNING,
                (errmsg("amebo worker: could not set niceness %d: %m", settings::worker_nice)));
}

// Handles pending interrupts between passes. SIGTERM ends the worker (FATAL); a query
// cancel aimed at an idle worker is logged and ignored instead of ending it.
void ServiceInterrupts() {
    ErrorData *cancelled = nullptr;
    try {
        pg::Call([] { CHECK_FOR_INTERRUPTS(); });
    } catch (const pg::PgError &error) {
        cancelled = error.data();
    }
    if (cancelled != nullptr) {
        cancelled->elevel = LOG;
        ThrowErrorData(cancelled);
    }
}

} // namespace

void Init() {
    if (!process_shared_preload_libraries_in_progress)
        return;
    pg::RegisterSharedSegment(&kSegment);
    InitLauncher();
    RegisterXactCallback(WakeAtCommit, nullptr);
}

void WakeForCommittedEvents() {
    SetWorkerLatch(false);
}

void Wake() {
    SetWorkerLatch(true);
    g_wake_at_commit = true;
}

uint64 SubscriptionChanges() {
    return Changes();
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

using namespace amebo;

namespace amebo::worker {
namespace {

// Decides when the async projections pass runs: after a wake-up while there are async
// projections, after a change, while a pass filled a batch, and at least every naptime.
struct ProjectionSchedule {
    uint64 requests_seen = 0;
    TimestampTz next_run = 0;
    bool more = false;

    // True when a pass is due.
    bool Due(uint64 requests, bool changed) {
        TimestampTz now = GetCurrentTimestamp();
        bool has_async;
        SpinLockAcquire(&g_shared->mutex);
        has_async = g_shared->has_async_projections;
        SpinLockRelease(&g_shared->mutex);
        bool due = more || changed || now >= next_run || (has_async && requests != requests_seen);
        if (due) {
            requests_seen = requests;
            next_run = now + settings::worker_naptime * INT64CONST(1000);
        }
        return due;
    }
};

// The loop: projections, deliveries, then a wait that also drives HTTP transfers.
void RunLoop() {
    std::string database = settings::database_name;
    delivery::DeliveryService deliveries;
    ProjectionSchedule projections;
    // The worker's own changes of stored messages do not wake it (see the deliveries trigger).
    pg::Call(
        [] { SetConfigOption("application_name", "amebo worker", PGC_USERSET, PGC_S_SESSION); });
    ApplyNice();
    uint64 changes_seen = Changes();
    uint64 wakes_seen = Wakes();
    bool first = true;
    for (;;) {
        // A pass can swallow a latch set meanwhile (lock waits and pg_sleep in handlers
        // reset the latch), so also compare the count of wake-up requests.
        uint64 requests = WakeRequests();
        uint64 changes = Changes();
        bool changed = first || changes != changes_seen;
        changes_seen = changes;
        uint64 wakes = Wakes();
        bool woken_by_call = first || wakes != wakes_seen;
        wakes_seen = wakes;
        first = false;
        ResetSqlMemory();
        if (projections.Due(requests, woken_by_call))
            projections.more = RunProjectionsSafely();
        DeliverSafely(deliveries, [&] { deliveries.Step(changed); });
        auto figures = deliveries.Figures();
        PublishDelivery(!figures.empty(), figures);
        if (!projections.more && requests == WakeRequests() && wakes == Wakes()) {
            // Delivering, the service waits on the latch and its sockets together.
            if (deliveries.Active()) {
                DeliverSafely(deliveries, [&] { deliveries.Wait(settings::worker_naptime); });
            } else {
                (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                                settings::worker_naptime, PG_WAIT_EXTENSION);
                ResetLatch(MyLatch);
            }
        }
        ServiceInterrupts();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
            if (database != settings::database_name)
                proc_exit(0);
            ApplyNice();
            projections.next_run = 0; // a pass right away, under the new settings
        }
    }
}

} // namespace
} // namespace amebo::worker

// The worker: connect to the database the launcher chose, then loop until told to stop. A
// change of amebo.database_name ends it; the launcher starts it again there.
void amebo_worker_main(Datum database) {
    pg::EntryVoid([&] {
        pqsignal(SIGHUP, SignalHandlerForConfigReload);
        pqsignal(SIGTERM, die);
        BackgroundWorkerUnblockSignals();
        BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(database), InvalidOid, 0);
        worker::Publish(MyProcPid, MyProc->pgprocno);
        before_shmem_exit(worker::OnWorkerExit, 0);
        worker::RunLoop();
    });
}

extern "C" {
PG_FUNCTION_INFO_V1(amebo_worker_status);
PG_FUNCTION_INFO_V1(amebo_wake_worker);
PG_FUNCTION_INFO_V1(amebo_delivery_worker_stats);
PG_FUNCTION_INFO_V1(amebo_note_subscription_change);
}

// amebo.note_subscription_change(): tells the worker, at commit, that subscriptions changed.
extern "C" Datum amebo_note_subscription_change(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        worker::NoteSubscriptionChange();
        PG_RETURN_VOID();
    });
}

// amebo.delivery_worker_stats() -> (subscription_id, in_flight, queued) per subscription the
// worker delivers to; nothing in other databases (a restored copy has the same subscription ids)
extern "C" Datum amebo_delivery_worker_stats(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        InitMaterializedSRF(fcinfo, 0);
        auto *result = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
        if (worker::g_shared == nullptr)
            return (Datum)0;
        worker::WorkerShared *copy = worker::CopyShared();
        const char *here = get_database_name(MyDatabaseId);
        if (here == nullptr || strcmp(copy->database, here) != 0)
            return (Datum)0;
        for (int i = 0; copy->pid != 0 && i < copy->figure_count; i++) {
            const auto &figures = copy->figures[i];
            Datum values[3] = {Int64GetDatum(figures.subscription_id),
                               Int32GetDatum(figures.in_flight), Int32GetDatum(figures.queued)};
            bool nulls[3] = {false, false, false};
            tuplestore_putvalues(result->setResult, result->setDesc, values, nulls);
        }
        return (Datum)0;
    });
}

// amebo.worker_status() -> (pid, database, started_at, last_run_at), one row while it runs
extern "C" Datum amebo_worker_status(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        InitMaterializedSRF(fcinfo, 0);
        auto *result = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
        if (worker::g_shared == nullptr)
            return (Datum)0;
        worker::WorkerShared *copy = worker::CopyShared();
        if (copy->pid == 0)
            return (Datum)0;
        Datum values[4] = {Int32GetDatum(copy->pid), CStringGetTextDatum(copy->database),
                           TimestampTzGetDatum(copy->started_at),
                           TimestampTzGetDatum(copy->last_run_at)};
        bool nulls[4] = {false, false, false, copy->last_run_at == 0};
        tuplestore_putvalues(result->setResult, result->setDesc, values, nulls);
        return (Datum)0;
    });
}

// amebo.wake_worker(): sets the worker's latch.
extern "C" Datum amebo_wake_worker(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        worker::Wake();
        PG_RETURN_VOID();
    });
}
