// Schema patterns matched by PostgreSQL's regex engine (advanced regular expressions, which
// cover the ECMA-262 syntax JSON Schemas use in practice), compiled once and cached by it.
#include "registry/patterns_pg.hpp"

#include "core/schema/patterns.hpp"
#include "pg/guard.hpp"

extern "C" {
#include "catalog/pg_collation_d.h"
#include "regex/regex.h"
}

namespace amebo::registry {

namespace {

// Runs the match under the border: an invalid pattern or a cancel becomes a PgError.
bool MatchWithPostgres(std::string_view pattern, std::string_view subject) {
    return pg::Call([&] {
        text *expression =
            cstring_to_text_with_len(pattern.data(), static_cast<int>(pattern.size()));
        bool matched = RE_compile_and_execute(expression, const_cast<char *>(subject.data()),
                                              static_cast<int>(subject.size()), REG_ADVANCED,
                                              DEFAULT_COLLATION_OID, 0, nullptr);
        pfree(expression);
        return matched;
    });
}

} // namespace

void InitPatternMatcher() {
    schema::SetPatternMatcher(MatchWithPostgres);
}

} // namespace amebo::registry
