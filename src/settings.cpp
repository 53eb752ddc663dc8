// Definitions of the amebo.* settings.
#include "settings.hpp"

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "pg/postgres.hpp"

namespace amebo::settings {

int max_payload_size = 1024 * 1024;
int unknown_actions = kAllowUnknownActions;
int snapshots_to_keep = 3;
char *database_name = nullptr;
int worker_naptime = 1000;
int standby_horizon_interval = 100;
bool allow_private_targets = false;
int retry_base_delay = 1000;
int retry_max_delay = 3600 * 1000;
int delivery_timeout = 10000;
int connect_timeout = 5000;
int max_concurrent_requests = 1000;
int max_requests_per_subscription = 16;
int delivery_log_retention = 7 * 24 * 3600;
int worker_nice = 0;
int disable_after = 3 * 24 * 3600;
int worker_cpu_limit = 0;

namespace {

// amebo.allowed_private_targets's text, and its ranges as its check hook parsed them.
char *allowed_private_targets = nullptr;
struct ParsedRanges {
    size_t count;
    delivery::AddressRange *ranges; // count of them, in the same allocation, after this
};
const ParsedRanges *allowed_ranges = nullptr;
uint64_t target_rules_version = 0;

// The values amebo.unknown_actions accepts.
const struct config_enum_entry kUnknownActionsOptions[] = {
    {"allow", kAllowUnknownActions, false},
    {"reject", kRejectUnknownActions, false},
    {nullptr, 0, false},
};

// A worker setting in milliseconds, changed by a reload.
void DefineMilliseconds(const char *name, const char *description, int *value, int initial,
                        int minimum, int maximum) {
    DefineCustomIntVariable(name, description, nullptr, value, initial, minimum, maximum,
                            PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
}

// Parses amebo.allowed_private_targets into *parsed (malloc'd, as GUC extra data must be),
// or returns false with the reason in error. Never throws.
template <size_t N>
bool ParseAllowedTargets(const char *text, ParsedRanges **parsed, char (&error)[N]) noexcept {
    try {
        std::vector<delivery::AddressRange> ranges;
        std::string why = "Out of memory.";
        if (delivery::ParseAddressRanges(text != nullptr ? text : "", &ranges, &why)) {
            size_t bytes = sizeof(ParsedRanges) + ranges.size() * sizeof(delivery::AddressRange);
            *parsed = static_cast<ParsedRanges *>(malloc(bytes));
            if (*parsed != nullptr) {
                (*parsed)->count = ranges.size();
                (*parsed)->ranges = reinterpret_cast<delivery::AddressRange *>(*parsed + 1);
                std::uninitialized_copy(ranges.begin(), ranges.end(), (*parsed)->ranges);
                return true;
            }
        }
        strlcpy(error, why.c_str(), N);
    } catch (...) {
        strlcpy(error, "Out of memory.", N);
    }
    return false;
}

// GUC check hook of amebo.allowed_private_targets: refuses a malformed list, saying why. No
// C++ object lives across the GUC_check_* calls, which may raise a PostgreSQL error.
bool CheckAllowedTargets(char **newval, void **extra, GucSource source) {
    ParsedRanges *parsed = nullptr;
    char error[256] = "";
    if (ParseAllowedTargets(*newval, &parsed, error)) {
        *extra = parsed;
        return true;
    }
    GUC_check_errmsg("invalid value for amebo.allowed_private_targets");
    GUC_check_errdetail("%s", error);
    GUC_check_errhint("Give a comma-separated list of IPv4 or IPv6 addresses or CIDR ranges, "
                      "such as '10.1.0.0/16, 127.0.0.1/32, fd00::/8'.");
    return false;
}

// GUC assign hook of amebo.allowed_private_targets: keeps the ranges its check hook parsed.
void AssignAllowedTargets(const char *newval, void *extra) {
    allowed_ranges = static_cast<const ParsedRanges *>(extra);
    target_rules_version++;
}

// GUC assign hook of amebo.allow_private_targets: tells holders of the rules to renew them.
void AssignAllowPrivateTargets(bool newval, void *extra) {
    target_rules_version++;
}

// The settings of webhook delivery.
void DefineDeliverySettings() {
    DefineCustomBoolVariable(
        "amebo.allow_private_targets",
        "Whether webhook handlers may resolve to loopback, private or link-local addresses "
        "(cloud metadata addresses only through amebo.allowed_private_targets).",
        "Checked when a subscription is created or changed, and again at every connection, after "
        "DNS resolution. Superuser-only: it widens what database roles can reach.",
        &allow_private_targets, false, PGC_SUSET, 0, nullptr, AssignAllowPrivateTargets, nullptr);
    DefineCustomStringVariable(
        "amebo.allowed_private_targets",
        "Non-public addresses webhook handlers may reach: a comma-separated list of IPv4 or "
        "IPv6 addresses or CIDR ranges.",
        "Allowed whatever amebo.allow_private_targets says. Cloud metadata addresses (such as "
        "169.254.169.254) are reached only when listed exactly, even with "
        "amebo.allow_private_targets on. Superuser-only: it widens what database roles can "
        "reach.",
        &allowed_private_targets, "", PGC_SUSET, 0, CheckAllowedTargets, AssignAllowedTargets,
        nullptr);
    DefineMilliseconds("amebo.retry_base_delay", "Delay before the first retry of a delivery.",
                       &retry_base_delay, 1000, 10, 24 * 3600 * 1000);
    DefineMilliseconds("amebo.retry_max_delay", "Longest delay between two delivery attempts.",
                       &retry_max_delay, 3600 * 1000, 10, 7 * 24 * 3600 * 1000);
    DefineMilliseconds("amebo.delivery_timeout", "Longest a webhook request may take in all.",
                       &delivery_timeout, 10000, 100, 600 * 1000);
    DefineMilliseconds("amebo.connect_timeout", "Longest connecting to a webhook handler may take.",
                       &connect_timeout, 5000, 100, 600 * 1000);
    DefineCustomIntVariable("amebo.max_concurrent_requests",
                            "Webhook requests the worker keeps in flight at most.", nullptr,
                            &max_concurrent_requests, 1000, 1, 100000, PGC_SIGHUP, 0, nullptr,
                            nullptr, nullptr);
    DefineCustomIntVariable("amebo.max_requests_per_subscription",
                            "Webhook requests in flight at most per subscription (ordered "
                            "subscriptions always send one at a time).",
                            nullptr, &max_requests_per_subscription, 16, 1, 10000, PGC_SIGHUP, 0,
                            nullptr, nullptr, nullptr);
    DefineCustomIntVariable("amebo.delivery_log_retention",
                            "How long the worker keeps rows of amebo.delivery_log.", nullptr,
                            &delivery_log_retention, 7 * 24 * 3600, 60, INT_MAX, PGC_SIGHUP,
                            GUC_UNIT_S, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "amebo.disable_after",
        "How long every delivery attempt to a subscription may fail before it is disabled.",
        "0 never disables. Read by the worker when it records failed attempts; see "
        "amebo.resume_subscription().",
        &disable_after, 3 * 24 * 3600, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr,
        nullptr);
    DefineCustomIntVariable(
        "amebo.worker_nice", "CPU scheduling niceness of the amebo worker (0 to 19).",
        "Above 0 the kernel favours the server's other processes over the worker when the "
        "CPUs are saturated, at the price of delivery lag. Lowering it restarts the worker.",
        &worker_nice, 0, 0, 19, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "amebo.worker_cpu_limit",
        "Percent of one CPU the amebo worker may use while delivering (0: no limit).",
        "Above it the worker pauses, leaving the CPU to the server's other processes, at the "
        "price of delivery lag.",
        &worker_cpu_limit, 0, 0, 100, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
}

} // namespace

delivery::TargetRules CurrentTargetRules() {
    delivery::TargetRules rules;
    rules.allow_private = allow_private_targets;
    if (allowed_ranges != nullptr)
        rules.allowed.assign(allowed_ranges->ranges,
                             allowed_ranges->ranges + allowed_ranges->count);
    return rules;
}

uint64_t TargetRulesVersion() {
    return target_rules_version;
}

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
        &unknown_actions, kAllowUnknownActions, kUnknownActionsOptions, PGC_SUSET, 0, nullptr,
        nullptr, nullptr);
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
    DefineCustomIntVariable(
        "amebo.standby_horizon_interval",
        "Shortest time between two publications of the settled position for hot standbys.",
        "The worker writes amebo.settled_position() into amebo.settled_horizon when it advanced; "
        "read_all on a standby stops there. 0 publishes nothing.",
        &standby_horizon_interval, 100, 0, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr,
        nullptr);
    DefineDeliverySettings();
    MarkGUCPrefixReserved("amebo");
}

} // namespace amebo::settings
