// The background worker: delivers webhooks and applies async projections after commit.
// Loaded only through shared_preload_libraries; started by the launcher (launcher.hpp) in
// the database amebo.database_name.
#pragma once

#include "pg/postgres.hpp"

namespace amebo::worker {

// Registers the worker and its shared state (only when preloaded).
void Init();

// Wakes the worker after a commit that appended, if it has async projections to feed,
// deliveries to make or a settled position to publish.
void WakeForCommittedEvents();

// Wakes the worker now and again when the calling transaction commits.
void Wake();

// How many transactions changed subscriptions so far (counted at their commit).
uint64 SubscriptionChanges();

// Wakes the worker at commit and counts the transaction as a change of subscriptions.
void NoteSubscriptionChange();

// The pid of the worker if it serves database, else 0.
int WorkerPidServing(const char *database);

// Keeps the launcher from starting the worker until the given time.
void HoldWorker(TimestampTz until);

// True while HoldWorker()'s time has not passed.
bool WorkerHeld();

} // namespace amebo::worker

extern "C" {
// The worker process's entry point (bgw_function_name).
PGDLLEXPORT void amebo_worker_main(Datum argument);
}
