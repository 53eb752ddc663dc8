// Fuzz target for webhook bodies (src/core/delivery/envelope.cpp). Input:
// "position version recorded_at\nevent_id\nstream\naction\npayload\nmetadata" (integers in
// decimal; the metadata keeps any further newlines).
// Properties, for events as PostgreSQL hands them over (strings in UTF-8, payload and metadata
// empty or JSON): the envelope is one JSON object with exactly the eight documented members,
// holding the event's strings and integers unchanged, payload and metadata as the same JSON
// (null when empty) and recorded_at as FormatTimestamp gives it; a batch of the event twice is
// {"events": [envelope, envelope]}. Any other input must still build without failing.
#include <cstdlib>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/delivery/envelope.hpp"
#include "fuzz_check.hpp"

namespace {

using amebo::delivery::FeedEvent;
using nlohmann::json;

// The event the input describes.
FeedEvent EventOf(std::string_view input) {
    auto fields = amebo::fuzz::SplitFields(input, 6);
    FeedEvent event;
    std::istringstream numbers{std::string(fields[0])};
    long long position = 0, version = 0, recorded_at = 0;
    numbers >> position >> version >> recorded_at;
    event.position = position;
    event.version = version;
    event.recorded_at = recorded_at;
    event.event_id = fields[1];
    event.stream = fields[2];
    event.action = fields[3];
    event.payload = fields[4];
    event.metadata = fields[5];
    return event;
}

// True when text is JSON as jsonb stores it: no NUL byte (PostgreSQL text has none, and
// nlohmann's parser takes one for the end of the input) and accepted by the parser.
bool IsJsonText(const std::string &text) {
    return text.find('\0') == std::string::npos && json::accept(text);
}

// True when the event is one PostgreSQL can hand over: UTF-8 text and JSON (or empty) bodies.
bool IsStorable(const FeedEvent &event) {
    using amebo::fuzz::IsValidUtf8;
    return IsValidUtf8(event.event_id) && IsValidUtf8(event.stream) && IsValidUtf8(event.action) &&
           (event.payload.empty() || IsJsonText(event.payload)) &&
           (event.metadata.empty() || IsJsonText(event.metadata));
}

// The JSON a body field should carry.
json Expected(const std::string &text) {
    return text.empty() ? json(nullptr) : json::parse(text);
}

// Checks one parsed envelope against the event.
void CheckEnvelope(const json &envelope, const FeedEvent &event) {
    FUZZ_CHECK(envelope.is_object() && envelope.size() == 8, envelope.dump());
    FUZZ_CHECK(envelope.at("event_id") == event.event_id, "event_id");
    FUZZ_CHECK(envelope.at("stream") == event.stream, "stream");
    FUZZ_CHECK(envelope.at("action") == event.action, "action");
    FUZZ_CHECK(envelope.at("version").is_number_integer() &&
                   envelope.at("version").get<int64_t>() == event.version,
               "version");
    FUZZ_CHECK(envelope.at("position").is_number_integer() &&
                   envelope.at("position").get<int64_t>() == event.position,
               "position");
    FUZZ_CHECK(envelope.at("payload") == Expected(event.payload), "payload");
    FUZZ_CHECK(envelope.at("metadata") == Expected(event.metadata), "metadata");
    FUZZ_CHECK(envelope.at("recorded_at") == amebo::delivery::FormatTimestamp(event.recorded_at),
               "recorded_at");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FeedEvent event = EventOf(amebo::fuzz::AsText(data, size));
    std::string body = amebo::delivery::BuildEnvelope(event);
    std::string batch = amebo::delivery::BuildBatch({&event, &event});
    if (!IsStorable(event))
        return 0;
    json envelope = json::parse(body, nullptr, false);
    FUZZ_CHECK(!envelope.is_discarded(), "not JSON: " + body);
    CheckEnvelope(envelope, event);
    json parsed_batch = json::parse(batch, nullptr, false);
    FUZZ_CHECK(!parsed_batch.is_discarded() && parsed_batch.size() == 1 &&
                   parsed_batch.at("events").is_array() && parsed_batch.at("events").size() == 2,
               batch);
    for (const json &element : parsed_batch.at("events"))
        FUZZ_CHECK(element == envelope, "batch element differs from the envelope");
    return 0;
}
