// Fuzz target for the batch rules (src/core/batch.cpp). Input: a list of event ids, 16 bytes
// each (a shorter tail is dropped); the first byte of the input picks how many distinct bytes
// the ids use, so that repeats are frequent. Property: FirstDuplicateId names the smallest
// index whose id appeared at an earlier index (checked against a quadratic search), or
// nothing when every id is distinct.
#include <optional>
#include <string>
#include <vector>

#include "core/batch.hpp"
#include "fuzz_check.hpp"

namespace {

using amebo::batch::EventId;

// The answer by brute force: for each index in order, look for the same id before it.
std::optional<size_t> FirstRepeatByScan(const std::vector<EventId> &ids) {
    for (size_t i = 0; i < ids.size(); i++)
        for (size_t j = 0; j < i; j++)
            if (ids[i] == ids[j])
                return i;
    return std::nullopt;
}

// The ids of the input, their bytes folded into a small alphabet when it asks for one.
std::vector<EventId> IdsOf(const uint8_t *data, size_t size) {
    std::vector<EventId> ids;
    if (size == 0)
        return ids;
    unsigned alphabet = data[0] % 4 == 0 ? 256 : data[0] % 4 + 1;
    for (size_t offset = 1; offset + 16 <= size && ids.size() < 512; offset += 16) {
        EventId id{};
        for (size_t i = 0; i < 16; i++)
            id[i] = static_cast<uint8_t>(data[offset + i] % alphabet);
        ids.push_back(id);
    }
    return ids;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::vector<EventId> ids = IdsOf(data, size);
    std::optional<size_t> found = amebo::batch::FirstDuplicateId(ids);
    std::optional<size_t> expected = FirstRepeatByScan(ids);
    FUZZ_CHECK(found == expected, "found " + (found ? std::to_string(*found) : "none") +
                                      ", expected " +
                                      (expected ? std::to_string(*expected) : "none"));
    return 0;
}
