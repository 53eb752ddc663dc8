// The background worker: applies async projections after commit, in position order.
// Loaded only through shared_preload_libraries; serves the database amebo.database_name.
#pragma once

#include "pg/postgres.hpp"

namespace amebo::worker {

// Registers the worker and its shared state (only when preloaded).
void Init();

// Wakes the worker after a commit that appended, if it has async projections to feed.
void WakeForCommittedEvents();

// Wakes the worker now and again when the calling transaction commits.
void Wake();

} // namespace amebo::worker

extern "C" {
// The worker process's entry point (bgw_function_name).
PGDLLEXPORT void amebo_worker_main(Datum argument);
}
