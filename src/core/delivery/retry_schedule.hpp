// When a failed delivery is tried again. Pure C++.
#pragma once

#include <cstdint>
#include <string_view>

namespace amebo::delivery {

// Delay before attempt number attempt + 1 after attempt number attempt (1-based) failed:
// min(max_ms, base_ms * 2^(attempt-1)), scaled by a jitter factor in [0.75, 1.25) taken
// from unit_random in [0, 1) (clamped into it). Attempts below 1 count as 1; negative times
// as 0; large attempts cannot overflow.
int64_t RetryDelayMs(int attempt, int64_t base_ms, int64_t max_ms, double unit_random);

// A Retry-After header value (delay in seconds, or an IMF-fixdate HTTP date such as
// "Wed, 21 Oct 2015 07:28:00 GMT") as milliseconds from now_unix_seconds, capped at one day;
// -1 when absent or unparsable (the obsolete date forms included); 0 for a date in the past.
int64_t ParseRetryAfterMs(std::string_view value, int64_t now_unix_seconds);

} // namespace amebo::delivery
