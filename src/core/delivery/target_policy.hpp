// Which webhook targets amebo may call: handler URL checks and address classes. Pure C++.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace amebo::delivery {

// What an IP address is, for the private-targets rule.
enum class AddressKind {
    kPublic,
    kLoopback,    // 127.0.0.0/8, ::1
    kPrivate,     // 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7
    kLinkLocal,   // 169.254/16, fe80::/10
    kMetadata,    // cloud metadata services: 169.254.169.254, fd00:ec2::254, 100.100.100.200, …
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

// An address range of amebo.allowed_private_targets. IPv4 ranges are kept as IPv4-mapped IPv6
// (::ffff:a.b.c.d, prefix length + 96), the form every address is compared in.
struct AddressRange {
    std::array<uint8_t, 16> prefix{};
    int prefix_length = 128;
};

// Parses a comma-separated list of CIDR ranges or single addresses, IPv4 or IPv6, such as
// "10.1.0.0/16, 127.0.0.1/32, fd00::/8, ::1"; blanks around entries are ignored and a blank
// text is the empty list. Refuses empty entries, bad addresses or prefix lengths, and
// ranges with bits set beyond their prefix ("10.1.2.3/16"). False with *error saying
// which entry is wrong and why.
bool ParseAddressRanges(std::string_view text, std::vector<AddressRange> *ranges,
                        std::string *error);

// What webhook requests may reach: amebo.allow_private_targets and
// amebo.allowed_private_targets.
struct TargetRules {
    bool allow_private = false;
    std::vector<AddressRange> allowed;
};

// Whether rules let a request connect to address; sets *kind to its class. Public addresses
// may always be reached; metadata addresses only when listed exactly (a /32 or /128 entry);
// other non-public ones when allow_private is on or a listed range holds them. IPv6 forms
// that carry an IPv4 address are matched as that IPv4 address. Non-IP families never.
bool MayReach(const TargetRules &rules, const struct sockaddr *address, AddressKind *kind);

// Parses a literal IPv4 or IPv6 address into *address; false when text is not one.
bool AddressFromText(std::string_view text, struct sockaddr_storage *address);

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
