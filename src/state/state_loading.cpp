// Server-side state loading: amebo.load_state folds a stream's newest snapshot and the
// events after it through the category's reducer; amebo.replay_state folds them all.
#include <string>

#include "core/error.hpp"
#include "core/names.hpp"
#include "pg/guard.hpp"
#include "pg/owner_access.hpp"
#include "pg/text_view.hpp"
#include "state/spi_rows.hpp"
#include "store/arguments.hpp"
#include "store/scan.hpp"

extern "C" {
#include "access/xlog.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/datum.h"
}

namespace amebo::state {

namespace {

// A category's reducer, from amebo.reducers.
struct Reducer {
    Oid function;
    Datum initial_state;
    int32 snapshot_every;
};

// A fold in progress.
struct Fold {
    FmgrInfo reducer;
    MemoryContext scratch;
    Datum state;
    int64 version;
    int64 replayed;
    int64 up_to_version; // negative: to the end
    bool owns_state;     // state is a copy made by the fold (not the snapshot's or initial)
};

// The reducer registered for the stream's category; 42704 if there is none.
Reducer LookupReducer(text *stream) {
    std::string_view category = names::StreamCategory(pg::TextView(stream));
    text *category_text = cstring_to_text_with_len(category.data(), category.size());
    Reducer reducer{InvalidOid, (Datum)0, 0};
    SPI_connect();
    Oid argtypes[1] = {TEXTOID};
    Datum args[1] = {PointerGetDatum(category_text)};
    bool found = SpiQuery("SELECT reducer::oid, initial_state, snapshot_every FROM amebo.reducers "
                          "WHERE category = $1",
                          1, argtypes, args, true) == 1;
    if (found) {
        bool isnull;
        reducer.function = DatumGetObjectId(SpiValue(1, &isnull));
        reducer.initial_state = SpiValue(2, &isnull);
        reducer.snapshot_every = DatumGetInt32(SpiValue(3, &isnull));
    }
    SPI_finish();
    if (!found)
        throw Error("42704",
                    "no reducer is registered for category \"" + std::string(category) + "\"", "",
                    "Register one with amebo.create_reducer(category, reducer).");
    return reducer;
}

// Starts fold at the newest snapshot (if there is one) or the initial state.
void StartFold(text *stream, const Reducer &reducer, Fold *fold) {
    fold->state = reducer.initial_state;
    fold->version = 0;
    fold->owns_state = false;
    SPI_connect();
    Oid argtypes[1] = {TEXTOID};
    Datum args[1] = {PointerGetDatum(stream)};
    if (SpiQuery("SELECT version, state FROM amebo.snapshots WHERE stream = $1 "
                 "ORDER BY version DESC LIMIT 1",
                 1, argtypes, args, true) == 1) {
        bool isnull;
        fold->version = DatumGetInt64(SpiValue(1, &isnull));
        fold->state = SpiValue(2, &isnull);
    }
    SPI_finish();
}

// Starts a replay: from the initial state while the stream still has its first event; after a
// truncation, from the oldest snapshot at or after the cut (truncate_stream refuses a cut that
// no snapshot covers), which must not be beyond up_to_version.
void StartReplay(text *stream, const Reducer &reducer, Fold *fold) {
    fold->state = reducer.initial_state;
    fold->version = 0;
    fold->owns_state = false;
    SPI_connect();
    Oid argtypes[2] = {TEXTOID, INT8OID};
    Datum args[2] = {PointerGetDatum(stream), Int64GetDatum(fold->up_to_version)};
    SpiQuery(
        "SELECT f.version, s.version, s.state "
        "FROM (SELECT (SELECT e.version FROM amebo.events e WHERE e.stream = $1 "
        "              ORDER BY e.version LIMIT 1) AS version) f "
        "LEFT JOIN LATERAL (SELECT x.version, x.state FROM amebo.snapshots x "
        "                   WHERE x.stream = $1 "
        "                     AND x.version >= coalesce(f.version - 1, amebo.stream_version($1)) "
        "                     AND ($2 < 0 OR x.version <= $2) "
        "                   ORDER BY x.version LIMIT 1) s ON f.version IS DISTINCT FROM 1",
        2, argtypes, args, true);
    bool first_isnull;
    bool snapshot_isnull;
    Datum first_version = SpiValue(1, &first_isnull);
    int64 first = first_isnull ? 0 : DatumGetInt64(first_version);
    Datum snapshot_version = SpiValue(2, &snapshot_isnull);
    if (!snapshot_isnull) {
        bool isnull;
        fold->version = DatumGetInt64(snapshot_version);
        fold->state = SpiValue(3, &isnull);
    }
    SPI_finish();
    if (first > 1 && snapshot_isnull)
        throw Error(sqlstate::kObjectNotInPrerequisiteState,
                    "stream \"" + std::string(pg::TextView(stream)) +
                        "\" was truncated and no snapshot covers the cut",
                    "Its first stored event has version " + std::to_string(first) +
                        "; a replay needs a snapshot at version " + std::to_string(first - 1) +
                        " or later" +
                        (fold->up_to_version >= 0
                             ? ", at most " + std::to_string(fold->up_to_version) + "."
                             : "."));
}

// Applies the reducer to one event; the state lives in the caller's context, the rest in a
// scratch context reset per event.
store::Verdict ApplyEvent(TupleTableSlot *slot, void *data) {
    auto *fold = static_cast<Fold *>(data);
    bool isnull;
    int64 version = DatumGetInt64(slot_getattr(slot, store::kVersion, &isnull));
    if (fold->up_to_version >= 0 && version > fold->up_to_version)
        return store::Verdict::kStop;
    MemoryContext caller = MemoryContextSwitchTo(fold->scratch);
    LOCAL_FCINFO(fcinfo, 2);
    InitFunctionCallInfoData(*fcinfo, &fold->reducer, 2, InvalidOid, nullptr, nullptr);
    fcinfo->args[0].value = fold->state;
    fcinfo->args[0].isnull = false;
    fcinfo->args[1].value = ExecFetchSlotHeapTupleDatum(slot);
    fcinfo->args[1].isnull = false;
    Datum next = FunctionCallInvoke(fcinfo);
    MemoryContextSwitchTo(caller);
    if (fcinfo->isnull)
        throw Error(sqlstate::kNullValueNotAllowed,
                    "the reducer returned NULL at version " + std::to_string(version),
                    "A reducer returns the new state as jsonb.");
    Datum previous = fold->state;
    fold->state = datumCopy(next, false, -1);
    if (fold->owns_state)
        pfree(DatumGetPointer(previous));
    fold->owns_state = true;
    MemoryContextReset(fold->scratch);
    fold->version = version;
    fold->replayed++;
    return store::Verdict::kTake;
}

// Folds the stream's events after fold->version into fold->state.
void RunFold(text *stream, const Reducer &reducer, Fold *fold) {
    store::EventCatalog catalog = store::LookupEventCatalog();
    store::RequireSelectOnEvents(catalog);
    // The reducer runs as the caller, who must be allowed to run it (fmgr checks nothing).
    pg::RequireExecute(reducer.function, GetUserId());
    fmgr_info(reducer.function, &fold->reducer);
    fold->scratch =
        AllocSetContextCreate(CurrentMemoryContext, "amebo fold", ALLOCSET_DEFAULT_SIZES);
    fold->replayed = 0;
    ScanKeyData keys[2];
    store::StreamKeys(catalog, stream, fold->version, keys);
    store::ScanEvents(catalog, catalog.stream_version_index, GetActiveSnapshot(), keys, 2, -1,
                      ApplyEvent, fold);
    MemoryContextDelete(fold->scratch);
}

// True when the caller may save snapshots (amebo_writer may; amebo_reader only loads states).
bool MaySaveSnapshots() {
    Oid argtypes[3] = {TEXTOID, INT8OID, JSONBOID};
    Oid save = LookupFuncName(
        list_make2(makeString(pstrdup("amebo")), makeString(pstrdup("save_snapshot"))), 3, argtypes,
        true);
    return OidIsValid(save) && pg_proc_aclcheck(save, GetUserId(), ACL_EXECUTE) == ACLCHECK_OK;
}

// Saves the fold's state as a snapshot through amebo.save_snapshot.
void SaveSnapshot(text *stream, const Fold &fold) {
    SPI_connect();
    Oid argtypes[3] = {TEXTOID, INT8OID, JSONBOID};
    Datum args[3] = {PointerGetDatum(stream), Int64GetDatum(fold.version), fold.state};
    SpiQuery("SELECT amebo.save_snapshot($1, $2, $3)", 3, argtypes, args, false);
    SPI_finish();
}

} // namespace

} // namespace amebo::state

