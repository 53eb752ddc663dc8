// The worker's HTTP client: libcurl's multi interface driven from the worker's own wait
// loop, so that its latch, postmaster death, curl's sockets and curl's timers are waited on
// together (pg/wait_set.hpp). PostgreSQL side, but it never calls anything that can ereport
// while a request is in flight except through pg::Call.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "core/delivery/http_exchange.hpp"

namespace amebo::delivery {

// Raises this process's open-file limit to its hard limit (once), then returns how many
// sockets HTTP requests may use: the limit less the files PostgreSQL may keep open
// (max_safe_fds) and a reserve. The worker keeps no more requests in flight than that.
size_t SocketBudget();

// What woke a Wait().
struct WaitOutcome {
    std::vector<HttpResponse> finished;
    bool latch_set = false;
};

// A set of requests in flight over one curl multi handle.
class HttpClient {
  public:
    // max_total: connections overall; max_per_host: per host and port.
    HttpClient(long max_total, long max_per_host);
    ~HttpClient();
    HttpClient(const HttpClient &) = delete;
    HttpClient &operator=(const HttpClient &) = delete;

    // Starts a request; its result comes back from a later Wait().
    void Submit(HttpRequest request);

    // Requests submitted and not yet returned by Wait().
    size_t InFlight() const;

    // Drives transfers, then waits up to timeout_ms for the latch, postmaster death (exits
    // the process), a socket or curl's timer. Returns finished requests, possibly none.
    // Resets the latch when it reports latch_set.
    WaitOutcome Wait(long timeout_ms);

  private:
    struct State;
    std::unique_ptr<State> state_;
};

} // namespace amebo::delivery
