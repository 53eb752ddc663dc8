// The subset of JSON Schema that amebo checks directly on jsonb, without building a
// document for valijson: type, enum and const of scalars, required, properties,
// additionalProperties, items (one schema), minItems, maxItems, minLength, maxLength,
// pattern, format, minimum, maximum, exclusiveMinimum, exclusiveMaximum, and annotations.
// A schema that uses anything else has no fast form and is validated by valijson alone.
// valijson stays the reference: when the fast check fails, valijson explains why. Pure C++.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace amebo::schema {

// JSON types as bits of FastSchema::types.
enum TypeBit : unsigned {
    kNullType = 1,
    kBooleanType = 2,
    kIntegerType = 4,
    kNumberType = 8,
    kStringType = 16,
    kArrayType = 32,
    kObjectType = 64,
};

// A scalar literal of "enum" or "const".
struct Literal {
    unsigned type; // one TypeBit; numbers are kNumberType
    bool boolean = false;
    double number = 0;
    std::string string;
};

// One compiled (sub)schema of the fast subset.
struct FastSchema {
    bool accepts_nothing = false;
    unsigned types = 0;                          // 0: any type
    std::optional<std::vector<Literal>> allowed; // enum, or const as a single value
    std::vector<std::string> required;
    std::vector<std::pair<std::string, std::unique_ptr<FastSchema>>> properties; // sorted
    bool additional_forbidden = false;
    std::unique_ptr<FastSchema> additional; // nullptr: anything
    std::unique_ptr<FastSchema> items;      // nullptr: anything
    std::optional<std::uint64_t> min_items, max_items, min_length, max_length;
    std::optional<double> minimum, maximum, exclusive_minimum, exclusive_maximum;
    std::optional<std::string> pattern;
    std::string format; // empty: none

    // The subschema of a listed property, or nullptr.
    const FastSchema *Property(std::string_view name) const;
};

// Compiles a schema into the fast subset; nullptr when it uses anything outside it.
std::unique_ptr<FastSchema> CompileFast(const nlohmann::json &schema);

// True when a number satisfies the schema's numeric keywords.
bool NumberHolds(const FastSchema &schema, double value);

// True when a string satisfies the schema's string keywords (length, pattern, format).
bool StringHolds(const FastSchema &schema, std::string_view value);

// True when the value (of the given TypeBit; numbers with their value) is allowed by "enum"
// or "const".
bool LiteralAllowed(const FastSchema &schema, unsigned type, bool boolean, double number,
                    std::string_view string);

// True when a value of this type passes "type" (an integral number is also an integer).
bool TypeAllowed(const FastSchema &schema, unsigned type, bool integral);

} // namespace amebo::schema
