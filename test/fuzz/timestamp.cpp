// Fuzz target for the RFC 3339 times of delivery (FormatTimestamp and ParseTimestamp in
// src/core/delivery/envelope.cpp, used for recorded_at and metadata.deliver_after). Input: a
// time text; its first 8 bytes are also read as a PostgreSQL-epoch microsecond time.
// Properties: a text ParseTimestamp accepts has the documented shape, and its value equals
// the one computed with the C library's timegm from the same fields (fraction rounded to
// microseconds, second 60 rolling over, offset subtracted); formatting that value and parsing
// it again gives it back; and FormatTimestamp of any time whose year is 0000..9999 gives
// 27 characters that parse back to the same time.
#include <cstring>
#include <ctime>
#include <string>

#include "core/delivery/envelope.hpp"
#include "fuzz_check.hpp"

namespace {

using amebo::delivery::FormatTimestamp;
using amebo::delivery::ParseTimestamp;

constexpr int64_t kPostgresEpochUnixSeconds = 946684800;
constexpr int64_t kMicrosPerSecond = 1000000;

// The decimal number of the count digits at text[pos], or -1 if one is not a digit.
int64_t Number(std::string_view text, size_t pos, size_t count) {
    int64_t value = 0;
    for (size_t i = pos; i < pos + count; i++) {
        if (i >= text.size() || text[i] < '0' || text[i] > '9')
            return -1;
        value = value * 10 + (text[i] - '0');
    }
    return value;
}

// The value of an accepted text by another route: fields by position, then timegm.
int64_t ValueByTimegm(std::string_view text) {
    std::tm fields{};
    fields.tm_year = static_cast<int>(Number(text, 0, 4)) - 1900;
    fields.tm_mon = static_cast<int>(Number(text, 5, 2)) - 1;
    fields.tm_mday = static_cast<int>(Number(text, 8, 2));
    fields.tm_hour = static_cast<int>(Number(text, 11, 2));
    fields.tm_min = static_cast<int>(Number(text, 14, 2));
    fields.tm_sec = static_cast<int>(Number(text, 17, 2));
    int64_t seconds = static_cast<int64_t>(timegm(&fields)) - kPostgresEpochUnixSeconds;
    size_t pos = 19;
    int64_t micros = 0;
    if (text[pos] == '.') {
        size_t digits = text.find_first_not_of("0123456789", pos + 1) - pos - 1;
        std::string padded = std::string(text.substr(pos + 1, digits)) + "0000000";
        micros = Number(padded, 0, 6) + (padded[6] >= '5');
        pos += 1 + digits;
    }
    if (text[pos] != 'Z' && text[pos] != 'z') {
        int64_t offset = Number(text, pos + 1, 2) * 3600 + Number(text, pos + 4, 2) * 60;
        seconds -= text[pos] == '-' ? -offset : offset;
    }
    return seconds * kMicrosPerSecond + micros;
}

// True when a time's formatted year is 0000..9999 (the years ParseTimestamp reads).
bool HasFourDigitYear(int64_t micros) {
    std::string text = FormatTimestamp(micros);
    return text.size() == 27 && text[0] != '-';
}

// Checks what ParseTimestamp made of text.
void CheckParse(std::string_view text) {
    int64_t micros = 0;
    if (!ParseTimestamp(text, &micros))
        return;
    FUZZ_CHECK(text.size() >= 20 && text[4] == '-' && text[7] == '-' && text[13] == ':' &&
                   text[16] == ':',
               std::string(text));
    FUZZ_CHECK(micros == ValueByTimegm(text), std::string(text));
    if (HasFourDigitYear(micros)) {
        int64_t again = 0;
        FUZZ_CHECK(ParseTimestamp(FormatTimestamp(micros), &again) && again == micros,
                   FormatTimestamp(micros));
    }
}

// Checks that a time formats and parses back.
void CheckFormat(int64_t micros) {
    if (!HasFourDigitYear(micros))
        return;
    std::string text = FormatTimestamp(micros);
    int64_t parsed = 0;
    FUZZ_CHECK(ParseTimestamp(text, &parsed) && parsed == micros, text);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    CheckParse(amebo::fuzz::AsText(data, size));
    int64_t micros = 0;
    std::memcpy(&micros, data, std::min<size_t>(size, sizeof micros));
    CheckFormat(micros);
    // The years around 0000..9999 by shrinking the raw value into about +-12000 years.
    CheckFormat(micros % (int64_t{12000} * 366 * 86400 * kMicrosPerSecond));
    return 0;
}
