// Reading and checking the arguments that the store's SQL functions and the append's share.
#pragma once

#include "pg/postgres.hpp"
#include "pg/text_view.hpp"

namespace amebo::store {

using pg::TextView;

// Throws the standard error (22004) for a NULL argument.
[[noreturn]] void NullArgument(const char *name);

// Reads a required stream argument and checks its name (22004, 22023).
text *StreamArgument(FunctionCallInfo fcinfo, int arg);

} // namespace amebo::store
