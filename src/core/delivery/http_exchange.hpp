// One webhook POST and how it ended: the request the dispatcher builds and the HTTP client
// sends, and the response the client reports back to the dispatcher. Pure C++.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/delivery/target_policy.hpp"

namespace amebo::delivery {

// One POST to make.
struct HttpRequest {
    uint64_t tag = 0; // the dispatcher's handle for the request, returned in its HttpResponse
    std::string url;
    std::vector<std::string> headers; // "Name: value"
    std::string body;
    long timeout_ms = 10000;
    long connect_timeout_ms = 5000;
    std::shared_ptr<const TargetRules> targets; // the addresses it may reach; none: public only
};

// How one POST ended.
struct HttpResponse {
    uint64_t tag = 0;
    long status = 0;         // HTTP status, 0 when no response came
    std::string error;       // empty on any HTTP response; else what went wrong
    double duration_ms = 0;  // from submission to completion
    std::string retry_after; // the Retry-After header's value, if any
};

} // namespace amebo::delivery
