// Reading events: amebo.stream_version, amebo.read_stream, amebo.read_all and the list of
// open appends that hold read_all back.
#include <string_view>

#include "core/error.hpp"
#include "core/names.hpp"
#include "pg/guard.hpp"
#include "store/arguments.hpp"
#include "store/event_table.hpp"
#include "store/inflight.hpp"

extern "C" {
#include "utils/array.h"
}

namespace amebo::store {

namespace {

// What a reader's filter says about one event, in index order.
enum class Verdict { kTake, kSkip, kStop };

// A filter applied to each event a scan returns.
using Filter = Verdict (*)(TupleTableSlot *slot, void *state);

// Scans index forward from keys under snapshot, putting accepted events into the function's
// result until max_count (negative: no limit) or until the filter says stop.
void ScanIntoResult(FunctionCallInfo fcinfo, const EventCatalog &catalog, Oid index_oid,
                    Snapshot snapshot, ScanKey keys, int nkeys, int64 max_count, Filter filter,
                    void *filter_state) {
    InitMaterializedSRF(fcinfo, 0);
    auto *result = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
    if (max_count == 0)
        return;
    Relation heap = table_open(catalog.events, AccessShareLock);
    Relation index = index_open(index_oid, AccessShareLock);
    TupleTableSlot *slot = table_slot_create(heap, nullptr);
    IndexScanDesc scan = index_beginscan(heap, index, snapshot, nkeys, 0);
    index_rescan(scan, keys, nkeys, nullptr, 0);
    int64 taken = 0;
    while (index_getnext_slot(scan, ForwardScanDirection, slot)) {
        CHECK_FOR_INTERRUPTS();
        Verdict verdict = filter ? filter(slot, filter_state) : Verdict::kTake;
        if (verdict == Verdict::kStop)
            break;
        if (verdict == Verdict::kSkip)
            continue;
        tuplestore_puttupleslot(result->setResult, slot);
        if (++taken == max_count)
            break;
    }
    index_endscan(scan);
    ExecDropSingleTupleTableSlot(slot);
    index_close(index, AccessShareLock);
    table_close(heap, AccessShareLock);
}

// Reads an optional non-negative bigint argument (NULL gives 0).
int64 NonNegativeArgument(FunctionCallInfo fcinfo, int arg, const char *name) {
    int64 value = PG_ARGISNULL(arg) ? 0 : PG_GETARG_INT64(arg);
    if (value < 0)
        throw Error(sqlstate::kInvalidParameterValue, std::string(name) + " must not be negative");
    return value;
}

// Reads a max_count argument: NULL means no limit (-1), otherwise it must be positive.
int64 MaxCountArgument(FunctionCallInfo fcinfo, int arg) {
    if (PG_ARGISNULL(arg))
        return -1;
    int32 value = PG_GETARG_INT32(arg);
    if (value < 1)
        throw Error(sqlstate::kInvalidParameterValue, "max_count must be positive",
                    "Use NULL for no limit.");
    return value;
}

// read_all's filters and its horizon.
struct ReadAllFilter {
    int64 horizon;
    Datum *actions; // nullptr: every action
    int action_count;
    bool has_since;
    TimestampTz since;
    Datum payload_filter; // 0: none
};

// True when the event's action is one of the wanted ones.
bool ActionWanted(const ReadAllFilter *filter, TupleTableSlot *slot) {
    bool isnull;
    text *action = DatumGetTextPP(slot_getattr(slot, kAction, &isnull));
    std::string_view name = TextView(action);
    for (int i = 0; i < filter->action_count; i++) {
        text *wanted = DatumGetTextPP(filter->actions[i]);
        if (name == TextView(wanted))
            return true;
    }
    return false;
}

// Stops at the horizon and applies read_all's optional filters.
Verdict FilterReadAll(TupleTableSlot *slot, void *state) {
    auto *filter = static_cast<ReadAllFilter *>(state);
    bool isnull;
    if (DatumGetInt64(slot_getattr(slot, kPosition, &isnull)) >= filter->horizon)
        return Verdict::kStop;
    if (filter->actions != nullptr && !ActionWanted(filter, slot))
        return Verdict::kSkip;
    if (filter->has_since &&
        DatumGetTimestampTz(slot_getattr(slot, kRecordedAt, &isnull)) < filter->since)
        return Verdict::kSkip;
    if (filter->payload_filter != 0 &&
        !DatumGetBool(DirectFunctionCall2(jsonb_contains, slot_getattr(slot, kPayload, &isnull),
                                          filter->payload_filter)))
        return Verdict::kSkip;
    return Verdict::kTake;
}

// Reads read_all's actions argument into filter (NULL: every action).
void ActionsArgument(FunctionCallInfo fcinfo, int arg, ReadAllFilter *filter) {
    filter->actions = nullptr;
    filter->action_count = 0;
    if (PG_ARGISNULL(arg))
        return;
    ArrayType *array = PG_GETARG_ARRAYTYPE_P(arg);
    bool *nulls;
    deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT, &filter->actions, &nulls,
                      &filter->action_count);
    if (filter->action_count == 0)
        throw Error(sqlstate::kInvalidParameterValue, "actions must not be empty", "",
                    "Use NULL to read every action.");
    for (int i = 0; i < filter->action_count; i++)
        if (nulls[i])
            throw Error(sqlstate::kNullValueNotAllowed, "actions must not contain NULL");
}

} // namespace

} // namespace amebo::store

