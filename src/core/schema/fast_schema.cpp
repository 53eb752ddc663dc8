// Compiling schemas into the fast subset, and the checks that need no document walk.
// Pure C++.
#include "core/schema/fast_schema.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/schema/formats.hpp"
#include "core/schema/patterns.hpp"

namespace amebo::schema {

namespace {

using nlohmann::json;

// The bit of a JSON Schema type name, or 0 for an unknown name.
unsigned TypeBitOf(const std::string &name) {
    if (name == "null")
        return kNullType;
    if (name == "boolean")
        return kBooleanType;
    if (name == "integer")
        return kIntegerType;
    if (name == "number")
        return kNumberType;
    if (name == "string")
        return kStringType;
    if (name == "array")
        return kArrayType;
    if (name == "object")
        return kObjectType;
    return 0;
}

// A scalar literal, or nothing for arrays and objects.
std::optional<Literal> LiteralOf(const json &value) {
    Literal literal;
    if (value.is_null())
        literal.type = kNullType;
    else if (value.is_boolean())
        literal.type = kBooleanType, literal.boolean = value.get<bool>();
    else if (value.is_number())
        literal.type = kNumberType, literal.number = value.get<double>();
    else if (value.is_string())
        literal.type = kStringType, literal.string = value.get<std::string>();
    else
        return std::nullopt;
    return literal;
}

// Reads a non-negative integer keyword.
bool Count(const json &value, std::optional<std::uint64_t> *out) {
    if (!value.is_number_integer() || value.get<std::int64_t>() < 0)
        return false;
    *out = value.get<std::uint64_t>();
    return true;
}

// Reads a numeric keyword.
bool Number(const json &value, std::optional<double> *out) {
    if (!value.is_number())
        return false;
    *out = value.get<double>();
    return true;
}

// Compiles one keyword into schema; false when the keyword is outside the fast subset.
bool CompileKeyword(const std::string &key, const json &value, FastSchema *schema) {
    static const char *kAnnotations[] = {"title",    "description", "default",
                                         "examples", "$comment",    "$schema",
                                         "$id",      "readOnly",    "writeOnly"};
    for (const char *annotation : kAnnotations)
        if (key == annotation)
            return true;
    if (key == "type") {
        for (const auto &name : value.is_array() ? value : json::array({value})) {
            unsigned bit = name.is_string() ? TypeBitOf(name.get<std::string>()) : 0;
            if (bit == 0)
                return false;
            schema->types |= bit;
        }
        return true;
    }
    if (key == "enum" || key == "const") {
        if (key == "enum" && !value.is_array())
            return false;
        std::vector<Literal> literals;
        for (const auto &item : key == "enum" ? value : json::array({value})) {
            auto literal = LiteralOf(item);
            if (!literal)
                return false;
            literals.push_back(std::move(*literal));
        }
        if (schema->allowed)
            return false; // both enum and const: leave it to valijson
        schema->allowed = std::move(literals);
        return true;
    }
    if (key == "required") {
        if (!value.is_array())
            return false;
        for (const auto &name : value) {
            if (!name.is_string())
                return false;
            schema->required.push_back(name.get<std::string>());
        }
        return true;
    }
    if (key == "properties") {
        if (!value.is_object())
            return false;
        for (const auto &[name, subschema] : value.items()) {
            auto compiled = CompileFast(subschema);
            if (!compiled)
                return false;
            schema->properties.emplace_back(name, std::move(compiled));
        }
        std::sort(schema->properties.begin(), schema->properties.end(),
                  [](const auto &a, const auto &b) { return a.first < b.first; });
        return true;
    }
    if (key == "additionalProperties" || key == "items") {
        if (key == "items" && value.is_array())
            return false;
        auto compiled = CompileFast(value);
        if (!compiled)
            return false;
        if (key == "items") {
            schema->items = std::move(compiled);
        } else if (compiled->accepts_nothing) {
            schema->additional_forbidden = true;
        } else {
            schema->additional = std::move(compiled);
        }
        return true;
    }
    if (key == "minItems")
        return Count(value, &schema->min_items);
    if (key == "maxItems")
        return Count(value, &schema->max_items);
    if (key == "minLength")
        return Count(value, &schema->min_length);
    if (key == "maxLength")
        return Count(value, &schema->max_length);
    if (key == "minimum")
        return Number(value, &schema->minimum);
    if (key == "maximum")
        return Number(value, &schema->maximum);
    if (key == "exclusiveMinimum")
        return Number(value, &schema->exclusive_minimum);
    if (key == "exclusiveMaximum")
        return Number(value, &schema->exclusive_maximum);
    if (key == "pattern") {
        if (!value.is_string())
            return false;
        schema->pattern = value.get<std::string>();
        return true;
    }
    if (key == "format") {
        if (!value.is_string())
            return false;
        schema->format = value.get<std::string>();
        return true;
    }
    return false;
}

// The number of Unicode code points in UTF-8 text.
std::uint64_t CodePoints(std::string_view text) {
    std::uint64_t count = 0;
    for (unsigned char c : text)
        count += (c & 0xC0) != 0x80;
    return count;
}

} // namespace

const FastSchema *FastSchema::Property(std::string_view name) const {
    auto found =
        std::lower_bound(properties.begin(), properties.end(), name,
                         [](const auto &entry, std::string_view key) { return entry.first < key; });
    return found != properties.end() && found->first == name ? found->second.get() : nullptr;
}

std::unique_ptr<FastSchema> CompileFast(const json &schema) {
    auto compiled = std::make_unique<FastSchema>();
    if (schema.is_boolean()) {
        compiled->accepts_nothing = !schema.get<bool>();
        return compiled;
    }
    if (!schema.is_object())
        return nullptr;
    for (const auto &[key, value] : schema.items())
        if (!CompileKeyword(key, value, compiled.get()))
            return nullptr;
    return compiled;
}

bool NumberHolds(const FastSchema &schema, double value) {
    return (!schema.minimum || value >= *schema.minimum) &&
           (!schema.maximum || value <= *schema.maximum) &&
           (!schema.exclusive_minimum || value > *schema.exclusive_minimum) &&
           (!schema.exclusive_maximum || value < *schema.exclusive_maximum);
}

bool StringHolds(const FastSchema &schema, std::string_view value) {
    if (schema.min_length || schema.max_length) {
        std::uint64_t length = CodePoints(value);
        if ((schema.min_length && length < *schema.min_length) ||
            (schema.max_length && length > *schema.max_length))
            return false;
    }
    if (schema.pattern && !PatternMatches(*schema.pattern, value))
        return false;
    return schema.format.empty() || FormatHolds(schema.format, value);
}

bool LiteralAllowed(const FastSchema &schema, unsigned type, bool boolean, double number,
                    std::string_view string) {
    if (!schema.allowed)
        return true;
    for (const auto &literal : *schema.allowed) {
        if (literal.type != type)
            continue;
        if ((type == kNullType) || (type == kBooleanType && literal.boolean == boolean) ||
            (type == kNumberType && literal.number == number) ||
            (type == kStringType && literal.string == string))
            return true;
    }
    return false;
}

bool TypeAllowed(const FastSchema &schema, unsigned type, bool integral) {
    if (schema.types == 0)
        return true;
    if (type == kNumberType)
        return (schema.types & kNumberType) || (integral && (schema.types & kIntegerType));
    return (schema.types & type) != 0;
}

} // namespace amebo::schema
