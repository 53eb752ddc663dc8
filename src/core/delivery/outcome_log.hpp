// What the dispatcher writes down about its messages until amebo_internal.record_deliveries()
// commits it: each attempt to log, each store or delete of a message in amebo.deliveries, and the
// subscriptions a 410 Gone disables. Pure C++.
#pragma once

#include <climits>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/delivery/http_exchange.hpp"
#include "core/delivery/message_key.hpp"

namespace amebo::delivery {

// The state a message is stored with.
enum class MessageState {
    kPending, // waiting for its next attempt
    kDead,    // out of attempts
};

// The outcomes not yet written, and the keys of stored messages they change.
class OutcomeLog {
  public:
    // Starts the record of attempt number attempt (0: none made) at the message key with the
    // events at positions; the record is filled in by the calls below.
    nlohmann::json &Add(const MessageKey &key, nlohmann::json positions, int attempt);

    // Makes record log an attempt that began at attempted_at (PostgreSQL microseconds) and
    // ended with response; error: what went wrong, empty for a success.
    static void Logged(nlohmann::json &record, const HttpResponse &response, int64_t attempted_at,
                       const std::string &error);

    // Makes record store (or update) the message key with state, attempts and the time of its
    // next attempt.
    void Store(nlohmann::json &record, const MessageKey &key, MessageState state, int attempts,
               int64_t next_attempt_at);

    // Makes record delete the stored message key.
    void Delete(nlohmann::json &record, const MessageKey &key);

    // Makes record disable its subscription.
    static void Disable(nlohmann::json &record) { record["disable"] = true; }

    // True when records wait to be taken.
    bool HasRecords() const { return !records_.empty(); }

    // The records as a JSON object for amebo_internal.record_deliveries() ({"log": attempts,
    // "operations": the last store or delete per message, "disable": subscription ids,
    // "subscriptions": every id touched}); their keys move to "being recorded".
    std::string Take();

    // The records taken last are committed.
    void Committed() { recording_keys_.clear(); }

    // True when the stored row of key changes with records not yet committed: the row in the
    // table is stale, so it must not be fetched again meanwhile.
    bool Changing(const MessageKey &key) const {
        return unrecorded_keys_.count(key) > 0 || recording_keys_.count(key) > 0;
    }

    // Appends the text of the keys Changing() is true for.
    void AppendChangingKeys(std::vector<std::string> *keys) const;

    // The earliest next attempt among messages stored pending since the last call, or
    // INT64_MAX.
    int64_t TakeEarliestRetry();

  private:
    nlohmann::json records_ = nlohmann::json::array();
    std::set<MessageKey> unrecorded_keys_; // changed by records not taken yet
    std::set<MessageKey> recording_keys_;  // changed by the records taken last
    int64_t earliest_retry_ = INT64_MAX;
    int64_t seq_ = 0;
};

} // namespace amebo::delivery
