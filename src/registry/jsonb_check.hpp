// Checking a jsonb value against a schema's fast form, walking only where the schema looks.
#pragma once

#include "core/schema/fast_schema.hpp"
#include "pg/postgres.hpp"

namespace amebo::registry {

// True when document satisfies schema. Frames here own no C++ objects, so PostgreSQL's
// jsonb accessors are called directly.
bool FastHolds(const schema::FastSchema &schema, Jsonb *document);

// The size in bytes of the longest string (value or key) anywhere in document.
size_t LongestString(Jsonb *document);

} // namespace amebo::registry
