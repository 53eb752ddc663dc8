// Checking a jsonb value against a schema's fast form, walking only where the schema looks.
#pragma once

#include "core/schema/fast_schema.hpp"
#include "pg/postgres.hpp"

namespace amebo::registry {

// True when document satisfies schema. Frames here own no C++ objects, so PostgreSQL's
// jsonb accessors are called directly.
bool FastHolds(const schema::FastSchema &schema, Jsonb *document);

} // namespace amebo::registry
