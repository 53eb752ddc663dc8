// Lets pure C++ loops be cancelled and stop before the stack overflows: the check raises
// PostgreSQL's own errors (57014 on cancel, 54001 when the stack is too deep) as a PgError
// that unwinds the C++ frames back to the border.
#include "pg/interrupts.hpp"

#include "core/interrupts.hpp"
#include "pg/guard.hpp"

namespace amebo::pg {

namespace {

// The installed check: cheap tests first, the border only when something is pending.
void CheckFromCore() {
    if (INTERRUPTS_PENDING_CONDITION() || stack_is_too_deep())
        Call([] {
            CHECK_FOR_INTERRUPTS();
            check_stack_depth();
        });
}

} // namespace

void InitInterruptCheck() {
    SetInterruptCheck(CheckFromCore);
}

} // namespace amebo::pg
