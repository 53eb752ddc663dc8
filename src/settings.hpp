// amebo's configuration settings (GUCs), all under the reserved prefix "amebo.".
#pragma once

#include <cstdint>

#include "core/delivery/target_policy.hpp"

namespace amebo::settings {

// amebo.max_payload_size: the largest payload or metadata accepted, in bytes of jsonb.
extern int max_payload_size;

// What appending an action that is not registered does (amebo.unknown_actions's values).
enum UnknownActions { kAllowUnknownActions, kRejectUnknownActions };

// amebo.unknown_actions: kAllowUnknownActions or kRejectUnknownActions.
extern int unknown_actions;

// amebo.snapshots_to_keep: how many snapshots per stream save_snapshot keeps.
extern int snapshots_to_keep;

// amebo.database_name: the database the background worker serves.
extern char *database_name;

// amebo.worker_naptime: the background worker's fallback wake-up interval, in milliseconds.
extern int worker_naptime;

// amebo.standby_horizon_interval: the shortest time between two publications of the settled
// position for standbys, in milliseconds (0: none are published).
extern int standby_horizon_interval;

// amebo.allow_private_targets: whether handlers may be loopback, private or link-local.
extern bool allow_private_targets;

// amebo.allow_private_targets and amebo.allowed_private_targets (its parsed ranges), as the
// rules webhook targets are checked against.
delivery::TargetRules CurrentTargetRules();

// Changes whenever one of the two settings above is assigned, so that a holder of
// CurrentTargetRules() knows when to take them again.
uint64_t TargetRulesVersion();

// amebo.retry_base_delay / amebo.retry_max_delay: the retry schedule, in milliseconds.
extern int retry_base_delay;
extern int retry_max_delay;

// amebo.delivery_timeout / amebo.connect_timeout: limits of one request, in milliseconds.
extern int delivery_timeout;
extern int connect_timeout;

// amebo.max_concurrent_requests / amebo.max_requests_per_subscription: requests in flight.
extern int max_concurrent_requests;
extern int max_requests_per_subscription;

// amebo.delivery_log_retention: how long delivery_log rows are kept, in seconds.
extern int delivery_log_retention;

// amebo.disable_after: how long (seconds) every attempt may fail before a subscription is
// disabled (0: never).
extern int disable_after;

// amebo.worker_nice: the worker's CPU scheduling niceness (0: as the server; up to 19).
extern int worker_nice;
// amebo.worker_cpu_limit: percent of one CPU the worker may use while delivering (0: no cap).
extern int worker_cpu_limit;

// Defines every amebo.* setting; called once from _PG_init.
void Init();

} // namespace amebo::settings
