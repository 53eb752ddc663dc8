// Which webhook targets amebo may call: address classes and handler URL checks. Pure C++.
#include "core/delivery/target_policy.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <optional>

#include "core/error.hpp"

namespace amebo::delivery {

namespace {

constexpr size_t kMaxUrlBytes = 2048;
constexpr size_t kMaxHostBytes = 253;
constexpr size_t kMaxLabelBytes = 63;

using Ipv6Bytes = std::array<uint8_t, 16>;

// An IPv4 block and what its addresses are.
struct Ipv4Range {
    uint32_t network;
    int prefix_length;
    AddressKind kind;
};

// IPv4 blocks, most specific first: the first that holds an address classifies it.
constexpr Ipv4Range kIpv4Ranges[] = {
    {0xa9fea9fe, 32, AddressKind::kMetadata},   // 169.254.169.254 (AWS, GCP, Azure, OCI, ...)
    {0xa9feaa02, 32, AddressKind::kMetadata},   // 169.254.170.2 (AWS ECS task credentials)
    {0xa9feaa17, 32, AddressKind::kMetadata},   // 169.254.170.23 (AWS EKS Pod Identity)
    {0x646464c8, 32, AddressKind::kMetadata},   // 100.100.100.200 (Alibaba Cloud)
    {0xa83f8110, 32, AddressKind::kMetadata},   // 168.63.129.16 (Azure WireServer)
    {0x00000000, 8, AddressKind::kUnspecified}, // 0.0.0.0/8 "this network"
    {0x7f000000, 8, AddressKind::kLoopback},    // 127.0.0.0/8
    {0x0a000000, 8, AddressKind::kPrivate},     // 10.0.0.0/8
    {0xac100000, 12, AddressKind::kPrivate},    // 172.16.0.0/12
    {0xc0a80000, 16, AddressKind::kPrivate},    // 192.168.0.0/16
    {0x64400000, 10, AddressKind::kPrivate},    // 100.64.0.0/10 carrier-grade NAT
    {0xa9fe0000, 16, AddressKind::kLinkLocal},  // 169.254.0.0/16
    {0xe0000000, 4, AddressKind::kMulticast},   // 224.0.0.0/4
    {0xf0000000, 4, AddressKind::kReserved},    // 240.0.0.0/4, 255.255.255.255 included
    {0xc0000000, 24, AddressKind::kReserved},   // 192.0.0.0/24 IETF protocol assignments
    {0xc0000200, 24, AddressKind::kReserved},   // 192.0.2.0/24 documentation (TEST-NET-1)
    {0xc6336400, 24, AddressKind::kReserved},   // 198.51.100.0/24 documentation (TEST-NET-2)
    {0xcb007100, 24, AddressKind::kReserved},   // 203.0.113.0/24 documentation (TEST-NET-3)
    {0xc6120000, 15, AddressKind::kReserved},   // 198.18.0.0/15 benchmarking
    {0xc0586300, 24, AddressKind::kReserved},   // 192.88.99.0/24 former 6to4 relay anycast
};

// True when address lies in network/prefix_length.
bool InIpv4Range(uint32_t address, uint32_t network, int prefix_length) {
    uint32_t mask = prefix_length == 0 ? 0 : ~uint32_t{0} << (32 - prefix_length);
    return (address & mask) == network;
}

// Classifies an IPv4 address given in host byte order.
AddressKind ClassifyIpv4(uint32_t address) {
    for (const Ipv4Range &range : kIpv4Ranges)
        if (InIpv4Range(address, range.network, range.prefix_length))
            return range.kind;
    return AddressKind::kPublic;
}

// The IPv4 address stored big-endian in four bytes, in host byte order.
uint32_t Ipv4At(const uint8_t *bytes) {
    return uint32_t{bytes[0]} << 24 | uint32_t{bytes[1]} << 16 | uint32_t{bytes[2]} << 8 |
           uint32_t{bytes[3]};
}

// True when the first prefix_length bits of address equal those of prefix.
bool HasIpv6Prefix(const Ipv6Bytes &address, const Ipv6Bytes &prefix, int prefix_length) {
    int full_bytes = prefix_length / 8;
    if (std::memcmp(address.data(), prefix.data(), full_bytes) != 0)
        return false;
    int rest_bits = prefix_length % 8;
    if (rest_bits == 0)
        return true;
    auto mask = static_cast<uint8_t>(0xff << (8 - rest_bits));
    return (address[full_bytes] & mask) == (prefix[full_bytes] & mask);
}

// True when the IPv6 address carries an IPv4 address in its last four bytes that is the real
// destination: IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96), IPv4-translated
// (::ffff:0:0:0/96) or the NAT64 well-known prefix (64:ff9b::/96).
bool EmbedsIpv4InLastBytes(const Ipv6Bytes &address) {
    static constexpr Ipv6Bytes kMapped = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static constexpr Ipv6Bytes kTranslated = {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0};
    static constexpr Ipv6Bytes kNat64 = {0, 0x64, 0xff, 0x9b};
    static constexpr Ipv6Bytes kZero = {};
    return HasIpv6Prefix(address, kMapped, 96) || HasIpv6Prefix(address, kZero, 96) ||
           HasIpv6Prefix(address, kTranslated, 96) || HasIpv6Prefix(address, kNat64, 96);
}

// An IPv6 block and what its addresses are.
struct Ipv6Range {
    Ipv6Bytes prefix;
    int prefix_length;
    AddressKind kind;
};

// IPv6 blocks checked after the special cases, most specific first.
const Ipv6Range kIpv6Ranges[] = {
    {{0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54},
     128,
     AddressKind::kMetadata}, // fd00:ec2::254 (AWS instance metadata)
    {{0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x23},
     128,
     AddressKind::kMetadata},                                          // fd00:ec2::23 (AWS EKS)
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, AddressKind::kPrivate}, // 64:ff9b:1::/48 NAT64
    {{0xfc}, 7, AddressKind::kPrivate},                                // fc00::/7 unique local
    {{0xfe, 0x80}, 10, AddressKind::kLinkLocal},                       // fe80::/10
    {{0xfe, 0xc0}, 10, AddressKind::kPrivate},                         // fec0::/10 site-local
    {{0xff}, 8, AddressKind::kMulticast},                              // ff00::/8
    {{0x20, 0x01, 0x0d, 0xb8}, 32, AddressKind::kReserved},            // 2001:db8::/32 docs
    {{0x3f, 0xff}, 20, AddressKind::kReserved},                        // 3fff::/20 docs
    {{0x20, 0x01}, 23, AddressKind::kReserved}, // 2001::/23 IETF protocol assignments
};

// Classifies an IPv6 address given as its 16 bytes in network order.
AddressKind ClassifyIpv6(const Ipv6Bytes &address) {
    static constexpr Ipv6Bytes kUnspecified = {};
    static constexpr Ipv6Bytes kLoopback = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    static constexpr Ipv6Bytes kSixToFour = {0x20, 0x02};
    static constexpr Ipv6Bytes kGlobalUnicast = {0x20};
    if (address == kUnspecified)
        return AddressKind::kUnspecified;
    if (address == kLoopback)
        return AddressKind::kLoopback;
    if (EmbedsIpv4InLastBytes(address))
        return ClassifyIpv4(Ipv4At(&address[12]));
    if (HasIpv6Prefix(address, kSixToFour, 16))
        return ClassifyIpv4(Ipv4At(&address[2]));
    for (const Ipv6Range &range : kIpv6Ranges)
        if (HasIpv6Prefix(address, range.prefix, range.prefix_length))
            return range.kind;
    return HasIpv6Prefix(address, kGlobalUnicast, 3) ? AddressKind::kPublic
                                                     : AddressKind::kReserved;
}

// The form addresses are compared in: IPv6 as is, IPv4 and the IPv6 forms that carry an
// IPv4 address (as ClassifyIpv6 reads them) as IPv4-mapped IPv6.
Ipv6Bytes ComparableBytes(const Ipv6Bytes &address) {
    static constexpr Ipv6Bytes kSixToFour = {0x20, 0x02};
    static constexpr Ipv6Bytes kLoopback = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    static constexpr Ipv6Bytes kUnspecified = {};
    Ipv6Bytes mapped = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (address == kLoopback || address == kUnspecified)
        return address;
    if (EmbedsIpv4InLastBytes(address))
        std::memcpy(&mapped[12], &address[12], 4);
    else if (HasIpv6Prefix(address, kSixToFour, 16))
        std::memcpy(&mapped[12], &address[2], 4);
    else
        return address;
    return mapped;
}

// The comparable bytes of an IPv4 or IPv6 socket address; nothing for other families.
std::optional<Ipv6Bytes> SocketAddressBytes(const struct sockaddr *address) {
    Ipv6Bytes bytes = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (address != nullptr && address->sa_family == AF_INET) {
        sockaddr_in ipv4{};
        std::memcpy(&ipv4, address, sizeof ipv4);
        std::memcpy(&bytes[12], &ipv4.sin_addr, 4);
        return bytes;
    }
    if (address != nullptr && address->sa_family == AF_INET6) {
        sockaddr_in6 ipv6{};
        std::memcpy(&ipv6, address, sizeof ipv6);
        std::memcpy(bytes.data(), &ipv6.sin6_addr, bytes.size());
        return ComparableBytes(bytes);
    }
    return std::nullopt;
}

// True when every bit of address beyond prefix_length is zero.
bool HostBitsClear(const Ipv6Bytes &address, int prefix_length) {
    for (int bit = prefix_length; bit < 128; bit++)
        if (address[bit / 8] & (0x80 >> (bit % 8)))
            return false;
    return true;
}

// text without leading and trailing blanks.
std::string_view TrimBlanks(std::string_view text) {
    size_t first = text.find_first_not_of(" \t\r\n");
    if (first == std::string_view::npos)
        return {};
    return text.substr(first, text.find_last_not_of(" \t\r\n") - first + 1);
}

// Parses one entry of an address range list ("10.1.0.0/16", "::1"); "" or why it is wrong.
std::string ParseAddressRange(std::string_view entry, AddressRange *range) {
    size_t slash = entry.find('/');
    sockaddr_storage address{};
    if (!AddressFromText(entry.substr(0, slash), &address))
        return "is not an IPv4 or IPv6 address or range";
    bool ipv4 = address.ss_family == AF_INET;
    int max_length = ipv4 ? 32 : 128;
    int length = max_length;
    if (slash != std::string_view::npos) {
        std::string_view digits = entry.substr(slash + 1);
        if (digits.empty() || digits.size() > 3 ||
            digits.find_first_not_of("0123456789") != std::string_view::npos)
            return "has an invalid prefix length";
        length = std::stoi(std::string(digits));
        if (length > max_length)
            return "has a prefix length above " + std::to_string(max_length);
    }
    Ipv6Bytes bytes = *SocketAddressBytes(reinterpret_cast<const sockaddr *>(&address));
    range->prefix_length = ipv4 ? length + 96 : length;
    static constexpr Ipv6Bytes kMapped = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (!ipv4 && HasIpv6Prefix(bytes, kMapped, 96))
        return "is an IPv6 form of an IPv4 address: list the IPv4 range instead";
    if (!HostBitsClear(bytes, range->prefix_length))
        return "has bits set beyond its /" + std::to_string(length) + " prefix";
    std::copy(bytes.begin(), bytes.end(), range->prefix.begin());
    return {};
}

// True when one of ranges holds address; with exact, only a single-address range counts.
bool Listed(const std::vector<AddressRange> &ranges, const Ipv6Bytes &address, bool exact) {
    for (const AddressRange &range : ranges) {
        if (exact && range.prefix_length != 128)
            continue;
        if (HasIpv6Prefix(address, range.prefix, range.prefix_length))
            return true;
    }
    return false;
}

// Throws the 22023 error for a bad handler URL.
[[noreturn]] void ThrowBadUrl(std::string message, std::string detail = {}) {
    throw Error(sqlstate::kInvalidParameterValue, std::move(message), std::move(detail));
}

// ASCII lowercase copy of text.
std::string Lowercase(std::string_view text) {
    std::string lower(text);
    for (char &c : lower)
        if (c >= 'A' && c <= 'Z')
            c = static_cast<char>(c - 'A' + 'a');
    return lower;
}

// True when text is nothing but decimal digits (and not empty).
bool IsAllDigits(std::string_view text) {
    if (text.empty())
        return false;
    for (char c : text)
        if (c < '0' || c > '9')
            return false;
    return true;
}

// Throws unless the URL is non-empty, short enough, and made of visible ASCII only.
void CheckUrlBytes(std::string_view url) {
    if (url.empty())
        ThrowBadUrl("handler URL must not be empty");
    if (url.size() > kMaxUrlBytes)
        ThrowBadUrl("handler URL is too long",
                    "Handler URLs are limited to " + std::to_string(kMaxUrlBytes) +
                        " bytes; this one has " + std::to_string(url.size()) + ".");
    for (char c : url) {
        auto byte = static_cast<unsigned char>(c);
        if (byte <= 0x20 || byte >= 0x7f)
            ThrowBadUrl("handler URL must not contain whitespace, control or non-ASCII characters",
                        "Percent-encode such characters in the path and query, and give an "
                        "international host name in punycode (xn--...).");
    }
}

// Parses a port number of 1 to 65535.
int ParsePort(std::string_view text) {
    if (!IsAllDigits(text) || text.size() > 5)
        ThrowBadUrl("handler URL has an invalid port", "A port is a number from 1 to 65535.");
    int port = 0;
    for (char c : text)
        port = port * 10 + (c - '0');
    if (port < 1 || port > 65535)
        ThrowBadUrl("handler URL has an invalid port", "A port is a number from 1 to 65535.");
    return port;
}

// True when the last label of a host name looks numeric, so resolvers read it as IPv4.
bool LooksLikeIpv4(std::string_view host) {
    std::string_view last_label = host.substr(host.rfind('.') + 1);
    return IsAllDigits(last_label) || last_label.substr(0, 2) == "0x";
}

// Throws unless host is a usable DNS name (letters, digits, '-', '_', dots between labels) or
// a dotted-decimal IPv4 address; numeric forms such as "2130706433" or "0x7f.1" are refused
// because resolvers read them as IPv4 addresses in surprising ways.
void CheckHostName(const std::string &host) {
    if (host.size() > kMaxHostBytes + 1)
        ThrowBadUrl("handler URL has a host name that is too long");
    std::string_view name(host);
    if (name.back() == '.')
        name.remove_suffix(1);
    size_t label_length = 0;
    for (char c : name) {
        bool is_name_char =
            (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
        if (c == '.' && label_length > 0 && label_length <= kMaxLabelBytes)
            label_length = 0;
        else if (is_name_char)
            label_length++;
        else
            ThrowBadUrl("handler URL has an invalid host name \"" + host + "\"",
                        "A host is a DNS name, a dotted-decimal IPv4 address or a bracketed "
                        "IPv6 address.");
    }
    if (label_length == 0 || label_length > kMaxLabelBytes)
        ThrowBadUrl("handler URL has an invalid host name \"" + host + "\"");
    in_addr ipv4{};
    if (LooksLikeIpv4(name) && inet_pton(AF_INET, host.c_str(), &ipv4) != 1)
        ThrowBadUrl("handler URL has an ambiguous numeric host \"" + host + "\"",
                    "Write an IPv4 address as four decimal numbers, like 192.0.2.1.");
}

// Fills url's host and port from the authority ("host", "host:port", "[ipv6]:port").
void ParseAuthority(std::string_view authority, HandlerUrl *url) {
    std::string_view port_text;
    bool has_port = false;
    if (!authority.empty() && authority.front() == '[') {
        size_t close = authority.find(']');
        if (close == std::string_view::npos)
            ThrowBadUrl("handler URL has an unterminated IPv6 address");
        url->host = Lowercase(authority.substr(1, close - 1));
        in6_addr ipv6{};
        if (inet_pton(AF_INET6, url->host.c_str(), &ipv6) != 1)
            ThrowBadUrl("handler URL has an invalid IPv6 address \"" + url->host + "\"");
        std::string_view rest = authority.substr(close + 1);
        if (!rest.empty() && rest.front() != ':')
            ThrowBadUrl("handler URL has characters after its IPv6 address");
        has_port = !rest.empty();
        port_text = has_port ? rest.substr(1) : rest;
    } else {
        size_t colon = authority.find(':');
        url->host = Lowercase(authority.substr(0, colon));
        if (url->host.empty())
            ThrowBadUrl("handler URL has no host");
        CheckHostName(url->host);
        has_port = colon != std::string_view::npos;
        port_text = has_port ? authority.substr(colon + 1) : std::string_view();
    }
    url->port = has_port ? ParsePort(port_text) : (url->scheme == "https" ? 443 : 80);
}

} // namespace

AddressKind ClassifyAddress(const struct sockaddr *address) {
    if (address != nullptr && address->sa_family == AF_INET) {
        sockaddr_in ipv4{};
        std::memcpy(&ipv4, address, sizeof ipv4);
        return ClassifyIpv4(ntohl(ipv4.sin_addr.s_addr));
    }
    if (address != nullptr && address->sa_family == AF_INET6) {
        sockaddr_in6 ipv6{};
        std::memcpy(&ipv6, address, sizeof ipv6);
        Ipv6Bytes bytes;
        std::memcpy(bytes.data(), &ipv6.sin6_addr, bytes.size());
        return ClassifyIpv6(bytes);
    }
    return AddressKind::kReserved;
}

bool ClassifyAddressText(std::string_view text, AddressKind *kind) {
    std::string terminated(text);
    if (terminated.find('\0') != std::string::npos)
        return false;
    in_addr ipv4{};
    if (inet_pton(AF_INET, terminated.c_str(), &ipv4) == 1) {
        *kind = ClassifyIpv4(ntohl(ipv4.s_addr));
        return true;
    }
    in6_addr ipv6{};
    if (inet_pton(AF_INET6, terminated.c_str(), &ipv6) == 1) {
        Ipv6Bytes bytes;
        std::memcpy(bytes.data(), &ipv6, bytes.size());
        *kind = ClassifyIpv6(bytes);
        return true;
    }
    return false;
}

bool ParseAddressRanges(std::string_view text, std::vector<AddressRange> *ranges,
                        std::string *error) {
    std::vector<AddressRange> parsed;
    if (TrimBlanks(text).empty()) {
        ranges->clear();
        return true;
    }
    size_t start = 0;
    while (start <= text.size()) {
        size_t comma = std::min(text.find(',', start), text.size());
        std::string_view entry = TrimBlanks(text.substr(start, comma - start));
        AddressRange range;
        std::string problem = entry.empty() ? "is empty" : ParseAddressRange(entry, &range);
        if (!problem.empty()) {
            *error = "Entry " + std::to_string(parsed.size() + 1) + " (\"" + std::string(entry) +
                     "\") " + problem + ".";
            return false;
        }
        parsed.push_back(range);
        start = comma + 1;
    }
    *ranges = std::move(parsed);
    return true;
}

bool MayReach(const TargetRules &rules, const struct sockaddr *address, AddressKind *kind) {
    *kind = ClassifyAddress(address);
    std::optional<Ipv6Bytes> bytes = SocketAddressBytes(address);
    if (!bytes)
        return false;
    if (*kind == AddressKind::kMetadata)
        return Listed(rules.allowed, *bytes, true);
    if (IsPublicAddress(*kind) || rules.allow_private)
        return true;
    return Listed(rules.allowed, *bytes, false);
}

bool AddressFromText(std::string_view text, struct sockaddr_storage *address) {
    std::string terminated(text);
    if (terminated.find('\0') != std::string::npos)
        return false;
    *address = sockaddr_storage{};
    auto *ipv4 = reinterpret_cast<sockaddr_in *>(address);
    if (inet_pton(AF_INET, terminated.c_str(), &ipv4->sin_addr) == 1) {
        ipv4->sin_family = AF_INET;
        return true;
    }
    auto *ipv6 = reinterpret_cast<sockaddr_in6 *>(address);
    if (inet_pton(AF_INET6, terminated.c_str(), &ipv6->sin6_addr) == 1) {
        ipv6->sin6_family = AF_INET6;
        return true;
    }
    *address = sockaddr_storage{};
    return false;
}

const char *AddressKindName(AddressKind kind) {
    switch (kind) {
    case AddressKind::kPublic:
        return "public";
    case AddressKind::kLoopback:
        return "loopback";
    case AddressKind::kPrivate:
        return "private";
    case AddressKind::kLinkLocal:
        return "link-local";
    case AddressKind::kMetadata:
        return "metadata";
    case AddressKind::kUnspecified:
        return "unspecified";
    case AddressKind::kMulticast:
        return "multicast";
    case AddressKind::kReserved:
        return "reserved";
    }
    return "unknown";
}

bool IsPublicAddress(AddressKind kind) {
    return kind == AddressKind::kPublic;
}

HandlerUrl ParseHandlerUrl(std::string_view url) {
    CheckUrlBytes(url);
    size_t scheme_end = url.find("://");
    if (scheme_end == std::string_view::npos)
        ThrowBadUrl("handler URL must start with http:// or https://");
    HandlerUrl parsed;
    parsed.scheme = Lowercase(url.substr(0, scheme_end));
    if (parsed.scheme != "http" && parsed.scheme != "https")
        ThrowBadUrl("handler URL must use http or https",
                    "The URL's scheme is \"" + parsed.scheme + "\".");
    if (url.find('#') != std::string_view::npos)
        ThrowBadUrl("handler URL must not have a fragment");
    std::string_view rest = url.substr(scheme_end + 3);
    std::string_view authority = rest.substr(0, rest.find_first_of("/?"));
    if (authority.find('@') != std::string_view::npos)
        ThrowBadUrl("handler URL must not contain user information",
                    "Remove the \"user:password@\" part; amebo does not send URL credentials.");
    ParseAuthority(authority, &parsed);
    return parsed;
}

} // namespace amebo::delivery
