// The retention pass (see retention_pass.hpp), through the one-transaction SQL runner. Each
// batch is one short transaction of amebo_internal.run_retention: appends never wait for a
// whole pass, and a crash loses at most the batch in progress, which rolls back whole (the
// policies' resume points commit with the removals).
#include "worker/retention_pass.hpp"

#include <algorithm>
#include <string>

#include "pg/sql_runner.hpp"
#include "settings.hpp"
#include "worker/pass_errors.hpp"

namespace amebo::worker {

namespace {

// Events looked at per policy per transaction.
constexpr int kBatchSize = 1000;

// The pause between full batches: a batch takes a few milliseconds of one CPU, so a pass uses
// a small share of it and appends keep theirs (bench/RESULTS.md, "Retention").
constexpr long kPauseAfterFullBatchMs = 100;

// True when amebo.retention_policies exists in this database (extension version 1.5 or later).
bool RetentionInstalled() {
    return pg::RunSqlValue(
               "SELECT pg_catalog.to_regclass('amebo.retention_policies') IS NOT NULL") == "t";
}

// Runs one batch; true when it was full.
bool RunRetention() {
    if (!RetentionInstalled())
        return false;
    // Nobody waits for a removal to be durable (after a crash the pass does it again), so its
    // commit does not wait for the WAL flush that appends' commits wait for.
    auto looked = pg::RunSqlValue("SELECT amebo_internal.run_retention($1::integer) "
                                  "FROM pg_catalog.set_config('synchronous_commit', 'off', true)",
                                  {std::to_string(kBatchSize)});
    return looked == std::to_string(kBatchSize);
}

} // namespace

bool RunRetentionSafely() {
    return RunPassLoggingErrors(RunRetention);
}

bool RetentionSchedule::Due(bool woken) const {
    return woken || GetCurrentTimestamp() >= next_run;
}

void RetentionSchedule::Ran(bool full) {
    long delay_ms = full ? kPauseAfterFullBatchMs : settings::worker_naptime;
    next_run = GetCurrentTimestamp() + delay_ms * INT64CONST(1000);
}

long RetentionSchedule::WaitMilliseconds() const {
    long until_due = static_cast<long>((next_run - GetCurrentTimestamp()) / 1000);
    return std::clamp(until_due, 0L, static_cast<long>(settings::worker_naptime));
}

} // namespace amebo::worker
