// The amebo.events table as the store sees it: its columns, its indexes, the append path's
// per-transaction handle, and the index probes that appends and reads share.
#pragma once

#include "pg/postgres.hpp"

namespace amebo::store {

// Attribute numbers of amebo.events; sql/amebo--1.0.sql creates the columns in this order.
enum EventColumn : AttrNumber {
    kPosition = 1,
    kEventId,
    kStream,
    kVersion,
    kAction,
    kPayload,
    kMetadata,
    kRecordedAt,
    kSchemaVersion, // since 1.1: the schema version the payload was validated against
};
inline constexpr int kEventColumnCount = 9;

// Attribute numbers of amebo.removed_streams (stream, version, tombstone, removed_at).
enum RemovedStreamColumn : AttrNumber { kRemovedStream = 1, kRemovedVersion, kRemovedTombstone };

// The extension's objects, found by name in schema amebo.
struct EventCatalog {
    Oid events;
    Oid position_index;       // events_pkey (position): read_all
    Oid stream_version_index; // events_stream_version_key (stream, version): read_stream, heads
    Oid event_id_index;       // events_event_id_key (event_id): idempotent retries
    Oid position_sequence;
    Oid removed_streams;       // amebo.removed_streams (since 1.5; InvalidOid before)
    Oid removed_streams_index; // removed_streams_pkey (stream)
};

// Looks the catalog up; errors if the extension is not installed in this database.
EventCatalog LookupEventCatalog();

// What the append path keeps open for the rest of the transaction.
struct AppendTarget {
    EventCatalog catalog;
    Relation heap;
    Relation stream_version_index;
    Relation event_id_index;
    ResultRelInfo *result_rel;
    EState *estate;
    TupleTableSlot *insert_slot;
    TupleTableSlot *probe_slot;
    Datum *values;
    bool *nulls;
    bool has_schema_version; // false while the table is still at extension version 1.0
    // amebo.removed_streams, opened by OpenRemovedStreams at the first append to a stream
    // without stored events (nullptr until then)
    Relation removed_streams;
    Relation removed_streams_index;
    TupleTableSlot *removed_slot;
};

// Returns the transaction's append handle, opening it on first use.
AppendTarget *OpenAppendTarget();

// Opens amebo.removed_streams into the append handle, once per transaction; false when the
// table does not exist (the extension is older than 1.5).
bool OpenRemovedStreams(AppendTarget *target);

// Inserts one event row (target->values/nulls hold it) with all its index entries; with
// copy non-null, also returns the row as a composite datum in the caller's memory context.
void InsertEvent(AppendTarget *target, Datum *copy);

// Installs the callbacks that close the append handle at transaction end.
void InitEventTable();

// The outcome of an index probe.
struct Probe {
    bool found;
    TransactionId in_progress; // with a dirty snapshot: the other transaction that wrote it
};

// Finds a stream's newest event (highest version) visible to snapshot, into slot.
Probe ProbeStreamHead(Relation heap, Relation index, Snapshot snapshot, text *stream,
                      TupleTableSlot *slot);

// A stream whose events were all removed at some time: the version its next append continues
// from, and whether it was deleted for good (a tombstone).
struct StreamFloor {
    bool found;
    int64 version;
    bool tombstone;
};

// Reads a stream's row of amebo.removed_streams visible to snapshot (found is false when it
// has none, or when the table does not exist yet). Costs one page count, and nothing more,
// while no stream was ever emptied.
StreamFloor ProbeStreamFloor(Relation removed_streams, Relation index, Snapshot snapshot,
                             text *stream, TupleTableSlot *slot);

// Finds the event with this id visible to snapshot, into slot.
Probe ProbeEventId(Relation heap, Relation index, Snapshot snapshot, pg_uuid_t *event_id,
                   TupleTableSlot *slot);

// Requires the current user to hold SELECT on amebo.events (reads scan it directly).
void RequireSelectOnEvents(const EventCatalog &catalog);

} // namespace amebo::store
