// amebo.rebuild_projection: empty a read model and replay the events into it, with progress
// in shared memory (amebo.rebuild_progress) and cancellation like any query.
#include <string>

#include "core/error.hpp"
#include "pg/guard.hpp"
#include "pg/owner_access.hpp"
#include "pg/shared_memory.hpp"
#include "state/inline_projections.hpp"
#include "state/rebuild.hpp"
#include "state/spi_rows.hpp"
#include "store/inflight.hpp"
#include "store/scan.hpp"

extern "C" {
#include "storage/spin.h"
#include "utils/array.h"
}

namespace amebo::state {

namespace {

// One backend's rebuild in progress.
struct ProgressSlot {
    slock_t mutex;
    int pid;
    char projection[NAMEDATALEN];
    int64 replayed;
    int64 total;
    TimestampTz started_at;
};

// Every backend's slot.
struct ProgressShared {
    int slot_count;
    ProgressSlot slots[FLEXIBLE_ARRAY_MEMBER];
};

ProgressShared *g_progress = nullptr;
bool g_reporting = false;

// The shared array's size.
Size ProgressSize() {
    return add_size(offsetof(ProgressShared, slots), mul_size(MaxBackends, sizeof(ProgressSlot)));
}

// Initializes the slots once.
void AttachProgress(void *memory, bool created) {
    g_progress = static_cast<ProgressShared *>(memory);
    if (created) {
        g_progress->slot_count = MaxBackends;
        for (int i = 0; i < MaxBackends; i++) {
            SpinLockInit(&g_progress->slots[i].mutex);
            g_progress->slots[i].pid = 0;
        }
    }
}

const pg::SharedSegment kSegment = {"amebo rebuild progress", ProgressSize, AttachProgress};

// This backend's slot, if shared memory exists.
ProgressSlot *MyProgress() {
    if (g_progress == nullptr || MyBackendId == InvalidBackendId ||
        MyBackendId > g_progress->slot_count)
        return nullptr;
    return &g_progress->slots[MyBackendId - 1];
}

// Publishes the rebuild's state; pid 0 ends it.
void ReportProgress(int pid, const char *projection, int64 replayed, int64 total) {
    ProgressSlot *slot = MyProgress();
    if (slot == nullptr)
        return;
    SpinLockAcquire(&slot->mutex);
    if (slot->pid != pid)
        slot->started_at = GetCurrentTimestamp();
    slot->pid = pid;
    strlcpy(slot->projection, projection, NAMEDATALEN);
    slot->replayed = replayed;
    slot->total = total;
    SpinLockRelease(&slot->mutex);
    g_reporting = pid != 0;
}

// Clears the slot when the rebuild's transaction ends, however it ends.
void OnTransactionEvent(XactEvent event, void *) {
    if (g_reporting && (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT))
        ReportProgress(0, "", 0, 0);
}

// The projection to rebuild, locked FOR UPDATE (so the worker skips it meanwhile).
struct Target {
    Oid handler;
    Oid reset;
    bool async;
    Datum *actions;
    int action_count;
    int64 total;
};

// Locks and reads the projection; counts the events to replay (after after_position). As the
// tables' owner: the lock on amebo.events needs more than the caller may have.
void LockTarget(text *name, bool has_since, TimestampTz since, int64 after_position,
                Target *target) {
    pg::OwnerAccess owner = pg::EnterOwnerAccess();
    SPI_connect();
    Oid argtypes[1] = {TEXTOID};
    Datum args[1] = {PointerGetDatum(name)};
    if (SpiQuery("SELECT handler::oid, reset_handler::oid, mode = 'async', actions "
                 "FROM amebo.projections WHERE name = $1 FOR UPDATE",
                 1, argtypes, args, false) != 1) {
        SPI_finish();
        throw Error("42704",
                    "projection \"" + std::string(text_to_cstring(name)) + "\" does not exist");
    }
    bool isnull;
    target->handler = DatumGetObjectId(SpiValue(1, &isnull));
    Datum reset = SpiValue(2, &isnull);
    target->reset = isnull ? InvalidOid : DatumGetObjectId(reset);
    target->async = DatumGetBool(SpiValue(3, &isnull));
    Datum actions = SpiValue(4, &isnull);
    bool all_actions = isnull;
    // An inline projection must not miss appends made while it is rebuilt: block them.
    if (!target->async)
        SpiQuery("LOCK TABLE amebo.events IN SHARE MODE", 0, nullptr, nullptr, false);
    Oid count_types[3] = {TEXTARRAYOID, TIMESTAMPTZOID, INT8OID};
    Datum count_args[3] = {actions, TimestampTzGetDatum(since), Int64GetDatum(after_position)};
    char count_nulls[4] = {static_cast<char>(all_actions ? 'n' : ' '),
                           static_cast<char>(has_since ? ' ' : 'n'), ' ', '\0'};
    SPI_execute_with_args(
        "SELECT count(*) FROM amebo.events WHERE ($1 IS NULL OR action = ANY ($1)) "
        "AND ($2 IS NULL OR recorded_at >= $2) AND position > $3",
        3, count_types, count_args, count_nulls, true, 0);
    target->total = DatumGetInt64(SpiValue(1, &isnull));
    SPI_finish();
    pg::LeaveOwnerAccess(owner);
    // After SPI_finish: the array must live in the caller's memory, not SPI's.
    target->actions = nullptr;
    target->action_count = 0;
    if (!all_actions) {
        bool *nulls;
        deconstruct_array(DatumGetArrayTypeP(actions), TEXTOID, -1, false, TYPALIGN_INT,
                          &target->actions, &nulls, &target->action_count);
    }
}

// Replays one event into the projection.
struct Replay {
    const store::EventFilter *filter;
    FmgrInfo handler;
    const char *name;
    int64 replayed;
    int64 total;
    MemoryContext scratch; // reset after every event
};

// Applies the filter, calls the handler, reports progress every 100 events.
store::Verdict ReplayEvent(TupleTableSlot *slot, void *data) {
    auto *replay = static_cast<Replay *>(data);
    store::Verdict verdict = store::ApplyFilter(*replay->filter, slot);
    if (verdict != store::Verdict::kTake)
        return verdict;
    MemoryContext caller = MemoryContextSwitchTo(replay->scratch);
    CallHandler(&replay->handler, ExecFetchSlotHeapTupleDatum(slot));
    MemoryContextSwitchTo(caller);
    MemoryContextReset(replay->scratch);
    if (++replay->replayed % 100 == 0)
        ReportProgress(MyProcPid, replay->name, replay->replayed, replay->total);
    return verdict;
}

// Calls the projection's reset function (no arguments, void result).
void CallReset(Oid function) {
    FmgrInfo info;
    fmgr_info(function, &info);
    LOCAL_FCINFO(fcinfo, 0);
    InitFunctionCallInfoData(*fcinfo, &info, 0, InvalidOid, nullptr, nullptr);
    (void)FunctionCallInvoke(fcinfo);
}

// Sets a projection's checkpoint after a replay, clears its error and lets it run (as the
// tables' owner).
void SetCheckpoint(text *name, int64 position) {
    pg::OwnerAccess owner = pg::EnterOwnerAccess();
    SPI_connect();
    Oid argtypes[2] = {TEXTOID, INT8OID};
    Datum args[2] = {PointerGetDatum(name), Int64GetDatum(position)};
    SpiQuery("UPDATE amebo.projections SET position = $2, applied_at = now(), state = 'running', "
             "error = NULL, error_position = NULL, error_at = NULL WHERE name = $1",
             2, argtypes, args, false);
    SPI_finish();
    pg::LeaveOwnerAccess(owner);
}

} // namespace

void InitRebuild() {
    if (!process_shared_preload_libraries_in_progress)
        return;
    pg::RegisterSharedSegment(&kSegment);
    RegisterXactCallback(OnTransactionEvent, nullptr);
}

} // namespace amebo::state

