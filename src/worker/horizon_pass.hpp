// Publishing the settled position for hot standbys: after transactions that appended ended,
// and at most every amebo.standby_horizon_interval, one short transaction writes
// amebo.settled_position() into amebo.settled_horizon if it advanced. Nothing is written while
// nothing is appended. Why a standby may trust the row: store/settled_horizon.hpp.
#pragma once

#include "pg/postgres.hpp"

namespace amebo::worker {

// Decides when the settled position is published, and publishes it.
struct HorizonSchedule {
    // AppendEnds() at the last publication; none yet: publish at the first pass.
    uint64 published_ends = PG_UINT64_MAX;
    TimestampTz next_run = 0;

    // Publishes the settled position if appends ended since the last publication and the
    // interval has passed; an error is logged and its transaction rolled back.
    void RunIfDue();

    // Milliseconds until a publication is due, at most naptime. While nothing is pending it
    // asks for a wake-up at the next end of an append and returns naptime.
    long WaitMilliseconds() const;
};

} // namespace amebo::worker
