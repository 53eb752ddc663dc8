// Appending events: the mechanics under amebo.append_event and amebo.append_events (whose
// SQL functions are in api/append.cpp).
//
// Concurrency without a stream table or lasting locks: a short lock on the stream's hash
// covers "read the head, insert the next version". The head is read with a dirty snapshot,
// so an append another open transaction has made is seen; the appender then waits for that
// transaction to end and reads again. Only the (stream, version) unique index records who
// holds a stream, so appends to 100,000 streams in one transaction take no lock-table space.
#include "store/append.hpp"

#include <array>
#include <string>
#include <string_view>

#include "core/error.hpp"
#include "core/uuid7.hpp"
#include "pg/text_view.hpp"
#include "store/event_table.hpp"
#include "store/inflight.hpp"

extern "C" {
#include "common/hashfn.h"
#include "common/pg_prng.h"
}

namespace amebo::store {

namespace {

// Distinguish amebo's short locks from users' advisory locks (which use 1 and 2).
constexpr uint16 kStreamLockKind = 0x616d;
constexpr uint16 kEventIdLockKind = 0x616e;

// The empty object stored as metadata when none is given.
Jsonb *EmptyObject() {
    static Jsonb *empty = nullptr;
    if (empty == nullptr) {
        MemoryContext saved = MemoryContextSwitchTo(TopMemoryContext);
        empty = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
        MemoryContextSwitchTo(saved);
    }
    return empty;
}

// The text form of an event id, for messages.
char *IdText(pg_uuid_t *id) {
    return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(id)));
}

// A short lock of one kind on a 64-bit hash of bytes.
LOCKTAG ShortLockTag(const void *bytes, size_t size, uint16 kind) {
    uint64 hash =
        hash_bytes_extended(static_cast<const unsigned char *>(bytes), static_cast<int>(size), 0);
    LOCKTAG tag;
    SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, static_cast<uint32>(hash >> 32),
                         static_cast<uint32>(hash), kind);
    return tag;
}

// The lock that serializes "read head, insert next version" for one stream.
LOCKTAG StreamLockTag(text *stream) {
    std::string_view name = pg::TextView(stream);
    return ShortLockTag(name.data(), name.size(), kStreamLockKind);
}

// A stored event's version, from a probe slot.
int64 SlotVersion(TupleTableSlot *slot) {
    bool isnull;
    return DatumGetInt64(slot_getattr(slot, kVersion, &isnull));
}

// True when the stored event in slot has this stream, action and payload.
bool SameContent(TupleTableSlot *slot, text *stream, const NewEvent &event) {
    bool isnull;
    text *stored_stream = DatumGetTextPP(slot_getattr(slot, kStream, &isnull));
    text *stored_action = DatumGetTextPP(slot_getattr(slot, kAction, &isnull));
    if (pg::TextView(stored_stream) != pg::TextView(stream) ||
        pg::TextView(stored_action) != pg::TextView(event.action))
        return false;
    Datum stored_payload = slot_getattr(slot, kPayload, &isnull);
    return DatumGetBool(
        DirectFunctionCall2(jsonb_eq, stored_payload, JsonbPGetDatum(event.payload)));
}

// Throws the error for an event id stored with other content.
[[noreturn]] void EventIdConflict(TupleTableSlot *slot, pg_uuid_t *id) {
    bool isnull;
    char *stream = TextDatumGetCString(slot_getattr(slot, kStream, &isnull));
    char *action = TextDatumGetCString(slot_getattr(slot, kAction, &isnull));
    char *id_text = IdText(id);
    throw Error(sqlstate::kEventIdConflict,
                std::string("event ") + id_text + " was already appended with different content",
                std::string("It is stored in stream \"") + stream + "\" at version " +
                    std::to_string(SlotVersion(slot)) + " with action \"" + action + "\".",
                "A retry must repeat the stream, action and payload exactly; a new event needs "
                "a new event_id.");
}

// What the idempotency check found.
enum class Retry { kNew, kAlreadyStored, kMustWait };