using namespace amebo;
using namespace amebo::state;

extern "C" {
PG_FUNCTION_INFO_V1(amebo_rebuild_projection);
PG_FUNCTION_INFO_V1(amebo_replay_projection);
PG_FUNCTION_INFO_V1(amebo_rebuild_progress);
}

namespace {

// Replays the matching events after after_position (recorded at or after since, if given)
// into the projection, first emptying it through its reset function when reset is true;
// then sets its checkpoint and state running. Returns how many events were replayed.
int64 ReplayInto(text *name, bool has_since, TimestampTz since, int64 after_position, bool reset) {
    char *name_text = text_to_cstring(name);
    store::EventFilter filter{};
    filter.has_since = has_since;
    filter.since = since;
    Target target;
    LockTarget(name, has_since, since, after_position, &target);
    // The handler and the reset function run as the caller, who must be allowed to run them.
    pg::RequireExecute(target.handler, GetUserId());
    if (reset && OidIsValid(target.reset))
        pg::RequireExecute(target.reset, GetUserId());
    filter.actions = target.actions;
    filter.action_count = target.action_count;
    ReportProgress(MyProcPid, name_text, 0, target.total);
    if (reset && OidIsValid(target.reset))
        CallReset(target.reset);
    CommandCounterIncrement();
    store::EventCatalog catalog = store::LookupEventCatalog();
    // The horizon first, the snapshot second, as in read_all.
    filter.horizon = store::inflight::SafeHorizon(catalog.position_sequence);
    Snapshot snapshot = RegisterSnapshot(GetLatestSnapshot());
    Replay replay{
        &filter,
        {},
        name_text,
        0,
        target.total,
        AllocSetContextCreate(CurrentMemoryContext, "amebo replay", ALLOCSET_DEFAULT_SIZES)};
    fmgr_info(target.handler, &replay.handler);
    ScanKeyData key;
    store::PositionKey(after_position, &key);
    store::ScanEvents(catalog, catalog.position_index, snapshot, &key, 1, -1, ReplayEvent, &replay);
    UnregisterSnapshot(snapshot);
    SetCheckpoint(name, filter.horizon - 1);
    ReportProgress(MyProcPid, name_text, replay.replayed, target.total);
    return replay.replayed;
}

// Reads the required name argument.
text *NameArgument(FunctionCallInfo fcinfo) {
    if (PG_ARGISNULL(0))
        throw Error(sqlstate::kNullValueNotAllowed, "name must not be NULL");
    return PG_GETARG_TEXT_PP(0);
}

} // namespace

