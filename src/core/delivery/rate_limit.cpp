// The token bucket of a subscription's rate limit (see rate_limit.hpp). Pure C++.
#include "core/delivery/rate_limit.hpp"

#include <algorithm>
#include <cmath>

namespace amebo::delivery {

namespace {

constexpr double kMicrosPerSecond = 1e6;

} // namespace

double RateLimit::Burst(double rate) {
    return std::max(1.0, rate / 10);
}

void RateLimit::SetRate(double rate) {
    if (!(rate > 0)) { // 0, negative or NaN: no limit
        rate_ = 0;
        filled_ = false;
        return;
    }
    if (rate_ == 0)
        filled_ = false;
    rate_ = rate;
    tokens_ = std::min(tokens_, Burst(rate_));
}

// The tokens at now: those left at the last request plus those earned since, up to the
// burst; a new bucket is full.
double RateLimit::TokensAt(int64_t now) const {
    if (!filled_)
        return Burst(rate_);
    double earned =
        static_cast<double>(std::max<int64_t>(0, now - refilled_at_)) * rate_ / kMicrosPerSecond;
    return std::min(Burst(rate_), tokens_ + earned);
}

void RateLimit::Take(int64_t now) {
    if (!Limited())
        return;
    tokens_ = TokensAt(now) - 1;
    refilled_at_ = std::max(refilled_at_, now);
    filled_ = true;
}

int64_t RateLimit::WaitUs(int64_t now) const {
    double tokens = Limited() ? TokensAt(now) : 1;
    if (tokens >= 1)
        return 0;
    return static_cast<int64_t>(std::ceil((1 - tokens) * kMicrosPerSecond / rate_));
}

double RateLimit::AllowedWithin(int64_t now, int64_t span_us) const {
    if (!Limited())
        return HUGE_VAL;
    double span = static_cast<double>(std::max<int64_t>(0, span_us));
    return std::floor(TokensAt(now) + span * rate_ / kMicrosPerSecond);
}

int64_t RateLimit::PaceAt(int64_t start, double count) const {
    if (!Limited())
        return start;
    double micros = std::min(std::max(0.0, count) / rate_ * kMicrosPerSecond, 1e15);
    return start + static_cast<int64_t>(std::ceil(micros));
}

} // namespace amebo::delivery
