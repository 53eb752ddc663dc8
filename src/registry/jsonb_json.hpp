// jsonb values as nlohmann::json documents, for the JSON Schema validator.
#pragma once

#include <nlohmann/json.hpp>

#include "pg/postgres.hpp"

namespace amebo::registry {

// The deepest nesting a document may have to be converted (and validated).
inline constexpr int kMaxJsonDepth = 256;

// Converts a jsonb value to an nlohmann::json document. Numbers with no fractional part
// become integers (so 1.0 is an "integer", as JSON Schema draft 7 says).
nlohmann::json JsonbToJson(Jsonb *value);

} // namespace amebo::registry
