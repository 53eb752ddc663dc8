// The retention pass: one batch of amebo_internal.run_retention, in a transaction of its own,
// and the schedule that says when it is due.
#pragma once

#include "pg/postgres.hpp"

namespace amebo::worker {

// Runs one retention batch; an error is logged and its transaction rolled back. True when the
// batch was full: there is more to do.
bool RunRetentionSafely();

// Decides when the retention pass runs: after a wake-up call (set_retention sends one), 100 ms
// after a full batch (so that a long pass leaves the CPUs mostly to appends, as
// vacuum_cost_delay does for VACUUM), and every naptime otherwise.
struct RetentionSchedule {
    TimestampTz next_run = 0;

    // True when a batch is due (woken: amebo.wake_worker was called since the last pass).
    bool Due(bool woken) const;

    // Schedules the next batch after one that ran (full: it looked at a whole batch).
    void Ran(bool full);

    // Milliseconds until the next batch is due, at most naptime; the worker's wait uses it.
    long WaitMilliseconds() const;
};

} // namespace amebo::worker
