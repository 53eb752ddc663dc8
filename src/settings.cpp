// Definitions of the amebo.* settings.
#include "settings.hpp"

#include "pg/postgres.hpp"
#include "registry/action_rules.hpp"

namespace amebo::settings {

int max_payload_size = 1024 * 1024;
int unknown_actions = registry::kAllowUnknownActions;

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
    MarkGUCPrefixReserved("amebo");
}

} // namespace amebo::settings
