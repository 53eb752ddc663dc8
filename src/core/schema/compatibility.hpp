// Backward compatibility between two versions of an action's schema. Pure C++.
//
// "Backward" means: every payload valid under the old schema is valid under the new one, so
// events already stored (and producers not yet upgraded) keep satisfying consumers written
// for the new schema. Proving that for arbitrary schemas is undecidable in general; amebo
// checks a documented, conservative set of rules and refuses what it cannot prove.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace amebo::schema {

// The reasons new_schema may reject a payload old_schema accepted; empty when compatible.
std::vector<std::string> BackwardIncompatibilities(const nlohmann::json &old_schema,
                                                   const nlohmann::json &new_schema);

} // namespace amebo::schema
