// Compiles and applies JSON Schemas with valijson and its nlohmann-json adapter. Pure C++.
#include "core/schema/json_schema.hpp"

// Without this valijson reports a broken schema by printing and calling abort(), which would
// take a PostgreSQL backend, and with it the whole cluster, down.
#define VALIJSON_USE_EXCEPTIONS 1

#include <algorithm>
#include <cctype>
#include <regex>

#include <nlohmann/json.hpp>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

#include "core/error.hpp"
#include "core/interrupts.hpp"
#include "core/schema/fast_schema.hpp"
#include "core/schema/formats.hpp"
#include "core/schema/patterns.hpp"
#include "core/schema/references.hpp"

// Every subschema a document meets: valijson's own steps, after the host's interrupt check, so
// that an exponential schema (anyOf of anyOfs) can be cancelled and a deep one stops before
// the stack overflows.
template <>
bool valijson::ValidationVisitor<valijson::adapters::NlohmannJsonAdapter>::validateSchema(
    const valijson::Subschema &subschema) {
    amebo::CheckInterrupts();
    if (subschema.getAlwaysInvalid())
        return false;
    Subschema::ApplyFunction fn(
        std::bind(validationCallback, std::placeholders::_1, std::ref(*this)));
    return m_results == nullptr ? subschema.applyStrict(fn) : subschema.apply(fn);
}

// "uniqueItems": valijson's pairwise comparison with an interrupt check per element (it is
// quadratic: 20,000 items took seconds that statement_timeout could not cut short), and one
// error per repeated element instead of one per equal pair (n^2/2 errors for n equal items).
template <>
bool valijson::ValidationVisitor<valijson::adapters::NlohmannJsonAdapter>::visit(
    const valijson::constraints::UniqueItemsConstraint &) {
    if ((m_strictTypes && !m_target.isArray()) || !m_target.maybeArray())
        return true;
    const auto items = m_target.asArray();
    bool unique = true;
    std::size_t outer_index = 0;
    for (auto outer = items.begin(); outer != items.end(); ++outer, ++outer_index) {
        amebo::CheckInterrupts();
        std::size_t inner_index = outer_index + 1;
        auto inner = outer;
        for (++inner; inner != items.end(); ++inner, ++inner_index) {
            if (!outer->equalTo(*inner, true))
                continue;
            if (!m_results)
                return false;
            m_results->pushError(m_context, "Elements at indexes #" + std::to_string(outer_index) +
                                                " and #" + std::to_string(inner_index) +
                                                " violate uniqueness constraint.");
            unique = false;
            break;
        }
    }
    return unique;
}

// valijson builds a std::regex on every "format" check; amebo checks formats with its own
// code instead (core/schema/formats.hpp). A member specialization for the one adapter used.
template <>
bool valijson::ValidationVisitor<valijson::adapters::NlohmannJsonAdapter>::visit(
    const valijson::constraints::FormatConstraint &constraint) {
    if (!m_target.isString())
        return true;
    const std::string &format = constraint.getFormat();
    if (amebo::schema::FormatHolds(format, m_target.asString()))
        return true;
    if (m_results)
        m_results->pushError(m_context, "String is not a valid " + format);
    return false;
}

// "pattern": matched by the installed engine (core/schema/patterns.hpp), not std::regex.
template <>
bool valijson::ValidationVisitor<valijson::adapters::NlohmannJsonAdapter>::visit(
    const valijson::constraints::PatternConstraint &constraint) {
    if (!m_target.isString())
        return true;
    std::string pattern(constraint.getPattern<std::string::allocator_type>());
    if (amebo::schema::PatternMatches(pattern, m_target.asString()))
        return true;
    if (m_results)
        m_results->pushError(m_context, "String does not match the pattern " + pattern);
    return false;
}

// "patternProperties": every property whose name the pattern matches (by the installed
// engine) must satisfy the subschema; the names are recorded for "additionalProperties".
template <>
template <>
bool valijson::ValidationVisitor<valijson::adapters::NlohmannJsonAdapter>::
    ValidatePatternPropertySubschemas::operator()(
        const valijson::constraints::BasicConstraint<
            valijson::constraints::PropertiesConstraint>::String &pattern_property,
        const valijson::Subschema *subschema) const {
    std::string pattern(pattern_property.c_str());
    bool matched = false;
    for (const auto member : m_object) {
        if (!amebo::schema::PatternMatches(pattern, member.first))
            continue;
        matched = true;
        if (m_propertiesMatched)
            m_propertiesMatched->insert(member.first);
        std::vector<std::string> context = m_context;
        context.push_back("[" + member.first + "]");
        ValidationVisitor validator(member.second, context, m_strictTypes, m_results,
                                    m_regexesCache);
        if (validator.validateSchema(*subschema))
            continue;
        if (m_results)
            m_results->pushError(m_context, "Failed to validate against schema associated "
                                            "with pattern '" +
                                                pattern + "'.");
        if (m_validated)
            *m_validated = false;
        if (!m_continueOnFailure)
            return false;
    }
    if (!matched && !m_continueIfUnmatched)
        return false;
    return m_continueOnSuccess;
}

