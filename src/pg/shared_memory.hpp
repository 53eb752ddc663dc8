// One place that asks PostgreSQL for amebo's shared memory: modules register their segments
// from _PG_init; the hooks size and create them all. Only when loaded by
// shared_preload_libraries.
#pragma once

#include "pg/postgres.hpp"

namespace amebo::pg {

// A named segment of shared memory and how to set it up.
struct SharedSegment {
    const char *name;
    Size (*size)();
    // Called once per process with the segment; created is true in the process that made it.
    void (*attach)(void *memory, bool created);
};

// Registers a segment; call from _PG_init before the hooks run.
void RegisterSharedSegment(const SharedSegment *segment);

// Installs the hooks if amebo is being loaded by shared_preload_libraries; false otherwise.
bool InstallSharedMemoryHooks();

} // namespace amebo::pg
