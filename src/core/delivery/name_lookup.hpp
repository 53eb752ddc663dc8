// Host name resolution that a backend can cancel: glibc's getaddrinfo_a, polled with the
// interrupt check of core/interrupts.hpp (statement_timeout, pg_cancel_backend), instead of
// a getaddrinfo() that blocks until the resolver gives up. Pure C++ (glibc only).
#pragma once

#include <sys/socket.h>

#include <string>
#include <vector>

namespace amebo::delivery {

// Every address host resolves to (TCP), or none when it does not resolve. Throws what the
// interrupt check throws when the statement is cancelled while it waits.
std::vector<sockaddr_storage> ResolveHost(const std::string &host);

} // namespace amebo::delivery
