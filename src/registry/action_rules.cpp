// The per-backend cache of action registrations and compiled schemas.
#include "registry/action_rules.hpp"

#include <memory>
#include <string>
#include <unordered_map>

#include "core/error.hpp"
#include "core/schema/json_schema.hpp"
#include "pg/guard.hpp"
#include "pg/owner_access.hpp"
#include "pg/text_view.hpp"
#include "registry/jsonb_check.hpp"
#include "registry/jsonb_json.hpp"
#include "settings.hpp"

extern "C" {
#include "executor/spi.h"
}

namespace amebo::registry {

namespace {

// One action as the append path needs it.
struct ActionRule {
    bool registered = false;
    int32 schema_version = 0;
    std::shared_ptr<schema::CompiledSchema> schema;
};

// The registry row behind a rule, read with SPI (PostgreSQL side: plain values only).
struct Registration {
    bool registered;
    int32 schema_version;
    Jsonb *schema; // nullptr: no schema
};

constexpr size_t kMaxCachedRules = 10000;
std::unordered_map<std::string, ActionRule> g_rules;
bool g_rules_stale = false;
Oid g_actions_relid = InvalidOid;
Oid g_schemas_relid = InvalidOid;

// Reads an action's registration; an absent registry (extension 1.0) registers nothing.
void ReadRegistration(const char *action, Registration *out) {
    out->registered = false;
    out->schema_version = 0;
    out->schema = nullptr;
    Oid schema_oid = get_namespace_oid("amebo", true);
    Oid actions = OidIsValid(schema_oid) ? get_relname_relid("actions", schema_oid) : InvalidOid;
    g_actions_relid = actions;
    if (!OidIsValid(actions))
        return;
    g_schemas_relid = get_relname_relid("action_schemas", schema_oid);
    MemoryContext caller = CurrentMemoryContext;
    // As the tables' owner: the append path needs no privilege on the registry tables.
    pg::OwnerAccess owner = pg::EnterOwnerAccess();
    SPI_connect();
    // A fresh snapshot: the caller's may predate the change whose invalidation brought us
    // here (REPEATABLE READ, or a statement that waited for a lock), and the cache would
    // then keep the old rows until the next change.
    PushActiveSnapshot(GetLatestSnapshot());
    Oid argtypes[1] = {TEXTOID};
    Datum args[1] = {CStringGetTextDatum(action)};
    SPI_execute_with_args("SELECT a.schema_version, s.schema FROM amebo.actions a "
                          "LEFT JOIN amebo.action_schemas s "
                          "ON s.action = a.action AND s.version = a.schema_version "
                          "WHERE a.action = $1",
                          1, argtypes, args, nullptr, true, 1);
    if (SPI_processed == 1) {
        bool isnull;
        HeapTuple row = SPI_tuptable->vals[0];
        out->registered = true;
        out->schema_version = DatumGetInt32(SPI_getbinval(row, SPI_tuptable->tupdesc, 1, &isnull));
        Datum schema = SPI_getbinval(row, SPI_tuptable->tupdesc, 2, &isnull);
        if (!isnull) {
            MemoryContext spi = MemoryContextSwitchTo(caller);
            out->schema = DatumGetJsonbPCopy(schema);
            MemoryContextSwitchTo(spi);
        }
    }
    PopActiveSnapshot();
    SPI_finish();
    pg::LeaveOwnerAccess(owner);
}

// The cached rule for an action, loading it on first use.
const ActionRule &Rule(text *action) {
    // Registry changes committed since the last statement arrive here as invalidations.
    pg::Call([] { AcceptInvalidationMessages(); });
    if (g_rules_stale) {
        g_rules.clear();
        g_rules_stale = false;
    }
    std::string name(pg::TextView(action));
    auto found = g_rules.find(name);
    if (found != g_rules.end())
        return found->second;
    Registration registration;
    pg::Call([&] { ReadRegistration(name.c_str(), &registration); });
    // Without a registry (extension 1.0) nothing would invalidate a cached answer once an
    // upgrade creates amebo.actions: answer without caching.
    static const ActionRule kUnregistered;
    if (!OidIsValid(g_actions_relid))
        return kUnregistered;
    ActionRule rule;
    rule.registered = registration.registered;
    rule.schema_version = registration.schema_version;
    if (registration.schema != nullptr)
        rule.schema = schema::CompiledSchema::Compile(JsonbToJson(registration.schema));
    // Every distinct action name is remembered (unregistered ones too): keep it bounded.
    if (g_rules.size() >= kMaxCachedRules)
        g_rules.clear();
    return g_rules.emplace(std::move(name), std::move(rule)).first->second;
}

// Marks the cache stale when amebo.actions or amebo.action_schemas is invalidated (or
// everything is).
void OnRelcacheInvalidation(Datum, Oid relid) {
    if (relid == InvalidOid || relid == g_actions_relid || relid == g_schemas_relid)
        g_rules_stale = true;
}

// Throws AM004 naming the failing path, the rule and the schema version.
[[noreturn]] void SchemaViolation(text *action, int32 version, int element,
                                  const std::vector<schema::Violation> &violations) {
    std::string name(pg::TextView(action));
    std::string what = element < 0 ? "payload" : "events[" + std::to_string(element) + "].payload";
    const schema::Violation &first = violations.front();
    std::string detail;
    for (size_t i = 0; i < violations.size() && i < 5; i++)
        detail += (i ? "; " : "") + violations[i].path + ": " + violations[i].rule;
    throw Error(sqlstate::kSchemaViolation,
                what + " of action \"" + name + "\" fails its schema (version " +
                    std::to_string(version) + ") at " + first.path + ": " + first.rule,
                "Violations: " + detail,
                "See the schema with: SELECT schema FROM amebo.action_list WHERE action = '" +
                    name + "'.");
}

} // namespace

int32 CheckPayload(text *action, Jsonb *payload, int element) {
    const ActionRule &rule = Rule(action);
    if (!rule.registered) {
        if (settings::unknown_actions == settings::kRejectUnknownActions) {
            std::string name(pg::TextView(action));
            throw Error(sqlstate::kUnknownAction, "action \"" + name + "\" is not registered",
                        "amebo.unknown_actions is set to reject unregistered actions.",
                        "Register it with amebo.create_action('" + name +
                            "', application, schema).");
        }
        return 0;
    }
    if (!rule.schema)
        return 0;
    std::shared_ptr<schema::CompiledSchema> compiled = rule.schema;
    const schema::FastSchema *fast = compiled->fast();
    if (fast != nullptr && pg::Call([&] { return FastHolds(*fast, payload); }))
        return rule.schema_version;
    // No fast form, or the fast check failed: valijson decides and explains.
    auto violations = compiled->Validate(JsonbToJson(payload));
    if (!violations.empty())
        SchemaViolation(action, rule.schema_version, element, violations);
    return rule.schema_version;
}

void InitActionRules() {
    CacheRegisterRelcacheCallback(OnRelcacheInvalidation, (Datum)0);
}

} // namespace amebo::registry
