// What names a message stored in amebo.deliveries: its subscription and its webhook id. Pure
// C++.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>

namespace amebo::delivery {

// A stored message's key.
struct MessageKey {
    int64_t subscription_id = 0;
    std::string webhook_id;

    // The key as amebo_internal.due_deliveries() and amebo_internal.next_due_at() take it to skip a
    // message: "subscription_id webhook_id".
    std::string Text() const { return std::to_string(subscription_id) + " " + webhook_id; }

    // Keys in order of subscription, then webhook id.
    bool operator<(const MessageKey &other) const {
        return std::tie(subscription_id, webhook_id) <
               std::tie(other.subscription_id, other.webhook_id);
    }
};

} // namespace amebo::delivery
