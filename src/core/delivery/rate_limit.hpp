// A subscription's request rate limit: a token bucket. Pure C++.
#pragma once

#include <cstdint>

namespace amebo::delivery {

// Lets through at most rate requests per second on average, with a burst of a tenth of a
// second's worth (at least one request) after a quiet spell. A rate of 0 means no limit.
// Times are microseconds on any steady clock (the dispatcher uses PostgreSQL's).
class RateLimit {
  public:
    // Requests that may go at once after a quiet spell: rate / 10, at least 1.
    static double Burst(double rate);

    // Changes the rate; the bucket keeps its tokens (up to the new burst). A new limit starts
    // with a full bucket.
    void SetRate(double rate);

    // True when a limit is set.
    bool Limited() const { return rate_ > 0; }

    // True when a request may go at now.
    bool Ready(int64_t now) const { return !Limited() || TokensAt(now) >= 1; }

    // Counts a request sent at now (call after Ready() said yes).
    void Take(int64_t now);

    // Microseconds from now until the next request may go (0: now).
    int64_t WaitUs(int64_t now) const;

    // How many requests may go from now through now + span_us (huge without a limit).
    double AllowedWithin(int64_t now, int64_t span_us) const;

    // When count more requests at the rate take from start: start + count / rate seconds.
    int64_t PaceAt(int64_t start, double count) const;

  private:
    double TokensAt(int64_t now) const;

    double rate_ = 0;         // requests per second; 0: no limit
    double tokens_ = 0;       // requests that could go at refilled_at_
    int64_t refilled_at_ = 0; // when tokens_ was counted (the last request)
    bool filled_ = false;     // false: no request yet since the limit was set (a full bucket)
};

} // namespace amebo::delivery