// amebo.rebuild_projection(name, since) -> the number of events replayed
extern "C" Datum amebo_rebuild_projection(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        text *name = NameArgument(fcinfo);
        bool has_since = !PG_ARGISNULL(1);
        TimestampTz since = has_since ? PG_GETARG_TIMESTAMPTZ(1) : 0;
        return Int64GetDatum(ReplayInto(name, has_since, since, 0, true));
    });
}

// amebo.replay_projection(name, after_position) -> the number of events replayed, without a
// reset (how a paused inline projection catches up when it is resumed)
extern "C" Datum amebo_replay_projection(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        text *name = NameArgument(fcinfo);
        int64 after_position = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1);
        return Int64GetDatum(ReplayInto(name, false, 0, after_position, false));
    });
}

// amebo.rebuild_progress() -> (pid, projection, replayed, total, started_at) per rebuild
extern "C" Datum amebo_rebuild_progress(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        InitMaterializedSRF(fcinfo, 0);
        auto *result = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
        for (int i = 0; g_progress != nullptr && i < g_progress->slot_count; i++) {
            ProgressSlot copy;
            ProgressSlot *slot = &g_progress->slots[i];
            SpinLockAcquire(&slot->mutex);
            memcpy(&copy, slot, sizeof(copy));
            SpinLockRelease(&slot->mutex);
            if (copy.pid == 0)
                continue;
            Datum values[5] = {Int32GetDatum(copy.pid), CStringGetTextDatum(copy.projection),
                               Int64GetDatum(copy.replayed), Int64GetDatum(copy.total),
                               TimestampTzGetDatum(copy.started_at)};
            bool nulls[5] = {false, false, false, false, false};
            tuplestore_putvalues(result->setResult, result->setDesc, values, nulls);
        }
        return (Datum)0;
    });
}
