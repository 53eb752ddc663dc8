// Fuzz target for subscription matching (src/core/delivery/matching.cpp). Input:
// "pattern\naction\ndocument JSON\nfilter JSON" (the filter keeps any further newlines).
// Properties: ActionMatches agrees with a dynamic-programming glob matcher ('*' = any run);
// IsValidActionPattern accepts exactly 1..255 bytes of [a-z0-9_.*]; JsonContains is
// reflexive, every document contains {} and [] when of that kind, an object contains each of
// its one-key sub-objects and an array each of its elements (wrapped in an array), adding a
// key the document lacks to an object filter makes it fail, and containment is transitive on
// the document, the filter and the filter reduced to its first member.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/delivery/matching.hpp"
#include "fuzz_check.hpp"

namespace {

using amebo::delivery::ActionMatches;
using amebo::delivery::JsonContains;
using nlohmann::json;

// Glob matching by dynamic programming over (pattern prefix, text prefix).
bool GlobByTable(std::string_view pattern, std::string_view text) {
    std::vector<char> row(text.size() + 1, 0);
    row[0] = 1;
    for (char p : pattern) {
        std::vector<char> next(text.size() + 1, 0);
        next[0] = p == '*' && row[0];
        for (size_t j = 1; j <= text.size(); j++)
            next[j] = p == '*' ? (row[j] || next[j - 1]) : (row[j - 1] && p == text[j - 1]);
        row = std::move(next);
    }
    return row[text.size()];
}

// The pattern rule, written independently.
bool ShouldBeValidPattern(std::string_view pattern) {
    if (pattern.empty() || pattern.size() > 255)
        return false;
    for (char c : pattern)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '*'))
            return false;
    return true;
}

// A key that the object does not have.
std::string MissingKey(const json &object) {
    std::string key = "missing";
    while (object.contains(key))
        key += "_";
    return key;
}

// The containment properties for one document and one filter.
void CheckContainment(const json &document, const json &filter) {
    FUZZ_CHECK(JsonContains(document, document), "not reflexive: " + document.dump());
    if (document.is_object()) {
        FUZZ_CHECK(JsonContains(document, json::object()), "{} not contained");
        for (const auto &[key, value] : document.items())
            FUZZ_CHECK(JsonContains(document, json{{key, value}}), "own member " + key);
        json extended = filter.is_object() ? filter : json::object();
        extended[MissingKey(document)] = 1;
        FUZZ_CHECK(!JsonContains(document, extended), "a missing key matched");
    }
    if (document.is_array()) {
        FUZZ_CHECK(JsonContains(document, json::array()), "[] not contained");
        for (const json &element : document)
            FUZZ_CHECK(JsonContains(document, json::array({element})), "own element");
    }
    if (!JsonContains(document, filter) || filter.empty() || !filter.is_structured())
        return;
    json reduced = filter.is_object() ? json{{filter.begin().key(), filter.begin().value()}}
                                      : json::array({filter.front()});
    FUZZ_CHECK(JsonContains(filter, reduced), "filter lacks its own first member");
    FUZZ_CHECK(JsonContains(document, reduced), "containment is not transitive");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    auto fields = amebo::fuzz::SplitFields(amebo::fuzz::AsText(data, size), 4);
    FUZZ_CHECK(ActionMatches(fields[0], fields[1]) == GlobByTable(fields[0], fields[1]),
               std::string(fields[0]) + " against " + std::string(fields[1]));
    FUZZ_CHECK(amebo::delivery::IsValidActionPattern(fields[0]) == ShouldBeValidPattern(fields[0]),
               std::string(fields[0]));
    json document = json::parse(fields[2], nullptr, false);
    json filter = json::parse(fields[3], nullptr, false);
    if (!document.is_discarded() && !filter.is_discarded())
        CheckContainment(document, filter);
    return 0;
}
