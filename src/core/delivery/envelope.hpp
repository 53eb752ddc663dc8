// The JSON bodies POSTed to webhook handlers. Pure C++.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/delivery/feed_event.hpp"

namespace amebo::delivery {

// {"event_id":…,"stream":…,"version":…,"position":…,"action":…,"payload":…,
//  "metadata":…,"recorded_at":"2026-11-27T09:00:00.123456Z"} (payload and metadata verbatim,
// null when empty; strings escaped with control characters as \u00XX, UTF-8 passed through).
// On a shard of amebo_router (shard 0 or more), "shard":i follows "position".
std::string BuildEnvelope(const FeedEvent &event, int shard = -1);

// {"events":[envelope,…]} for a subscription that batches (no null pointers).
std::string BuildBatch(const std::vector<const FeedEvent *> &events, int shard = -1);

// RFC 3339 UTC text of a PostgreSQL-epoch microsecond time, always with six fraction digits:
// "2000-01-01T00:00:00.000000Z" for 0. Years outside 0000..9999 (not RFC 3339) are written
// with more digits or a leading '-'.
std::string FormatTimestamp(int64_t pg_microseconds);

// Parses an RFC 3339 time, "YYYY-MM-DDTHH:MM:SS[.fraction]" then "Z" or ±hh:mm ('t', 'z' and
// a space for 'T' accepted too), into PostgreSQL-epoch microseconds; false when the text is not
// such a time or a field is out of range. Second 60 rolls into the next minute, as in
// PostgreSQL; fractions beyond microseconds are rounded.
bool ParseTimestamp(std::string_view text, int64_t *pg_microseconds);

} // namespace amebo::delivery
