// The private-address guard (see address_guard.hpp).
#include "delivery/address_guard.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "core/delivery/target_policy.hpp"

namespace amebo::delivery {

namespace {

// The refusal message for a connection to a non-public address.
std::string RefusalMessage(const std::string &address, AddressKind kind) {
    return "refused to connect to " + address + ": " + AddressKindName(kind) +
           " address (amebo.allow_private_targets is off)";
}

// The text of an IPv4 or IPv6 socket address, such as "127.0.0.1" or "::1".
std::string AddressText(const sockaddr_storage &address) {
    char text[INET6_ADDRSTRLEN] = {};
    const void *raw = nullptr;
    if (address.ss_family == AF_INET)
        raw = &reinterpret_cast<const sockaddr_in *>(&address)->sin_addr;
    else
        raw = &reinterpret_cast<const sockaddr_in6 *>(&address)->sin6_addr;
    if (inet_ntop(address.ss_family, raw, text, sizeof(text)) == nullptr)
        return "an unprintable address";
    return text;
}

} // namespace

std::string RefuseSocketAddress(int family, const sockaddr *address, size_t length) {
    if (family != AF_INET && family != AF_INET6)
        return "refused to connect to a non-IP address (amebo.allow_private_targets is off)";
    // Copied out: the caller's struct may be a plain sockaddr, too small for an IPv6 address.
    sockaddr_storage copy{};
    std::memcpy(&copy, address, std::min(length, sizeof(copy)));
    AddressKind kind = ClassifyAddress(reinterpret_cast<const sockaddr *>(&copy));
    if (IsPublicAddress(kind))
        return {};
    return RefusalMessage(AddressText(copy), kind);
}

std::string RefusePeerAddress(const char *address) {
    std::string text = address != nullptr ? address : "";
    AddressKind kind = AddressKind::kReserved;
    bool known = ClassifyAddressText(text, &kind);
    if (known && IsPublicAddress(kind))
        return {};
    return known ? RefusalMessage(text, kind)
                 : "refused to send to unrecognized address \"" + text +
                       "\" (amebo.allow_private_targets is off)";
}

} // namespace amebo::delivery
