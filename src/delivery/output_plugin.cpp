// amebo's logical decoding output plugin (plugin name "amebo", the same library): for each
// committed transaction that inserted into amebo.events it writes one binary record per
// event (core/delivery/feed_event.hpp) and then a one-byte commit marker, in commit order.
// Every other table is skipped. The worker decodes in-process with it; it can also be read
// through the SQL slot functions (pg_logical_slot_peek_binary_changes) for inspection.
#include <cstring>
#include <string>

#include "core/delivery/feed_event.hpp"
#include "pg/guard.hpp"

extern "C" {
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "utils/uuid.h"
}

extern "C" {
void _PG_output_plugin_init(OutputPluginCallbacks *callbacks);
}

namespace amebo::delivery {

namespace {

// The OID of amebo.events last seen, so that most changes are classified without a lookup.
Oid g_events_relid = InvalidOid;
// Set at BEGIN, true once the transaction wrote an event record.
bool g_transaction_has_events = false;

// Binary output, and a memory context for converting each row; no options.
void Startup(LogicalDecodingContext *ctx, OutputPluginOptions *options, bool) {
    pg::EntryVoid([&] {
        options->output_type = OUTPUT_PLUGIN_BINARY_OUTPUT;
        ctx->output_plugin_private =
            AllocSetContextCreate(ctx->context, "amebo output plugin", ALLOCSET_DEFAULT_SIZES);
        g_events_relid = InvalidOid;
    });
}

// Starts a transaction; nothing is written until it has an event.
void Begin(LogicalDecodingContext *, ReorderBufferTXN *) {
    g_transaction_has_events = false;
}

// True when relation is amebo.events (PostgreSQL side).
bool IsEventsTable(Relation relation) {
    if (RelationGetRelid(relation) == g_events_relid)
        return true;
    if (strcmp(RelationGetRelationName(relation), "events") != 0)
        return false;
    char *schema = get_namespace_name(RelationGetNamespace(relation));
    if (schema == nullptr || strcmp(schema, "amebo") != 0)
        return false;
    g_events_relid = RelationGetRelid(relation);
    return true;
}

// An events row's columns, as PostgreSQL text and numbers.
struct EventColumns {
    int64 position = 0;
    char *event_id = nullptr;
    char *stream = nullptr;
    int64 version = 0;
    char *action = nullptr;
    char *payload = nullptr;
    char *metadata = nullptr;
    TimestampTz recorded_at = 0;
};

// Text of a jsonb datum.
char *JsonbText(Datum value) {
    Jsonb *jsonb = DatumGetJsonbP(value);
    return JsonbToCString(nullptr, &jsonb->root, VARSIZE(jsonb));
}

// Reads the columns of an inserted events row by name (PostgreSQL side: may ereport).
EventColumns ReadColumns(Relation relation, HeapTuple tuple) {
    TupleDesc desc = RelationGetDescr(relation);
    Datum *values = static_cast<Datum *>(palloc(desc->natts * sizeof(Datum)));
    bool *nulls = static_cast<bool *>(palloc(desc->natts * sizeof(bool)));
    heap_deform_tuple(tuple, desc, values, nulls);
    EventColumns columns;
    for (int i = 0; i < desc->natts; i++) {
        Form_pg_attribute attribute = TupleDescAttr(desc, i);
        const char *name = NameStr(attribute->attname);
        if (attribute->attisdropped || nulls[i])
            continue;
        if (strcmp(name, "position") == 0)
            columns.position = DatumGetInt64(values[i]);
        else if (strcmp(name, "event_id") == 0)
            columns.event_id = DatumGetCString(DirectFunctionCall1(uuid_out, values[i]));
        else if (strcmp(name, "stream") == 0)
            columns.stream = TextDatumGetCString(values[i]);
        else if (strcmp(name, "version") == 0)
            columns.version = DatumGetInt64(values[i]);
        else if (strcmp(name, "action") == 0)
            columns.action = TextDatumGetCString(values[i]);
        else if (strcmp(name, "payload") == 0)
            columns.payload = JsonbText(values[i]);
        else if (strcmp(name, "metadata") == 0)
            columns.metadata = JsonbText(values[i]);
        else if (strcmp(name, "recorded_at") == 0)
            columns.recorded_at = DatumGetTimestampTz(values[i]);
    }
    return columns;
}

// The feed record of an events row (C++ side: builds strings).
std::string EncodeColumns(const EventColumns &columns) {
    FeedEvent event;
    event.position = columns.position;
    event.event_id = columns.event_id ? columns.event_id : "";
    event.stream = columns.stream ? columns.stream : "";
    event.version = columns.version;
    event.action = columns.action ? columns.action : "";
    event.payload = columns.payload ? columns.payload : "null";
    event.metadata = columns.metadata ? columns.metadata : "{}";
    event.recorded_at = columns.recorded_at;
    return EncodeFeedEvent(event);
}

// Writes one record to the decoding output (PostgreSQL side).
void WriteRecord(LogicalDecodingContext *ctx, const char *data, size_t length, bool last) {
    OutputPluginPrepareWrite(ctx, last);
    appendBinaryStringInfo(ctx->out, data, static_cast<int>(length));
    OutputPluginWrite(ctx, last);
}

// Writes a record for each row inserted into amebo.events; skips everything else.
void Change(LogicalDecodingContext *ctx, ReorderBufferTXN *, Relation relation,
            ReorderBufferChange *change) {
    pg::EntryVoid([&] {
        if (change->action != REORDER_BUFFER_CHANGE_INSERT || !IsEventsTable(relation) ||
            change->data.tp.newtuple == nullptr)
            return;
        auto *rows = static_cast<MemoryContext>(ctx->output_plugin_private);
        MemoryContext old = MemoryContextSwitchTo(rows);
        EventColumns columns = ReadColumns(relation, &change->data.tp.newtuple->tuple);
        MemoryContextSwitchTo(old);
        {
            std::string record = EncodeColumns(columns);
            pg::Call([&] { WriteRecord(ctx, record.data(), record.size(), true); });
        }
        MemoryContextReset(rows);
        g_transaction_has_events = true;
    });
}

// Ends a transaction that wrote events with the commit marker, written at its end LSN.
void Commit(LogicalDecodingContext *ctx, ReorderBufferTXN *, XLogRecPtr) {
    pg::EntryVoid([&] {
        if (!g_transaction_has_events)
            return;
        WriteRecord(ctx, &kCommitMarker, 1, true);
        g_transaction_has_events = false;
    });
}

} // namespace

} // namespace amebo::delivery

// Tells PostgreSQL the plugin's callbacks.
void _PG_output_plugin_init(OutputPluginCallbacks *callbacks) {
    callbacks->startup_cb = amebo::delivery::Startup;
    callbacks->begin_cb = amebo::delivery::Begin;
    callbacks->change_cb = amebo::delivery::Change;
    callbacks->commit_cb = amebo::delivery::Commit;
}
