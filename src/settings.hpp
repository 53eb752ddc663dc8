// amebo's configuration settings (GUCs), all under the reserved prefix "amebo.".
#pragma once

namespace amebo::settings {

// amebo.max_payload_size: the largest payload or metadata accepted, in bytes of jsonb.
extern int max_payload_size;

// amebo.unknown_actions: registry::kAllowUnknownActions or registry::kRejectUnknownActions.
extern int unknown_actions;

// Defines every amebo.* setting; called once from _PG_init.
void Init();

} // namespace amebo::settings
