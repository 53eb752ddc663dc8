// How long-running pure C++ code lets its host stop it. Pure C++.
//
// Validating a document against a schema can take exponential time (combinators of
// combinators) and recurse deeply; inside a PostgreSQL backend such a loop must still be
// cancellable (statement_timeout, pg_cancel_backend) and must stop before the stack runs out.
// The PostgreSQL side installs a check that does both and throws to stop the work.
#pragma once

namespace amebo {

// Throws when the work must stop (a cancel request, a stack too deep); returns otherwise.
using InterruptCheck = void (*)();

// Installs the check (once, from _PG_init).
void SetInterruptCheck(InterruptCheck check);

// Runs the installed check, if any: call it from loops and recursions of unbounded length.
void CheckInterrupts();

} // namespace amebo
