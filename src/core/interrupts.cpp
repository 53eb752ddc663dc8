// The installed interrupt check. Pure C++.
#include "core/interrupts.hpp"

namespace amebo {

namespace {

InterruptCheck g_check = nullptr;

} // namespace

void SetInterruptCheck(InterruptCheck check) {
    g_check = check;
}

void CheckInterrupts() {
    if (g_check != nullptr)
        g_check();
}

} // namespace amebo
