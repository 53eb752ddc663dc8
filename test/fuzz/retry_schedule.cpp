// Fuzz target for retry timing (src/core/delivery/retry_schedule.cpp). Input: 32 bytes read
// as attempt, base_ms, max_ms, a double, and now (zero-padded); the rest is a Retry-After
// header value.
// Properties: RetryDelayMs stays within [floor(0.75 d), 1.25 d) for d = min(max, base *
// 2^(attempt-1)) computed with 128-bit integers (0 when d is 0), whatever the inputs (NaN and
// infinities included), and never decreases as the attempt grows (same random number);
// ParseRetryAfterMs returns -1, or 0..86400000; digits-only values give min(value, 86400)
// seconds; an IMF-fixdate made by strftime from any time gives that time minus now, clamped
// to 0..1 day; a value that is neither is refused.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <string>

#include "core/delivery/retry_schedule.hpp"
#include "fuzz_check.hpp"

namespace {

using amebo::delivery::ParseRetryAfterMs;
using amebo::delivery::RetryDelayMs;

constexpr int64_t kDayMs = 86400 * 1000;

// min(max_ms, base_ms * 2^(attempt-1)) with negative times as 0, in 128-bit arithmetic.
int64_t BackoffByWideMath(int attempt, int64_t base_ms, int64_t max_ms) {
    __int128 base = std::max<int64_t>(base_ms, 0);
    __int128 cap = std::max<int64_t>(max_ms, 0);
    __int128 delay = std::min(base, cap);
    for (int i = 1; i < attempt && delay > 0 && delay < cap; i++)
        delay = std::min(delay * 2, cap);
    return static_cast<int64_t>(delay);
}

// The delay bounds and monotony in the attempt.
void CheckDelay(int attempt, int64_t base_ms, int64_t max_ms, double unit_random) {
    int64_t delay = RetryDelayMs(attempt, base_ms, max_ms, unit_random);
    __int128 backoff = BackoffByWideMath(attempt, base_ms, max_ms);
    std::string detail = std::to_string(attempt) + " " + std::to_string(base_ms) + " " +
                         std::to_string(max_ms) + " " + std::to_string(unit_random) + " -> " +
                         std::to_string(delay);
    if (backoff == 0) {
        FUZZ_CHECK(delay == 0, detail);
        return;
    }
    FUZZ_CHECK(static_cast<__int128>(delay) >= 3 * backoff / 4, detail);
    FUZZ_CHECK(4 * static_cast<__int128>(delay) < 5 * backoff, detail);
    if (attempt < 1000)
        FUZZ_CHECK(RetryDelayMs(attempt + 1, base_ms, max_ms, unit_random) >= delay, detail);
}

// An IMF-fixdate of a Unix time, made by strftime in the C locale.
std::string ImfFixdate(int64_t unix_seconds) {
    time_t time = static_cast<time_t>(unix_seconds);
    std::tm fields{};
    gmtime_r(&time, &fields);
    char text[64];
    std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &fields);
    return text;
}

// The Retry-After properties for one header value.
void CheckRetryAfter(std::string_view value, int64_t now) {
    int64_t ms = ParseRetryAfterMs(value, now);
    FUZZ_CHECK(ms == -1 || (ms >= 0 && ms <= kDayMs), std::to_string(ms));
    std::string_view trimmed = value;
    while (!trimmed.empty() && (trimmed.front() == ' ' || trimmed.front() == '\t'))
        trimmed.remove_prefix(1);
    while (!trimmed.empty() && (trimmed.back() == ' ' || trimmed.back() == '\t'))
        trimmed.remove_suffix(1);
    bool digits = !trimmed.empty() && trimmed.find_first_not_of("0123456789") == std::string::npos;
    if (digits) {
        int64_t seconds = 0;
        for (char c : trimmed)
            seconds = std::min<int64_t>(seconds * 10 + (c - '0'), 86400);
        FUZZ_CHECK(ms == seconds * 1000, std::string(value) + " -> " + std::to_string(ms));
    } else if (trimmed.size() != 29 || trimmed.substr(25) != " GMT") {
        FUZZ_CHECK(ms == -1, std::string(value) + " -> " + std::to_string(ms));
    }
}

// An HTTP date made from a time is read back as that time.
void CheckDate(int64_t date, int64_t now) {
    std::string text = ImfFixdate(date);
    int64_t expected = std::clamp<int64_t>(date - now, 0, 86400) * 1000;
    int64_t ms = ParseRetryAfterMs(text, now);
    FUZZ_CHECK(ms == expected, text + " at " + std::to_string(now) + " -> " + std::to_string(ms));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unsigned char head[32] = {};
    std::memcpy(head, data, std::min<size_t>(size, sizeof head));
    int32_t attempt;
    int64_t base_ms, max_ms;
    uint32_t now_seconds; // 1970 to 2106
    double unit_random;
    std::memcpy(&attempt, head, 4);
    std::memcpy(&base_ms, head + 4, 8);
    std::memcpy(&max_ms, head + 12, 8);
    std::memcpy(&unit_random, head + 20, 8);
    std::memcpy(&now_seconds, head + 28, 4);
    int64_t now = now_seconds;
    CheckDelay(attempt, base_ms, max_ms, unit_random);
    CheckDelay(attempt % 64, base_ms % 100000, max_ms % 10000000, unit_random);
    std::string_view value = amebo::fuzz::AsText(data, size);
    value.remove_prefix(std::min<size_t>(size, sizeof head));
    CheckRetryAfter(value, now);
    // Dates in years 1000 to 9999 (strftime writes four year digits), and around now.
    int64_t date =
        static_cast<int64_t>(static_cast<uint64_t>(base_ms) % 284012524800ULL) - 30610224000LL;
    CheckDate(date, now);
    CheckDate(now + max_ms % 200000 - 100000, now);
    return 0;
}
