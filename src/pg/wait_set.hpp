// The worker's wait set: its latch, postmaster death and a changing list of sockets, waited on
// together (the HTTP client's sockets, delivery/http_client.cpp). Kept between waits; built
// again only when the sockets change. PostgreSQL side; callable from C++ (errors come back as
// pg::PgError).
#pragma once

#include <cstdint>
#include <vector>

#include "pg/postgres.hpp"

extern "C" {
#include "storage/latch.h"
}

namespace amebo::pg {

// A socket to wait on and the WL_SOCKET_* events wanted.
struct SocketInterest {
    pgsocket socket;
    uint32 events;
};

// A WaitEventSet of the latch, postmaster death and sockets.
class SocketWaitSet {
  public:
    SocketWaitSet() = default;
    ~SocketWaitSet();
    SocketWaitSet(const SocketWaitSet &) = delete;
    SocketWaitSet &operator=(const SocketWaitSet &) = delete;

    // Waits up to timeout_ms (-1: no limit) for the latch, postmaster death (exits the
    // process) or one of sockets; writes what occurred to occurred (room for noccurred) and
    // returns how many. generation changes whenever a socket is added or removed: the same
    // generation means the same sockets, in the same order, whose wanted events may change.
    int Wait(uint64_t generation, const std::vector<SocketInterest> &sockets, long timeout_ms,
             WaitEvent *occurred, int noccurred);

  private:
    void Free();
    void Build(const SocketInterest *sockets, int nsockets, uint64_t generation);
    int WaitOnSet(uint64_t generation, const SocketInterest *sockets, int nsockets, long timeout_ms,
                  WaitEvent *occurred, int noccurred);

    WaitEventSet *set_ = nullptr;
    uint64_t generation_ = 0;
    int first_socket_ = 0;       // position of the first socket's event in the set
    std::vector<uint32> events_; // the events each socket's position waits for
};

// Resets the latch if it is set; true if it was. Done before waiting because
// WaitEventSetWait reports only the latch when it finds it already set, which would hide
// ready sockets from a caller whose latch is set again before every wait.
bool ResetLatchIfSet();

} // namespace amebo::pg
