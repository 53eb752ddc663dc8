// The JSON Schema "format" values amebo checks. Pure C++.
#pragma once

#include <string_view>

namespace amebo::schema {

// True when value is a valid instance of format: date, time, date-time (RFC 3339), email,
// uuid, ipv4, ipv6. Formats amebo does not know are annotations and always hold.
bool FormatHolds(std::string_view format, std::string_view value);

} // namespace amebo::schema
