// Local "$id" references. Pure C++.
#include "core/schema/references.hpp"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include <valijson/internal/uri.hpp>

#include "core/error.hpp"

#include <nlohmann/json.hpp>

namespace amebo::schema {

namespace {

using nlohmann::json;

// How deep subschemas and "$ref"s may lead (JSON levels, each "$ref" followed counting one).
constexpr std::size_t kMaxReferenceDepth = 1000;

// Throws 54001: the schema's subschemas and "$ref"s lead too deep.
[[noreturn]] void TooDeep() {
    throw Error(sqlstate::kStatementTooComplex, "JSON Schema is nested too deeply",
                "Subschemas and \"$ref\"s may lead at most " + std::to_string(kMaxReferenceDepth) +
                    " levels deep.");
}

// The URI without its fragment.
std::string WithoutFragment(const std::string &uri) {
    return uri.substr(0, uri.find('#'));
}

// The fragment of a URI without "#", or "".
std::string Fragment(const std::string &uri) {
    auto hash = uri.find('#');
    return hash == std::string::npos ? "" : uri.substr(hash + 1);
}

// Escapes a key for a JSON Pointer.
std::string PointerToken(const std::string &key) {
    std::string token;
    for (char c : key)
        token += c == '~' ? std::string("~0") : c == '/' ? std::string("~1") : std::string(1, c);
    return token;
}

// Records where every "$id" points (absolute URI, fragment ids included) in the schema.
void CollectIds(const json &node, const std::string &base, const std::string &pointer,
                std::map<std::string, std::string> &ids) {
    if (node.is_array()) {
        for (std::size_t i = 0; i < node.size(); i++)
            CollectIds(node[i], base, pointer + "/" + std::to_string(i), ids);
        return;
    }
    if (!node.is_object())
        return;
    std::string scope = base;
    if (node.contains("$id") && node.at("$id").is_string() && !node.contains("$ref")) {
        scope = ResolveUri(base, node.at("$id").get<std::string>());
        ids.emplace(scope, pointer);
        scope = WithoutFragment(scope);
    }
    for (const auto &[key, value] : node.items())
        if (key != "enum" && key != "const" && key != "examples" && key != "default")
            CollectIds(value, scope, pointer + "/" + PointerToken(key), ids);
}

// Rewrites the "$ref"s that the collected ids resolve.
void RewriteRefs(json &node, const std::string &base, const std::map<std::string, std::string> &ids,
                 const std::string &root) {
    if (node.is_array()) {
        for (auto &item : node)
            RewriteRefs(item, base, ids, root);
        return;
    }
    if (!node.is_object())
        return;
    std::string scope = base;
    if (node.contains("$ref") && node.at("$ref").is_string()) {
        std::string reference = node.at("$ref").get<std::string>();
        if (!reference.empty() && reference[0] != '#') {
            std::string target = ResolveUri(base, reference);
            auto exact = ids.find(target);
            auto document = ids.find(WithoutFragment(target));
            if (exact != ids.end())
                node["$ref"] = "#" + exact->second;
            else if (document != ids.end())
                node["$ref"] = "#" + document->second + Fragment(target);
            else if (!root.empty() && WithoutFragment(target) == root)
                node["$ref"] = "#" + Fragment(target);
        }
    } else if (node.contains("$id") && node.at("$id").is_string()) {
        scope = WithoutFragment(ResolveUri(base, node.at("$id").get<std::string>()));
    }
    for (auto &[key, value] : node.items())
        if (key != "enum" && key != "const" && key != "examples" && key != "default")
            RewriteRefs(value, scope, ids, root);
}

// A JSON Pointer token decoded as valijson decodes it: "~1" then "~0" replaced, then "%XX"
// escapes; false for a malformed escape (valijson then refuses the schema itself).
bool DecodeToken(std::string token, std::string *key) {
    for (auto [from, to] : {std::pair<const char *, const char *>{"~1", "/"}, {"~0", "~"}})
        for (auto at = token.find(from); at != std::string::npos; at = token.find(from, at + 1))
            token.replace(at, 2, to);
    for (auto at = token.find('%'); at != std::string::npos; at = token.find('%', at + 1)) {
        if (at + 3 > token.size() || !std::isxdigit(static_cast<unsigned char>(token[at + 1])) ||
            !std::isxdigit(static_cast<unsigned char>(token[at + 2])))
            return false;
        token.replace(at, 3, 1, static_cast<char>(std::stoi(token.substr(at + 1, 2), nullptr, 16)));
    }
    *key = std::move(token);
    return true;
}

// The node a local JSON Pointer ("/definitions/a", "" for the root) names, or nullptr, read
// as valijson reads it: trailing '/' trimmed, empty tokens skipped, array indexes by stoul.
const json *Resolve(const json &root, std::string pointer) {
    pointer.erase(pointer.find_last_not_of('/') + 1);
    const json *node = &root;
    std::size_t pos = 0;
    while (pos < pointer.size()) {
        if (pointer[pos] != '/')
            return nullptr;
        std::size_t next = pointer.find('/', pos + 1);
        std::string key;
        if (!DecodeToken(pointer.substr(pos + 1, next == std::string::npos ? next : next - pos - 1),
                         &key))
            return nullptr;
        pos = next == std::string::npos ? pointer.size() : next;
        if (key.empty())
            continue;
        if (node->is_object() && node->contains(key))
            node = &node->at(key);
        else if (node->is_array() && std::isdigit(static_cast<unsigned char>(key[0])) &&
                 key.size() < 19 && std::stoul(key) < node->size())
            node = &(*node)[std::stoul(key)];
        else
            return nullptr;
    }
    return node;
}

// True when valijson resolves reference inside the schema itself (it does so for every
// reference whose document part is neither an absolute URI nor a URN, "x" and "a#/b"
// included); sets *pointer to its JSON Pointer.
bool IsLocalReference(const std::string &reference, std::string *pointer) {
    auto hash = reference.find('#');
    std::string document = reference.substr(0, hash);
    if (hash != 0 && (valijson::internal::uri::isUriAbsolute(document) ||
                      valijson::internal::uri::isUrn(document)))
        return false;
    *pointer = hash == std::string::npos ? "" : reference.substr(hash + 1);
    return true;
}

// The subschemas a validator applies to the same instance as node: through "$ref", "allOf",
// "anyOf", "oneOf", "not", "if", "then" and "else".
std::vector<const json *> InPlaceSubschemas(const json &root, const json &node) {
    std::vector<const json *> next;
    if (!node.is_object())
        return next;
    if (node.contains("$ref") && node.at("$ref").is_string()) {
        std::string pointer;
        if (IsLocalReference(node.at("$ref").get<std::string>(), &pointer))
            if (const json *target = Resolve(root, pointer))
                next.push_back(target);
        return next; // draft 7 ignores the siblings of "$ref"
    }
    for (const char *key : {"allOf", "anyOf", "oneOf"})
        if (node.contains(key) && node.at(key).is_array())
            for (const auto &item : node.at(key))
                next.push_back(&item);
    for (const char *key : {"not", "if", "then", "else"})
        if (node.contains(key))
            next.push_back(&node.at(key));
    return next;
}

// Depth-first search along in-place edges; a node met again on the current path is a cycle.
void Visit(const json &root, const json *node, std::set<const json *> &path,
           std::set<const json *> &done) {
    if (done.count(node))
        return;
    if (path.size() >= kMaxReferenceDepth)
        TooDeep();
    if (!path.insert(node).second)
        throw Error(sqlstate::kInvalidSchema,
                    "invalid JSON Schema: its \"$ref\"s form a cycle that never descends into "
                    "the document, so no document could ever be validated against it");
    for (const json *child : InPlaceSubschemas(root, *node))
        Visit(root, child, path, done);
    path.erase(node);
    done.insert(node);
}

// The longest chain of subschemas and local "$ref"s that leads down from node (memoised in
// heights; an edge back to a node on the current path counts nothing), throwing once depth
// plus that chain passes kMaxReferenceDepth, whatever order the keys are visited in.
std::size_t Height(const json &root, const json &node, std::size_t depth,
                   std::map<const json *, std::size_t> &heights, std::set<const json *> &path) {
    if (auto known = heights.find(&node); known != heights.end()) {
        if (depth + known->second > kMaxReferenceDepth)
            TooDeep();
        return known->second;
    }
    if (depth > kMaxReferenceDepth)
        TooDeep();
    if (!path.insert(&node).second)
        return 0;
    std::size_t height = 0;
    auto follow = [&](const json &child) {
        height = std::max(height, 1 + Height(root, child, depth + 1, heights, path));
    };
    if (node.is_array()) {
        for (const auto &item : node)
            follow(item);
    } else if (node.is_object()) {
        std::string pointer;
        if (node.contains("$ref") && node.at("$ref").is_string() &&
            IsLocalReference(node.at("$ref").get<std::string>(), &pointer))
            if (const json *target = Resolve(root, pointer))
                follow(*target);
        for (const auto &[key, value] : node.items())
            if (key != "enum" && key != "const" && key != "examples" && key != "default")
                follow(value);
    }
    path.erase(&node);
    heights[&node] = height;
    return height;
}

// Checks every subschema.
void CheckCycles(const json &root, const json &node, std::set<const json *> &done) {
    if (node.is_array()) {
        for (const auto &item : node)
            CheckCycles(root, item, done);
        return;
    }
    if (!node.is_object())
        return;
    std::set<const json *> path;
    Visit(root, &node, path, done);
    for (const auto &[key, value] : node.items())
        if (key != "enum" && key != "const" && key != "examples" && key != "default")
            CheckCycles(root, value, done);
}

} // namespace

void CheckReferenceDepth(const json &schema) {
    std::map<const json *, std::size_t> heights;
    std::set<const json *> path;
    Height(schema, schema, 0, heights, path);
}

void CheckReferenceCycles(const json &schema) {
    std::set<const json *> done;
    CheckCycles(schema, schema, done);
}

std::string ResolveUri(const std::string &base, const std::string &reference) {
    if (reference.empty())
        return base;
    if (reference[0] == '#')
        return WithoutFragment(base) + reference;
    auto colon = reference.find(':');
    auto slash = reference.find('/');
    if (colon != std::string::npos && (slash == std::string::npos || colon < slash))
        return reference; // has a scheme: absolute
    std::string origin_end = base;
    auto scheme_end = base.find("://");
    if (reference.rfind("//", 0) == 0)
        return base.substr(0, base.find(':') + 1) + reference;
    if (reference[0] == '/') {
        auto path = scheme_end == std::string::npos ? 0 : base.find('/', scheme_end + 3);
        return (path == std::string::npos ? base : base.substr(0, path)) + reference;
    }
    std::string directory = WithoutFragment(base);
    auto last = directory.rfind('/');
    directory = last == std::string::npos ? "" : directory.substr(0, last + 1);
    return directory + reference;
}

json ResolveLocalReferences(const json &schema) {
    std::string root;
    if (schema.is_object() && schema.contains("$id") && schema.at("$id").is_string())
        root = WithoutFragment(schema.at("$id").get<std::string>());
    std::map<std::string, std::string> ids;
    CollectIds(schema, "", "", ids);
    if (ids.empty())
        return schema;
    json rewritten = schema;
    RewriteRefs(rewritten, "", ids, root);
    return rewritten;
}

} // namespace amebo::schema
