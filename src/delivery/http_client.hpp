// The worker's HTTP client: libcurl's multi interface driven from the worker's own wait
// loop, so that its latch, postmaster death, curl's sockets and curl's timers are waited on
// together. PostgreSQL side (WaitEventSet), but it never calls anything that can ereport
// while a request is in flight except through pg::Call.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace amebo::delivery {

// One POST to make.
struct HttpRequest {
    uint64_t tag = 0; // the caller's handle, returned in HttpResult
    std::string url;
    std::vector<std::string> headers; // "Name: value"
    std::string body;
    long timeout_ms = 10000;
    long connect_timeout_ms = 5000;
    bool allow_private = false; // may connect to loopback, private, link-local addresses
};

// How one POST ended.
struct HttpResult {
    uint64_t tag = 0;
    long status = 0;         // HTTP status, 0 when no response came
    std::string error;       // empty on any HTTP response; else what went wrong
    double duration_ms = 0;  // from submission to completion
    std::string retry_after; // the Retry-After header's value, if any
};

// What woke a Wait().
struct WaitOutcome {
    std::vector<HttpResult> finished;
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
