// Fuzz target for handler URL checks and address classes
// (src/core/delivery/target_policy.cpp). Input: a URL; its first 16 bytes are also read as
// an address.
// Properties: ParseHandlerUrl refuses with amebo::Error 22023 only; what it accepts is short
// visible ASCII, http or https, without user info or fragment, with a lowercase host and a
// port in 1..65535, and libcurl (which makes the request) reads the same host and port from
// it; a host that the C library would read as an IPv4 address (inet_aton: "127.1", "0x7f.1",
// "2130706433") is accepted only in dotted-decimal form. Address classes agree between text
// and socket address, and an IPv4 address embedded in IPv6 (mapped, NAT64, 6to4) is
// classified as the IPv4 address itself. The input read as an amebo.allowed_private_targets
// list is refused naming an entry, or accepted with one range per entry; without a list,
// public addresses are reachable whatever the switch says, other ones only with it on, and
// metadata addresses never.
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "core/delivery/target_policy.hpp"
#include "core/error.hpp"
#include "fuzz_check.hpp"

namespace {

using amebo::delivery::AddressKind;
using amebo::delivery::AddressKindName;
using amebo::delivery::ClassifyAddress;
using amebo::delivery::ClassifyAddressText;
using amebo::delivery::MayReach;

// The URL as libcurl parses it: host (brackets removed) and port; false when it refuses.
bool CurlParts(const std::string &url, std::string *host, int *port) {
    CURLU *handle = curl_url();
    bool parsed = curl_url_set(handle, CURLUPART_URL, url.c_str(), 0) == CURLUE_OK;
    char *host_part = nullptr;
    char *port_part = nullptr;
    parsed = parsed && curl_url_get(handle, CURLUPART_HOST, &host_part, 0) == CURLUE_OK &&
             curl_url_get(handle, CURLUPART_PORT, &port_part, CURLU_DEFAULT_PORT) == CURLUE_OK;
    if (parsed) {
        *host = host_part;
        if (host->size() >= 2 && host->front() == '[' && host->back() == ']')
            *host = host->substr(1, host->size() - 2);
        for (char &c : *host)
            c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
        *port = std::atoi(port_part);
    }
    curl_free(host_part);
    curl_free(port_part);
    curl_url_cleanup(handle);
    return parsed;
}

// True when two host texts name the same host: equal, or the same IPv6 address written two
// ways (curl writes IPv6 literals in their canonical form).
bool SameHost(const std::string &a, const std::string &b) {
    in6_addr first{};
    in6_addr second{};
    if (inet_pton(AF_INET6, a.c_str(), &first) == 1 && inet_pton(AF_INET6, b.c_str(), &second) == 1)
        return std::memcmp(&first, &second, sizeof first) == 0;
    return a == b;
}

// Checks what ParseHandlerUrl accepted.
void CheckAcceptedUrl(const std::string &url, const amebo::delivery::HandlerUrl &parsed) {
    FUZZ_CHECK(url.size() <= 2048, "too long");
    for (unsigned char c : url)
        FUZZ_CHECK(c > 0x20 && c < 0x7f, "a space, control or non-ASCII byte");
    FUZZ_CHECK(parsed.scheme == "http" || parsed.scheme == "https", parsed.scheme);
    FUZZ_CHECK(url.find('#') == std::string::npos, "a fragment");
    std::string rest = url.substr(url.find("://") + 3);
    FUZZ_CHECK(rest.substr(0, rest.find_first_of("/?")).find('@') == std::string::npos,
               "user info");
    FUZZ_CHECK(!parsed.host.empty(), "no host");
    for (char c : parsed.host)
        FUZZ_CHECK(!(c >= 'A' && c <= 'Z'), "host not lowercase: " + parsed.host);
    FUZZ_CHECK(parsed.port >= 1 && parsed.port <= 65535, std::to_string(parsed.port));
    in_addr loose{};
    in_addr strict{};
    in6_addr ipv6{};
    if (inet_aton(parsed.host.c_str(), &loose) == 1)
        FUZZ_CHECK(inet_pton(AF_INET, parsed.host.c_str(), &strict) == 1 &&
                       strict.s_addr == loose.s_addr,
                   "ambiguous numeric host accepted: " + parsed.host);
    std::string curl_host;
    int curl_port = 0;
    if (CurlParts(url, &curl_host, &curl_port)) {
        FUZZ_CHECK(SameHost(curl_host, parsed.host),
                   "curl reads host " + curl_host + ", amebo " + parsed.host + " in " + url);
        FUZZ_CHECK(curl_port == parsed.port, "curl reads port " + std::to_string(curl_port) +
                                                 ", amebo " + std::to_string(parsed.port));
    }
    AddressKind kind;
    bool literal = ClassifyAddressText(parsed.host, &kind);
    FUZZ_CHECK(literal == (inet_pton(AF_INET, parsed.host.c_str(), &strict) == 1 ||
                           inet_pton(AF_INET6, parsed.host.c_str(), &ipv6) == 1),
               "literal address detection: " + parsed.host);
}

// Parses the URL; only 22023 refusals may leave it.
void CheckUrl(const std::string &url) {
    amebo::delivery::HandlerUrl parsed;
    try {
        parsed = amebo::delivery::ParseHandlerUrl(url);
    } catch (const amebo::Error &e) {
        FUZZ_CHECK(e.code() == amebo::sqlstate::kInvalidParameterValue, e.code());
        return;
    }
    CheckAcceptedUrl(url, parsed);
}

// The class of an IPv6 address given as 16 bytes.
AddressKind KindOfIpv6(const unsigned char *bytes) {
    sockaddr_in6 address{};
    address.sin6_family = AF_INET6;
    std::memcpy(&address.sin6_addr, bytes, 16);
    AddressKind kind = ClassifyAddress(reinterpret_cast<const sockaddr *>(&address));
    char text[INET6_ADDRSTRLEN];
    AddressKind from_text;
    FUZZ_CHECK(inet_ntop(AF_INET6, bytes, text, sizeof text) != nullptr, "inet_ntop");
    FUZZ_CHECK(ClassifyAddressText(text, &from_text) && from_text == kind,
               std::string(text) + " is " + AddressKindName(kind) + " as bytes");
    return kind;
}

// Address classes: socket address against text, IPv4 against its IPv6 embeddings.
void CheckAddresses(const unsigned char *bytes16) {
    sockaddr_in ipv4{};
    ipv4.sin_family = AF_INET;
    std::memcpy(&ipv4.sin_addr, bytes16, 4);
    AddressKind kind = ClassifyAddress(reinterpret_cast<const sockaddr *>(&ipv4));
    char text[INET_ADDRSTRLEN];
    AddressKind from_text;
    FUZZ_CHECK(inet_ntop(AF_INET, bytes16, text, sizeof text) != nullptr, "inet_ntop");
    FUZZ_CHECK(ClassifyAddressText(text, &from_text) && from_text == kind, text);
    unsigned char mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    unsigned char nat64[16] = {0, 0x64, 0xff, 0x9b};
    unsigned char six_to_four[16] = {0x20, 0x02};
    std::memcpy(mapped + 12, bytes16, 4);
    std::memcpy(nat64 + 12, bytes16, 4);
    std::memcpy(six_to_four + 2, bytes16, 4);
    std::memcpy(six_to_four + 6, bytes16 + 4, 10);
    for (const unsigned char *embedding : {mapped, nat64, six_to_four})
        FUZZ_CHECK(KindOfIpv6(embedding) == kind,
                   std::string(text) + " embedded in IPv6 changes class");
    KindOfIpv6(bytes16);
}

// The allowlist parser: refused with the entry named, or one range per comma-separated entry.
void CheckAddressRanges(const std::string &text) {
    std::vector<amebo::delivery::AddressRange> ranges;
    std::string error;
    if (!amebo::delivery::ParseAddressRanges(text, &ranges, &error)) {
        FUZZ_CHECK(error.rfind("Entry ", 0) == 0, "refusal without the entry: " + error);
        return;
    }
    bool blank = text.find_first_not_of(" \t\r\n") == std::string::npos;
    size_t entries = blank ? 0 : 1 + std::count(text.begin(), text.end(), ',');
    FUZZ_CHECK(ranges.size() == entries, "ranges " + std::to_string(ranges.size()) +
                                             " for entries " + std::to_string(entries));
    for (const auto &range : ranges)
        FUZZ_CHECK(range.prefix_length >= 0 && range.prefix_length <= 128,
                   std::to_string(range.prefix_length));
}

// Reachability without a list: public always, metadata never, the rest with the switch on.
void CheckReachability(const unsigned char *bytes16) {
    sockaddr_in6 address{};
    address.sin6_family = AF_INET6;
    std::memcpy(&address.sin6_addr, bytes16, 16);
    const auto *raw = reinterpret_cast<const sockaddr *>(&address);
    amebo::delivery::TargetRules off;
    amebo::delivery::TargetRules on;
    on.allow_private = true;
    AddressKind kind = ClassifyAddress(raw);
    AddressKind judged;
    FUZZ_CHECK(MayReach(off, raw, &judged) == (kind == AddressKind::kPublic) && judged == kind,
               AddressKindName(kind));
    FUZZ_CHECK(MayReach(on, raw, &judged) == (kind != AddressKind::kMetadata),
               AddressKindName(kind));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    CheckUrl(std::string(amebo::fuzz::AsText(data, size)));
    unsigned char bytes16[16] = {};
    std::memcpy(bytes16, data, std::min<size_t>(size, 16));
    CheckAddresses(bytes16);
    CheckReachability(bytes16);
    CheckAddressRanges(std::string(amebo::fuzz::AsText(data, size)));
    AddressKind kind;
    ClassifyAddressText(amebo::fuzz::AsText(data, size), &kind);
    return 0;
}
