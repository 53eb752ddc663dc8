// SQL-callable helpers of the registry: schema checks, compatibility, secrets, and the
// trigger that tells every backend the registry changed.
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/schema/compatibility.hpp"
#include "core/schema/json_schema.hpp"
#include "pg/guard.hpp"
#include "registry/jsonb_check.hpp"
#include "registry/jsonb_json.hpp"

extern "C" {
#include "commands/trigger.h"
#include "common/base64.h"
#include "utils/array.h"
}

using namespace amebo;

namespace {

// Reads a required jsonb argument.
Jsonb *JsonbArgument(FunctionCallInfo fcinfo, int arg, const char *name) {
    if (PG_ARGISNULL(arg))
        throw Error(sqlstate::kNullValueNotAllowed, std::string(name) + " must not be NULL");
    return PG_GETARG_JSONB_P(arg);
}

// A text[] of the given strings.
Datum TextArray(const std::vector<std::string> &items) {
    std::vector<Datum> elements;
    for (const auto &item : items)
        elements.push_back(pg::Call(
            [&] { return PointerGetDatum(cstring_to_text_with_len(item.data(), item.size())); }));
    Datum *data = elements.data();
    int count = static_cast<int>(elements.size());
    return pg::Call([&] {
        return PointerGetDatum(construct_array(data, count, TEXTOID, -1, false, TYPALIGN_INT));
    });
}

} // namespace

extern "C" {
PG_FUNCTION_INFO_V1(amebo_check_schema);
PG_FUNCTION_INFO_V1(amebo_schema_violations);
PG_FUNCTION_INFO_V1(amebo_schema_incompatibilities);
PG_FUNCTION_INFO_V1(amebo_generate_secret);
PG_FUNCTION_INFO_V1(amebo_registry_changed);
}

// amebo.check_schema(schema): raises AM007 with the parser's reason unless the schema compiles.
extern "C" Datum amebo_check_schema(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        schema::CompiledSchema::Compile(registry::JsonbToJson(JsonbArgument(fcinfo, 0, "schema")));
        PG_RETURN_VOID();
    });
}

// amebo.schema_violations(schema, document): (path, rule) for each way document fails schema.
extern "C" Datum amebo_schema_violations(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        Jsonb *schema_jsonb = JsonbArgument(fcinfo, 0, "schema");
        Jsonb *document = JsonbArgument(fcinfo, 1, "document");
        auto compiled = schema::CompiledSchema::Compile(registry::JsonbToJson(schema_jsonb));
        auto violations = compiled->Validate(registry::JsonbToJson(document));
        // The fast check must agree with valijson, the reference; the conformance suite
        // runs through here.
        const schema::FastSchema *fast = compiled->fast();
        if (fast != nullptr &&
            pg::Call([&] { return registry::FastHolds(*fast, document); }) != violations.empty())
            throw Error(sqlstate::kInternalError,
                        "amebo's fast schema check disagrees with valijson on this document");
        pg::Call([&] { InitMaterializedSRF(fcinfo, 0); });
        auto *result = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
        for (const auto &violation : violations) {
            const char *path = violation.path.c_str();
            const char *rule = violation.rule.c_str();
            pg::Call([&] {
                Datum values[2] = {CStringGetTextDatum(path), CStringGetTextDatum(rule)};
                bool nulls[2] = {false, false};
                tuplestore_putvalues(result->setResult, result->setDesc, values, nulls);
            });
        }
        return (Datum)0;
    });
}

// amebo.schema_incompatibilities(old, new): why new may reject a payload old accepted.
extern "C" Datum amebo_schema_incompatibilities(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        // Both arguments detoasted before any C++ object exists.
        Jsonb *old_schema = JsonbArgument(fcinfo, 0, "old_schema");
        Jsonb *new_schema = JsonbArgument(fcinfo, 1, "new_schema");
        auto reasons = schema::BackwardIncompatibilities(registry::JsonbToJson(old_schema),
                                                         registry::JsonbToJson(new_schema));
        return TextArray(reasons);
    });
}

// amebo_internal.generate_secret(): "whsec_" and the base64 of 32 strong random bytes.
extern "C" Datum amebo_generate_secret(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        uint8 random[32];
        if (!pg_strong_random(random, sizeof(random)))
            throw Error(sqlstate::kInternalError, "could not generate random bytes");
        char encoded[64];
        int length = pg_b64_encode(reinterpret_cast<const char *>(random), sizeof(random), encoded,
                                   sizeof(encoded));
        std::string secret = "whsec_" + std::string(encoded, length);
        const char *text = secret.c_str();
        return pg::Call([&] { return CStringGetTextDatum(text); });
    });
}

// Statement trigger on the tables behind amebo's per-backend caches (actions, action_schemas,
// projections): at commit, a relcache invalidation of the table reaches every backend, whose
// callback empties the cache that depends on it.
extern "C" Datum amebo_registry_changed(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        if (!CALLED_AS_TRIGGER(fcinfo))
            throw Error(sqlstate::kObjectNotInPrerequisiteState,
                        "amebo_internal.registry_changed() must be called as a trigger");
        CacheInvalidateRelcache(reinterpret_cast<TriggerData *>(fcinfo->context)->tg_relation);
        return PointerGetDatum(nullptr);
    });
}
