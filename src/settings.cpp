// Definitions of the amebo.* settings.
#include "settings.hpp"

#include "pg/postgres.hpp"

namespace amebo::settings {

int max_payload_size = 1024 * 1024;

void Init() {
    DefineCustomIntVariable(
        "amebo.max_payload_size",
        "Largest event payload or metadata accepted by append_event and append_events.",
        "Measured as the size of the jsonb value. Superuser-only, so that roles cannot raise "
        "the limit for themselves.",
        &max_payload_size, 1024 * 1024, 1024, MaxAllocSize / 2, PGC_SUSET, GUC_UNIT_BYTE, nullptr,
        nullptr, nullptr);
    MarkGUCPrefixReserved("amebo");
}

} // namespace amebo::settings
