// The async projections pass (see projection_pass.hpp), through the one-transaction SQL runner.
#include "worker/projection_pass.hpp"

#include <string>
#include <vector>

#include "pg/sql_runner.hpp"
#include "settings.hpp"
#include "worker/pass_errors.hpp"
#include "worker/shared_state.hpp"

namespace amebo::worker {

namespace {

// Events applied per projection per transaction.
constexpr int kBatchSize = 1000;

// The async projections to run; none while the extension (1.2 or later) is not installed.
std::vector<std::string> RunnableProjections() {
    std::vector<std::string> names;
    for (const auto &row :
         pg::RunSql("SELECT p.name FROM pg_catalog.pg_extension x, amebo.projections p "
                    "WHERE x.extname = 'amebo' AND p.mode = 'async' AND p.state = 'running' "
                    "AND pg_catalog.to_regclass('amebo.projections') IS NOT NULL ORDER BY p.name"))
        names.push_back(row.at(0));
    return names;
}

// True when amebo.projections exists in this database.
bool ProjectionsInstalled() {
    return pg::RunSqlValue("SELECT pg_catalog.to_regclass('amebo.projections') IS NOT NULL") == "t";
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
        auto applied = pg::RunSqlValue("SELECT amebo_internal.run_projection($1, $2::integer)",
                                       {name, std::to_string(kBatchSize)});
        more = more || applied == std::to_string(kBatchSize);
    }
    RecordRun(!names.empty());
    return more;
}

} // namespace

bool RunProjectionsSafely() {
    return RunPassLoggingErrors(RunProjections);
}

bool ProjectionSchedule::Due(uint64 requests, bool changed) {
    TimestampTz now = GetCurrentTimestamp();
    bool has_async = HasAsyncProjections();
    bool due = more || changed || now >= next_run || (has_async && requests != requests_seen);
    if (due) {
        requests_seen = requests;
        next_run = now + settings::worker_naptime * INT64CONST(1000);
    }
    return due;
}

} // namespace amebo::worker
