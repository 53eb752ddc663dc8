// Time-ordered event ids (UUID version 7, RFC 9562). Pure C++.
#pragma once

#include <array>
#include <cstdint>

namespace amebo::uuid7 {

using Bytes = std::array<std::uint8_t, 16>;

// Builds a version 7 UUID from a Unix time in milliseconds and 10 random bytes.
// Ids made later sort later, so the event_id index grows at its right edge like a sequence.
Bytes Make(std::uint64_t unix_ms, const std::array<std::uint8_t, 10> &random);

} // namespace amebo::uuid7
