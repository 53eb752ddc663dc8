// How the worker's passes (projections, retention, the standby horizon) survive a PostgreSQL
// error: it is logged, the pass's transaction rolled back, and the worker goes on.
#pragma once

#include "pg/guard.hpp"

extern "C" {
#include "pgstat.h"
}

namespace amebo::worker {

// Runs pass (returning bool) and returns its result; a PostgreSQL error is logged (LOG), its
// transaction rolled back, and failed_result returned instead.
template <typename Pass> bool RunPassLoggingErrors(Pass pass, bool failed_result = false) {
    ErrorData *failed = nullptr;
    bool result = failed_result;
    try {
        result = pass();
    } catch (const pg::PgError &error) {
        failed = error.data();
    }
    if (failed != nullptr) {
        failed->elevel = LOG;
        ThrowErrorData(failed);
        AbortCurrentTransaction();
        pgstat_report_activity(STATE_IDLE, nullptr);
    }
    return result;
}

} // namespace amebo::worker
