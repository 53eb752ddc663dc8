// Fuzz target for JSON Schema compilation and validation (src/core/schema/). Input: a schema
// on the first line, the document after it. Patterns are matched literally here
// (schema_support.hpp), PostgreSQL's regex engine not being linked.
// Properties: compilation either succeeds or fails with amebo::Error AM007, never with another
// exception (valijson's own included); validation returns without throwing, with violations
// whose paths are JSON Pointers; the boolean schemas true and false accept everything and
// nothing; and when the schema has a fast form, the fast check (walked over the document as
// src/registry/jsonb_check.cpp walks jsonb) agrees with valijson, the reference.
#include <cmath>
#include <string>

#include "core/schema/fast_schema.hpp"
#include "schema_support.hpp"

namespace {

using namespace amebo::schema;
using nlohmann::json;

bool FastHolds(const FastSchema &schema, const json &value);

// "required", "properties" and "additionalProperties" of an object.
bool ObjectHolds(const FastSchema &schema, const json &object) {
    for (const auto &name : schema.required)
        if (!object.contains(name))
            return false;
    for (const auto &[key, member] : object.items()) {
        const FastSchema *property = schema.Property(key);
        const FastSchema *rule = property ? property : schema.additional.get();
        if ((!property && schema.additional_forbidden) || (rule && !FastHolds(*rule, member)))
            return false;
    }
    return true;
}

// "minItems", "maxItems" and "items" of an array.
bool ArrayHolds(const FastSchema &schema, const json &array) {
    if ((schema.min_items && array.size() < *schema.min_items) ||
        (schema.max_items && array.size() > *schema.max_items))
        return false;
    for (const json &item : array)
        if (schema.items && !FastHolds(*schema.items, item))
            return false;
    return true;
}

// The fast check of one value, in the order of jsonb_check.cpp's ValueHolds.
bool FastHolds(const FastSchema &schema, const json &value) {
    if (schema.accepts_nothing)
        return false;
    if (value.is_null())
        return TypeAllowed(schema, kNullType, false) &&
               LiteralAllowed(schema, kNullType, false, 0, {});
    if (value.is_boolean())
        return TypeAllowed(schema, kBooleanType, false) &&
               LiteralAllowed(schema, kBooleanType, value.get<bool>(), 0, {});
    if (value.is_string()) {
        const std::string &text = value.get_ref<const std::string &>();
        return TypeAllowed(schema, kStringType, false) &&
               LiteralAllowed(schema, kStringType, false, 0, text) && StringHolds(schema, text);
    }
    if (value.is_number()) {
        double number = value.get<double>();
        bool integral = std::isfinite(number) && std::floor(number) == number;
        return TypeAllowed(schema, kNumberType, integral) &&
               LiteralAllowed(schema, kNumberType, false, number, {}) &&
               NumberHolds(schema, number);
    }
    bool object = value.is_object();
    if (!TypeAllowed(schema, object ? kObjectType : kArrayType, false) || schema.allowed)
        return false;
    return object ? ObjectHolds(schema, value) : ArrayHolds(schema, value);
}

// True when path is "/" or a JSON Pointer.
bool IsPointer(const std::string &path) {
    return !path.empty() && path[0] == '/';
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    amebo::fuzz::InstallPatternMatcher();
    auto fields = amebo::fuzz::SplitFields(amebo::fuzz::AsText(data, size), 2);
    json schema_json, document;
    if (!amebo::fuzz::ParseDocument(fields[0], &schema_json) ||
        !amebo::fuzz::ParseDocument(fields[1], &document))
        return 0;
    auto compiled = amebo::fuzz::CompileOrNull(schema_json);
    if (compiled == nullptr)
        return 0;
    auto violations = compiled->Validate(document);
    for (const auto &violation : violations)
        FUZZ_CHECK(IsPointer(violation.path) && !violation.rule.empty(), violation.path);
    if (schema_json.is_boolean())
        FUZZ_CHECK(violations.empty() == schema_json.get<bool>(), "boolean schema");
    if (const FastSchema *fast = compiled->fast())
        FUZZ_CHECK(FastHolds(*fast, document) == violations.empty(),
                   "fast check disagrees with valijson: " + schema_json.dump() + " on " +
                       document.dump() + (violations.empty() ? "" : ": " + violations[0].rule));
    return 0;
}
