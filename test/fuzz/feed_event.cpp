// Fuzz target for the output plugin's feed record codec (src/core/delivery/feed_event.cpp).
// Input: arbitrary bytes, read two ways.
// Properties: (1) decoding the bytes as a record either fails with a message and leaves the
// event untouched, or succeeds and re-encoding the event gives back exactly those bytes (the
// format has one spelling per event); (2) an event built from the bytes (three integers, then
// newline-separated strings) survives encode then decode unchanged, and every proper prefix of
// its record, and the record with a byte appended, is refused.
#include <algorithm>
#include <cstring>
#include <string>

#include "core/delivery/feed_event.hpp"
#include "fuzz_check.hpp"

namespace {

using amebo::delivery::FeedEvent;

// True when two events have the same fields.
bool SameEvent(const FeedEvent &a, const FeedEvent &b) {
    return a.position == b.position && a.event_id == b.event_id && a.stream == b.stream &&
           a.version == b.version && a.action == b.action && a.payload == b.payload &&
           a.metadata == b.metadata && a.recorded_at == b.recorded_at;
}

// An event made of the input: 24 bytes of integers (zero-padded), then five string fields.
FeedEvent EventOf(std::string_view data) {
    char integers[24] = {};
    std::memcpy(integers, data.data(), std::min<size_t>(data.size(), sizeof integers));
    data.remove_prefix(std::min<size_t>(data.size(), sizeof integers));
    FeedEvent event;
    std::memcpy(&event.position, integers, 8);
    std::memcpy(&event.version, integers + 8, 8);
    std::memcpy(&event.recorded_at, integers + 16, 8);
    auto fields = amebo::fuzz::SplitFields(data, 5);
    event.event_id = fields[0];
    event.stream = fields[1];
    event.action = fields[2];
    event.payload = fields[3];
    event.metadata = fields[4];
    return event;
}

// Property (1): a decoded record is the canonical encoding of what it decoded to.
void CheckDecode(std::string_view record) {
    FeedEvent sentinel;
    sentinel.stream = "untouched";
    FeedEvent event = sentinel;
    std::string error;
    if (!amebo::delivery::DecodeFeedEvent(record, &event, &error)) {
        FUZZ_CHECK(!error.empty(), "a refusal says why");
        FUZZ_CHECK(SameEvent(event, sentinel), "a refused record leaves the event as it was");
        return;
    }
    FUZZ_CHECK(error.empty(), error);
    FUZZ_CHECK(amebo::delivery::EncodeFeedEvent(event) == record, "re-encoding differs");
}

// Property (2): encode then decode is the identity; truncated or extended records are refused.
void CheckRoundTrip(const FeedEvent &event) {
    std::string record = amebo::delivery::EncodeFeedEvent(event);
    FeedEvent decoded;
    std::string error;
    FUZZ_CHECK(amebo::delivery::DecodeFeedEvent(record, &decoded, &error), error);
    FUZZ_CHECK(SameEvent(decoded, event), "round trip changed the event");
    // Every prefix of a short record; about 64 spread over a long one (keeps runs fast).
    size_t step = std::max<size_t>(1, record.size() / 64);
    for (size_t length = 0; length < record.size(); length += step) {
        if (length + step >= record.size())
            length = record.size() - 1; // the longest prefix always
        FeedEvent ignored;
        FUZZ_CHECK(!amebo::delivery::DecodeFeedEvent(std::string_view(record).substr(0, length),
                                                     &ignored, nullptr),
                   "a truncated record of " + std::to_string(length) + " bytes was accepted");
    }
    FeedEvent ignored;
    FUZZ_CHECK(!amebo::delivery::DecodeFeedEvent(record + "x", &ignored, nullptr),
               "a record with a trailing byte was accepted");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string_view bytes = amebo::fuzz::AsText(data, size);
    CheckDecode(bytes);
    CheckRoundTrip(EventOf(bytes));
    return 0;
}
