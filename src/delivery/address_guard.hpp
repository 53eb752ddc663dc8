// The private-address guard of webhook requests: while amebo.allow_private_targets is off, a
// request may connect only to public addresses (core/delivery/target_policy.hpp says which).
// The HTTP client asks it about each new connection and each reused one. Never throws
// anything but std::bad_alloc; calls nothing of PostgreSQL.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <string>

namespace amebo::delivery {

// Why a new connection to the socket address of family (length bytes) may not be made, or ""
// when it may.
std::string RefuseSocketAddress(int family, const sockaddr *address, size_t length);

// Why a request may not be sent on a connection whose peer is address (text, as curl reports
// it), or "" when it may.
std::string RefusePeerAddress(const char *address);

} // namespace amebo::delivery
