// Commit-order safety for read_all: which positions may still commit.
//
// Positions come from a sequence, so a transaction can take position 10 and commit after
// another transaction committed position 11. A reader that saw 11 and pages on from it would
// skip 10 forever. Each backend therefore publishes, in shared memory, the first position its
// open transaction took; the publication and the sequence call happen under the backend's
// own slot lock, so a reader never misses an allocation in progress. A reader computes the
// horizon H = min(last value of the sequence + 1, every published first position), then takes
// its snapshot: every position below H is either visible in that snapshot or never commits.
// Only appending transactions publish, so sessions that do not append never hold readers back.
#pragma once

#include "pg/postgres.hpp"

namespace amebo::store::inflight {

// Registers the shared memory segment (only when loaded by shared_preload_libraries) and the
// transaction callback that withdraws a backend's publication at commit or abort (and then
// calls the commit listener).
void Init();

// Called after a transaction that appended commits or aborts, once its publication is
// withdrawn: the horizon may have moved, so committed events may have become readable.
using CommitListener = void (*)();

// Installs the commit listener (the background worker's wake-up, from its init).
void SetCommitListener(CommitListener listener);

// True when the shared memory exists, i.e. amebo was in shared_preload_libraries.
bool Available();

// Takes the next position from the sequence, publishing it if it is the transaction's first.
int64 NextPosition(Oid position_sequence);

// Every position below the returned one is settled (committed and visible to a snapshot taken
// afterwards, or never to be committed). Errors if shared memory is unavailable.
int64 SafeHorizon(Oid position_sequence);

// One open appending transaction, as listed by amebo.inflight_appends().
struct OpenAppend {
    int pid;
    int64 first_position;
};

// Copies the open appends of this database into out (at most max); returns how many.
int ListOpenAppends(OpenAppend *out, int max);

// The number of slots, an upper bound for ListOpenAppends().
int SlotCount();

} // namespace amebo::store::inflight
