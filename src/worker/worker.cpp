// The background worker's life: connect, then loop: apply async projections, sleep on the
// latch until a commit or the fallback timer wakes it. Never a transaction held while idle.
#include "worker/worker.hpp"

#include <string>
#include <vector>

#include "pg/guard.hpp"
#include "pg/shared_memory.hpp"
#include "settings.hpp"

extern "C" {
#include "access/xact.h"
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

// What the worker shares with other processes.
struct WorkerShared {
    slock_t mutex;
    int pid;
    int pgprocno;
    bool has_async_projections;
    uint64 wake_requests; // counts wake-ups asked for; the worker compares it across a pass
    TimestampTz started_at;
    TimestampTz last_run_at;
    char database[NAMEDATALEN];
};

WorkerShared *g_shared = nullptr;
// Set by Wake(): wake the worker again when this transaction commits, so that it sees what
// the transaction changed (a new or resumed projection).
bool g_wake_at_commit = false;

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
    bool wanted = always || g_shared->has_async_projections;
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

// Memory for one pass's query results, reset at the start of each pass.
MemoryContext g_pass_context = nullptr;

// Column 1 of every row of a query, as text.
struct QueryRows {
    int count;
    char **values;
};

// Runs one SQL statement in its own transaction (PostgreSQL side: no C++ objects; the
// results are copied into g_pass_context, which outlives the transaction).
QueryRows RunQuery(const char *sql, int nargs, Oid *argtypes, Datum *args) {
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    SPI_connect();
    PushActiveSnapshot(GetTransactionSnapshot());
    pgstat_report_activity(STATE_RUNNING, sql);
    SPI_execute_with_args(sql, nargs, argtypes, args, nullptr, false, 0);
    QueryRows rows{static_cast<int>(SPI_processed),
                   static_cast<char **>(
                       MemoryContextAlloc(g_pass_context, sizeof(char *) * (SPI_processed + 1)))};
    for (uint64 i = 0; i < SPI_processed; i++) {
        char *value = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
        rows.values[i] = MemoryContextStrdup(g_pass_context, value ? value : "");
    }
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    pgstat_report_activity(STATE_IDLE, nullptr);
    return rows;
}

// RunQuery through the border: its rows as strings, or a PgError.
std::vector<std::string> RunInTransaction(const char *sql, int nargs, Oid *argtypes, Datum *args) {
    // A commit leaves TopMemoryContext current; an error is copied into the current context.
    MemoryContextSwitchTo(g_pass_context);
    QueryRows rows = pg::Call([&] { return RunQuery(sql, nargs, argtypes, args); });
    return std::vector<std::string>(rows.values, rows.values + rows.count);
}

// The async projections to run; none while the extension (1.2 or later) is not installed.
std::vector<std::string> RunnableProjections() {
    return RunInTransaction(
        "SELECT p.name FROM pg_catalog.pg_extension x, amebo.projections p "
        "WHERE x.extname = 'amebo' AND p.mode = 'async' AND p.state = 'running' "
        "AND pg_catalog.to_regclass('amebo.projections') IS NOT NULL ORDER BY p.name",
        0, nullptr, nullptr);
}

// True when amebo.projections exists in this database.
bool ProjectionsInstalled() {
    auto rows = RunInTransaction("SELECT pg_catalog.to_regclass('amebo.projections') IS NOT NULL",
                                 0, nullptr, nullptr);
    return !rows.empty() && rows[0] == "t";
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
        Oid argtypes[2] = {TEXTOID, INT4OID};
        const char *name_text = name.c_str();
        MemoryContextSwitchTo(g_pass_context);
        Datum args[2] = {pg::Call([&] { return CStringGetTextDatum(name_text); }),
                         Int32GetDatum(kBatchSize)};
        auto applied = RunInTransaction("SELECT amebo.run_projection($1, $2)", 2, argtypes, args);
        more = more || (!applied.empty() && applied[0] == std::to_string(kBatchSize));
    }
    RecordRun(!names.empty());
    return more;
}

