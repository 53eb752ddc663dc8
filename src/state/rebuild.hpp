// Rebuilding projections, with progress in shared memory.
#pragma once

namespace amebo::state {

// Registers the progress segment and the callback that clears it (when preloaded).
void InitRebuild();

} // namespace amebo::state
