// When a failed delivery is tried again: exponential backoff and Retry-After. Pure C++.
#include "core/delivery/retry_schedule.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include "core/delivery/calendar.hpp"

namespace amebo::delivery {

namespace {

constexpr int64_t kMillisPerSecond = 1000;
constexpr int64_t kMaxRetryAfterSeconds = 86400;
constexpr std::string_view kDayNames[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
constexpr std::string_view kMonthNames[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// min(max_ms, base_ms * 2^(attempt-1)) for non-negative times: doubles at most 63 times (enough
// for a base of 1 to reach any int64 max_ms) and only while below max_ms, so it cannot overflow
// or loop long however large attempt is.
int64_t CappedBackoff(int attempt, int64_t base_ms, int64_t max_ms) {
    constexpr int kMaxDoublings = 63;
    int doublings = attempt <= 1 ? 0 : std::min(attempt - 1, kMaxDoublings);
    int64_t delay = std::min(base_ms, max_ms);
    for (int i = 0; i < doublings && delay > 0 && delay < max_ms; i++)
        delay = delay > max_ms / 2 ? max_ms : delay * 2;
    return delay;
}

// delay scaled by 0.75 + 0.5 * unit_random (unit_random clamped to [0, 1]), rounded down and
// kept within [floor(0.75 * delay), 1.25 * delay) whatever double rounding does.
int64_t ApplyJitter(int64_t delay, double unit_random) {
    constexpr int64_t kLongest = std::numeric_limits<int64_t>::max();
    if (delay <= 0)
        return 0;
    if (!(unit_random >= 0.0))
        unit_random = 0.0;
    unit_random = std::min(unit_random, 1.0);
    int64_t quarter = delay / 4 + (delay % 4 != 0);
    int64_t lowest = delay - quarter;
    int64_t highest = delay > kLongest - quarter ? kLongest : delay + quarter - 1;
    double scaled = std::floor(static_cast<double>(delay) * (0.75 + 0.5 * unit_random));
    if (scaled >= static_cast<double>(highest))
        return highest;
    return std::max(lowest, static_cast<int64_t>(scaled));
}

// The value without the spaces and tabs HTTP allows around it.
std::string_view TrimSpaces(std::string_view value) {
    size_t start = value.find_first_not_of(" \t");
    if (start == std::string_view::npos)
        return {};
    size_t end = value.find_last_not_of(" \t");
    return value.substr(start, end - start + 1);
}

// A delay-seconds value (digits only), capped at a day; -1 when value is not one.
int64_t ParseDelaySeconds(std::string_view value) {
    if (value.empty())
        return -1;
    int64_t seconds = 0;
    for (char c : value) {
        if (c < '0' || c > '9')
            return -1;
        if (seconds <= kMaxRetryAfterSeconds)
            seconds = seconds * 10 + (c - '0');
    }
    return std::min(seconds, kMaxRetryAfterSeconds);
}

// Index of name in names, or -1.
template <size_t N> int IndexOfName(const std::string_view (&names)[N], std::string_view name) {
    for (size_t i = 0; i < N; i++)
        if (names[i] == name)
            return static_cast<int>(i);
    return -1;
}

// Exactly count digits at text[pos...] as a number, or -1.
int DigitsAt(std::string_view text, size_t pos, size_t count) {
    int number = 0;
    for (size_t i = 0; i < count; i++) {
        char c = text[pos + i];
        if (c < '0' || c > '9')
            return -1;
        number = number * 10 + (c - '0');
    }
    return number;
}

// An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT", RFC 9110) as Unix seconds; false when
// value is not one. The obsolete RFC 850 and asctime forms are not accepted.
bool ParseImfFixdate(std::string_view value, int64_t *unix_seconds) {
    constexpr std::string_view kShape = "Ddd, 00 Mmm 0000 00:00:00 GMT";
    if (value.size() != kShape.size() || value.substr(3, 2) != ", " || value[7] != ' ' ||
        value[11] != ' ' || value[16] != ' ' || value[19] != ':' || value[22] != ':' ||
        value.substr(25) != " GMT" || IndexOfName(kDayNames, value.substr(0, 3)) < 0)
        return false;
    int day = DigitsAt(value, 5, 2);
    int month = IndexOfName(kMonthNames, value.substr(8, 3)) + 1;
    int year = DigitsAt(value, 12, 4);
    int hour = DigitsAt(value, 17, 2);
    int minute = DigitsAt(value, 20, 2);
    int second = DigitsAt(value, 23, 2);
    if (month < 1 || year < 0 || day < 1 || day > DaysInMonth(year, month) || hour < 0 ||
        hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 60)
        return false;
    *unix_seconds = DaysFromCivil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
    return true;
}

} // namespace

int64_t RetryDelayMs(int attempt, int64_t base_ms, int64_t max_ms, double unit_random) {
    base_ms = std::max<int64_t>(base_ms, 0);
    max_ms = std::max<int64_t>(max_ms, 0);
    return ApplyJitter(CappedBackoff(attempt, base_ms, max_ms), unit_random);
}

int64_t ParseRetryAfterMs(std::string_view value, int64_t now_unix_seconds) {
    value = TrimSpaces(value);
    int64_t seconds = ParseDelaySeconds(value);
    if (seconds >= 0)
        return seconds * kMillisPerSecond;
    int64_t date_unix_seconds = 0;
    if (!ParseImfFixdate(value, &date_unix_seconds))
        return -1;
    if (date_unix_seconds <= now_unix_seconds)
        return 0;
    if (now_unix_seconds < date_unix_seconds - kMaxRetryAfterSeconds)
        return kMaxRetryAfterSeconds * kMillisPerSecond;
    return (date_unix_seconds - now_unix_seconds) * kMillisPerSecond;
}

} // namespace amebo::delivery
