// Inline projections: handlers that run inside the appending transaction, looked up once
// per backend and cached until amebo.projections changes.
#pragma once

#include "pg/postgres.hpp"

namespace amebo::state {

// True when this database has inline projections (appends then keep copies of their rows).
bool HaveInlineProjections();

// Calls every inline projection that wants each event (rows of amebo.events as composite
// datums), in order. A handler error aborts the append.
void DispatchInline(const Datum *events, int count);

// Calls a projection handler (event amebo.events) RETURNS void with one event.
void CallHandler(FmgrInfo *handler, Datum event);

// Registers the cache's invalidation callback.
void InitInlineProjections();

} // namespace amebo::state
