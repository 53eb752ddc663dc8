// PostgreSQL's cancellation and stack-depth checks for pure C++ code (core/interrupts.hpp).
#pragma once

namespace amebo::pg {

// Installs the check; called from _PG_init.
void InitInterruptCheck();

} // namespace amebo::pg
