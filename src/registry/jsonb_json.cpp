// Walks a jsonb value with PostgreSQL's iterator and builds the nlohmann document. The walk
// owns C++ objects, so every PostgreSQL call goes through pg::Call.
#include "registry/jsonb_json.hpp"

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "pg/guard.hpp"

namespace amebo::registry {

namespace {

using nlohmann::json;

// A jsonb numeric as an integer when it has no fractional part and fits, else a double.
json NumberFromText(const char *text) {
    char *end = nullptr;
    errno = 0;
    long long integer = std::strtoll(text, &end, 10);
    if (errno == 0 && *end == '\0')
        return json(static_cast<std::int64_t>(integer));
    double value = std::strtod(text, nullptr);
    if (std::isfinite(value) && std::floor(value) == value && std::fabs(value) < 9.0e15)
        return json(static_cast<std::int64_t>(value));
    return json(value);
}

// A scalar jsonb value as JSON.
json Scalar(const JsonbValue &value) {
    switch (value.type) {
    case jbvNull:
        return json(nullptr);
    case jbvBool:
        return json(static_cast<bool>(value.val.boolean));
    case jbvString:
        return json(std::string(value.val.string.val, value.val.string.len));
    case jbvNumeric: {
        Numeric number = value.val.numeric;
        char *text = pg::Call([number] {
            return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(number)));
        });
        return NumberFromText(text);
    }
    default:
        throw Error(sqlstate::kInternalError, "unexpected jsonb value type");
    }
}

// Puts a value into the innermost open container (or makes it the root); returns where.
json *Place(std::vector<json *> &open, json &root, const std::string &key, json value) {
    if (open.empty()) {
        root = std::move(value);
        return &root;
    }
    json *container = open.back();
    if (container->is_object())
        return &((*container)[key] = std::move(value));
    container->push_back(std::move(value));
    return &container->back();
}

} // namespace

json JsonbToJson(Jsonb *jsonb) {
    json root;
    std::vector<json *> open;
    std::string key;
    JsonbValue value;
    JsonbIterator *it = pg::Call([jsonb] { return JsonbIteratorInit(&jsonb->root); });
    bool raw_scalar = false;
    for (;;) {
        JsonbIteratorToken token = pg::Call([&] { return JsonbIteratorNext(&it, &value, false); });
        if (token == WJB_DONE)
            break;
        switch (token) {
        case WJB_BEGIN_ARRAY:
            if (value.val.array.rawScalar) {
                raw_scalar = true;
                break;
            }
            [[fallthrough]];
        case WJB_BEGIN_OBJECT:
            if (open.size() >= static_cast<size_t>(kMaxJsonDepth))
                throw Error(sqlstate::kProgramLimitExceeded, "JSON value is nested too deeply",
                            "Validation follows at most " + std::to_string(kMaxJsonDepth) +
                                " levels of nesting.");
            open.push_back(
                Place(open, root, key, token == WJB_BEGIN_OBJECT ? json::object() : json::array()));
            break;
        case WJB_KEY:
            key.assign(value.val.string.val, value.val.string.len);
            break;
        case WJB_VALUE:
        case WJB_ELEM:
            Place(open, root, key, Scalar(value));
            break;
        case WJB_END_ARRAY:
            if (raw_scalar) {
                raw_scalar = false;
                break;
            }
            [[fallthrough]];
        case WJB_END_OBJECT:
            open.pop_back();
            break;
        default:
            break;
        }
    }
    return root;
}

} // namespace amebo::registry