// Looks up the batch's event ids: all stored with the same content means a retry of a
// committed append; none stored means a new append; anything else is an error.
Retry CheckRetry(AppendTarget *target, text *stream, const NewEvent *events, int count,
                 int64 *stored_version, TransactionId *wait_for) {
    int stored = 0;
    int with_ids = 0;
    for (int i = 0; i < count; i++) {
        if (events[i].event_id == nullptr)
            continue;
        with_ids++;
        SnapshotData dirty;
        InitDirtySnapshot(dirty);
        Probe probe = ProbeEventId(target->heap, target->event_id_index, &dirty, events[i].event_id,
                                   target->probe_slot);
        if (!probe.found)
            continue;
        if (TransactionIdIsValid(probe.in_progress)) {
            ExecClearTuple(target->probe_slot);
            *wait_for = probe.in_progress;
            return Retry::kMustWait;
        }
        if (!SameContent(target->probe_slot, stream, events[i]))
            EventIdConflict(target->probe_slot, events[i].event_id);
        *stored_version = SlotVersion(target->probe_slot);
        ExecClearTuple(target->probe_slot);
        stored++;
    }
    if (stored == 0)
        return Retry::kNew;
    if (stored == count)
        return Retry::kAlreadyStored;
    // Events without an id cannot be matched, so a batch that has some is never taken for a
    // retry (it could differ from the stored one in exactly those events).
    throw Error(sqlstate::kEventIdConflict, "the batch is partly stored already",
                std::to_string(stored) + " of its " + std::to_string(count) + " events (" +
                    std::to_string(with_ids) + " with an event_id) are stored.",
                "A retry must repeat the whole batch exactly.");
}

// Throws the error for an append to a stream deleted for good.
[[noreturn]] void StreamDeleted(text *stream, int64 version) {
    std::string name(pg::TextView(stream));
    throw Error(sqlstate::kStreamDeleted, "stream \"" + name + "\" is deleted",
                "Stream \"" + name + "\" was deleted for good (hard) at version " +
                    std::to_string(version) + "; it takes no more events.",
                "Append to another stream.");
}

// The stream's head with a dirty snapshot: its highest stored version, or the version its
// events were removed at when none is stored (0 for a new stream). Sets *wait_for when
// another open transaction wrote the head, and *tombstone for a stream deleted for good.
int64 ReadHead(AppendTarget *target, text *stream, TransactionId *wait_for, bool *tombstone) {
    SnapshotData dirty;
    InitDirtySnapshot(dirty);
    Probe head = ProbeStreamHead(target->heap, target->stream_version_index, &dirty, stream,
                                 target->probe_slot);
    *wait_for = head.in_progress;
    *tombstone = false;
    if (head.found) {
        int64 version = SlotVersion(target->probe_slot);
        ExecClearTuple(target->probe_slot);
        return version;
    }
    if (!OpenRemovedStreams(target))
        return 0;
    InitDirtySnapshot(dirty);
    StreamFloor floor = ProbeStreamFloor(target->removed_streams, target->removed_streams_index,
                                         &dirty, stream, target->removed_slot);
    *tombstone = floor.tombstone;
    return floor.version;
}

// Throws the dedicated version-conflict error.
[[noreturn]] void VersionConflict(text *stream, int64 expected, int64 actual) {
    std::string name(pg::TextView(stream));
    throw Error(sqlstate::kWrongExpectedVersion,
                "version conflict on stream \"" + name + "\": expected version " +
                    std::to_string(expected) + ", actual version " + std::to_string(actual),
                "Stream \"" + name + "\" is at version " + std::to_string(actual) +
                    "; the append expected version " + std::to_string(expected) + ".",
                "Load the stream again and retry the command.");
}

// Makes sure no other stream holds a client-given event id before it is inserted: the
// stream lock does not cover appends of the same id to another stream. Called with the id's
// short lock held, until the row is in.
void ClaimEventId(AppendTarget *target, pg_uuid_t *id) {
    for (;;) {
        SnapshotData dirty;
        InitDirtySnapshot(dirty);
        Probe probe =
            ProbeEventId(target->heap, target->event_id_index, &dirty, id, target->probe_slot);
        if (!probe.found)
            return;
        if (!TransactionIdIsValid(probe.in_progress))
            EventIdConflict(target->probe_slot, id);
        ExecClearTuple(target->probe_slot);
        XactLockTableWait(probe.in_progress, target->heap, nullptr, XLTW_None);
    }
}

