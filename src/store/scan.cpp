// Index scans over amebo.events.
#include "store/scan.hpp"

#include "pg/text_view.hpp"

namespace amebo::store {

namespace {

// True when the event's action is one of the filter's.
bool ActionWanted(const EventFilter &filter, TupleTableSlot *slot) {
    bool isnull;
    auto name = pg::TextView(DatumGetTextPP(slot_getattr(slot, kAction, &isnull)));
    for (int i = 0; i < filter.action_count; i++)
        if (name == pg::TextView(DatumGetTextPP(filter.actions[i])))
            return true;
    return false;
}

} // namespace

int64 ScanEvents(const EventCatalog &catalog, Oid index_oid, Snapshot snapshot, ScanKey keys,
                 int nkeys, int64 max_taken, Visitor visit, void *state) {
    if (max_taken == 0)
        return 0;
    Relation heap = table_open(catalog.events, AccessShareLock);
    Relation index = index_open(index_oid, AccessShareLock);
    TupleTableSlot *slot = table_slot_create(heap, nullptr);
    IndexScanDesc scan = index_beginscan(heap, index, snapshot, nkeys, 0);
    index_rescan(scan, keys, nkeys, nullptr, 0);
    int64 taken = 0;
    while (index_getnext_slot(scan, ForwardScanDirection, slot)) {
        CHECK_FOR_INTERRUPTS();
        Verdict verdict = visit(slot, state);
        if (verdict == Verdict::kStop)
            break;
        if (verdict == Verdict::kTake && ++taken == max_taken)
            break;
    }
    index_endscan(scan);
    ExecDropSingleTupleTableSlot(slot);
    index_close(index, AccessShareLock);
    table_close(heap, AccessShareLock);
    return taken;
}

void StreamKeys(const EventCatalog &catalog, text *stream, int64 after_version, ScanKey keys) {
    Relation index = index_open(catalog.stream_version_index, AccessShareLock);
    Oid collation = index->rd_indcollation[0];
    index_close(index, NoLock);
    ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid, collation, F_TEXTEQ,
                           PointerGetDatum(stream));
    ScanKeyInit(&keys[1], 2, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(after_version));
}

void PositionKey(int64 after_position, ScanKey key) {
    ScanKeyInit(key, 1, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(after_position));
}

Verdict ApplyFilter(const EventFilter &filter, TupleTableSlot *slot) {
    bool isnull;
    if (DatumGetInt64(slot_getattr(slot, kPosition, &isnull)) >= filter.horizon)
        return Verdict::kStop;
    if (filter.actions != nullptr && !ActionWanted(filter, slot))
        return Verdict::kSkip;
    if (filter.has_since &&
        DatumGetTimestampTz(slot_getattr(slot, kRecordedAt, &isnull)) < filter.since)
        return Verdict::kSkip;
    if (filter.payload_filter != 0 &&
        !DatumGetBool(DirectFunctionCall2(jsonb_contains, slot_getattr(slot, kPayload, &isnull),
                                          filter.payload_filter)))
        return Verdict::kSkip;
    return Verdict::kTake;
}

} // namespace amebo::store
