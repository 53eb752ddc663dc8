// What the registry demands of each appended payload, cached per backend.
//
// The cache maps an action name to its registration and compiled schema. Statement triggers
// on amebo.actions and amebo.action_schemas send a relcache invalidation of their table at
// commit; every backend's callback then marks its cache stale, and the next append reloads.
#pragma once

#include "pg/postgres.hpp"

namespace amebo::registry {

// Validates payload against action's current schema, under the amebo.unknown_actions policy;
// returns the schema version used (0: none: unregistered, or registered without a schema).
// Raises AM004 (payload fails the schema) or AM005 (unknown action refused). element is the
// payload's index in an append_events batch, or -1 for append_event.
int32 CheckPayload(text *action, Jsonb *payload, int element);

// Registers the invalidation callback.
void InitActionRules();

} // namespace amebo::registry
