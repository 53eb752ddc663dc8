// The shmem_request and shmem_startup hooks for every registered segment.
#include "pg/shared_memory.hpp"

namespace amebo::pg {

namespace {

constexpr int kMaxSegments = 4;
const SharedSegment *g_segments[kMaxSegments];
int g_segment_count = 0;
shmem_request_hook_type g_prev_request = nullptr;
shmem_startup_hook_type g_prev_startup = nullptr;

// Asks for the space of every segment.
void RequestSegments() {
    if (g_prev_request)
        g_prev_request();
    for (int i = 0; i < g_segment_count; i++)
        RequestAddinShmemSpace(g_segments[i]->size());
}

// Creates or attaches every segment.
void StartupSegments() {
    if (g_prev_startup)
        g_prev_startup();
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    for (int i = 0; i < g_segment_count; i++) {
        bool found = false;
        void *memory = ShmemInitStruct(g_segments[i]->name, g_segments[i]->size(), &found);
        g_segments[i]->attach(memory, !found);
    }
    LWLockRelease(AddinShmemInitLock);
}

} // namespace

void RegisterSharedSegment(const SharedSegment *segment) {
    Assert(g_segment_count < kMaxSegments);
    g_segments[g_segment_count++] = segment;
}

bool InstallSharedMemoryHooks() {
    if (!process_shared_preload_libraries_in_progress)
        return false;
    g_prev_request = shmem_request_hook;
    shmem_request_hook = RequestSegments;
    g_prev_startup = shmem_startup_hook;
    shmem_startup_hook = StartupSegments;
    return true;
}

} // namespace amebo::pg
