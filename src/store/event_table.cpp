// Relations, tuple inserts and index probes on amebo.events.
#include "store/event_table.hpp"

#include "core/error.hpp"

extern "C" {
#include "storage/bufmgr.h"
#include "utils/acl.h"
}

namespace amebo::store {

namespace {

AppendTarget *g_target = nullptr;
bool g_target_stale = false;
// The catalog's OIDs, kept across transactions until one of its relations is invalidated.
EventCatalog g_catalog;
bool g_catalog_valid = false;

// The OID of a relation in schema amebo, or an error naming what is missing.
Oid RelationInSchema(Oid schema, const char *name) {
    Oid relid = get_relname_relid(name, schema);
    if (!OidIsValid(relid))
        throw Error(sqlstate::kObjectNotInPrerequisiteState,
                    std::string("relation amebo.") + name + " does not exist", "",
                    "Run CREATE EXTENSION amebo in this database.");
    return relid;
}

// The index among the result relation's open indexes with this OID.
Relation FindOpenIndex(ResultRelInfo *result_rel, Oid index_oid) {
    for (int i = 0; i < result_rel->ri_NumIndices; i++)
        if (RelationGetRelid(result_rel->ri_IndexRelationDescs[i]) == index_oid)
            return result_rel->ri_IndexRelationDescs[i];
    throw Error(sqlstate::kObjectNotInPrerequisiteState, "an index of amebo.events is missing",
                "The append path needs events_stream_version_key and events_event_id_key.");
}

// Closes the append handle; relations were opened under TopTransactionResourceOwner.
void CloseAppendTarget() {
    ResourceOwner saved_owner = CurrentResourceOwner;
    CurrentResourceOwner = TopTransactionResourceOwner;
    ExecDropSingleTupleTableSlot(g_target->insert_slot);
    ExecDropSingleTupleTableSlot(g_target->probe_slot);
    if (g_target->removed_streams != nullptr) {
        ExecDropSingleTupleTableSlot(g_target->removed_slot);
        index_close(g_target->removed_streams_index, NoLock);
        table_close(g_target->removed_streams, NoLock);
    }
    ExecCloseIndices(g_target->result_rel);
    table_close(g_target->heap, NoLock);
    FreeExecutorState(g_target->estate);
    CurrentResourceOwner = saved_owner;
    pfree(g_target);
    g_target = nullptr;
}

// Closes the handle before commit (so no relation reference leaks) and forgets it after an
// abort (the resource owner has released everything by then).
void OnTransactionEvent(XactEvent event, void *) {
    switch (event) {
    case XACT_EVENT_PRE_COMMIT:
    case XACT_EVENT_PARALLEL_PRE_COMMIT:
    case XACT_EVENT_PRE_PREPARE:
        if (g_target != nullptr)
            CloseAppendTarget();
        break;
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
        g_target = nullptr;
        break;
    default:
        break;
    }
    g_target_stale = false;
}

// Marks the handle stale when amebo.events changes (a new index, say) within the transaction,
// and forgets the catalog's OIDs when one of its relations changes or goes.
void OnRelcacheInvalidation(Datum, Oid relid) {
    if (g_target != nullptr && (relid == InvalidOid || relid == g_target->catalog.events))
        g_target_stale = true;
    if (relid == InvalidOid || relid == g_catalog.events || relid == g_catalog.position_index ||
        relid == g_catalog.stream_version_index || relid == g_catalog.event_id_index ||
        relid == g_catalog.position_sequence || relid == g_catalog.removed_streams ||
        relid == g_catalog.removed_streams_index)
        g_catalog_valid = false;
}

// Runs an index scan with the given keys and returns its first visible tuple, copied into
// slot so that no buffer pin outlives the probe (an error thrown in a subtransaction would
// otherwise leave the cached slot pointing at a pin its resource owner already released).
Probe FirstInIndex(Relation heap, Relation index, Snapshot snapshot, ScanKey keys, int nkeys,
                   ScanDirection direction, TupleTableSlot *slot) {
    IndexScanDesc scan = index_beginscan(heap, index, snapshot, nkeys, 0);
    index_rescan(scan, keys, nkeys, nullptr, 0);
    Probe probe{false, InvalidTransactionId};
    if (index_getnext_slot(scan, direction, slot)) {
        probe.found = true;
        ExecMaterializeSlot(slot);
        if (snapshot->snapshot_type == SNAPSHOT_DIRTY && TransactionIdIsValid(snapshot->xmin))
            probe.in_progress = snapshot->xmin;
    }
    index_endscan(scan);
    return probe;
}

} // namespace

EventCatalog LookupEventCatalog() {
    // Before version 1.5 amebo.removed_streams is missing: look again until an update adds
    // it, so that no session misses a tombstone written after the update.
    if (g_catalog_valid && OidIsValid(g_catalog.removed_streams))
        return g_catalog;
    Oid schema = get_namespace_oid("amebo", true);
    if (!OidIsValid(schema))
        throw Error(sqlstate::kObjectNotInPrerequisiteState,
                    "extension amebo is not installed in this database", "",
                    "Run CREATE EXTENSION amebo.");
    EventCatalog catalog;
    catalog.events = RelationInSchema(schema, "events");
    catalog.position_index = RelationInSchema(schema, "events_pkey");
    catalog.stream_version_index = RelationInSchema(schema, "events_stream_version_key");
    catalog.event_id_index = RelationInSchema(schema, "events_event_id_key");
    catalog.position_sequence = RelationInSchema(schema, "events_position_seq");
    // Version 1.5 added amebo.removed_streams; a database still on an older version has none.
    catalog.removed_streams = get_relname_relid("removed_streams", schema);
    catalog.removed_streams_index = OidIsValid(catalog.removed_streams)
                                        ? RelationInSchema(schema, "removed_streams_pkey")
                                        : InvalidOid;
    g_catalog = catalog;
    g_catalog_valid = true;
    return catalog;
}

AppendTarget *OpenAppendTarget() {
    if (g_target != nullptr && !g_target_stale)
        return g_target;
    if (g_target != nullptr)
        CloseAppendTarget();
    g_target_stale = false;

    EventCatalog catalog = LookupEventCatalog();
    MemoryContext saved_context = MemoryContextSwitchTo(TopTransactionContext);
    ResourceOwner saved_owner = CurrentResourceOwner;
    CurrentResourceOwner = TopTransactionResourceOwner;

    auto *target = static_cast<AppendTarget *>(palloc0(sizeof(AppendTarget)));
    target->catalog = catalog;
    target->heap = table_open(catalog.events, RowExclusiveLock);
    if (target->heap->rd_rel->relam != HEAP_TABLE_AM_OID ||
        target->heap->rd_rel->relkind != RELKIND_RELATION)
        throw Error(sqlstate::kFeatureNotSupported, "amebo.events must be a plain heap table");
    target->estate = CreateExecutorState();
    target->result_rel = makeNode(ResultRelInfo);
    InitResultRelInfo(target->result_rel, target->heap, 1, nullptr, 0);
    ExecOpenIndices(target->result_rel, false);
    target->stream_version_index = FindOpenIndex(target->result_rel, catalog.stream_version_index);
    target->event_id_index = FindOpenIndex(target->result_rel, catalog.event_id_index);
    TupleDesc desc = RelationGetDescr(target->heap);
    target->insert_slot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
    target->probe_slot = table_slot_create(target->heap, nullptr);
    target->values = static_cast<Datum *>(palloc0(sizeof(Datum) * desc->natts));
    target->nulls = static_cast<bool *>(palloc0(sizeof(bool) * desc->natts));
    target->has_schema_version = desc->natts >= kSchemaVersion;
    for (int i = kEventColumnCount; i < desc->natts; i++)
        target->nulls[i] = true;

    CurrentResourceOwner = saved_owner;
    MemoryContextSwitchTo(saved_context);
    g_target = target;
    return target;
}

bool OpenRemovedStreams(AppendTarget *target) {
    if (target->removed_streams != nullptr)
        return true;
    if (!OidIsValid(target->catalog.removed_streams))
        return false;
    MemoryContext saved_context = MemoryContextSwitchTo(TopTransactionContext);
    ResourceOwner saved_owner = CurrentResourceOwner;
    CurrentResourceOwner = TopTransactionResourceOwner;
    target->removed_streams = table_open(target->catalog.removed_streams, AccessShareLock);
    target->removed_streams_index =
        index_open(target->catalog.removed_streams_index, AccessShareLock);
    target->removed_slot = table_slot_create(target->removed_streams, nullptr);
    CurrentResourceOwner = saved_owner;
    MemoryContextSwitchTo(saved_context);
    return true;
}

void InsertEvent(AppendTarget *target, Datum *copy) {
    MemoryContext saved = MemoryContextSwitchTo(GetPerTupleMemoryContext(target->estate));
    HeapTuple tuple =
        heap_form_tuple(RelationGetDescr(target->heap), target->values, target->nulls);
    heap_insert(target->heap, tuple, GetCurrentCommandId(true), 0, nullptr);
    ExecStoreHeapTuple(tuple, target->insert_slot, false);
    ExecInsertIndexTuples(target->result_rel, target->insert_slot, target->estate, false, false,
                          nullptr, NIL);
    ExecClearTuple(target->insert_slot);
    MemoryContextSwitchTo(saved);
    if (copy != nullptr)
        *copy = heap_copy_tuple_as_datum(tuple, RelationGetDescr(target->heap));
    ResetPerTupleExprContext(target->estate);
}

void InitEventTable() {
    RegisterXactCallback(OnTransactionEvent, nullptr);
    CacheRegisterRelcacheCallback(OnRelcacheInvalidation, (Datum)0);
}

Probe ProbeStreamHead(Relation heap, Relation index, Snapshot snapshot, text *stream,
                      TupleTableSlot *slot) {
    ScanKeyData key;
    ScanKeyEntryInitialize(&key, 0, 1, BTEqualStrategyNumber, InvalidOid, index->rd_indcollation[0],
                           F_TEXTEQ, PointerGetDatum(stream));
    return FirstInIndex(heap, index, snapshot, &key, 1, BackwardScanDirection, slot);
}

StreamFloor ProbeStreamFloor(Relation removed_streams, Relation index, Snapshot snapshot,
                             text *stream, TupleTableSlot *slot) {
    StreamFloor floor{false, 0, false};
    if (removed_streams == nullptr || RelationGetNumberOfBlocks(removed_streams) == 0)
        return floor;
    ScanKeyData key;
    ScanKeyEntryInitialize(&key, 0, 1, BTEqualStrategyNumber, InvalidOid, index->rd_indcollation[0],
                           F_TEXTEQ, PointerGetDatum(stream));
    if (!FirstInIndex(removed_streams, index, snapshot, &key, 1, ForwardScanDirection, slot).found)
        return floor;
    bool isnull;
    floor.found = true;
    floor.version = DatumGetInt64(slot_getattr(slot, kRemovedVersion, &isnull));
    floor.tombstone = DatumGetBool(slot_getattr(slot, kRemovedTombstone, &isnull));
    ExecClearTuple(slot);
    return floor;
}

Probe ProbeEventId(Relation heap, Relation index, Snapshot snapshot, pg_uuid_t *event_id,
                   TupleTableSlot *slot) {
    ScanKeyData key;
    ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(event_id));
    return FirstInIndex(heap, index, snapshot, &key, 1, ForwardScanDirection, slot);
}

void RequireSelectOnEvents(const EventCatalog &catalog) {
    if (pg_class_aclcheck(catalog.events, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
        throw Error("42501", "permission denied for table amebo.events", "",
                    "Grant SELECT on amebo.events to read events.");
}

} // namespace amebo::store
