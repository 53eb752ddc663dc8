// PostgreSQL text values seen as C++ string views (no copy).
#pragma once

#include <string_view>

#include "pg/postgres.hpp"

namespace amebo::pg {

// A text value's bytes; valid as long as the value is.
inline std::string_view TextView(const text *value) {
    return {VARDATA_ANY(value), static_cast<size_t>(VARSIZE_ANY_EXHDR(value))};
}

} // namespace amebo::pg
