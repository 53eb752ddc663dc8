// Which events a subscription wants. Pure C++.
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

namespace amebo::delivery {

// True when action matches pattern: "*" matches any run of characters (dots included), every
// other character matches itself. "user.*" matches "user.created"; "*" matches everything.
bool ActionMatches(std::string_view pattern, std::string_view action);

// True when a subscription's action pattern is well formed: 1 to 255 characters of
// lowercase letters, digits, '_', '.' and '*'.
bool IsValidActionPattern(std::string_view pattern);

// PostgreSQL's jsonb @> containment: objects contain a subset of keys whose values contain
// the filter's; arrays contain every element of the filter's array (a scalar filter against
// an array matches an element... only at the top level, as jsonb does); scalars are equal.
bool JsonContains(const nlohmann::json &document, const nlohmann::json &filter);

} // namespace amebo::delivery
