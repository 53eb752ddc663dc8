// What the worker shares with other processes (who it is, its live figures, the counters the
// wake API bumps) and the wake API's commit hook. Used inside src/worker only; other modules
// call worker.hpp.
#pragma once

#include <vector>

#include "core/delivery/dispatcher.hpp"
#include "pg/postgres.hpp"

extern "C" {
#include "storage/spin.h"
}

namespace amebo::worker {

// Subscriptions whose live figures the worker publishes.
constexpr int kMaxFigures = 1024;

// One subscription's live figures, as the worker publishes them.
struct SharedFigures {
    int64 subscription_id;
    int32 in_flight;
    int32 queued;
};

// What the worker shares with other processes.
struct WorkerShared {
    slock_t mutex;
    int pid;
    int pgprocno;
    bool has_async_projections;
    bool delivering;        // webhook delivery is active: every commit of events wakes it
    uint64 wake_requests;   // counts wake-ups asked for; the worker compares it across a pass
    uint64 wakes;           // counts commits of transactions that called Wake()
    uint64 changes;         // counts committed changes of subscriptions or stored messages
    TimestampTz held_until; // DROP DATABASE keeps the launcher from starting the worker
    int figure_count;
    SharedFigures figures[kMaxFigures];
    TimestampTz started_at;
    TimestampTz last_run_at;
    char database[NAMEDATALEN];
    uint64 append_ends;      // counts commits and aborts of transactions that appended
    bool wake_on_append_end; // the worker sleeps until the next one (horizon publishing)
};

// Asks for the shared state and the commit hook of the wake API (from Init()).
void InitSharedState();

// A consistent copy of the shared state in the current memory context, or nullptr when this
// process has none (amebo not preloaded).
WorkerShared *CopySharedState();

// How many wake-ups have been asked for so far.
uint64 WakeRequests();

// How many commits of transactions that called Wake() there were so far.
uint64 Wakes();

// How many transactions that appended have ended (committed or aborted) so far.
uint64 AppendEnds();

// Asks for a wake-up at the next end of a transaction that appended, unless one ended since
// seen (AppendEnds() then differs): false in that case, as there is no need to sleep.
bool WakeAtNextAppendEnd(uint64 seen);

// True when the last pass found async projections to run.
bool HasAsyncProjections();

// Records that this process is the worker, or (pid 0) that it stopped.
void PublishWorker(int pid, int pgprocno);

// Publishes whether delivery is active and its figures per subscription.
void PublishDelivery(bool delivering, const std::vector<delivery::SubscriptionFigures> &figures);

// Records a projections pass: when, and whether there are async projections to wake it for.
void RecordRun(bool has_async_projections);

} // namespace amebo::worker
