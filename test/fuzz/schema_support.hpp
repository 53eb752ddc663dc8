// What the JSON Schema fuzz targets (schema.cpp, schema_compat.cpp) share: a pattern matcher
// standing in for PostgreSQL's regex engine, documents shaped as PostgreSQL hands them over,
// and compilation that may only fail with AM007. Pure C++.
#pragma once

#include <cmath>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/schema/json_schema.hpp"
#include "core/schema/patterns.hpp"
#include "fuzz_check.hpp"

namespace amebo::fuzz {

// Stands in for PostgreSQL's regex engine (not linked here): a pattern matches the subjects
// that contain it literally. The fast check and valijson both go through it.
inline bool LiteralPatternMatches(std::string_view pattern, std::string_view subject) {
    return subject.find(pattern) != std::string_view::npos;
}

// Installs the stand-in matcher once.
inline void InstallPatternMatcher() {
    static bool installed = (schema::SetPatternMatcher(LiteralPatternMatches), true);
    (void)installed;
}

// A document as registry::JsonbToJson builds it from jsonb: integral numbers that fit as
// int64 (or below 9e15 when written as decimals), others as doubles; false for what jsonb
// cannot hold (a \u0000 in a string or key).
inline bool ShapeAsJsonb(nlohmann::json *value) {
    if (value->is_string())
        return value->get_ref<const std::string &>().find('\0') == std::string::npos;
    if (value->is_number_unsigned() && value->get<uint64_t>() > INT64_MAX)
        *value = static_cast<double>(value->get<uint64_t>());
    if (value->is_number_float()) {
        double number = value->get<double>();
        if (std::isfinite(number) && std::floor(number) == number && std::fabs(number) < 9.0e15)
            *value = static_cast<int64_t>(number);
    }
    if (value->is_object())
        for (auto &[key, member] : value->items())
            if (key.find('\0') != std::string::npos || !ShapeAsJsonb(&member))
                return false;
    if (value->is_array())
        for (auto &element : *value)
            if (!ShapeAsJsonb(&element))
                return false;
    return true;
}

// Parses JSON text into a jsonb-shaped document; false when it is not JSON jsonb would store.
inline bool ParseDocument(std::string_view text, nlohmann::json *document) {
    *document = nlohmann::json::parse(text, nullptr, false);
    return !document->is_discarded() && ShapeAsJsonb(document);
}

// Compiles a schema; null when it is refused, which must be with AM007.
inline std::shared_ptr<schema::CompiledSchema> CompileOrNull(const nlohmann::json &schema) {
    try {
        return schema::CompiledSchema::Compile(schema);
    } catch (const Error &e) {
        FUZZ_CHECK(e.code() == sqlstate::kInvalidSchema, e.code() + " " + e.what());
        return nullptr;
    }
}

} // namespace amebo::fuzz
