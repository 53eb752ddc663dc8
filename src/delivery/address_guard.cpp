// The address guard (see address_guard.hpp).
#include "delivery/address_guard.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace amebo::delivery {

namespace {

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

// Why address may not be reached under rules, or "" when it may.
std::string Refuse(const TargetRules &rules, const sockaddr_storage &address) {
    AddressKind kind = AddressKind::kReserved;
    if (MayReach(rules, reinterpret_cast<const sockaddr *>(&address), &kind))
        return {};
    return "refused to connect to " + RefusalReason(AddressText(address), kind);
}

} // namespace

std::string RefusalReason(const std::string &address, AddressKind kind) {
    std::string what = address + ": " + AddressKindName(kind) + " address";
    if (kind == AddressKind::kMetadata)
        return what + " (cloud metadata addresses are reached only when "
                      "amebo.allowed_private_targets lists them exactly)";
    return what + " (amebo.allow_private_targets is off and amebo.allowed_private_targets "
                  "does not list it)";
}

std::string RefuseSocketAddress(const TargetRules &rules, int family, const sockaddr *address,
                                size_t length) {
    if (family != AF_INET && family != AF_INET6)
        return "refused to connect to a non-IP address";
    // Copied out: the caller's struct may be a plain sockaddr, too small for an IPv6 address.
    sockaddr_storage copy{};
    std::memcpy(&copy, address, std::min(length, sizeof(copy)));
    return Refuse(rules, copy);
}

std::string RefusePeerAddress(const TargetRules &rules, const char *address) {
    std::string text = address != nullptr ? address : "";
    sockaddr_storage parsed{};
    if (!AddressFromText(text, &parsed))
        return "refused to send to unrecognized address \"" + text + "\"";
    return Refuse(rules, parsed);
}

} // namespace amebo::delivery
