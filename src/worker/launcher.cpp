// The launcher: a background worker connected to no database that starts the amebo worker
// in the database named by amebo.database_name once that database exists, starts it again
// when it exits, and moves it when the setting changes. A utility hook lets DROP DATABASE of
// the worker's database stop the worker first (and keeps the launcher from restarting it),
// so that the drop is not refused because the worker is connected or holds the slot.
#include "worker/launcher.hpp"

#include <csignal>

#include "pg/guard.hpp"
#include "settings.hpp"
#include "worker/worker.hpp"

extern "C" {
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "pgstat.h"
#include "nodes/parsenodes.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/utility.h"
}

namespace amebo::worker {

namespace {

// How long DROP DATABASE keeps the worker away, and how long it waits for it to exit.
constexpr int64 kDropHoldMicroseconds = 10 * INT64CONST(1000000);
constexpr int kDropWaitMilliseconds = 10000;
// The launcher's pause after the worker exited, so that a failing worker is not restarted
// in a tight loop.
constexpr long kRestartDelayMilliseconds = 1000;

ProcessUtility_hook_type g_previous_utility = nullptr;

// The OID of database name, or InvalidOid (PostgreSQL side). Without a database of its
// own the launcher can only scan the shared catalog pg_database, not use its indexes.
Oid LookUpDatabase(const char *name) {
    Oid database = InvalidOid;
    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    Relation catalog = table_open(DatabaseRelationId, AccessShareLock);
    TableScanDesc scan = table_beginscan_catalog(catalog, 0, nullptr);
    for (HeapTuple tuple; (tuple = heap_getnext(scan, ForwardScanDirection)) != nullptr;) {
        auto *row = reinterpret_cast<Form_pg_database>(GETSTRUCT(tuple));
        if (strcmp(NameStr(row->datname), name) == 0 && row->datconnlimit != -2)
            database = row->oid;
    }
    table_endscan(scan);
    table_close(catalog, AccessShareLock);
    PopActiveSnapshot();
    CommitTransactionCommand();
    return database;
}

// Starts the worker for database; the handle, or nullptr when no slot was free.
BackgroundWorkerHandle *StartWorker(Oid database) {
    BackgroundWorker worker;
    memset(&worker, 0, sizeof(worker));
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = BGW_NEVER_RESTART;
    strlcpy(worker.bgw_library_name, "amebo", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "amebo_worker_main", BGW_MAXLEN);
    strlcpy(worker.bgw_name, "amebo worker", BGW_MAXLEN);
    strlcpy(worker.bgw_type, "amebo worker", BGW_MAXLEN);
    worker.bgw_main_arg = ObjectIdGetDatum(database);
    worker.bgw_notify_pid = MyProcPid;
    BackgroundWorkerHandle *handle = nullptr;
    if (!RegisterDynamicBackgroundWorker(&worker, &handle))
        ereport(WARNING, (errmsg("amebo: no background worker slot free for the amebo worker"),
                          errhint("Raise max_worker_processes.")));
    return handle;
}

// True while the worker behind handle has not stopped.
bool WorkerAlive(BackgroundWorkerHandle *handle) {
    pid_t pid;
    return handle != nullptr && GetBackgroundWorkerPid(handle, &pid) != BGWH_STOPPED;
}

// Sleeps on the latch for up to timeout_ms; handles a reload.
void Nap(long timeout_ms) {
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout_ms,
                    PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending) {
        ConfigReloadPending = false;
        ProcessConfigFile(PGC_SIGHUP);
    }
}

// The launcher's loop (PostgreSQL side: no C++ objects).
void RunLauncher() {
    BackgroundWorkerHandle *handle = nullptr;
    char serving[NAMEDATALEN] = "";
    for (;;) {
        bool alive = WorkerAlive(handle);
        if (alive && strcmp(serving, settings::database_name) != 0) {
            TerminateBackgroundWorker(handle); // moved: stop it, start it there next
            (void)WaitForBackgroundWorkerShutdown(handle);
            alive = false;
        }
        if (!alive && handle != nullptr) {
            pfree(handle);
            handle = nullptr;
            Nap(kRestartDelayMilliseconds);
            continue;
        }
        if (!alive && !WorkerHeld()) {
            Oid database = LookUpDatabase(settings::database_name);
            if (OidIsValid(database)) {
                handle = StartWorker(database);
                strlcpy(serving, settings::database_name, NAMEDATALEN);
            }
        }
        Nap(settings::worker_naptime);
    }
}

// DROP DATABASE of the worker's database: stops the worker first, and keeps it away.
void StopWorkerBeforeDrop(const DropdbStmt *stmt) {
    int pid = WorkerPidServing(stmt->dbname);
    if (pid == 0)
        return;
    HoldWorker(GetCurrentTimestamp() + kDropHoldMicroseconds);
    kill(pid, SIGTERM);
    for (int waited = 0; waited < kDropWaitMilliseconds && WorkerPidServing(stmt->dbname) != 0;
         waited += 10) {
        CHECK_FOR_INTERRUPTS();
        pg_usleep(10000L);
    }
}

// The utility hook: runs StopWorkerBeforeDrop, then the statement.
void Utility(PlannedStmt *statement, const char *query, bool read_only,
             ProcessUtilityContext context, ParamListInfo params, QueryEnvironment *environment,
             DestReceiver *destination, QueryCompletion *completion) {
    if (IsA(statement->utilityStmt, DropdbStmt))
        pg::EntryVoid([&] { StopWorkerBeforeDrop(castNode(DropdbStmt, statement->utilityStmt)); });
    if (g_previous_utility != nullptr)
        g_previous_utility(statement, query, read_only, context, params, environment, destination,
                           completion);
    else
        standard_ProcessUtility(statement, query, read_only, context, params, environment,
                                destination, completion);
}

} // namespace

void InitLauncher() {
    BackgroundWorker launcher;
    memset(&launcher, 0, sizeof(launcher));
    launcher.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    launcher.bgw_start_time = BgWorkerStart_RecoveryFinished;
    launcher.bgw_restart_time = 5;
    strlcpy(launcher.bgw_library_name, "amebo", BGW_MAXLEN);
    strlcpy(launcher.bgw_function_name, "amebo_launcher_main", BGW_MAXLEN);
    strlcpy(launcher.bgw_name, "amebo launcher", BGW_MAXLEN);
    strlcpy(launcher.bgw_type, "amebo launcher", BGW_MAXLEN);
    RegisterBackgroundWorker(&launcher);
    g_previous_utility = ProcessUtility_hook;
    ProcessUtility_hook = Utility;
}

} // namespace amebo::worker

// The launcher process: connected to no database (it reads only the shared catalog).
void amebo_launcher_main(Datum) {
    amebo::pg::EntryVoid([] {
        pqsignal(SIGHUP, SignalHandlerForConfigReload);
        pqsignal(SIGTERM, die);
        BackgroundWorkerUnblockSignals();
        BackgroundWorkerInitializeConnection(nullptr, nullptr, 0);
        amebo::worker::RunLauncher();
    });
}
