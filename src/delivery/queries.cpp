// The delivery service's statements and their row mapping (see queries.hpp).
#include "delivery/queries.hpp"

#include <nlohmann/json.hpp>

#include "pg/sql_runner.hpp"

namespace amebo::delivery {

namespace {

// The columns of an event row, as the queries below select them.
constexpr char kEventColumns[] =
    "e.position, e.event_id, e.stream, e.version, e.action, e.payload::text, e.metadata::text, "
    "((extract(epoch FROM e.recorded_at) - 946684800) * 1000000)::bigint";

// An integer column, or fallback when it is NULL or there is none.
int64_t ToInt(const std::string &text, int64_t fallback = 0) {
    return text.empty() ? fallback : std::stoll(text);
}

// An event from eight text columns starting at column first.
FeedEvent EventFromRow(const pg::SqlRow &row, size_t first) {
    FeedEvent event;
    event.position = std::stoll(row.at(first));
    event.event_id = row.at(first + 1);
    event.stream = row.at(first + 2);
    event.version = std::stoll(row.at(first + 3));
    event.action = row.at(first + 4);
    event.payload = row.at(first + 5);
    event.metadata = row.at(first + 6);
    event.recorded_at = std::stoll(row.at(first + 7));
    return event;
}

// A subscription from the columns LoadSubscriptions() selects.
Subscription SubscriptionFromRow(const pg::SqlRow &row) {
    Subscription subscription;
    subscription.id = std::stoll(row.at(0));
    subscription.pattern = row.at(1);
    subscription.handler = row.at(2);
    subscription.secret = row.at(3);
    subscription.max_retries = std::stoi(row.at(4));
    if (!row.at(5).empty())
        subscription.filter = nlohmann::json::parse(row.at(5), nullptr, false);
    subscription.ordered = row.at(6) == "t";
    subscription.batch_size = std::stoi(row.at(7));
    subscription.start_position = std::stoll(row.at(8));
    subscription.state = ParseSubscriptionState(row.at(9));
    subscription.rate_limit = std::stod(row.at(10)); // rate limit hook: 0 for none
    subscription.previous_secret = row.at(11);
    subscription.previous_secret_until = ToInt(row.at(12));
    return subscription;
}

// A checkpoint candidate from a row (settled position, WAL insert position).
CheckpointMeasurement MeasurementFromRow(const pg::SqlRow &row) {
    return {ToInt(row.at(0)), static_cast<uint64_t>(ToInt(row.at(1)))};
}

} // namespace

bool DeliveryInstalled() {
    return pg::RunSqlValue(
               "SELECT count(*) FROM pg_catalog.pg_extension x WHERE x.extname = 'amebo' "
               "AND pg_catalog.to_regclass('amebo.delivery_checkpoint') IS NOT NULL") == "1";
}

std::string ExtensionOid() {
    return pg::RunSqlValue("SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'amebo'");
}

void DropIdleSlot(const std::string &slot) {
    pg::RunSql("SELECT pg_catalog.pg_drop_replication_slot(slot_name) "
               "FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND NOT active",
               {slot});
}

void DropSlot(const std::string &slot) {
    pg::RunSql("SELECT pg_catalog.pg_drop_replication_slot($1)", {slot});
}

bool DropLostSlot(const std::string &slot) {
    auto lost = pg::RunSql("SELECT pg_catalog.pg_drop_replication_slot(slot_name) "
                           "FROM pg_catalog.pg_replication_slots "
                           "WHERE slot_name = $1 AND wal_status = 'lost' AND NOT active",
                           {slot});
    return !lost.empty();
}

void CreateSlot(const std::string &slot) {
    pg::RunSql("SELECT pg_catalog.pg_create_logical_replication_slot($1, 'amebo')", {slot});
}

std::optional<SavedCheckpoint> LoadCheckpoint() {
    auto rows = pg::RunSql("SELECT position, catch_up_through, slot_skip_through "
                           "FROM amebo.delivery_checkpoint");
    if (rows.empty())
        return std::nullopt;
    return SavedCheckpoint{ToInt(rows[0].at(0)), ToInt(rows[0].at(1)), ToInt(rows[0].at(2))};
}

int64_t SettledPosition() {
    return ToInt(pg::RunSqlValue("SELECT amebo.settled_position()"));
}

int64_t HeadPosition() {
    return ToInt(pg::RunSqlValue("SELECT max(position) FROM amebo.events"));
}

int64_t OldestSubscriptionStart() {
    return ToInt(
        pg::RunSqlValue("SELECT coalesce((SELECT min(start_position) FROM amebo.subscriptions), "
                        "(SELECT max(position) FROM amebo.events), 0)"));
}

void PlanCatchUp(const std::string &slot, int64_t checkpoint, int64_t head, int64_t skip_through) {
    pg::RunSql(
        "SELECT amebo_internal.plan_catch_up($1, $2::bigint, $3::bigint, $4::bigint)",
        {slot, std::to_string(checkpoint), std::to_string(head), std::to_string(skip_through)});
}

void EndCatchUp(const std::string &slot, int64_t checkpoint) {
    pg::RunSql("SELECT amebo_internal.plan_catch_up($1, $2::bigint, 0, 0)",
               {slot, std::to_string(checkpoint)});
}

std::vector<FeedEvent> EventsBetween(int64_t after, int64_t through, int limit) {
    auto rows = pg::RunSql(
        (std::string("SELECT ") + kEventColumns +
         " FROM amebo.events e WHERE e.position > $1::bigint AND e.position <= $2::bigint "
         "ORDER BY e.position LIMIT " +
         std::to_string(limit))
            .c_str(),
        {std::to_string(after), std::to_string(through)});
    std::vector<FeedEvent> events;
    events.reserve(rows.size());
    for (const auto &row : rows)
        events.push_back(EventFromRow(row, 0));
    return events;
}

int LoadShard() {
    // amebo.shard_identity exists since extension version 1.6.
    if (pg::RunSqlValue("SELECT pg_catalog.to_regclass('amebo.shard_identity') IS NULL") == "t")
        return -1;
    return static_cast<int>(ToInt(
        pg::RunSqlValue("SELECT coalesce((SELECT i.shard FROM amebo.shard_identity i), -1)")));
}

std::vector<Subscription> LoadSubscriptions() {
    auto rows = pg::RunSql(
        "SELECT s.id, s.action, s.handler, a.secret, s.max_retries, "
        "coalesce(s.filter::text, ''), s.ordered, s.batch_size, s.start_position, s.state, "
        "coalesce(s.rate_limit, 0), "
        "CASE WHEN a.previous_secret_expires_at > now() THEN a.previous_secret END, "
        "extract(epoch FROM a.previous_secret_expires_at)::bigint "
        "FROM amebo.subscriptions s JOIN amebo.applications a ON a.name = s.application");
    std::vector<Subscription> subscriptions;
    for (const auto &row : rows)
        subscriptions.push_back(SubscriptionFromRow(row));
    return subscriptions;
}

DueMessages LoadDueMessages(const std::vector<std::string> &skip, int limit) {
    auto rows = pg::RunSql(
        (std::string("SELECT d.subscription_id, d.webhook_id, d.attempts, d.message_id, "
                     "d.event_position, d.event_id, d.stream, d.version, d.action, d.payload, "
                     "d.metadata, d.recorded_at FROM amebo_internal.due_deliveries(") +
         std::to_string(limit) +
         ", ARRAY(SELECT pg_catalog.jsonb_array_elements_text($1::jsonb))) d")
            .c_str(),
        {nlohmann::json(skip).dump()});
    DueMessages messages;
    for (const auto &row : rows) {
        StoredMessage &message = messages[std::stoll(row.at(3))];
        message.key.subscription_id = std::stoll(row.at(0));
        message.key.webhook_id = row.at(1);
        message.attempts = std::stoi(row.at(2));
        message.events.push_back(EventFromRow(row, 4));
    }
    return messages;
}

DueSchedule LoadDueSchedule(const std::vector<std::string> &skip) {
    auto rows = pg::RunSql(
        "SELECT (SELECT pg_catalog.array_to_json(pg_catalog.array_agg(b))::text "
        "        FROM amebo_internal.blocked_subscriptions() b), "
        "amebo_internal.next_due_at(ARRAY(SELECT pg_catalog.jsonb_array_elements_text($1::jsonb)))",
        {nlohmann::json(skip).dump()});
    DueSchedule schedule;
    if (!rows.at(0).at(0).empty())
        schedule.blocked = nlohmann::json::parse(rows[0][0]).get<std::vector<int64_t>>();
    if (!rows[0].at(1).empty())
        schedule.next_due_at = ToInt(rows[0][1]);
    return schedule;
}

std::optional<CheckpointMeasurement> RecordDeliveries(const std::string &records,
                                                      std::optional<int64_t> checkpoint,
                                                      const std::string &slot) {
    auto rows = pg::RunSql(
        "SELECT amebo.settled_position(), "
        "(pg_catalog.pg_current_wal_insert_lsn() - '0/0'::pg_catalog.pg_lsn)::bigint "
        "FROM amebo_internal.record_deliveries($1::jsonb, $2::bigint, $3)",
        {records,
         checkpoint ? std::optional<std::string>(std::to_string(*checkpoint)) : std::nullopt,
         slot});
    if (rows.empty())
        return std::nullopt;
    return MeasurementFromRow(rows[0]);
}

CheckpointMeasurement MeasureCheckpoint() {
    auto rows =
        pg::RunSql("SELECT amebo.settled_position(), "
                   "(pg_catalog.pg_current_wal_insert_lsn() - '0/0'::pg_catalog.pg_lsn)::bigint");
    return MeasurementFromRow(rows.at(0));
}

void PruneDeliveryLog(int retention_seconds) {
    pg::RunSql(
        "SELECT amebo_internal.prune_delivery_log(pg_catalog.make_interval(secs => $1::int))",
        {std::to_string(retention_seconds)});
}

} // namespace amebo::delivery
