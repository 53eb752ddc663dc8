// One committed event as the delivery side sees it, and the binary record the output plugin
// writes for it. Pure C++: no PostgreSQL header may be included here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace amebo::delivery {

// A committed event. Times are microseconds since 2000-01-01 00:00 UTC (PostgreSQL's epoch).
struct FeedEvent {
    int64_t position = 0;
    std::string event_id; // canonical lowercase text, 36 characters
    std::string stream;
    int64_t version = 0;
    std::string action;
    std::string payload;  // JSON text
    std::string metadata; // JSON text
    int64_t recorded_at = 0;
};

// The one-byte record the plugin writes after a transaction's events, at its end LSN.
inline constexpr char kCommitMarker = 'C';

// The plugin's record for one event: a version byte, then the fields in FeedEvent's order,
// integers as 8 bytes big-endian, strings as a 4-byte big-endian length and the bytes.
std::string EncodeFeedEvent(const FeedEvent &event);

// Decodes a record written by EncodeFeedEvent; false, with *error set, when malformed.
bool DecodeFeedEvent(std::string_view record, FeedEvent *event, std::string *error);

} // namespace amebo::delivery
