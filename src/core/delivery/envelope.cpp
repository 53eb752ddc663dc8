// The JSON bodies POSTed to webhook handlers, and their time format. Pure C++.
#include "core/delivery/envelope.hpp"

#include <cstdio>
#include <cstdlib>
#include "core/delivery/calendar.hpp"

namespace amebo::delivery {

namespace {

constexpr int64_t kMicrosPerSecond = 1000000;
constexpr int64_t kSecondsPerDay = 86400;
constexpr int64_t kMicrosPerDay = kSecondsPerDay * kMicrosPerSecond;
// Days from 1970-01-01 (the Unix epoch) to 2000-01-01 (PostgreSQL's epoch).
constexpr int64_t kPostgresEpochUnixDays = 10957;

// A proleptic Gregorian calendar date.
struct CivilDate {
    int64_t year;
    int month; // 1..12
    int day;   // 1..31
};

// The Gregorian date of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
CivilDate CivilFromDays(int64_t days) {
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t day_of_era = days - era * 146097;
    int64_t year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
    int64_t day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    int64_t month_index = (5 * day_of_year + 2) / 153;
    int day = static_cast<int>(day_of_year - (153 * month_index + 2) / 5 + 1);
    int month = static_cast<int>(month_index < 10 ? month_index + 3 : month_index - 9);
    return {year_of_era + era * 400 + (month <= 2), month, day};
}

// Appends text as a JSON string literal: quotes, backslashes and control characters escaped,
// every other byte (UTF-8 included) copied.
void AppendJsonString(std::string *out, std::string_view text) {
    static constexpr char kHex[] = "0123456789abcdef";
    out->push_back('"');
    for (char c : text) {
        auto byte = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out->push_back('\\');
            out->push_back(c);
        } else if (byte < 0x20) {
            out->append("\\u00");
            out->push_back(kHex[byte >> 4]);
            out->push_back(kHex[byte & 0x0f]);
        } else {
            out->push_back(c);
        }
    }
    out->push_back('"');
}

// Appends JSON text as it is, or null when there is none.
void AppendJsonValue(std::string *out, std::string_view json) {
    out->append(json.empty() ? std::string_view("null") : json);
}

// Appends one event's envelope object (with the shard when it is 0 or more).
void AppendEnvelope(std::string *out, const FeedEvent &event, int shard) {
    out->append("{\"event_id\":");
    AppendJsonString(out, event.event_id);
    out->append(",\"stream\":");
    AppendJsonString(out, event.stream);
    out->append(",\"version\":");
    out->append(std::to_string(event.version));
    out->append(",\"position\":");
    out->append(std::to_string(event.position));
    if (shard >= 0) {
        out->append(",\"shard\":");
        out->append(std::to_string(shard));
    }
    out->append(",\"action\":");
    AppendJsonString(out, event.action);
    out->append(",\"payload\":");
    AppendJsonValue(out, event.payload);
    out->append(",\"metadata\":");
    AppendJsonValue(out, event.metadata);
    out->append(",\"recorded_at\":");
    AppendJsonString(out, FormatTimestamp(event.recorded_at));
    out->push_back('}');
}

// Reads exactly count decimal digits at *pos into *value, advancing *pos.
bool ReadDigits(std::string_view text, size_t *pos, size_t count, int *value) {
    if (text.size() - *pos < count)
        return false;
    int number = 0;
    for (size_t i = 0; i < count; i++) {
        char c = text[*pos + i];
        if (c < '0' || c > '9')
            return false;
        number = number * 10 + (c - '0');
    }
    *pos += count;
    *value = number;
    return true;
}

// Reads the character expected at *pos, advancing *pos.
bool ReadChar(std::string_view text, size_t *pos, char expected) {
    if (*pos >= text.size() || text[*pos] != expected)
        return false;
    ++*pos;
    return true;
}

// Reads an optional ".digits" fraction as microseconds, rounded half up at the seventh digit.
bool ReadFraction(std::string_view text, size_t *pos, int64_t *micros) {
    *micros = 0;
    if (*pos >= text.size() || text[*pos] != '.')
        return true;
    size_t start = ++*pos;
    int64_t scale = 100000;
    bool round_up = false;
    while (*pos < text.size() && text[*pos] >= '0' && text[*pos] <= '9') {
        int digit = text[*pos] - '0';
        if (scale > 0)
            *micros += digit * scale;
        else if (*pos - start == 6)
            round_up = digit >= 5;
        scale /= 10;
        ++*pos;
    }
    *micros += round_up;
    return *pos > start;
}

// Reads the zone ("Z" or ±hh:mm) as seconds east of UTC.
bool ReadZone(std::string_view text, size_t *pos, int64_t *offset_seconds) {
    if (*pos >= text.size())
        return false;
    char designator = text[(*pos)++];
    if (designator == 'Z' || designator == 'z') {
        *offset_seconds = 0;
        return true;
    }
    int hours = 0;
    int minutes = 0;
    if ((designator != '+' && designator != '-') || !ReadDigits(text, pos, 2, &hours) ||
        !ReadChar(text, pos, ':') || !ReadDigits(text, pos, 2, &minutes) || hours > 23 ||
        minutes > 59)
        return false;
    *offset_seconds = (designator == '-' ? -1 : 1) * (hours * 3600 + minutes * 60);
    return true;
}

// Reads "YYYY-MM-DD" and checks the day exists.
bool ReadDate(std::string_view text, size_t *pos, CivilDate *date) {
    int year = 0;
    if (!ReadDigits(text, pos, 4, &year) || !ReadChar(text, pos, '-') ||
        !ReadDigits(text, pos, 2, &date->month) || !ReadChar(text, pos, '-') ||
        !ReadDigits(text, pos, 2, &date->day))
        return false;
    date->year = year;
    return date->month >= 1 && date->month <= 12 && date->day >= 1 &&
           date->day <= DaysInMonth(date->year, date->month);
}

// Reads "HH:MM:SS" as seconds since midnight; second 60 (a leap second) is accepted and rolls
// into the next minute, as PostgreSQL does.
bool ReadTimeOfDay(std::string_view text, size_t *pos, int64_t *seconds) {
    int hour = 0;
    int minute = 0;
    int second = 0;
    if (!ReadDigits(text, pos, 2, &hour) || !ReadChar(text, pos, ':') ||
        !ReadDigits(text, pos, 2, &minute) || !ReadChar(text, pos, ':') ||
        !ReadDigits(text, pos, 2, &second) || hour > 23 || minute > 59 || second > 60)
        return false;
    *seconds = hour * 3600 + minute * 60 + second;
    return true;
}

// True for the characters allowed between the date and the time.
bool IsDateTimeSeparator(char c) {
    return c == 'T' || c == 't' || c == ' ';
}

} // namespace