namespace amebo::schema {

namespace {

// Groups nested deeper than this are refused: std::regex's compiler recurses once per level
// (20,000 levels overflow a backend's stack).
constexpr int kMaxPatternNesting = 256;

// The deepest nesting of parentheses in pattern (escaped ones and those in classes count too:
// an over-estimate is fine).
int PatternNesting(const std::string &pattern) {
    int depth = 0;
    int deepest = 0;
    for (char c : pattern) {
        if (c == '(')
            deepest = std::max(deepest, ++depth);
        else if (c == ')' && depth > 0)
            depth--;
    }
    return deepest;
}

// True when the pattern has an escape followed by three or more digits (a back-reference
// beyond number 99, which libstdc++'s regex compiler reads with a signed overflow).
bool HasLongNumericEscape(const std::string &pattern) {
    for (size_t i = 0; i + 1 < pattern.size(); i++) {
        if (pattern[i] != '\\')
            continue;
        size_t digits = 0;
        while (i + 1 + digits < pattern.size() &&
               std::isdigit(static_cast<unsigned char>(pattern[i + 1 + digits])))
            digits++;
        if (digits >= 3)
            return true;
        i++; // the escaped character
    }
    return false;
}

// Throws AM007 unless pattern compiles as the ECMAScript regex valijson will build from it.
void CheckPattern(const std::string &pattern) {
    if (HasLongNumericEscape(pattern))
        throw Error(sqlstate::kInvalidSchema,
                    "invalid JSON Schema: pattern \"" + pattern +
                        "\" has an escape with three or more digits",
                    "Back-references go up to \\99.");
    if (PatternNesting(pattern) > kMaxPatternNesting)
        throw Error(sqlstate::kStatementTooComplex,
                    "pattern of a JSON Schema nests groups too deeply",
                    "Patterns may nest groups at most " + std::to_string(kMaxPatternNesting) +
                        " levels deep.");
    try {
        std::regex compiled(pattern, std::regex::ECMAScript);
    } catch (const std::regex_error &e) {
        throw Error(sqlstate::kInvalidSchema,
                    "invalid JSON Schema: pattern \"" + pattern +
                        "\" is not a valid regular expression: " + e.what());
    }
}

// Finds every "pattern" and "patternProperties" key in the schema and checks it compiles
// (valijson compiles them only when a document first reaches them); true if there are any.
bool CheckPatterns(const nlohmann::json &schema) {
    bool found = false;
    if (schema.is_array()) {
        for (const auto &item : schema)
            found = CheckPatterns(item) || found;
        return found;
    }
    if (!schema.is_object())
        return false;
    for (const auto &[key, value] : schema.items()) {
        if (key == "pattern" && value.is_string()) {
            CheckPattern(value.get<std::string>());
            found = true;
        }
        if (key == "patternProperties" && value.is_object()) {
            for (const auto &[pattern, subschema] : value.items())
                CheckPattern(pattern);
            found = true;
        }
        found = CheckPatterns(value) || found;
    }
    return found;
}

} // namespace

struct CompiledSchema::Impl {
    valijson::Schema schema;
    valijson::Validator validator;
    std::unique_ptr<FastSchema> fast;
};

CompiledSchema::CompiledSchema(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CompiledSchema::~CompiledSchema() = default;

std::shared_ptr<CompiledSchema> CompiledSchema::Compile(const nlohmann::json &schema) {
    if (!schema.is_object() && !schema.is_boolean())
        throw Error(sqlstate::kInvalidSchema, "a JSON Schema must be an object or a boolean");
    CheckPatterns(schema);
    auto impl = std::make_unique<Impl>();
    try {
        valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
        nlohmann::json resolved = ResolveLocalReferences(schema);
        CheckReferenceDepth(resolved);
        CheckReferenceCycles(resolved);
        valijson::adapters::NlohmannJsonAdapter adapter(resolved);
        parser.populateSchema(adapter, impl->schema);
        impl->fast = CompileFast(schema);
    } catch (const Error &) {
        throw;
    } catch (const std::exception &e) {
        throw Error(sqlstate::kInvalidSchema, std::string("invalid JSON Schema: ") + e.what(),
                    "amebo accepts JSON Schema draft 7 without remote references.");
    }
    return std::shared_ptr<CompiledSchema>(new CompiledSchema(std::move(impl)));
}

const FastSchema *CompiledSchema::fast() const {
    return impl_->fast.get();
}

std::vector<Violation> CompiledSchema::Validate(const nlohmann::json &document) {
    valijson::adapters::NlohmannJsonAdapter adapter(document);
    if (impl_->validator.validate(impl_->schema, adapter, nullptr))
        return {};
    // Validate again, collecting every error, only for documents that fail.
    valijson::ValidationResults results;
    impl_->validator.validate(impl_->schema, adapter, &results);
    std::vector<valijson::ValidationResults::Error> errors;
    valijson::ValidationResults::Error error;
    while (results.popError(error))
        errors.push_back(error);
    std::stable_sort(errors.begin(), errors.end(), [](const auto &a, const auto &b) {
        return a.context.size() > b.context.size();
    });
    std::vector<Violation> violations;
    for (const auto &e : errors)
        violations.push_back({JsonPointer(e.context), e.description});
    if (violations.empty())
        violations.push_back({"/", "the document does not match the schema"});
    return violations;
}

std::string JsonPointer(const std::vector<std::string> &context) {
    std::string pointer;
    for (std::size_t i = 1; i < context.size(); i++) {
        std::string segment = context[i];
        if (segment.size() >= 2 && segment.front() == '[' && segment.back() == ']')
            segment = segment.substr(1, segment.size() - 2);
        pointer += '/';
        for (char c : segment) {
            if (c == '~')
                pointer += "~0";
            else if (c == '/')
                pointer += "~1";
            else
                pointer += c;
        }
    }
    return pointer.empty() ? "/" : pointer;
}

} // namespace amebo::schema
