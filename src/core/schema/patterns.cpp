// The installed pattern matcher. Pure C++.
#include "core/schema/patterns.hpp"

#include "core/error.hpp"

namespace amebo::schema {

namespace {

PatternMatcher g_matcher = nullptr;

} // namespace

void SetPatternMatcher(PatternMatcher matcher) {
    g_matcher = matcher;
}

bool PatternMatches(std::string_view pattern, std::string_view subject) {
    if (g_matcher == nullptr)
        throw Error(sqlstate::kInternalError, "no regular expression engine is installed");
    return g_matcher(pattern, subject);
}

} // namespace amebo::schema
