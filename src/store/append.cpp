// Appending events: amebo.append_event and amebo.append_events.
//
// Concurrency without a stream table or lasting locks: a short lock on the stream's hash
// covers "read the head, insert the next version". The head is read with a dirty snapshot,
// so an append another open transaction has made is seen; the appender then waits for that
// transaction to end and reads again. Only the (stream, version) unique index records who
// holds a stream, so appends to 100,000 streams in one transaction take no lock-table space.
#include <string>
#include <string_view>

#include "core/batch.hpp"
#include "core/error.hpp"
#include "core/names.hpp"
#include "core/uuid7.hpp"
#include "pg/guard.hpp"
#include "registry/action_rules.hpp"
#include "settings.hpp"
#include "state/inline_projections.hpp"
#include "store/arguments.hpp"
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

// One event to append, as the SQL functions received it.
struct NewEvent {
    text *action;
    Jsonb *payload;
    Jsonb *metadata;      // nullptr: stored as {}
    pg_uuid_t *event_id;  // nullptr: generated
    int32 schema_version; // the schema the payload satisfied; 0: none
};

// Names an argument or a batch element's field in messages: "payload", "events[2].payload".
std::string Where(const char *field, int element) {
    if (element < 0)
        return field;
    return "events[" + std::to_string(element) + "]" + (field[0] ? "." : "") + field;
}

// Throws a bad-input error about a field ("... must be a JSON object", say).
[[noreturn]] void BadField(const char *field, int element, const char *problem) {
    throw Error(sqlstate::kInvalidParameterValue, Where(field, element) + " " + problem);
}

// Throws unless value is a JSON object within amebo.max_payload_size.
void CheckJsonObject(Jsonb *value, const char *field, int element = -1) {
    if (!JB_ROOT_IS_OBJECT(value) || JB_ROOT_IS_SCALAR(value))
        BadField(field, element, "must be a JSON object");
    size_t size = VARSIZE_ANY_EXHDR(value);
    if (size > static_cast<size_t>(settings::max_payload_size))
        throw Error(sqlstate::kProgramLimitExceeded, Where(field, element) + " is too large",
                    Where(field, element) + " has " + std::to_string(size) +
                        " bytes; amebo.max_payload_size is " +
                        std::to_string(settings::max_payload_size) + ".",
                    "Store large documents elsewhere and reference them from the event.");
}

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

// A new time-ordered event id.
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
    std::string_view name = TextView(stream);
    return ShortLockTag(name.data(), name.size(), kStreamLockKind);
}

// Throws if two events of the batch carry the same id.
void CheckDistinctIds(const NewEvent *events, int count) {
    std::vector<batch::EventId> ids;
    std::vector<int> positions;
    for (int i = 0; i < count; i++) {
        if (events[i].event_id == nullptr)
            continue;
        batch::EventId id;
        memcpy(id.data(), events[i].event_id->data, UUID_LEN);
        ids.push_back(id);
        positions.push_back(i);
    }
    if (auto duplicate = batch::FirstDuplicateId(ids))
        throw Error(sqlstate::kInvalidParameterValue,
                    "events[" + std::to_string(positions[*duplicate]) +
                        "] repeats an event_id used earlier in the same batch");
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
    if (TextView(stored_stream) != TextView(stream) ||
        TextView(stored_action) != TextView(event.action))
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

// Throws the dedicated version-conflict error.
[[noreturn]] void VersionConflict(text *stream, int64 expected, int64 actual) {
    std::string name(TextView(stream));
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

// Appends a validated batch to a stream; returns the stream's new version.
int64 AppendBatch(text *stream, const NewEvent *events, int count, bool has_expected,
                  int64 expected) {
    AppendTarget *target = OpenAppendTarget();
    LOCKTAG lock = StreamLockTag(stream);
    for (;;) {
        LockAcquire(&lock, ExclusiveLock, false, false);
        SnapshotData dirty;
        InitDirtySnapshot(dirty);
        Probe head = ProbeStreamHead(target->heap, target->stream_version_index, &dirty, stream,
                                     target->probe_slot);
        int64 version = head.found ? SlotVersion(target->probe_slot) : 0;
        ExecClearTuple(target->probe_slot);
        TransactionId wait_for = head.in_progress;
        if (!TransactionIdIsValid(wait_for)) {
            int64 stored_version = 0;
            Retry retry = CheckRetry(target, stream, events, count, &stored_version, &wait_for);
            if (retry == Retry::kAlreadyStored) {
                LockRelease(&lock, ExclusiveLock, false);
                return stored_version;
            }
            if (retry == Retry::kNew) {
                if (has_expected && expected != version)
                    VersionConflict(stream, expected, version);
                Datum *rows = state::HaveInlineProjections()
                                  ? static_cast<Datum *>(palloc(sizeof(Datum) * count))
                                  : nullptr;
                InsertBatch(target, stream, events, count, version, rows);
                LockRelease(&lock, ExclusiveLock, false);
                if (rows != nullptr) {
                    // Let the handlers' queries see the new events.
                    CommandCounterIncrement();
                    state::DispatchInline(rows, count);
                }
                return version + count;
            }
        }
        // Another open transaction appended to this stream or stored one of our ids: wait
        // for it to end, then look again.
        LockRelease(&lock, ExclusiveLock, false);
        XactLockTableWait(wait_for, target->heap, nullptr, XLTW_None);
    }
}

// Reads and checks the expected_version argument; false when it is NULL.
bool ExpectedVersionArgument(FunctionCallInfo fcinfo, int arg, int64 *expected) {
    if (PG_ARGISNULL(arg))
        return false;
    *expected = PG_GETARG_INT64(arg);
    if (*expected < 0)
        throw Error(sqlstate::kInvalidParameterValue, "expected_version must not be negative",
                    "Use NULL to append at any version, 0 for a new stream.");
    return true;
}

// The JSON value under key in an object, or nullptr.
JsonbValue *Field(JsonbContainer *object, const char *key, JsonbValue *out) {
    return getKeyJsonValueFromContainer(object, key, static_cast<int>(strlen(key)), out);
}

// Parses element i of the events array into event.
void ParseBatchElement(JsonbContainer *array, int i, NewEvent *event) {
    JsonbValue *element = getIthJsonbValueFromContainer(array, static_cast<uint32>(i));
    if (element->type != jbvBinary || !JsonContainerIsObject(element->val.binary.data))
        BadField("", i, "must be a JSON object");
    JsonbContainer *object = element->val.binary.data;
    uint32 known = 0;
    JsonbValue value;

    if (Field(object, "action", &value) == nullptr || value.type != jbvString)
        BadField("action", i, "must be a string");
    known++;
    event->action = cstring_to_text_with_len(value.val.string.val, value.val.string.len);
    names::ValidateAction(TextView(event->action));

    if (Field(object, "payload", &value) == nullptr || value.type != jbvBinary)
        BadField("payload", i, "must be a JSON object");
    known++;
    event->payload = JsonbValueToJsonb(&value);
    CheckJsonObject(event->payload, "payload", i);
    event->schema_version = registry::CheckPayload(event->action, event->payload, i);

    event->metadata = nullptr;
    if (Field(object, "metadata", &value) != nullptr) {
        known++;
        if (value.type != jbvNull) {
            if (value.type != jbvBinary)
                BadField("metadata", i, "must be a JSON object or null");
            event->metadata = JsonbValueToJsonb(&value);
            CheckJsonObject(event->metadata, "metadata", i);
        }
    }

    event->event_id = nullptr;
    if (Field(object, "event_id", &value) != nullptr) {
        known++;
        if (value.type != jbvNull) {
            if (value.type != jbvString)
                BadField("event_id", i, "must be a UUID string or null");
            char *id_text = pnstrdup(value.val.string.val, value.val.string.len);
            event->event_id = DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(id_text)));
        }
    }

    if (JsonContainerSize(object) != known)
        BadField("", i, "has an unknown key (an event has action, payload, metadata, event_id)");
}

