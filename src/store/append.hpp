// Appending events to a stream: the short stream lock, the head probe, the idempotency check
// and the insert. The SQL functions that check their arguments, validate payloads and run
// inline projections around this are in api/append.cpp.
#pragma once

#include "pg/postgres.hpp"

namespace amebo::store {

// One event to append, its arguments already checked and its payload validated.
struct NewEvent {
    text *action;
    Jsonb *payload;
    Jsonb *metadata;      // nullptr: stored as {}
    pg_uuid_t *event_id;  // nullptr: generated
    int32 schema_version; // the schema the payload satisfied; 0: none
};

// Asked once, just before the rows go in (after any wait for another appender): true when
// the caller wants the new rows back.
using WantRows = bool (*)();

// What an append did.
struct Appended {
    int64 version; // the stream's version after the append (or after the stored retry)
    Datum *rows;   // the new rows as composite datums, one per event, if wanted; else nullptr
    bool inserted; // false when the batch was a retry of one already stored
};

// Appends a batch to a stream at versions head+1 .. head+count, or recognises a retry of one
// already stored. With has_expected, the stream must be at version expected (AM001).
Appended AppendBatch(text *stream, const NewEvent *events, int count, bool has_expected,
                     int64 expected, WantRows want_rows);

// Takes the stream's short lock until the end of the transaction, once no other open
// transaction has appended to the stream, and returns its head (what the next append would
// continue from). Removals call it so that no append interleaves with them.
int64 LockStreamForRemoval(text *stream);

// A new time-ordered event id (UUID version 7).
pg_uuid_t *NewEventId();

} // namespace amebo::store
