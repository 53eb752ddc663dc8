// Reading events: amebo.stream_version, amebo.read_stream, amebo.read_all and the list of
// open appends that hold read_all back.
#include <string_view>

#include "core/error.hpp"
#include "core/names.hpp"
#include "pg/guard.hpp"
#include "store/arguments.hpp"
#include "store/event_table.hpp"
#include "store/inflight.hpp"
#include "store/scan.hpp"
#include "store/settled_horizon.hpp"

extern "C" {
#include "utils/array.h"
}

namespace amebo::store {

namespace {

// Puts every event into the function's result.
Verdict TakeAll(TupleTableSlot *slot, void *result) {
    tuplestore_puttupleslot(static_cast<ReturnSetInfo *>(result)->setResult, slot);
    return Verdict::kTake;
}

// Puts the events read_all's filter takes into the function's result.
struct FilteredResult {
    const EventFilter *filter;
    ReturnSetInfo *result;
};

// Applies read_all's filter, then takes like TakeAll.
Verdict TakeFiltered(TupleTableSlot *slot, void *state) {
    auto *filtered = static_cast<FilteredResult *>(state);
    Verdict verdict = ApplyFilter(*filtered->filter, slot);
    if (verdict == Verdict::kTake)
        TakeAll(slot, filtered->result);
    return verdict;
}

// Sets up the function's materialized result.
ReturnSetInfo *MaterializedResult(FunctionCallInfo fcinfo) {
    InitMaterializedSRF(fcinfo, 0);
    return reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
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

// Reads read_all's actions argument into filter (NULL: every action).
void ActionsArgument(FunctionCallInfo fcinfo, int arg, EventFilter *filter) {
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

// The version a stream whose events were all removed stands at, in the caller's snapshot
// (0 for a stream that never had events).
int64 RemovedStreamVersion(const EventCatalog &catalog, text *stream) {
    if (!OidIsValid(catalog.removed_streams))
        return 0;
    Relation removed = table_open(catalog.removed_streams, AccessShareLock);
    Relation index = index_open(catalog.removed_streams_index, AccessShareLock);
    TupleTableSlot *slot = table_slot_create(removed, nullptr);
    StreamFloor floor = ProbeStreamFloor(removed, index, GetActiveSnapshot(), stream, slot);
    ExecDropSingleTupleTableSlot(slot);
    index_close(index, AccessShareLock);
    table_close(removed, AccessShareLock);
    return floor.version;
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
PG_FUNCTION_INFO_V1(amebo_settled_position);
}

// amebo.settled_position(): every position at or below it is committed and visible to a
// snapshot taken afterwards, or will never commit (on a standby: the primary's published one).
extern "C" Datum amebo_settled_position(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        EventCatalog catalog = LookupEventCatalog();
        RequireSelectOnEvents(catalog);
        SettledSnapshot settled = TakeSettledSnapshot(catalog);
        UnregisterSnapshot(settled.snapshot);
        return Int64GetDatum(settled.horizon - 1);
    });
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
        int64 version = head.found ? DatumGetInt64(slot_getattr(slot, kVersion, &isnull))
                                   : RemovedStreamVersion(catalog, stream);
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
        ScanKeyData keys[2];
        StreamKeys(catalog, stream, after_version, keys);
        ReturnSetInfo *result = MaterializedResult(fcinfo);
        ScanEvents(catalog, catalog.stream_version_index, GetActiveSnapshot(), keys, 2, max_count,
                   TakeAll, result);
        return (Datum)0;
    });
}

// amebo.read_all(after_position, max_count, actions, since, payload_filter): committed events
// in position order, never past a position that an open transaction may still commit.
extern "C" Datum amebo_read_all(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        int64 after_position = NonNegativeArgument(fcinfo, 0, "after_position");
        int64 max_count = MaxCountArgument(fcinfo, 1);
        EventFilter filter;
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
        SettledSnapshot settled = TakeSettledSnapshot(catalog);
        filter.horizon = settled.horizon;
        ScanKeyData key;
        PositionKey(after_position, &key);
        FilteredResult filtered{&filter, MaterializedResult(fcinfo)};
        ScanEvents(catalog, catalog.position_index, settled.snapshot, &key, 1, max_count,
                   TakeFiltered, &filtered);
        UnregisterSnapshot(settled.snapshot);
        return (Datum)0;
    });
}

// amebo.inflight_appends(): open transactions of this database that appended, with the first
// position each took; read_all returns nothing at or beyond the smallest of them.
extern "C" Datum amebo_inflight_appends(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        ReturnSetInfo *result = MaterializedResult(fcinfo);
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
