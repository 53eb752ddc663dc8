// Which events a subscription wants: action globs and jsonb-style payload filters. Pure C++.
#include "core/delivery/matching.hpp"

namespace amebo::delivery {

namespace {

using Json = nlohmann::json;

constexpr size_t kMaxPatternBytes = 255;

// True for the characters an action pattern may hold.
bool IsPatternChar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '*';
}

// True when two JSON numbers are equal as numbers (1, 1.0 and 1e0 are one value): integers
// compare exactly, anything involving a float compares as double.
bool NumbersEqual(const Json &left, const Json &right) {
    if (left.is_number_float() || right.is_number_float())
        return left.get<double>() == right.get<double>();
    if (left.is_number_unsigned() && right.is_number_unsigned())
        return left.get<uint64_t>() == right.get<uint64_t>();
    if (left.is_number_unsigned() || right.is_number_unsigned()) {
        const Json &unsigned_side = left.is_number_unsigned() ? left : right;
        const Json &signed_side = left.is_number_unsigned() ? right : left;
        int64_t signed_value = signed_side.get<int64_t>();
        return signed_value >= 0 &&
               static_cast<uint64_t>(signed_value) == unsigned_side.get<uint64_t>();
    }
    return left.get<int64_t>() == right.get<int64_t>();
}

// jsonb's equality of two scalars (null, boolean, number, string).
bool ScalarsEqual(const Json &left, const Json &right) {
    if (left.is_number() && right.is_number())
        return NumbersEqual(left, right);
    return left.type() == right.type() && left == right;
}

// True for JSON objects and arrays.
bool IsContainer(const Json &value) {
    return value.is_object() || value.is_array();
}

// Containment below the top level, defined after the helpers that recurse into it.
bool ContainsNested(const Json &document, const Json &filter);

// Object containment: every key of filter is in document, with a value that contains its own.
bool ObjectContains(const Json &document, const Json &filter) {
    for (auto entry = filter.begin(); entry != filter.end(); ++entry) {
        auto found = document.find(entry.key());
        if (found == document.end() || !ContainsNested(*found, entry.value()))
            return false;
    }
    return true;
}

// True when some element of array equals scalar.
bool ArrayHoldsScalar(const Json &array, const Json &scalar) {
    for (const Json &element : array)
        if (!IsContainer(element) && ScalarsEqual(element, scalar))
            return true;
    return false;
}

// True when some container element of array contains the container wanted.
bool ArrayHoldsContainer(const Json &array, const Json &wanted) {
    for (const Json &element : array)
        if (IsContainer(element) && ContainsNested(element, wanted))
            return true;
    return false;
}

// Array containment: every element of filter is matched by some element of document, in any
// order and however often it repeats.
bool ArrayContains(const Json &document, const Json &filter) {
    for (const Json &wanted : filter) {
        bool held = IsContainer(wanted) ? ArrayHoldsContainer(document, wanted)
                                        : ArrayHoldsScalar(document, wanted);
        if (!held)
            return false;
    }
    return true;
}

// Containment below the top level: the kinds must agree (an array never contains a bare
// scalar here).
bool ContainsNested(const Json &document, const Json &filter) {
    if (document.is_object() && filter.is_object())
        return ObjectContains(document, filter);
    if (document.is_array() && filter.is_array())
        return ArrayContains(document, filter);
    if (IsContainer(document) || IsContainer(filter))
        return false;
    return ScalarsEqual(document, filter);
}

} // namespace

bool ActionMatches(std::string_view pattern, std::string_view action) {
    // Greedy matching that remembers only the last '*': on a mismatch, that star absorbs one
    // more character and matching resumes after it. Linear in practice, O(n*m) at worst.
    size_t p = 0;
    size_t a = 0;
    size_t star = std::string_view::npos;
    size_t star_action = 0;
    while (a < action.size()) {
        if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            star_action = a;
        } else if (p < pattern.size() && pattern[p] == action[a]) {
            p++;
            a++;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            a = ++star_action;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*')
        p++;
    return p == pattern.size();
}

bool IsValidActionPattern(std::string_view pattern) {
    if (pattern.empty() || pattern.size() > kMaxPatternBytes)
        return false;
    for (char c : pattern)
        if (!IsPatternChar(c))
            return false;
    return true;
}

bool JsonContains(const nlohmann::json &document, const nlohmann::json &filter) {
    // jsonb stores a top-level scalar as a one-element array, which is why an array document
    // contains a scalar filter at the top level (and only there).
    if (document.is_array() && !IsContainer(filter))
        return ArrayHoldsScalar(document, filter);
    return ContainsNested(document, filter);
}

} // namespace amebo::delivery