// Parses the events argument of append_events.
NewEvent *ParseBatch(Jsonb *events, int *count) {
    if (!JB_ROOT_IS_ARRAY(events) || JB_ROOT_IS_SCALAR(events))
        throw Error(sqlstate::kInvalidParameterValue, "events must be a JSON array",
                    "Pass [{\"action\": ..., \"payload\": {...}}, ...].");
    *count = static_cast<int>(JB_ROOT_COUNT(events));
    if (*count == 0)
        throw Error(sqlstate::kInvalidParameterValue, "events must not be empty");
    auto *parsed = static_cast<NewEvent *>(palloc(sizeof(NewEvent) * *count));
    for (int i = 0; i < *count; i++)
        ParseBatchElement(&events->root, i, &parsed[i]);
    CheckDistinctIds(parsed, *count);
    return parsed;
}

} // namespace

} // namespace amebo::store

using namespace amebo;
using namespace amebo::store;

extern "C" {
PG_FUNCTION_INFO_V1(amebo_append_event);
PG_FUNCTION_INFO_V1(amebo_append_events);
PG_FUNCTION_INFO_V1(amebo_new_event_id);
}

// amebo.append_event(stream, action, payload, expected_version, metadata, event_id)
extern "C" Datum amebo_append_event(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        // Rows go into the heap without the executor, which would refuse them on a standby
        // or in a READ ONLY transaction (25006): refuse them here, before anything else.
        PreventCommandIfReadOnly("amebo.append_event()");
        text *stream = StreamArgument(fcinfo, 0);
        if (PG_ARGISNULL(1))
            NullArgument("action");
        if (PG_ARGISNULL(2))
            NullArgument("payload");
        NewEvent event;
        event.action = PG_GETARG_TEXT_PP(1);
        names::ValidateAction(TextView(event.action));
        event.payload = PG_GETARG_JSONB_P(2);
        CheckJsonObject(event.payload, "payload");
        event.schema_version = registry::CheckPayload(event.action, event.payload, -1);
        int64 expected = 0;
        bool has_expected = ExpectedVersionArgument(fcinfo, 3, &expected);
        event.metadata = PG_ARGISNULL(4) ? nullptr : PG_GETARG_JSONB_P(4);
        if (event.metadata != nullptr)
            CheckJsonObject(event.metadata, "metadata");
        event.event_id = PG_ARGISNULL(5) ? nullptr : PG_GETARG_UUID_P(5);
        return Int64GetDatum(AppendBatch(stream, &event, 1, has_expected, expected));
    });
}

// amebo.append_events(stream, events, expected_version)
extern "C" Datum amebo_append_events(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        PreventCommandIfReadOnly("amebo.append_events()");
        text *stream = StreamArgument(fcinfo, 0);
        if (PG_ARGISNULL(1))
            NullArgument("events");
        int count = 0;
        NewEvent *events = ParseBatch(PG_GETARG_JSONB_P(1), &count);
        int64 expected = 0;
        bool has_expected = ExpectedVersionArgument(fcinfo, 2, &expected);
        return Int64GetDatum(AppendBatch(stream, events, count, has_expected, expected));
    });
}

// amebo.new_event_id(): a time-ordered UUID (version 7), as append_event generates.
extern "C" Datum amebo_new_event_id(PG_FUNCTION_ARGS) {
    return pg::Entry([&] { return UUIDPGetDatum(NewEventId()); });
}
