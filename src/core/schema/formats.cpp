// Checks for the "format" keyword, written without regexes so that they cost nanoseconds.
// Pure C++.
#include "core/schema/formats.hpp"

#include <arpa/inet.h>
#include <cctype>
#include <string>
#include <string_view>

namespace amebo::schema {

namespace {

// Reads exactly n decimal digits at s[pos] into *out.
bool Digits(std::string_view s, std::size_t pos, std::size_t n, int *out) {
    if (pos + n > s.size())
        return false;
    int value = 0;
    for (std::size_t i = pos; i < pos + n; i++) {
        if (!std::isdigit(static_cast<unsigned char>(s[i])))
            return false;
        value = value * 10 + (s[i] - '0');
    }
    *out = value;
    return true;
}

// True for a Gregorian leap year.
bool LeapYear(int year) {
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

// RFC 3339 full-date: YYYY-MM-DD with a day that exists in that month.
bool IsDate(std::string_view s) {
    int year = 0, month = 0, day = 0;
    if (s.size() != 10 || s[4] != '-' || s[7] != '-' || !Digits(s, 0, 4, &year) ||
        !Digits(s, 5, 2, &month) || !Digits(s, 8, 2, &day))
        return false;
    static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (month < 1 || month > 12 || day < 1)
        return false;
    int last = kDays[month - 1] + (month == 2 && LeapYear(year) ? 1 : 0);
    return day <= last;
}

// RFC 3339 full-time: HH:MM:SS[.frac](Z|+HH:MM|-HH:MM).
bool IsTime(std::string_view s) {
    int hour = 0, minute = 0, second = 0;
    if (s.size() < 9 || s[2] != ':' || s[5] != ':' || !Digits(s, 0, 2, &hour) ||
        !Digits(s, 3, 2, &minute) || !Digits(s, 6, 2, &second))
        return false;
    if (hour > 23 || minute > 59 || second > 60)
        return false;
    std::size_t pos = 8;
    if (pos < s.size() && s[pos] == '.') {
        std::size_t start = ++pos;
        while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos])))
            pos++;
        if (pos == start)
            return false;
    }
    if (pos == s.size())
        return false;
    if (s[pos] == 'Z' || s[pos] == 'z')
        return pos + 1 == s.size();
    int offset_hour = 0, offset_minute = 0;
    return (s[pos] == '+' || s[pos] == '-') && pos + 6 == s.size() && s[pos + 3] == ':' &&
           Digits(s, pos + 1, 2, &offset_hour) && Digits(s, pos + 4, 2, &offset_minute) &&
           offset_hour <= 23 && offset_minute <= 59;
}

// RFC 3339 date-time: full-date "T" full-time.
bool IsDateTime(std::string_view s) {
    return s.size() > 11 && (s[10] == 'T' || s[10] == 't') && IsDate(s.substr(0, 10)) &&
           IsTime(s.substr(11));
}

// A pragmatic address check: one '@', a non-empty local part, a dotted domain, no spaces.
bool IsEmail(std::string_view s) {
    std::size_t at = s.find('@');
    if (at == std::string_view::npos || at == 0 || s.find('@', at + 1) != std::string_view::npos)
        return false;
    std::string_view domain = s.substr(at + 1);
    if (domain.empty() || domain.front() == '.' || domain.back() == '.')
        return false;
    for (char c : s)
        if (std::isspace(static_cast<unsigned char>(c)) ||
            std::iscntrl(static_cast<unsigned char>(c)))
            return false;
    return true;
}

// 8-4-4-4-12 hexadecimal digits.
bool IsUuid(std::string_view s) {
    if (s.size() != 36)
        return false;
    for (std::size_t i = 0; i < s.size(); i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !std::isxdigit(static_cast<unsigned char>(s[i])))
            return false;
    }
    return true;
}

// Dotted-quad IPv4 without leading zeros.
bool IsIpv4(std::string_view s) {
    int parts = 0;
    std::size_t pos = 0;
    while (parts < 4) {
        std::size_t start = pos;
        int value = 0;
        while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos])) &&
               pos - start < 3)
            value = value * 10 + (s[pos++] - '0');
        std::size_t len = pos - start;
        if (len == 0 || value > 255 || (len > 1 && s[start] == '0'))
            return false;
        if (++parts < 4 && (pos >= s.size() || s[pos++] != '.'))
            return false;
    }
    return pos == s.size();
}

// An IPv6 address as inet_pton reads it.
bool IsIpv6(std::string_view s) {
    unsigned char buffer[16];
    return inet_pton(AF_INET6, std::string(s).c_str(), buffer) == 1;
}

} // namespace

bool FormatHolds(std::string_view format, std::string_view value) {
    if (format == "date")
        return IsDate(value);
    if (format == "time")
        return IsTime(value);
    if (format == "date-time")
        return IsDateTime(value);
    if (format == "email")
        return IsEmail(value);
    if (format == "uuid")
        return IsUuid(value);
    if (format == "ipv4")
        return IsIpv4(value);
    if (format == "ipv6")
        return IsIpv6(value);
    return true;
}

} // namespace amebo::schema
