// UUID version 7 layout: 48-bit milliseconds, 4-bit version, 12 random bits, 2-bit variant,
// 62 random bits. Pure C++.
#include "core/uuid7.hpp"

namespace amebo::uuid7 {

Bytes Make(std::uint64_t unix_ms, const std::array<std::uint8_t, 10> &random) {
    Bytes id{};
    for (int i = 0; i < 6; i++)
        id[i] = static_cast<std::uint8_t>(unix_ms >> (8 * (5 - i)));
    for (int i = 0; i < 10; i++)
        id[6 + i] = random[i];
    id[6] = static_cast<std::uint8_t>(0x70 | (id[6] & 0x0f));
    id[8] = static_cast<std::uint8_t>(0x80 | (id[8] & 0x3f));
    return id;
}

} // namespace amebo::uuid7
