// How schema "pattern"s and "patternProperties" are matched. Pure C++.
//
// Not with std::regex: libstdc++'s recurses once per character (a few kilobytes of input
// overflow a backend's stack and restart the cluster) and backtracks without ever checking
// for interrupts (an exponential pattern cannot even be cancelled). The PostgreSQL side
// installs PostgreSQL's own regex engine, which checks stack depth and interrupts.
#pragma once

#include <string_view>

namespace amebo::schema {

// Matches subject against an (unanchored) pattern; may throw.
using PatternMatcher = bool (*)(std::string_view pattern, std::string_view subject);

// Installs the matcher (once, from _PG_init).
void SetPatternMatcher(PatternMatcher matcher);

// True when the pattern matches somewhere in subject; throws if no matcher is installed.
bool PatternMatches(std::string_view pattern, std::string_view subject);

} // namespace amebo::schema