using namespace amebo;
using namespace amebo::store;

extern "C" {
PG_FUNCTION_INFO_V1(amebo_stream_version);
PG_FUNCTION_INFO_V1(amebo_read_stream);
PG_FUNCTION_INFO_V1(amebo_read_all);
PG_FUNCTION_INFO_V1(amebo_inflight_appends);
}

// amebo.stream_version(stream): the stream's version in the caller's snapshot, 0 if empty.
extern "C" Datum amebo_stream_version(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        text *stream = StreamArgument(fcinfo, 0);
        EventCatalog catalog = LookupEventCatalog();
        RequireSelectOnEvents(catalog);
        Relation heap = table_open(catalog.events, AccessShareLock);
        Relation index = index_open(catalog.stream_version_index, AccessShareLock);
        TupleTableSlot *slot = table_slot_create(heap, nullptr);
        Probe head = ProbeStreamHead(heap, index, GetActiveSnapshot(), stream, slot);
        bool isnull;
        int64 version = head.found ? DatumGetInt64(slot_getattr(slot, kVersion, &isnull)) : 0;
        ExecDropSingleTupleTableSlot(slot);
        index_close(index, AccessShareLock);
        table_close(heap, AccessShareLock);
        return Int64GetDatum(version);
    });
}

// amebo.read_stream(stream, after_version, max_count): events in version order.
extern "C" Datum amebo_read_stream(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        text *stream = StreamArgument(fcinfo, 0);
        int64 after_version = NonNegativeArgument(fcinfo, 1, "after_version");
        int64 max_count = MaxCountArgument(fcinfo, 2);
        EventCatalog catalog = LookupEventCatalog();
        RequireSelectOnEvents(catalog);
        Relation index = index_open(catalog.stream_version_index, AccessShareLock);
        ScanKeyData keys[2];
        ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid,
                               index->rd_indcollation[0], F_TEXTEQ, PointerGetDatum(stream));
        ScanKeyInit(&keys[1], 2, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(after_version));
        index_close(index, NoLock);
        ScanIntoResult(fcinfo, catalog, catalog.stream_version_index, GetActiveSnapshot(), keys, 2,
                       max_count, nullptr, nullptr);
        return (Datum)0;
    });
}

// amebo.read_all(after_position, max_count, actions, since, payload_filter): committed events
// in position order, never past a position that an open transaction may still commit.
extern "C" Datum amebo_read_all(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        int64 after_position = NonNegativeArgument(fcinfo, 0, "after_position");
        int64 max_count = MaxCountArgument(fcinfo, 1);
        ReadAllFilter filter;
        ActionsArgument(fcinfo, 2, &filter);
        filter.has_since = !PG_ARGISNULL(3);
        filter.since = filter.has_since ? PG_GETARG_TIMESTAMPTZ(3) : 0;
        filter.payload_filter = 0;
        if (!PG_ARGISNULL(4)) {
            Jsonb *payload_filter = PG_GETARG_JSONB_P(4);
            if (!JB_ROOT_IS_OBJECT(payload_filter) || JB_ROOT_IS_SCALAR(payload_filter))
                throw Error(sqlstate::kInvalidParameterValue,
                            "payload_filter must be a JSON object");
            filter.payload_filter = JsonbPGetDatum(payload_filter);
        }
        EventCatalog catalog = LookupEventCatalog();
        RequireSelectOnEvents(catalog);
        // The horizon first, the snapshot second: see store/inflight.hpp.
        filter.horizon = inflight::SafeHorizon(catalog.position_sequence);
        Snapshot snapshot = RegisterSnapshot(GetLatestSnapshot());
        ScanKeyData key;
        ScanKeyInit(&key, 1, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(after_position));
        ScanIntoResult(fcinfo, catalog, catalog.position_index, snapshot, &key, 1, max_count,
                       FilterReadAll, &filter);
        UnregisterSnapshot(snapshot);
        return (Datum)0;
    });
}

// amebo.inflight_appends(): open transactions of this database that appended, with the first
// position each took; read_all returns nothing at or beyond the smallest of them.
extern "C" Datum amebo_inflight_appends(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        InitMaterializedSRF(fcinfo, 0);
        auto *result = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
        int max = inflight::SlotCount();
        auto *open =
            static_cast<inflight::OpenAppend *>(palloc(sizeof(inflight::OpenAppend) * (max + 1)));
        int count = inflight::ListOpenAppends(open, max);
        for (int i = 0; i < count; i++) {
            Datum values[2] = {Int32GetDatum(open[i].pid), Int64GetDatum(open[i].first_position)};
            bool nulls[2] = {false, false};
            tuplestore_putvalues(result->setResult, result->setDesc, values, nulls);
        }
        return (Datum)0;
    });
}
