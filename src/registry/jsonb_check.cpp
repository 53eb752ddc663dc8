// The fast schema walk over jsonb.
#include "registry/jsonb_check.hpp"

#include <cmath>
#include <string_view>

namespace amebo::registry {

namespace {

using namespace amebo::schema;

bool ValueHolds(const FastSchema &schema, JsonbValue *value);

// A jsonb number as a double.
double NumberOf(Numeric number) {
    return DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow, NumericGetDatum(number)));
}

// "required", "properties" and "additionalProperties" of an object.
bool ObjectHolds(const FastSchema &schema, JsonbContainer *object) {
    JsonbValue found;
    for (const auto &name : schema.required)
        if (getKeyJsonValueFromContainer(object, name.data(), static_cast<int>(name.size()),
                                         &found) == nullptr)
            return false;
    if (schema.properties.empty() && !schema.additional && !schema.additional_forbidden)
        return true;
    JsonbIterator *it = JsonbIteratorInit(object);
    JsonbValue key, value;
    JsonbIteratorToken token;
    while ((token = JsonbIteratorNext(&it, &key, true)) != WJB_DONE) {
        if (token != WJB_KEY)
            continue;
        JsonbIteratorNext(&it, &value, true);
        const FastSchema *property =
            schema.Property(std::string_view(key.val.string.val, key.val.string.len));
        const FastSchema *rule = property ? property : schema.additional.get();
        if ((!property && schema.additional_forbidden) || (rule && !ValueHolds(*rule, &value))) {
            while (it != nullptr)
                JsonbIteratorNext(&it, &value, true);
            return false;
        }
    }
    return true;
}

// "minItems", "maxItems" and "items" of an array.
bool ArrayHolds(const FastSchema &schema, JsonbContainer *array) {
    uint32 size = JsonContainerSize(array);
    if ((schema.min_items && size < *schema.min_items) ||
        (schema.max_items && size > *schema.max_items))
        return false;
    for (uint32 i = 0; schema.items && i < size; i++) {
        JsonbValue *item = getIthJsonbValueFromContainer(array, i);
        bool holds = ValueHolds(*schema.items, item);
        pfree(item);
        if (!holds)
            return false;
    }
    return true;
}

// Any value: the type first, then the keywords of that type.
bool ValueHolds(const FastSchema &schema, JsonbValue *value) {
    if (schema.accepts_nothing)
        return false;
    switch (value->type) {
    case jbvNull:
        return TypeAllowed(schema, kNullType, false) &&
               LiteralAllowed(schema, kNullType, false, 0, {});
    case jbvBool:
        return TypeAllowed(schema, kBooleanType, false) &&
               LiteralAllowed(schema, kBooleanType, value->val.boolean, 0, {});
    case jbvString: {
        std::string_view text(value->val.string.val, value->val.string.len);
        return TypeAllowed(schema, kStringType, false) &&
               LiteralAllowed(schema, kStringType, false, 0, text) && StringHolds(schema, text);
    }
    case jbvNumeric: {
        double number = NumberOf(value->val.numeric);
        bool integral = std::isfinite(number) && std::floor(number) == number;
        return TypeAllowed(schema, kNumberType, integral) &&
               LiteralAllowed(schema, kNumberType, false, number, {}) &&
               NumberHolds(schema, number);
    }
    case jbvBinary: {
        JsonbContainer *container = value->val.binary.data;
        bool object = JsonContainerIsObject(container);
        if (!TypeAllowed(schema, object ? kObjectType : kArrayType, false) || schema.allowed)
            return false;
        return object ? ObjectHolds(schema, container) : ArrayHolds(schema, container);
    }
    default:
        return false;
    }
}

} // namespace

bool FastHolds(const FastSchema &schema, Jsonb *document) {
    JsonbValue root;
    if (JB_ROOT_IS_SCALAR(document)) {
        JsonbExtractScalar(&document->root, &root);
    } else {
        root.type = jbvBinary;
        root.val.binary.data = &document->root;
        root.val.binary.len = VARSIZE(document) - VARHDRSZ;
    }
    return ValueHolds(schema, &root);
}

} // namespace amebo::registry