using namespace amebo;
using namespace amebo::state;

extern "C" {
PG_FUNCTION_INFO_V1(amebo_load_state);
PG_FUNCTION_INFO_V1(amebo_replay_state);
}

// amebo.load_state(stream) -> (state, version)
extern "C" Datum amebo_load_state(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        text *stream = store::StreamArgument(fcinfo, 0);
        Reducer reducer = LookupReducer(stream);
        Fold fold;
        fold.up_to_version = -1;
        StartFold(stream, reducer, &fold);
        RunFold(stream, reducer, &fold);
        if (fold.replayed > reducer.snapshot_every && !RecoveryInProgress() && !XactReadOnly &&
            MaySaveSnapshots())
            SaveSnapshot(stream, fold);
        TupleDesc desc;
        if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
            throw Error(sqlstate::kInternalError, "load_state must return a record");
        desc = BlessTupleDesc(desc);
        Datum values[2] = {fold.state, Int64GetDatum(fold.version)};
        bool nulls[2] = {false, false};
        return HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
    });
}

// amebo.replay_state(stream, up_to_version) -> the state from a full replay
extern "C" Datum amebo_replay_state(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        text *stream = store::StreamArgument(fcinfo, 0);
        Reducer reducer = LookupReducer(stream);
        Fold fold;
        fold.up_to_version = PG_ARGISNULL(1) ? -1 : PG_GETARG_INT64(1);
        StartReplay(stream, reducer, &fold);
        RunFold(stream, reducer, &fold);
        return fold.state;
    });
}
