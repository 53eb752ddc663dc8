// Schema patterns matched by PostgreSQL's regex engine (advanced regular expressions, which
// cover the ECMA-262 syntax JSON Schemas use in practice). Each pattern is compiled once per
// backend into a memory context of its own and kept (up to kMaxPatterns, then all are
// dropped and compiled again as needed).
#include "registry/patterns_pg.hpp"

#include <string>
#include <unordered_map>

#include "core/schema/patterns.hpp"
#include "pg/guard.hpp"

extern "C" {
#include "catalog/pg_collation_d.h"
#include "mb/pg_wchar.h"
#include "regex/regex.h"
}

namespace amebo::registry {

namespace {

constexpr size_t kMaxPatterns = 1024;

std::unordered_map<std::string, regex_t *> g_patterns;
MemoryContext g_pattern_context = nullptr;

// Raises the regex engine's error for code rc.
[[noreturn]] void RegexError(int rc, regex_t *regex, const char *what) {
    char message[128];
    pg_regerror(rc, regex, message, sizeof(message));
    ereport(ERROR, (errcode(ERRCODE_INVALID_REGULAR_EXPRESSION), errmsg("%s: %s", what, message)));
    pg_unreachable();
}

// Compiles a pattern into the patterns' memory context (PostgreSQL side).
regex_t *CompilePattern(const char *pattern, int length) {
    if (g_pattern_context == nullptr)
        g_pattern_context =
            AllocSetContextCreate(TopMemoryContext, "amebo schema patterns", ALLOCSET_SMALL_SIZES);
    MemoryContext caller = MemoryContextSwitchTo(g_pattern_context);
    auto *wide = static_cast<pg_wchar *>(palloc((length + 1) * sizeof(pg_wchar)));
    int wide_length = pg_mb2wchar_with_len(pattern, wide, length);
    auto *regex = static_cast<regex_t *>(palloc(sizeof(regex_t)));
    int rc = pg_regcomp(regex, wide, wide_length, REG_ADVANCED | REG_NOSUB, DEFAULT_COLLATION_OID);
    pfree(wide);
    MemoryContextSwitchTo(caller);
    if (rc != REG_OKAY)
        RegexError(rc, regex, "invalid regular expression in a schema pattern");
    return regex;
}

// Runs a compiled pattern over subject (PostgreSQL side; interruptible).
bool ExecutePattern(regex_t *regex, const char *subject, int length) {
    auto *wide = static_cast<pg_wchar *>(palloc((length + 1) * sizeof(pg_wchar)));
    int wide_length = pg_mb2wchar_with_len(subject, wide, length);
    int rc = pg_regexec(regex, wide, wide_length, 0, nullptr, 0, nullptr, 0);
    pfree(wide);
    if (rc != REG_OKAY && rc != REG_NOMATCH)
        RegexError(rc, regex, "regular expression failed");
    return rc == REG_OKAY;
}

// The compiled form of a pattern, compiling it on first use.
regex_t *Compiled(std::string_view pattern) {
    std::string key(pattern);
    auto found = g_patterns.find(key);
    if (found != g_patterns.end())
        return found->second;
    if (g_patterns.size() >= kMaxPatterns) {
        g_patterns.clear();
        pg::Call([] { MemoryContextReset(g_pattern_context); });
    }
    regex_t *regex =
        pg::Call([&] { return CompilePattern(pattern.data(), static_cast<int>(pattern.size())); });
    g_patterns.emplace(std::move(key), regex);
    return regex;
}

// The matcher installed for core/schema/patterns.hpp.
bool MatchWithPostgres(std::string_view pattern, std::string_view subject) {
    regex_t *regex = Compiled(pattern);
    return pg::Call(
        [&] { return ExecutePattern(regex, subject.data(), static_cast<int>(subject.size())); });
}

} // namespace

void InitPatternMatcher() {
    schema::SetPatternMatcher(MatchWithPostgres);
}

} // namespace amebo::registry
