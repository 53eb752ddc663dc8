// The async projections pass: one batch applied to every running async projection, each in a
// transaction of its own, and the schedule that says when a pass is due.
#pragma once

#include "pg/postgres.hpp"

namespace amebo::worker {

// Applies one batch to every runnable async projection; an error is logged and its
// transaction rolled back. True when some batch was full: run again now.
bool RunProjectionsSafely();

// Decides when the async projections pass runs: after a wake-up while there are async
// projections, after a change, while a pass filled a batch, and at least every naptime.
struct ProjectionSchedule {
    uint64 requests_seen = 0;
    TimestampTz next_run = 0;
    bool more = false;

    // True when a pass is due (requests: wake-ups asked for so far; changed: a transaction
    // that called Wake() committed since the last pass).
    bool Due(uint64 requests, bool changed);
};

} // namespace amebo::worker
