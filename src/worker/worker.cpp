// The background worker's life: connect, then loop: apply async projections
// (projection_pass), deliver webhooks (delivery/service), enforce retention policies
// (retention_pass), publish the settled position for standbys (horizon_pass), and wait on the
// latch, curl's sockets and timers together until a commit, a reply or the fallback timer
// wakes it. Never a transaction held while idle or across an HTTP call.
#include "worker/worker.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "delivery/service.hpp"
#include "pg/guard.hpp"
#include "pg/sql_runner.hpp"
#include "settings.hpp"
#include "store/inflight.hpp"
#include "worker/horizon_pass.hpp"
#include "worker/launcher.hpp"
#include "worker/projection_pass.hpp"
#include "worker/retention_pass.hpp"
#include "worker/shared_state.hpp"

extern "C" {
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
}

namespace amebo::worker {

namespace {

// Withdraws the worker's publication when it exits.
void OnWorkerExit(int, Datum) {
    PublishWorker(0, -1);
}

// The count of committed subscription changes, as the delivery service reads it.
uint64_t CountSubscriptionChanges() {
    return SubscriptionChanges();
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

// The loop: projections, deliveries, retention, then a wait that also drives HTTP transfers.
void RunLoop() {
    std::string database = settings::database_name;
    delivery::DeliveryService deliveries(CountSubscriptionChanges);
    ProjectionSchedule projections;
    RetentionSchedule retention;
    HorizonSchedule horizon;
    // The worker's own changes of stored messages do not wake it (see the deliveries trigger).
    pg::Call(
        [] { SetConfigOption("application_name", "amebo worker", PGC_USERSET, PGC_S_SESSION); });
    ApplyNice();
    uint64 changes_seen = SubscriptionChanges();
    uint64 wakes_seen = Wakes();
    bool first = true;
    for (;;) {
        // A pass can swallow a latch set meanwhile (lock waits and pg_sleep in handlers
        // reset the latch), so also compare the count of wake-up requests.
        uint64 requests = WakeRequests();
        uint64 changes = SubscriptionChanges();
        bool changed = first || changes != changes_seen;
        changes_seen = changes;
        uint64 wakes = Wakes();
        bool woken_by_call = first || wakes != wakes_seen;
        wakes_seen = wakes;
        first = false;
        pg::ResetSqlMemory();
        if (projections.Due(requests, woken_by_call))
            projections.more = RunProjectionsSafely();
        DeliverSafely(deliveries, [&] { deliveries.Step(changed); });
        auto figures = deliveries.Figures();
        PublishDelivery(!figures.empty(), figures);
        if (retention.Due(woken_by_call))
            retention.Ran(RunRetentionSafely());
        horizon.RunIfDue();
        if (!projections.more && requests == WakeRequests() && wakes == Wakes()) {
            // Until the next retention batch (100 ms while a pass has work left) or the next
            // publication of the settled position at most.
            int wait_ms = static_cast<int>(
                std::min(retention.WaitMilliseconds(), horizon.WaitMilliseconds()));
            // Delivering, the service waits on the latch and its sockets together.
            if (deliveries.Active()) {
                DeliverSafely(deliveries, [&] { deliveries.Wait(wait_ms); });
            } else {
                (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, wait_ms,
                                PG_WAIT_EXTENSION);
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
            retention.next_run = 0;
            horizon.next_run = 0;
        }
    }
}

} // namespace

void Init() {
    if (!process_shared_preload_libraries_in_progress)
        return;
    InitSharedState();
    InitLauncher();
    store::inflight::SetCommitListener(WakeForCommittedEvents);
}

} // namespace amebo::worker

using namespace amebo;

// The worker: connect to the database the launcher chose, then loop until told to stop. A
// change of amebo.database_name ends it; the launcher starts it again there.
void amebo_worker_main(Datum database) {
    pg::EntryVoid([&] {
        pqsignal(SIGHUP, SignalHandlerForConfigReload);
        pqsignal(SIGTERM, die);
        BackgroundWorkerUnblockSignals();
        BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(database), InvalidOid, 0);
        worker::PublishWorker(MyProcPid, MyProc->pgprocno);
        before_shmem_exit(worker::OnWorkerExit, 0);
        worker::RunLoop();
    });
}
