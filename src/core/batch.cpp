// Batch rules. Pure C++.
#include "core/batch.hpp"

#include <algorithm>
#include <numeric>

namespace amebo::batch {

std::optional<std::size_t> FirstDuplicateId(const std::vector<EventId> &ids) {
    std::vector<std::size_t> order(ids.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return ids[a] < ids[b]; });
    std::optional<std::size_t> first;
    for (std::size_t i = 1; i < order.size(); i++)
        if (ids[order[i]] == ids[order[i - 1]] && (!first || order[i] < *first))
            first = order[i];
    return first;
}

} // namespace amebo::batch
