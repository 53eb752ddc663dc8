// Fuzz target for schema evolution (src/core/schema/compatibility.cpp). Input: the old schema
// on the first line, the new schema on the second, a document after them. Patterns are matched
// literally here (schema_support.hpp).
// Properties: BackwardIncompatibilities never throws; every schema is compatible with itself;
// and when it finds the new schema compatible with the old, a document the old schema accepts
// is accepted by the new one too (valijson judging both): the promise that stored events and
// producers not yet upgraded keep satisfying the new schema.
#include <string>

#include "core/schema/compatibility.hpp"
#include "schema_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    amebo::fuzz::InstallPatternMatcher();
    auto fields = amebo::fuzz::SplitFields(amebo::fuzz::AsText(data, size), 3);
    nlohmann::json old_json, new_json, document;
    if (!amebo::fuzz::ParseDocument(fields[0], &old_json) ||
        !amebo::fuzz::ParseDocument(fields[1], &new_json) ||
        !amebo::fuzz::ParseDocument(fields[2], &document))
        return 0;
    auto old_schema = amebo::fuzz::CompileOrNull(old_json);
    auto new_schema = amebo::fuzz::CompileOrNull(new_json);
    if (old_schema == nullptr || new_schema == nullptr)
        return 0;
    auto reasons = amebo::schema::BackwardIncompatibilities(old_json, new_json);
    FUZZ_CHECK(amebo::schema::BackwardIncompatibilities(old_json, old_json).empty(),
               "not compatible with itself: " + old_json.dump());
    if (!reasons.empty() || !old_schema->Validate(document).empty())
        return 0;
    auto violations = new_schema->Validate(document);
    FUZZ_CHECK(violations.empty(), "compatible change " + old_json.dump() + " -> " +
                                       new_json.dump() + " refuses " + document.dump() + ": " +
                                       violations[0].path + " " + violations[0].rule);
    return 0;
}