// Wakes the worker at commit if Wake() asked for it in this transaction.
void WakeAtCommit(XactEvent event, void *) {
    if (event == XACT_EVENT_COMMIT && g_wake_at_commit)
        SetWorkerLatch(true);
    if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
        g_wake_at_commit = false;
}

// One pass; an error is logged and its transaction rolled back. True for "run again now".
bool RunProjectionsSafely() {
    ErrorData *failed = nullptr;
    bool more = false;
    if (g_pass_context == nullptr)
        g_pass_context =
            AllocSetContextCreate(TopMemoryContext, "amebo worker pass", ALLOCSET_DEFAULT_SIZES);
    MemoryContextSwitchTo(TopMemoryContext);
    MemoryContextReset(g_pass_context);
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
    BackgroundWorker worker;
    memset(&worker, 0, sizeof(worker));
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = 5;
    strlcpy(worker.bgw_library_name, "amebo", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "amebo_worker_main", BGW_MAXLEN);
    strlcpy(worker.bgw_name, "amebo worker", BGW_MAXLEN);
    strlcpy(worker.bgw_type, "amebo worker", BGW_MAXLEN);
    RegisterBackgroundWorker(&worker);
    RegisterXactCallback(WakeAtCommit, nullptr);
}

void WakeForCommittedEvents() {
    SetWorkerLatch(false);
}

void Wake() {
    SetWorkerLatch(true);
    g_wake_at_commit = true;
}

} // namespace amebo::worker

using namespace amebo;

// The worker: connect to amebo.database_name, then loop until told to stop. A change of
// amebo.database_name exits with code 1 so that the postmaster starts it again there.
void amebo_worker_main(Datum) {
    pg::EntryVoid([] {
        pqsignal(SIGHUP, SignalHandlerForConfigReload);
        pqsignal(SIGTERM, die);
        BackgroundWorkerUnblockSignals();
        BackgroundWorkerInitializeConnection(settings::database_name, nullptr, 0);
        std::string database = settings::database_name;
        worker::Publish(MyProcPid, MyProc->pgprocno);
        before_shmem_exit(worker::OnWorkerExit, 0);
        for (;;) {
            // A pass can swallow a latch set meanwhile (lock waits and pg_sleep in handlers
            // reset the latch), so also compare the count of wake-up requests.
            uint64 requests = worker::WakeRequests();
            bool more = worker::RunProjectionsSafely();
            if (!more && requests == worker::WakeRequests()) {
                (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                                settings::worker_naptime, PG_WAIT_EXTENSION);
                ResetLatch(MyLatch);
            }
            worker::ServiceInterrupts();
            if (ConfigReloadPending) {
                ConfigReloadPending = false;
                ProcessConfigFile(PGC_SIGHUP);
                if (database != settings::database_name)
                    proc_exit(1);
            }
        }
    });
}

extern "C" {
PG_FUNCTION_INFO_V1(amebo_worker_status);
PG_FUNCTION_INFO_V1(amebo_wake_worker);
}

// amebo.worker_status() -> (pid, database, started_at, last_run_at), one row while it runs
extern "C" Datum amebo_worker_status(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        InitMaterializedSRF(fcinfo, 0);
        auto *result = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
        if (worker::g_shared == nullptr)
            return (Datum)0;
        worker::WorkerShared copy;
        SpinLockAcquire(&worker::g_shared->mutex);
        memcpy(&copy, worker::g_shared, sizeof(copy));
        SpinLockRelease(&worker::g_shared->mutex);
        if (copy.pid == 0)
            return (Datum)0;
        Datum values[4] = {Int32GetDatum(copy.pid), CStringGetTextDatum(copy.database),
                           TimestampTzGetDatum(copy.started_at),
                           TimestampTzGetDatum(copy.last_run_at)};
        bool nulls[4] = {false, false, false, copy.last_run_at == 0};
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
