// JSON Schema (draft 7) compilation and validation, on top of valijson. Pure C++.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace amebo::schema {

struct FastSchema;

// One way a document fails a schema: where (a JSON Pointer) and which rule.
struct Violation {
    std::string path;
    std::string rule;
};

// A schema compiled once and used for many documents. Not thread-safe (it caches regexes).
class CompiledSchema {
  public:
    // Compiles a draft-7 schema; throws amebo::Error (AM007) with the parser's reason.
    static std::shared_ptr<CompiledSchema> Compile(const nlohmann::json &schema);

    // The ways document fails the schema, most specific first; empty when it is valid.
    std::vector<Violation> Validate(const nlohmann::json &document);

    // The schema's fast form (core/schema/fast_schema.hpp), or nullptr if it has none.
    const FastSchema *fast() const;

    ~CompiledSchema();

  private:
    struct Impl;
    explicit CompiledSchema(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// Turns valijson's context (["<root>", "[address]", "[0]"]) into a JSON Pointer ("/address/0").
std::string JsonPointer(const std::vector<std::string> &context);

} // namespace amebo::schema
