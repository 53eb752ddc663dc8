// The backward-compatibility rules, applied recursively along properties and items:
//  - a schema that accepts everything (true, {}) accepts every old payload; false only
//    follows false;
//  - "type": the new types must cover the old ones ("number" covers "integer"); a type
//    added where there was none is a narrowing;
//  - "enum" and "const": every old value must still be allowed; adding either is narrowing;
//  - "required": the new list must be a subset of the old one;
//  - "properties": a kept property is checked recursively; an added property must accept
//    whatever the old "additionalProperties" accepted under that name (so with an open old
//    schema only an unconstrained property may be added); a removed property's old schema
//    must be accepted by the new "additionalProperties";
//  - "additionalProperties" and "items" (a single schema) are checked recursively; tuple
//    "items" must stay identical;
//  - lower bounds (minimum, exclusiveMinimum, minLength, minItems, minProperties) may only
//    fall, upper bounds (maximum, exclusiveMaximum, maxLength, maxItems, maxProperties) may
//    only rise, and neither may be added; "pattern", "format", "multipleOf", "uniqueItems",
//    "propertyNames", "contains", "additionalItems", "patternProperties", "dependencies",
//    "$ref", "definitions", "allOf", "anyOf", "oneOf", "not", "if", "then", "else" may be
//    removed but not added or changed;
//  - annotations (title, description, default, examples, $comment, $id, $schema) are free.
// Pure C++.
#include "core/schema/compatibility.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace amebo::schema {

