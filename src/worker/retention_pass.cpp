// The retention pass (see retention_pass.hpp), through the one-transaction SQL runner. Each
// batch is one short transaction of amebo_internal.run_retention: appends never wait for a
// whole pass, and a crash loses at most the batch in progress, which rolls back whole (the
// policies' resume points commit with the removals).
#include "worker/retention_pass.hpp"

#include <string>

#include "pg/guard.hpp"
#include "pg/sql_runner.hpp"
#include "settings.hpp"

extern "C" {
#include "pgstat.h"
}

namespace amebo::worker {

namespace {

// Events looked at per policy per transaction.
constexpr int kBatchSize = 1000;

// True when amebo.retention_policies exists in this database (extension version 1.5 or later).
bool RetentionInstalled() {
    return pg::RunSqlValue(
               "SELECT pg_catalog.to_regclass('amebo.retention_policies') IS NOT NULL") == "t";
}

// Runs one batch; true when it was full.
bool RunRetention() {
    if (!RetentionInstalled())
        return false;
    auto looked = pg::RunSqlValue("SELECT amebo_internal.run_retention($1::integer)",
                                  {std::to_string(kBatchSize)});
    return looked == std::to_string(kBatchSize);
}

} // namespace

bool RunRetentionSafely() {
    ErrorData *failed = nullptr;
    bool more = false;
    try {
        more = RunRetention();
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

bool RetentionSchedule::Due(bool woken) {
    TimestampTz now = GetCurrentTimestamp();
    bool due = more || woken || now >= next_run;
    if (due)
        next_run = now + settings::worker_naptime * INT64CONST(1000);
    return due;
}

} // namespace amebo::worker
