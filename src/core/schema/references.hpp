// Turning "$ref"s that point into the schema itself through "$id" into plain JSON Pointer
// references, which valijson 1.0 follows (it does not read draft 7's "$id"). Pure C++.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

namespace amebo::schema {

// A copy of schema in which every "$ref" whose target is identified by an "$id" of the same
// schema (or by the root's) is rewritten as "#<pointer><fragment>". Other references are
// left as they are (remote ones are then refused at compilation).
nlohmann::json ResolveLocalReferences(const nlohmann::json &schema);

// Throws amebo::Error (54001) if subschemas and "$ref"s (local ones) lead more than a bounded
// number of levels deep: valijson's parser follows them recursively and would overflow the
// stack (a chain of a few thousand definitions, each referring to the next, is enough).
void CheckReferenceDepth(const nlohmann::json &schema);

// Throws amebo::Error (AM007) if following "$ref"s from some subschema leads back to it
// without descending into the document (valijson would recurse until the stack overflows).
// Follows the references valijson resolves inside the schema: "#..." JSON Pointers, and any
// reference whose document part is not an absolute URI or a URN ("x", "a#/b"), which
// valijson reads as the same document.
void CheckReferenceCycles(const nlohmann::json &schema);

// Resolves a URI reference against a base URI (RFC 3986, without dot-segment removal).
std::string ResolveUri(const std::string &base, const std::string &reference);

} // namespace amebo::schema
