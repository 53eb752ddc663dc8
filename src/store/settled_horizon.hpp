// The horizon read_all stops at, on a primary and on a hot standby.
//
// On a primary it comes from the open appends in shared memory (inflight.hpp), computed
// before the snapshot is taken. A standby has none of that memory: its horizon is the row of
// amebo.settled_horizon that the primary's worker publishes (worker/horizon_pass.hpp), read
// with the reader's own snapshot. The worker computes amebo.settled_position() before it
// updates the row, and every event at or below that position had its commit record written
// before (appends withdraw from shared memory only after their commit record is in WAL). So a
// standby snapshot that sees the row's update also sees every event below the published
// horizon that will ever commit: a standby returns only positions settled on the primary.
#pragma once

#include "pg/postgres.hpp"
#include "store/event_table.hpp"

namespace amebo::store {

// A registered snapshot and its horizon: every position below horizon is visible in snapshot
// or never commits.
struct SettledSnapshot {
    Snapshot snapshot;
    int64 horizon;
};

// Takes a snapshot and its horizon (the published one during recovery); the caller
// unregisters the snapshot.
SettledSnapshot TakeSettledSnapshot(const EventCatalog &catalog);

} // namespace amebo::store
