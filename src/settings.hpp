// amebo's configuration settings (GUCs), all under the reserved prefix "amebo.".
#pragma once

namespace amebo::settings {

// amebo.max_payload_size: the largest payload or metadata accepted, in bytes of jsonb.
extern int max_payload_size;

// amebo.unknown_actions: registry::kAllowUnknownActions or registry::kRejectUnknownActions.
extern int unknown_actions;

// amebo.snapshots_to_keep: how many snapshots per stream save_snapshot keeps.
extern int snapshots_to_keep;

// amebo.database_name: the database the background worker serves.
extern char *database_name;

// amebo.worker_naptime: the background worker's fallback wake-up interval, in milliseconds.
extern int worker_naptime;

// Defines every amebo.* setting; called once from _PG_init.
void Init();

} // namespace amebo::settings
