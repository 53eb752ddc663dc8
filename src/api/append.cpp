// The SQL functions of an append: amebo.append_event, amebo.append_events and
// amebo.new_event_id. They check the arguments, validate each payload against the registry,
// append through the store, run the inline projections on the new rows and queue the pull
// consumers' NOTIFY, all in the caller's transaction.
#include <string>
#include <vector>

#include "consumers/notify.hpp"
#include "core/batch.hpp"
#include "core/error.hpp"
#include "core/names.hpp"
#include "pg/guard.hpp"
#include "pg/text_view.hpp"
#include "registry/action_rules.hpp"
#include "settings.hpp"
#include "state/inline_projections.hpp"
#include "store/append.hpp"
#include "store/arguments.hpp"

namespace amebo::api {

namespace {

using pg::TextView;
using store::NewEvent;

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

// Appends a checked batch through the store, then runs the inline projections on the new
// rows and queues the NOTIFY of the consumers that take them (neither when the batch was a
// stored retry); returns the stream's new version.
int64 AppendAndProject(text *stream, const NewEvent *events, int count, bool has_expected,
                       int64 expected) {
    store::Appended appended = store::AppendBatch(stream, events, count, has_expected, expected,
                                                  state::HaveInlineProjections);
    if (appended.rows != nullptr) {
        // Let the handlers' queries see the new events.
        CommandCounterIncrement();
        state::DispatchInline(appended.rows, count);
    }
    if (appended.inserted)
        consumers::NotifyConsumers(events, count);
    return appended.version;
}

} // namespace

} // namespace amebo::api

using namespace amebo;
using namespace amebo::api;

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
        text *stream = store::StreamArgument(fcinfo, 0);
        if (PG_ARGISNULL(1))
            store::NullArgument("action");
        if (PG_ARGISNULL(2))
            store::NullArgument("payload");
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
        return Int64GetDatum(AppendAndProject(stream, &event, 1, has_expected, expected));
    });
}

// amebo.append_events(stream, events, expected_version)
extern "C" Datum amebo_append_events(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        PreventCommandIfReadOnly("amebo.append_events()");
        text *stream = store::StreamArgument(fcinfo, 0);
        if (PG_ARGISNULL(1))
            store::NullArgument("events");
        int count = 0;
        NewEvent *events = ParseBatch(PG_GETARG_JSONB_P(1), &count);
        int64 expected = 0;
        bool has_expected = ExpectedVersionArgument(fcinfo, 2, &expected);
        return Int64GetDatum(AppendAndProject(stream, events, count, has_expected, expected));
    });
}

// amebo.new_event_id(): a time-ordered UUID (version 7), as append_event generates.
extern "C" Datum amebo_new_event_id(PG_FUNCTION_ARGS) {
    return pg::Entry([&] { return UUIDPGetDatum(store::NewEventId()); });
}
