// Shared memory slots holding each backend's first uncommitted position.
#include "store/inflight.hpp"

#include "core/error.hpp"
#include "pg/guard.hpp"
#include "pg/shared_memory.hpp"

namespace amebo::store::inflight {

namespace {

// One backend's publication. first_position is 0 when the backend has no open append.
struct Slot {
    LWLock lock;
    Oid database;
    int pid;
    int64 first_position;
};

// The shared array, one slot per backend id.
struct SharedState {
    int tranche_id;
    int slot_count;
    Slot slots[FLEXIBLE_ARRAY_MEMBER];
};

SharedState *g_shared = nullptr;
bool g_published = false;
CommitListener g_commit_listener = nullptr;

// Bytes of shared memory needed for MaxBackends slots.
Size SharedSize() {
    return add_size(offsetof(SharedState, slots), mul_size(MaxBackends, sizeof(Slot)));
}

// Initializes the shared slots (once) and remembers where they are.
void AttachShmem(void *memory, bool created) {
    g_shared = static_cast<SharedState *>(memory);
    if (created) {
        g_shared->tranche_id = LWLockNewTrancheId();
        g_shared->slot_count = MaxBackends;
        for (int i = 0; i < MaxBackends; i++) {
            Slot *slot = &g_shared->slots[i];
            LWLockInitialize(&slot->lock, g_shared->tranche_id);
            slot->database = InvalidOid;
            slot->pid = 0;
            slot->first_position = 0;
        }
    }
    LWLockRegisterTranche(g_shared->tranche_id, "amebo_inflight");
}

const pg::SharedSegment kSegment = {"amebo inflight appends", SharedSize, AttachShmem};

// This backend's slot.
Slot *MySlot() {
    if (MyBackendId == InvalidBackendId || MyBackendId > g_shared->slot_count)
        throw Error(sqlstate::kObjectNotInPrerequisiteState, "this process cannot append events",
                    "It has no backend id.");
    return &g_shared->slots[MyBackendId - 1];
}

// Withdraws this backend's publication, if any.
void Withdraw() {
    if (!g_published)
        return;
    Slot *slot = &g_shared->slots[MyBackendId - 1];
    LWLockAcquire(&slot->lock, LW_EXCLUSIVE);
    slot->first_position = 0;
    slot->database = InvalidOid;
    slot->pid = 0;
    LWLockRelease(&slot->lock);
    g_published = false;
}

// Withdraws this backend's publication, then tells the listener if there was one.
void WithdrawAndNotify() {
    bool appended = g_published;
    Withdraw();
    if (appended && g_commit_listener != nullptr)
        g_commit_listener();
}

// Ends the publication with the transaction, and refuses two-phase commit of appends:
// a prepared transaction would hold every reader's horizon back with no backend to end it.
void OnTransactionEvent(XactEvent event, void *) {
    pg::EntryVoid([event] {
        switch (event) {
        case XACT_EVENT_PRE_PREPARE:
            if (g_published)
                throw Error(sqlstate::kFeatureNotSupported,
                            "cannot PREPARE a transaction that appended events",
                            "Appends hold back amebo.read_all until they commit.");
            break;
        case XACT_EVENT_COMMIT:
            // Withdraw first: a worker woken earlier could compute its horizon while this
            // backend still lists the new events as in flight, and then sleep past them.
            WithdrawAndNotify();
            break;
        case XACT_EVENT_ABORT:
            // Events committed behind an aborted append become readable now: notify too.
            WithdrawAndNotify();
            break;
        case XACT_EVENT_PARALLEL_COMMIT:
        case XACT_EVENT_PARALLEL_ABORT:
        case XACT_EVENT_PREPARE:
            Withdraw();
            break;
        default:
            break;
        }
    });
}

// Withdraws the publication when the backend exits.
void OnExit(int, Datum) {
    Withdraw();
}

// Reads the sequence's last value (0 before its first use), as its owner would.
int64 SequenceLastValue(Oid sequence) {
    Oid saved_user;
    int saved_context;
    GetUserIdAndSecContext(&saved_user, &saved_context);
    SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID, saved_context | SECURITY_LOCAL_USERID_CHANGE);
    LOCAL_FCINFO(fcinfo, 1);
    InitFunctionCallInfoData(*fcinfo, nullptr, 1, InvalidOid, nullptr, nullptr);
    fcinfo->args[0].value = ObjectIdGetDatum(sequence);
    fcinfo->args[0].isnull = false;
    Datum last = pg_sequence_last_value(fcinfo);
    SetUserIdAndSecContext(saved_user, saved_context);
    return fcinfo->isnull ? 0 : DatumGetInt64(last);
}

} // namespace

void Init() {
    if (!process_shared_preload_libraries_in_progress)
        return;
    pg::RegisterSharedSegment(&kSegment);
    RegisterXactCallback(OnTransactionEvent, nullptr);
    before_shmem_exit(OnExit, 0);
}

void SetCommitListener(CommitListener listener) {
    g_commit_listener = listener;
}

bool Available() {
    return g_shared != nullptr;
}

int64 NextPosition(Oid position_sequence) {
    if (g_shared == nullptr || g_published)
        return nextval_internal(position_sequence, false);
    // Take everything that can sleep before the slot lock: the sequence's relation lock and
    // the transaction id. Inside the lock, nextval only touches one buffer.
    LockRelationOid(position_sequence, RowExclusiveLock);
    (void)GetTopTransactionId();
    Slot *slot = MySlot();
    LWLockAcquire(&slot->lock, LW_EXCLUSIVE);
    int64 position = nextval_internal(position_sequence, false);
    slot->database = MyDatabaseId;
    slot->pid = MyProcPid;
    slot->first_position = position;
    LWLockRelease(&slot->lock);
    g_published = true;
    return position;
}

int64 SafeHorizon(Oid position_sequence) {
    if (g_shared == nullptr)
        throw Error(sqlstate::kObjectNotInPrerequisiteState,
                    "amebo.read_all needs amebo in shared_preload_libraries",
                    "Commit-order safety tracks open appends in shared memory.",
                    "Add amebo to shared_preload_libraries in postgresql.conf and restart.");
    int64 horizon = SequenceLastValue(position_sequence) + 1;
    for (int i = 0; i < g_shared->slot_count; i++) {
        Slot *slot = &g_shared->slots[i];
        LWLockAcquire(&slot->lock, LW_SHARED);
        if (slot->database == MyDatabaseId && slot->first_position > 0 &&
            slot->first_position < horizon)
            horizon = slot->first_position;
        LWLockRelease(&slot->lock);
    }
    return horizon;
}

int SlotCount() {
    return g_shared ? g_shared->slot_count : 0;
}

int ListOpenAppends(OpenAppend *out, int max) {
    int count = 0;
    for (int i = 0; g_shared != nullptr && i < g_shared->slot_count && count < max; i++) {
        Slot *slot = &g_shared->slots[i];
        LWLockAcquire(&slot->lock, LW_SHARED);
        if (slot->database == MyDatabaseId && slot->first_position > 0)
            out[count++] = OpenAppend{slot->pid, slot->first_position};
        LWLockRelease(&slot->lock);
    }
    return count;
}

} // namespace amebo::store::inflight
