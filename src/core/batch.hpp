// Rules for batches of events that need no database. Pure C++.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace amebo::batch {

using EventId = std::array<std::uint8_t, 16>;

// The index of the first id that repeats an earlier one in the batch, if any.
std::optional<std::size_t> FirstDuplicateId(const std::vector<EventId> &ids);

} // namespace amebo::batch