std::string BuildEnvelope(const FeedEvent &event, int shard) {
    std::string out;
    out.reserve(200 + event.stream.size() + event.action.size() + event.payload.size() +
                event.metadata.size());
    AppendEnvelope(&out, event, shard);
    return out;
}

std::string BuildBatch(const std::vector<const FeedEvent *> &events, int shard) {
    std::string out = "{\"events\":[";
    for (size_t i = 0; i < events.size(); i++) {
        if (i > 0)
            out.push_back(',');
        AppendEnvelope(&out, *events[i], shard);
    }
    out.append("]}");
    return out;
}

std::string FormatTimestamp(int64_t pg_microseconds) {
    int64_t days = pg_microseconds / kMicrosPerDay;
    int64_t micros_of_day = pg_microseconds % kMicrosPerDay;
    if (micros_of_day < 0) {
        micros_of_day += kMicrosPerDay;
        days -= 1;
    }
    CivilDate date = CivilFromDays(days + kPostgresEpochUnixDays);
    int64_t seconds_of_day = micros_of_day / kMicrosPerSecond;
    char text[64];
    std::snprintf(text, sizeof text, "%s%04lld-%02d-%02dT%02d:%02d:%02d.%06lldZ",
                  date.year < 0 ? "-" : "", static_cast<long long>(std::llabs(date.year)),
                  date.month, date.day, static_cast<int>(seconds_of_day / 3600),
                  static_cast<int>(seconds_of_day / 60 % 60), static_cast<int>(seconds_of_day % 60),
                  static_cast<long long>(micros_of_day % kMicrosPerSecond));
    return text;
}

bool ParseTimestamp(std::string_view text, int64_t *pg_microseconds) {
    size_t pos = 0;
    CivilDate date{};
    int64_t seconds_of_day = 0;
    int64_t fraction_micros = 0;
    int64_t offset_seconds = 0;
    if (!ReadDate(text, &pos, &date) || pos >= text.size() || !IsDateTimeSeparator(text[pos++]) ||
        !ReadTimeOfDay(text, &pos, &seconds_of_day) ||
        !ReadFraction(text, &pos, &fraction_micros) || !ReadZone(text, &pos, &offset_seconds) ||
        pos != text.size())
        return false;
    int64_t days = DaysFromCivil(date.year, date.month, date.day) - kPostgresEpochUnixDays;
    *pg_microseconds = days * kMicrosPerDay + (seconds_of_day - offset_seconds) * kMicrosPerSecond +
                       fraction_micros;
    return true;
}

} // namespace amebo::delivery
