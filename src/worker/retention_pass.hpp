// The retention pass: one batch of amebo_internal.run_retention, in a transaction of its own,
// and the schedule that says when it is due.
#pragma once

#include "pg/postgres.hpp"

namespace amebo::worker {

// Runs one retention batch; an error is logged and its transaction rolled back. True when the
// batch was full: run again soon.
bool RunRetentionSafely();

// Decides when the retention pass runs: after a wake-up call (set_retention sends one), while
// batches come back full, and at least every naptime while any policy exists.
struct RetentionSchedule {
    TimestampTz next_run = 0;
    bool more = false;

    // True when a batch is due (woken: amebo.wake_worker was called since the last pass).
    bool Due(bool woken);
};

} // namespace amebo::worker
