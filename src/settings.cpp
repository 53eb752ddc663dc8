// Definitions of the amebo.* settings.
#include "settings.hpp"

#include "pg/postgres.hpp"
#include "registry/action_rules.hpp"

namespace amebo::settings {

int max_payload_size = 1024 * 1024;
int unknown_actions = registry::kAllowUnknownActions;
int snapshots_to_keep = 3;
char *database_name = nullptr;
int worker_naptime = 1000;

namespace {

// The values amebo.unknown_actions accepts.
const struct config_enum_entry kUnknownActionsOptions[] = {
    {"allow", registry::kAllowUnknownActions, false},
    {"reject", registry::kRejectUnknownActions, false},
    {nullptr, 0, false},
};

} // namespace

void Init() {
    DefineCustomIntVariable(
        "amebo.max_payload_size",
        "Largest event payload or metadata accepted by append_event and append_events.",
        "Measured as the size of the jsonb value. Superuser-only, so that roles cannot raise "
        "the limit for themselves.",
        &max_payload_size, 1024 * 1024, 1024, MaxAllocSize / 2, PGC_SUSET, GUC_UNIT_BYTE, nullptr,
        nullptr, nullptr);
    DefineCustomEnumVariable(
        "amebo.unknown_actions",
        "What appending an action that is not registered does: allow (without validation) or "
        "reject.",
        "Superuser-only: it is a data-quality policy that roles must not lift for themselves.",
        &unknown_actions, registry::kAllowUnknownActions, kUnknownActionsOptions, PGC_SUSET, 0,
        nullptr, nullptr, nullptr);
    DefineCustomIntVariable("amebo.snapshots_to_keep",
                            "How many snapshots per stream save_snapshot keeps (the newest).",
                            nullptr, &snapshots_to_keep, 3, 1, 1000, PGC_USERSET, 0, nullptr,
                            nullptr, nullptr);
    DefineCustomStringVariable("amebo.database_name",
                               "The database the amebo background worker serves.",
                               "A change restarts the worker on the new database.", &database_name,
                               "postgres", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "amebo.worker_naptime", "How long the background worker sleeps when no commit wakes it.",
        "Commits that append events wake it at once; this is the fallback.", &worker_naptime, 1000,
        10, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
    MarkGUCPrefixReserved("amebo");
}

} // namespace amebo::settings
