// Which webhook targets amebo may call: handler URL checks and address classes. Pure C++.
#pragma once

#include <string>
#include <string_view>

struct sockaddr;

namespace amebo::delivery {

// What an IP address is, for the private-targets rule.
enum class AddressKind {
    kPublic,
    kLoopback,    // 127.0.0.0/8, ::1
    kPrivate,     // 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7
    kLinkLocal,   // 169.254/16, fe80::/10
    kMetadata,    // 169.254.169.254, 100.100.100.200, fd00:ec2::254 (cloud metadata services)
    kUnspecified, // 0.0.0.0/8, ::
    kMulticast,   // 224/4, ff00::/8
    kReserved,    // 240/4, broadcast, documentation and benchmarking ranges
};

// Classifies an IPv4 or IPv6 socket address. IPv6 addresses that carry an IPv4 address
// (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96, 6to4 2002::/16) are classified as that
// IPv4 address; IPv6 outside 2000::/3 is reserved. Other families are kReserved.
AddressKind ClassifyAddress(const struct sockaddr *address);

// Classifies a literal IPv4 or IPv6 address text; false when text is not one.
bool ClassifyAddressText(std::string_view text, AddressKind *kind);

// Lowercase name of a kind, for messages ("loopback", "private", …).
const char *AddressKindName(AddressKind kind);

// True for the kinds a handler may reach when amebo.allow_private_targets is off.
bool IsPublicAddress(AddressKind kind);

// A handler URL, split.
struct HandlerUrl {
    std::string scheme; // "http" or "https"
    std::string host;   // lowercase; IPv6 literals without brackets
    int port = 0;       // explicit or the scheme's default
};

// Parses and checks a handler URL: http or https (any case), a host, no user info, no
// fragment, no whitespace, control or non-ASCII bytes (IDN hosts in punycode), at most 2048
// bytes, a port in 1..65535. The host is a DNS name, a dotted-decimal IPv4 address or a
// bracketed IPv6 address; other numeric forms ("2130706433", "0x7f.1") are refused. Path and
// query are allowed but not returned. Throws amebo::Error (22023) saying what is wrong.
HandlerUrl ParseHandlerUrl(std::string_view url);

} // namespace amebo::delivery
