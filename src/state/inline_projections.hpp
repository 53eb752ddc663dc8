// Inline projections: handlers that run inside the appending transaction, looked up once
// per backend and cached until amebo.projections changes.
#pragma once

#include "pg/postgres.hpp"
#include "store/append.hpp"

namespace amebo::state {

// True when this database has inline projections (appends then keep copies of their rows).
// Brings the cache up to date: called once per append, just before its rows go in.
bool HaveInlineProjections();

// Calls every inline projection that wants each event (the append's input, and its rows of
// amebo.events as composite datums), in order, with the projections HaveInlineProjections
// found. A handler error aborts the append.
void DispatchInline(const store::NewEvent *events, const Datum *rows, int count);

// Calls a projection handler (event amebo.events) RETURNS void with one event.
void CallHandler(FmgrInfo *handler, Datum event);

// Registers the cache's invalidation callback.
void InitInlineProjections();

} // namespace amebo::state
