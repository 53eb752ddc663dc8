// The address guard of webhook requests: a request may connect only to addresses that
// amebo.allow_private_targets and amebo.allowed_private_targets let it reach
// (core/delivery/target_policy.hpp says which). The HTTP client asks it about each new
// connection and each reused one. Never throws anything but std::bad_alloc; calls nothing of
// PostgreSQL.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <string>

#include "core/delivery/target_policy.hpp"

namespace amebo::delivery {

// Why a new connection to the socket address of family (length bytes) may not be made under
// rules, or "" when it may.
std::string RefuseSocketAddress(const TargetRules &rules, int family, const sockaddr *address,
                                size_t length);

// Why a request may not be sent under rules on a connection whose peer is address (text, as
// curl reports it), or "" when it may.
std::string RefusePeerAddress(const TargetRules &rules, const char *address);

// Why rules refuse address (text) of class kind, for messages: which settings to change.
std::string RefusalReason(const std::string &address, AddressKind kind);

} // namespace amebo::delivery
