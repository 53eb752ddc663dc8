// PostgreSQL's regex engine as the matcher of schema patterns (core/schema/patterns.hpp).
#pragma once

namespace amebo::registry {

// Installs the matcher; called from _PG_init.
void InitPatternMatcher();

} // namespace amebo::registry