// Writes the batch at versions head+1 .. head+count; with rows non-null, also returns the
// rows as composite datums (for inline projections).
void InsertBatch(AppendTarget *target, text *stream, const NewEvent *events, int count, int64 head,
                 Datum *rows) {
    TimestampTz recorded_at = GetCurrentTransactionStartTimestamp();
    Datum *values = target->values;
    for (int i = 0; i < count; i++) {
        CHECK_FOR_INTERRUPTS();
        const NewEvent &event = events[i];
        values[kPosition - 1] =
            Int64GetDatum(inflight::NextPosition(target->catalog.position_sequence));
        values[kEventId - 1] = UUIDPGetDatum(event.event_id ? event.event_id : NewEventId());
        values[kStream - 1] = PointerGetDatum(stream);
        values[kVersion - 1] = Int64GetDatum(head + i + 1);
        values[kAction - 1] = PointerGetDatum(event.action);
        values[kPayload - 1] = JsonbPGetDatum(event.payload);
        values[kMetadata - 1] = JsonbPGetDatum(event.metadata ? event.metadata : EmptyObject());
        values[kRecordedAt - 1] = TimestampTzGetDatum(recorded_at);
        if (target->has_schema_version) {
            values[kSchemaVersion - 1] = Int32GetDatum(event.schema_version);
            target->nulls[kSchemaVersion - 1] = event.schema_version == 0;
        }
        Datum *row = rows ? &rows[i] : nullptr;
        if (event.event_id == nullptr) {
            InsertEvent(target, row);
            continue;
        }
        LOCKTAG id_lock = ShortLockTag(event.event_id->data, UUID_LEN, kEventIdLockKind);
        LockAcquire(&id_lock, ExclusiveLock, false, false);
        ClaimEventId(target, event.event_id);
        InsertEvent(target, row);
        LockRelease(&id_lock, ExclusiveLock, false);
    }
}

} // namespace

Appended AppendBatch(text *stream, const NewEvent *events, int count, bool has_expected,
                     int64 expected, WantRows want_rows) {
    AppendTarget *target = OpenAppendTarget();
    LOCKTAG lock = StreamLockTag(stream);
    for (;;) {
        LockAcquire(&lock, ExclusiveLock, false, false);
        TransactionId wait_for;
        bool tombstone;
        int64 version = ReadHead(target, stream, &wait_for, &tombstone);
        if (tombstone)
            StreamDeleted(stream, version);
        if (!TransactionIdIsValid(wait_for)) {
            int64 stored_version = 0;
            Retry retry = CheckRetry(target, stream, events, count, &stored_version, &wait_for);
            if (retry == Retry::kAlreadyStored) {
                LockRelease(&lock, ExclusiveLock, false);
                return Appended{stored_version, nullptr, false};
            }
            if (retry == Retry::kNew) {
                if (has_expected && expected != version)
                    VersionConflict(stream, expected, version);
                Datum *rows =
                    want_rows() ? static_cast<Datum *>(palloc(sizeof(Datum) * count)) : nullptr;
                InsertBatch(target, stream, events, count, version, rows);
                LockRelease(&lock, ExclusiveLock, false);
                return Appended{version + count, rows, true};
            }
        }
        // Another open transaction appended to this stream or stored one of our ids: wait
        // for it to end, then look again.
        LockRelease(&lock, ExclusiveLock, false);
        XactLockTableWait(wait_for, target->heap, nullptr, XLTW_None);
    }
}

int64 LockStreamForRemoval(text *stream) {
    AppendTarget *target = OpenAppendTarget();
    LOCKTAG lock = StreamLockTag(stream);
    for (;;) {
        LockAcquire(&lock, ExclusiveLock, false, false);
        TransactionId wait_for;
        bool tombstone;
        int64 version = ReadHead(target, stream, &wait_for, &tombstone);
        if (!TransactionIdIsValid(wait_for))
            return version;
        LockRelease(&lock, ExclusiveLock, false);
        XactLockTableWait(wait_for, target->heap, nullptr, XLTW_None);
    }
}

pg_uuid_t *NewEventId() {
    std::array<uint8_t, 10> random;
    uint64 r1 = pg_prng_uint64(&pg_global_prng_state);
    uint16 r2 = static_cast<uint16>(pg_prng_uint32(&pg_global_prng_state));
    memcpy(random.data(), &r1, 8);
    memcpy(random.data() + 8, &r2, 2);
    TimestampTz now = GetCurrentTimestamp();
    uint64 unix_ms = static_cast<uint64>(
        now / 1000 + (int64)(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000);
    uuid7::Bytes bytes = uuid7::Make(unix_ms, random);
    auto *id = static_cast<pg_uuid_t *>(palloc(sizeof(pg_uuid_t)));
    memcpy(id->data, bytes.data(), UUID_LEN);
    return id;
}

} // namespace amebo::store