namespace {

using nlohmann::json;

// Records one reason, prefixed by the place in the schema.
void Refuse(std::vector<std::string> &reasons, const std::string &where, const std::string &why) {
    reasons.push_back((where.empty() ? "/" : where) + ": " + why);
}

// True when the schema accepts every JSON value.
bool AcceptsEverything(const json &schema) {
    return (schema.is_boolean() && schema.get<bool>()) || (schema.is_object() && schema.empty());
}

// The schema under key, or true when absent (JSON Schema's default for subschemas).
json SubschemaOr(const json &schema, const char *key) {
    return schema.is_object() && schema.contains(key) ? schema.at(key) : json(true);
}

// The set of type names a "type" value allows.
std::vector<std::string> TypeNames(const json &type) {
    std::vector<std::string> names;
    if (type.is_string())
        names.push_back(type.get<std::string>());
    else if (type.is_array())
        for (const auto &t : type)
            if (t.is_string())
                names.push_back(t.get<std::string>());
    return names;
}

// True when the new type list allows every value of the old one.
bool TypesCover(const json &old_type, const json &new_type) {
    auto olds = TypeNames(old_type);
    auto news = TypeNames(new_type);
    auto has = [&](const std::string &t) {
        return std::find(news.begin(), news.end(), t) != news.end();
    };
    return std::all_of(olds.begin(), olds.end(), [&](const std::string &t) {
        return has(t) || (t == "integer" && has("number"));
    });
}

void Check(const json &old_schema, const json &new_schema, const std::string &where,
           std::vector<std::string> &reasons);

// "enum" and "const": each old allowed value must stay allowed.
void CheckValues(const json &o, const json &n, const std::string &where,
                 std::vector<std::string> &reasons) {
    if (n.contains("enum")) {
        if (!o.contains("enum")) {
            Refuse(reasons, where, "\"enum\" was added");
        } else {
            for (const auto &value : o.at("enum"))
                if (std::find(n.at("enum").begin(), n.at("enum").end(), value) ==
                    n.at("enum").end())
                    Refuse(reasons, where, "enum value " + value.dump() + " was removed");
        }
    }
    if (n.contains("const") && (!o.contains("const") || o.at("const") != n.at("const")))
        Refuse(reasons, where, "\"const\" was added or changed");
}

// Bounds may only widen; other constraining keywords may only disappear.
void CheckConstraints(const json &o, const json &n, const std::string &where,
                      std::vector<std::string> &reasons) {
    static const char *kLower[] = {"minimum", "exclusiveMinimum", "minLength", "minItems",
                                   "minProperties"};
    static const char *kUpper[] = {"maximum", "exclusiveMaximum", "maxLength", "maxItems",
                                   "maxProperties"};
    static const char *kFixed[] = {"pattern",
                                   "format",
                                   "multipleOf",
                                   "uniqueItems",
                                   "propertyNames",
                                   "contains",
                                   "additionalItems",
                                   "patternProperties",
                                   "dependencies",
                                   "$ref",
                                   "definitions",
                                   "allOf",
                                   "anyOf",
                                   "oneOf",
                                   "not",
                                   "if",
                                   "then",
                                   "else"};
    for (const char *key : kLower)
        if (n.contains(key) &&
            (!o.contains(key) || !n.at(key).is_number() || !o.at(key).is_number() ||
             n.at(key).get<double>() > o.at(key).get<double>()))
            Refuse(reasons, where, std::string("\"") + key + "\" was added or raised");
    for (const char *key : kUpper)
        if (n.contains(key) &&
            (!o.contains(key) || !n.at(key).is_number() || !o.at(key).is_number() ||
             n.at(key).get<double>() < o.at(key).get<double>()))
            Refuse(reasons, where, std::string("\"") + key + "\" was added or lowered");
    for (const char *key : kFixed)
        if (n.contains(key) && (!o.contains(key) || o.at(key) != n.at(key)))
            Refuse(reasons, where, std::string("\"") + key + "\" was added or changed");
}

// "required", "properties" and "additionalProperties".
void CheckObject(const json &o, const json &n, const std::string &where,
                 std::vector<std::string> &reasons) {
    if (n.contains("required") && n.at("required").is_array()) {
        json old_required = o.contains("required") ? o.at("required") : json::array();
        for (const auto &name : n.at("required"))
            if (std::find(old_required.begin(), old_required.end(), name) == old_required.end())
                Refuse(reasons, where, "property " + name.dump() + " became required");
    }
    json old_props = SubschemaOr(o, "properties");
    json new_props = SubschemaOr(n, "properties");
    json old_additional = SubschemaOr(o, "additionalProperties");
    json new_additional = SubschemaOr(n, "additionalProperties");
    if (new_props.is_object())
        for (const auto &[name, schema] : new_props.items()) {
            const json &before = old_props.is_object() && old_props.contains(name)
                                     ? old_props.at(name)
                                     : old_additional;
            Check(before, schema, where + "/properties/" + name, reasons);
        }
    if (old_props.is_object())
        for (const auto &[name, schema] : old_props.items())
            if (!new_props.is_object() || !new_props.contains(name))
                Check(schema, new_additional, where + "/properties/" + name, reasons);
    Check(old_additional, new_additional, where + "/additionalProperties", reasons);
}

// "items": one schema for every item is checked recursively; tuples must stay the same.
void CheckItems(const json &o, const json &n, const std::string &where,
                std::vector<std::string> &reasons) {
    if (!n.contains("items"))
        return;
    if (n.at("items").is_array() || SubschemaOr(o, "items").is_array()) {
        if (SubschemaOr(o, "items") != n.at("items"))
            Refuse(reasons, where, "tuple \"items\" changed");
        return;
    }
    Check(SubschemaOr(o, "items"), n.at("items"), where + "/items", reasons);
}

// Compares one old subschema with its new counterpart.
void Check(const json &old_schema, const json &new_schema, const std::string &where,
           std::vector<std::string> &reasons) {
    if (AcceptsEverything(new_schema) || (old_schema.is_boolean() && !old_schema.get<bool>()))
        return;
    if (new_schema.is_boolean()) {
        Refuse(reasons, where, "the schema became false");
        return;
    }
    const json o = old_schema.is_object() ? old_schema : json::object();
    const json &n = new_schema;
    if (n.contains("type") && (!o.contains("type") || !TypesCover(o.at("type"), n.at("type"))))
        Refuse(reasons, where, "\"type\" was added or narrowed");
    CheckValues(o, n, where, reasons);
    CheckConstraints(o, n, where, reasons);
    CheckObject(o, n, where, reasons);
    CheckItems(o, n, where, reasons);
}

} // namespace

std::vector<std::string> BackwardIncompatibilities(const json &old_schema, const json &new_schema) {
    std::vector<std::string> reasons;
    Check(old_schema, new_schema, "", reasons);
    return reasons;
}

} // namespace amebo::schema
