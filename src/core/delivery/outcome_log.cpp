// The dispatcher's outcome log (see outcome_log.hpp). Pure C++.
#include "core/delivery/outcome_log.hpp"

#include <algorithm>
#include <map>
#include <utility>

#include "core/delivery/envelope.hpp"

namespace amebo::delivery {

namespace {

// The state's name in amebo.deliveries.
const char *StateName(MessageState state) {
    return state == MessageState::kDead ? "dead" : "pending";
}

// The key of the message a record is about.
MessageKey KeyOf(const nlohmann::json &record) {
    return {record["subscription_id"].get<int64_t>(), record["webhook_id"].get<std::string>()};
}

} // namespace

nlohmann::json &OutcomeLog::Add(const MessageKey &key, nlohmann::json positions, int attempt) {
    records_.push_back({{"subscription_id", key.subscription_id},
                        {"webhook_id", key.webhook_id},
                        {"positions", std::move(positions)},
                        {"attempt", attempt},
                        {"logged", false},
                        {"seq", seq_++}});
    return records_.back();
}

void OutcomeLog::Logged(nlohmann::json &record, const HttpResponse &response, int64_t attempted_at,
                        const std::string &error) {
    record["logged"] = true;
    if (response.status != 0)
        record["status"] = response.status;
    if (!error.empty())
        record["error"] = error;
    record["duration_ms"] = response.duration_ms;
    record["attempted_at"] = FormatTimestamp(attempted_at);
}

void OutcomeLog::Store(nlohmann::json &record, const MessageKey &key, MessageState state,
                       int attempts, int64_t next_attempt_at) {
    record["op"] = "store";
    unrecorded_keys_.insert(key);
    record["state"] = StateName(state);
    record["attempt"] = attempts;
    record["next_attempt_at"] = FormatTimestamp(next_attempt_at);
    if (state == MessageState::kPending)
        earliest_retry_ = std::min(earliest_retry_, next_attempt_at);
}

void OutcomeLog::Delete(nlohmann::json &record, const MessageKey &key) {
    record["op"] = "delete";
    unrecorded_keys_.insert(key);
}

std::string OutcomeLog::Take() {
    // Attempts to log, the last operation on each stored message, subscriptions to disable.
    nlohmann::json log = nlohmann::json::array();
    std::map<MessageKey, nlohmann::json> last_operations;
    std::set<int64_t> touched;
    nlohmann::json disable = nlohmann::json::array();
    for (auto &record : records_) {
        touched.insert(record["subscription_id"].get<int64_t>());
        if (record.value("disable", false))
            disable.push_back(record["subscription_id"]);
        if (record.contains("op")) {
            MessageKey key = KeyOf(record);
            nlohmann::json operation = record;
            // A message stored twice in one batch (held, then failed) keeps the place of its
            // first store: rows are inserted by seq, and an ordered subscription's stored
            // messages are sent again in the order of their rows.
            auto earlier = last_operations.find(key);
            if (earlier != last_operations.end())
                operation["seq"] = earlier->second["seq"];
            last_operations[std::move(key)] = std::move(operation);
        }
        if (record["logged"].get<bool>())
            log.push_back(std::move(record));
    }
    nlohmann::json operations = nlohmann::json::array();
    for (auto &[key, record] : last_operations)
        operations.push_back(std::move(record));
    std::string text = nlohmann::json{
        {"log", std::move(log)},
        {"operations", std::move(operations)},
        {"disable", std::move(disable)},
        {"subscriptions",
         touched}}.dump();
    records_ = nlohmann::json::array();
    recording_keys_.insert(unrecorded_keys_.begin(), unrecorded_keys_.end());
    unrecorded_keys_.clear();
    return text;
}

void OutcomeLog::AppendChangingKeys(std::vector<std::string> *keys) const {
    for (const MessageKey &key : unrecorded_keys_)
        keys->push_back(key.Text());
    for (const MessageKey &key : recording_keys_)
        keys->push_back(key.Text());
}

int64_t OutcomeLog::TakeEarliestRetry() {
    int64_t earliest = earliest_retry_;
    earliest_retry_ = INT64_MAX;
    return earliest;
}

} // namespace amebo::delivery
