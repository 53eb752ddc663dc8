// Unit tests of the pure C++ delivery modules (src/core/delivery). A self-contained program:
// every failed check prints file:line and the program exits non-zero. Run with `make unit`.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/delivery/dispatcher.hpp"
#include "core/delivery/envelope.hpp"
#include "core/delivery/feed_event.hpp"
#include "core/delivery/matching.hpp"
#include "core/delivery/name_lookup.hpp"
#include "core/delivery/message_key.hpp"
#include "core/delivery/outcome_log.hpp"
#include "core/delivery/rate_limit.hpp"
#include "core/delivery/retry_schedule.hpp"
#include "core/delivery/signing.hpp"
#include "core/delivery/target_policy.hpp"
#include "core/error.hpp"
#include "core/interrupts.hpp"

namespace amebo::delivery {

// Prints an address kind by its name in failure messages.
std::ostream &operator<<(std::ostream &out, AddressKind kind) {
    return out << AddressKindName(kind);
}

} // namespace amebo::delivery

namespace {

using namespace amebo::delivery;
using Json = nlohmann::json;

int checks_run = 0;
int checks_failed = 0;

// Records one check; prints where it failed.
void Check(bool passed, const std::string &what, const char *file, int line) {
    checks_run++;
    if (passed)
        return;
    checks_failed++;
    std::cerr << file << ":" << line << ": FAILED: " << what << "\n";
}

// Records a check that actual equals expected, printing both when they differ.
template <typename Actual, typename Expected>
void CheckEqual(const Actual &actual, const Expected &expected, const char *text, const char *file,
                int line) {
    bool passed = actual == expected;
    std::ostringstream what;
    what << text;
    if (!passed)
        what << "\n    actual:   " << actual << "\n    expected: " << expected;
    Check(passed, what.str(), file, line);
}

#define CHECK(condition) Check((condition), #condition, __FILE__, __LINE__)
#define CHECK_EQ(actual, expected)                                                                 \
    CheckEqual((actual), (expected), #actual " == " #expected, __FILE__, __LINE__)

// Records a check that action throws amebo::Error 22023 whose message contains fragment.
void CheckThrows22023(const std::function<void()> &action, const std::string &fragment,
                      const std::string &what, const char *file, int line) {
    try {
        action();
        Check(false, what + ": did not throw", file, line);
    } catch (const amebo::Error &error) {
        bool passed = error.code() == "22023" &&
                      std::string(error.what()).find(fragment) != std::string::npos;
        Check(passed, what + ": threw " + error.code() + " \"" + error.what() + "\"", file, line);
    }
}

#define CHECK_THROWS_22023(statement, fragment)                                                    \
    CheckThrows22023([&] { statement; }, (fragment), #statement, __FILE__, __LINE__)

// A FeedEvent with every field set to something unusual.
FeedEvent SampleEvent() {
    FeedEvent event;
    event.position = 0x0102030405060708;
    event.event_id = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    event.stream = "order-42";
    event.version = -7;
    event.action = "order.placed";
    event.payload = R"({"total": 12.5, "items": ["a", "b"]})";
    event.metadata = R"({"source": "test"})";
    event.recorded_at = 762525296789012;
    return event;
}

// True when two events have equal fields.
bool SameEvent(const FeedEvent &left, const FeedEvent &right) {
    return left.position == right.position && left.event_id == right.event_id &&
           left.stream == right.stream && left.version == right.version &&
           left.action == right.action && left.payload == right.payload &&
           left.metadata == right.metadata && left.recorded_at == right.recorded_at;
}

// JsonContains on two JSON texts.
bool Contains(const char *document, const char *filter) {
    return JsonContains(Json::parse(document), Json::parse(filter));
}

// The class of an address text, or kPublic with a failed check when it is not an address.
AddressKind KindOf(const char *text, int line) {
    AddressKind kind = AddressKind::kPublic;
    Check(ClassifyAddressText(text, &kind), std::string("address text ") + text, __FILE__, line);
    return kind;
}

// The microseconds ParseTimestamp gives text, or INT64_MIN when it refuses it.
int64_t Parsed(std::string_view text) {
    int64_t micros = 0;
    return ParseTimestamp(text, &micros) ? micros : std::numeric_limits<int64_t>::min();
}

// A deterministic pseudo-random byte sequence (a 64-bit LCG) for the garbage-record test.
class ByteSource {
  public:
    explicit ByteSource(uint64_t seed) : state_(seed) {}

    // The next pseudo-random number.
    uint64_t Next() {
        state_ = state_ * 6364136223846793005ULL + 1442695040888963407ULL;
        return state_ >> 33;
    }

  private:
    uint64_t state_;
};

// A malformed-looking record: a valid one with random bytes overwritten, or random mostly-zero
// bytes that start with the version byte.
std::string MakeGarbage(ByteSource *random, const std::string &valid, bool mutate_valid) {
    std::string garbage = valid;
    if (mutate_valid) {
        for (char &c : garbage)
            if (random->Next() % 16 == 0)
                c = static_cast<char>(random->Next());
        return garbage;
    }
    garbage.assign(random->Next() % 80, '\0');
    for (char &c : garbage)
        if (random->Next() % 8 == 0)
            c = static_cast<char>(random->Next());
    if (!garbage.empty())
        garbage[0] = 1;
    return garbage;
}

// Standard Webhooks signing, with the spec's published test vector.
void TestSigning() {
    const std::string vector_signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    CHECK_EQ(SignPayload("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
                         1614265330, R"({"test": 2432232314})"),
             vector_signature);
    CHECK_EQ(SignPayload("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
                         1614265330, R"({"test": 2432232314})"),
             vector_signature);
    CHECK(SignPayload("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
                      1614265331, R"({"test": 2432232314})") != vector_signature);
    CHECK(SignPayload("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
                      1614265330, R"({"test":2432232314})") != vector_signature);
    CHECK_EQ(SignPayload("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "m", 0, "").size(), 47u);
    CHECK_THROWS_22023(SignPayload("whsec_not base64!", "m", 0, "{}"), "invalid webhook secret");
    CHECK_THROWS_22023(SignPayload("whsec_", "m", 0, "{}"), "invalid webhook secret");
    CHECK_THROWS_22023(SignPayload("", "m", 0, "{}"), "invalid webhook secret");
    CHECK_THROWS_22023(SignPayload("whsec_abc", "m", 0, "{}"), "invalid webhook secret");
}

// Base64 against RFC 4648's vectors, round trips of every byte, and refused texts.
void TestBase64() {
    const std::pair<const char *, const char *> vectors[] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    for (const auto &[plain, encoded] : vectors) {
        CHECK_EQ(Base64Encode(plain), encoded);
        std::string decoded = "stale";
        CHECK(Base64Decode(encoded, &decoded));
        CHECK_EQ(decoded, plain);
    }
    std::string every_byte;
    for (int byte = 0; byte < 256; byte++)
        every_byte.push_back(static_cast<char>(byte));
    for (size_t length = 0; length <= every_byte.size(); length += 37) {
        std::string bytes = every_byte.substr(every_byte.size() - length);
        std::string decoded;
        CHECK(Base64Decode(Base64Encode(bytes), &decoded));
        CHECK_EQ(decoded, bytes);
    }
    CHECK_EQ(Base64Encode(std::string("\xfb\xff\xbf", 3)), "+/+/");
    const char *refused[] = {"Zg",   "Zg=",    "Z===", "====", "Zm9v Yg==", "Zm9vYg=a",
                             "=Zg=", "Zm9v\n", "Zm9-", "Zm9_", "Zg==Zg==",  "Zm9vYmFy="};
    for (const char *text : refused) {
        std::string decoded = "unchanged";
        CHECK(!Base64Decode(text, &decoded));
        CHECK_EQ(decoded, "unchanged");
    }
}

// FormatTimestamp against dates computed independently, and ParseTimestamp's inverse.
void TestTimestamps() {
    CHECK_EQ(FormatTimestamp(0), "2000-01-01T00:00:00.000000Z");
    CHECK_EQ(FormatTimestamp(1), "2000-01-01T00:00:00.000001Z");
    CHECK_EQ(FormatTimestamp(-1), "1999-12-31T23:59:59.999999Z");
    CHECK_EQ(FormatTimestamp(762525296789012), "2024-02-29T12:34:56.789012Z");
    CHECK_EQ(FormatTimestamp(5097600000000), "2000-02-29T00:00:00.000000Z");
    CHECK_EQ(FormatTimestamp(-946684800000000), "1970-01-01T00:00:00.000000Z");
    CHECK_EQ(FormatTimestamp(-3150576000000001), "1900-02-28T23:59:59.999999Z");
    CHECK_EQ(FormatTimestamp(-3150576000000000), "1900-03-01T00:00:00.000000Z");
    CHECK_EQ(FormatTimestamp(-12617683200000000), "1600-02-29T00:00:00.000000Z");
    CHECK_EQ(FormatTimestamp(-63082281600000000), "0001-01-01T00:00:00.000000Z");
    CHECK_EQ(FormatTimestamp(252455615999999999), "9999-12-31T23:59:59.999999Z");
    CHECK_EQ(FormatTimestamp(std::numeric_limits<int64_t>::min()).substr(0, 1), "-");

    const int64_t round_trips[] = {0,
                                   1,
                                   -1,
                                   762525296789012,
                                   -3150576000000001,
                                   -63082281600000000,
                                   252455615999999999,
                                   86399999999,
                                   -86400000000};
    for (int64_t micros : round_trips)
        CHECK_EQ(Parsed(FormatTimestamp(micros)), micros);

    CHECK_EQ(Parsed("2024-02-29T12:34:56.789012Z"), 762525296789012);
    CHECK_EQ(Parsed("2024-02-29t12:34:56.789012z"), 762525296789012);
    CHECK_EQ(Parsed("2024-02-29 14:34:56.789012+02:00"), 762525296789012);
    CHECK_EQ(Parsed("2024-02-29T07:04:56.789012-05:30"), 762525296789012);
    CHECK_EQ(Parsed("2000-01-01T00:00:00Z"), 0);
    CHECK_EQ(Parsed("2000-01-01T00:00:00.5Z"), 500000);
    CHECK_EQ(Parsed("2000-01-01T00:00:00.1234565Z"), 123457);
    CHECK_EQ(Parsed("2000-01-01T00:00:00.1234564999Z"), 123456);
    CHECK_EQ(Parsed("1999-12-31T23:59:59.9999995Z"), 0);
    CHECK_EQ(Parsed("1999-12-31T23:59:60Z"), 0);
    CHECK_EQ(Parsed("2000-01-01T00:00:00+00:00"), Parsed("2000-01-01T00:00:00-00:00"));

    const char *refused[] = {
        "",
        "2024-02-29",
        "2024-02-29T12:34:56",
        "2023-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2024-04-31T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-00-10T00:00:00Z",
        "2024-01-00T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T00:60:00Z",
        "2024-01-01T00:00:61Z",
        "2024-01-01T00:00:00+2:00",
        "2024-01-01T00:00:00+24:00",
        "2024-01-01T00:00:00+01:60",
        "2024-01-01T00:00:00+0100",
        "2024-01-01T00:00:00.Z",
        "2024-01-01T00:00:00ZZ",
        "2024-01-01T00:00:00Z ",
        " 2024-01-01T00:00:00Z",
        "2024-1-01T00:00:00Z",
        "2024-01-01X00:00:00Z",
        "2024-01-01T0:00:00Z",
        "+2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00UTC",
    };
    for (const char *text : refused) {
        int64_t micros = 42;
        bool accepted = ParseTimestamp(text, &micros);
        Check(!accepted && micros == 42, std::string("ParseTimestamp refuses \"") + text + "\"",
              __FILE__, __LINE__);
    }
}

// Envelopes are exact, valid JSON, and keep every byte of their strings.
void TestEnvelope() {
    FeedEvent event = SampleEvent();
    CHECK_EQ(BuildEnvelope(event),
             R"({"event_id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","stream":"order-42",)"
             R"("version":-7,"position":72623859790382856,"action":"order.placed",)"
             R"("payload":{"total": 12.5, "items": ["a", "b"]},"metadata":{"source": "test"},)"
             R"("recorded_at":"2024-02-29T12:34:56.789012Z"})");

    event.stream = "quote\" back\\ nl\n tab\t bell\x07 del\x7f caf\xc3\xa9 \xe2\x82\xac";
    event.stream.push_back('\0');
    std::string envelope = BuildEnvelope(event);
    CHECK(envelope.find(R"("stream":"quote\" back\\ nl\u000a tab\u0009 bell\u0007)") !=
          std::string::npos);
    CHECK(envelope.find("\\u0000\"") != std::string::npos);
    std::string all_bytes;
    for (int byte = 0; byte < 0x80; byte++)
        all_bytes.push_back(static_cast<char>(byte));
    all_bytes += "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    event.action = all_bytes;
    Json parsed = Json::parse(BuildEnvelope(event));
    CHECK_EQ(parsed["action"].get<std::string>(), all_bytes);
    CHECK_EQ(parsed["stream"].get<std::string>(), event.stream);
    CHECK_EQ(parsed["payload"]["items"][1], "b");
    CHECK_EQ(parsed["position"].get<int64_t>(), event.position);

    event.payload.clear();
    event.metadata.clear();
    parsed = Json::parse(BuildEnvelope(event));
    CHECK(parsed["payload"].is_null());
    CHECK(parsed["metadata"].is_null());

    FeedEvent first = SampleEvent();
    FeedEvent second = SampleEvent();
    second.position = 99;
    std::string batch = BuildBatch({&first, &second});
    CHECK_EQ(batch, "{\"events\":[" + BuildEnvelope(first) + "," + BuildEnvelope(second) + "]}");
    Json batch_json = Json::parse(batch);
    CHECK_EQ(batch_json["events"].size(), 2u);
    CHECK_EQ(batch_json["events"][1]["position"], 99);
    CHECK_EQ(BuildBatch({}), R"({"events":[]})");
}

// Feed records: layout, round trips, and refusal of every malformed record.
void TestFeedEvent() {
    FeedEvent event = SampleEvent();
    std::string record = EncodeFeedEvent(event);
    CHECK_EQ(static_cast<int>(record[0]), 1);
    CHECK_EQ(record.substr(1, 8), std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
    CHECK_EQ(record.substr(9, 4), std::string("\x00\x00\x00\x24", 4));
    CHECK_EQ(record.size(), 1 + 3 * 8 + 5 * 4 + event.event_id.size() + event.stream.size() +
                                event.action.size() + event.payload.size() + event.metadata.size());

    FeedEvent decoded;
    std::string error;
    CHECK(DecodeFeedEvent(record, &decoded, &error));
    CHECK(SameEvent(decoded, event));

    FeedEvent extremes;
    extremes.position = std::numeric_limits<int64_t>::max();
    extremes.version = std::numeric_limits<int64_t>::min();
    extremes.recorded_at = -1;
    extremes.payload = std::string("\x00\xff\x80 binary", 10);
    CHECK(DecodeFeedEvent(EncodeFeedEvent(extremes), &decoded, nullptr));
    CHECK(SameEvent(decoded, extremes));

    FeedEvent untouched = SampleEvent();
    CHECK(!DecodeFeedEvent("", &untouched, &error));
    CHECK_EQ(error, "feed record is empty");
    CHECK(!DecodeFeedEvent("\x02" + record.substr(1), &untouched, &error));
    CHECK_EQ(error, "feed record has unknown version 2");
    CHECK(!DecodeFeedEvent(record + "x", &untouched, &error));
    CHECK_EQ(error, "feed record has 1 trailing bytes");
    for (size_t length = 1; length < record.size(); length++) {
        error.clear();
        bool accepted = DecodeFeedEvent(record.substr(0, length), &untouched, &error);
        Check(!accepted && error == "feed record is truncated",
              "truncated record of " + std::to_string(length) + " bytes", __FILE__, __LINE__);
    }
    std::string huge_length = record;
    huge_length.replace(9, 4, "\xff\xff\xff\xff");
    CHECK(!DecodeFeedEvent(huge_length, &untouched, nullptr));
    CHECK(SameEvent(untouched, SampleEvent()));

    ByteSource random(20240229);
    int decoded_garbage = 0;
    for (int round = 0; round < 20000; round++) {
        std::string garbage = MakeGarbage(&random, record, round % 2 == 0);
        if (DecodeFeedEvent(garbage, &decoded, &error)) {
            decoded_garbage++;
            CHECK_EQ(EncodeFeedEvent(decoded), garbage);
        }
    }
    CHECK(decoded_garbage > 0);
    CHECK(decoded_garbage < 20000);
}

// Address classes: one or more addresses of every range, both families.
void TestAddressClasses() {
    const std::pair<const char *, AddressKind> cases[] = {
        {"8.8.8.8", AddressKind::kPublic},
        {"1.1.1.1", AddressKind::kPublic},
        {"0.0.0.0", AddressKind::kUnspecified},
        {"0.1.2.3", AddressKind::kUnspecified},
        {"127.0.0.1", AddressKind::kLoopback},
        {"127.255.255.254", AddressKind::kLoopback},
        {"10.0.0.1", AddressKind::kPrivate},
        {"172.16.0.1", AddressKind::kPrivate},
        {"172.31.255.255", AddressKind::kPrivate},
        {"172.15.255.255", AddressKind::kPublic},
        {"172.32.0.1", AddressKind::kPublic},
        {"192.168.1.1", AddressKind::kPrivate},
        {"100.64.0.1", AddressKind::kPrivate},
        {"100.127.255.255", AddressKind::kPrivate},
        {"100.63.255.255", AddressKind::kPublic},
        {"100.128.0.1", AddressKind::kPublic},
        {"169.254.169.254", AddressKind::kMetadata},
        {"100.100.100.200", AddressKind::kMetadata},
        {"169.254.1.1", AddressKind::kLinkLocal},
        {"224.0.0.1", AddressKind::kMulticast},
        {"239.255.255.255", AddressKind::kMulticast},
        {"240.0.0.1", AddressKind::kReserved},
        {"255.255.255.255", AddressKind::kReserved},
        {"192.0.0.8", AddressKind::kReserved},
        {"192.0.2.1", AddressKind::kReserved},
        {"198.51.100.7", AddressKind::kReserved},
        {"203.0.113.9", AddressKind::kReserved},
        {"198.18.0.1", AddressKind::kReserved},
        {"198.19.255.255", AddressKind::kReserved},
        {"198.20.0.1", AddressKind::kPublic},
        {"192.88.99.1", AddressKind::kReserved},
        {"::", AddressKind::kUnspecified},
        {"::1", AddressKind::kLoopback},
        {"::ffff:127.0.0.1", AddressKind::kLoopback},
        {"::ffff:8.8.8.8", AddressKind::kPublic},
        {"::ffff:169.254.169.254", AddressKind::kMetadata},
        {"::ffff:10.1.2.3", AddressKind::kPrivate},
        {"::127.0.0.1", AddressKind::kLoopback},
        {"::ffff:0:10.0.0.1", AddressKind::kPrivate},
        {"64:ff9b::10.0.0.1", AddressKind::kPrivate},
        {"64:ff9b::169.254.169.254", AddressKind::kMetadata},
        {"64:ff9b::8.8.8.8", AddressKind::kPublic},
        {"64:ff9b:1::1", AddressKind::kPrivate},
        {"2002:7f00:1::", AddressKind::kLoopback},
        {"2002:808:808::1", AddressKind::kPublic},
        {"fd00:ec2::254", AddressKind::kMetadata},
        {"fd00:ec2::253", AddressKind::kPrivate},
        {"fd12:3456::1", AddressKind::kPrivate},
        {"fc00::1", AddressKind::kPrivate},
        {"fe80::1", AddressKind::kLinkLocal},
        {"febf:ffff::1", AddressKind::kLinkLocal},
        {"fec0::1", AddressKind::kPrivate},
        {"ff02::1", AddressKind::kMulticast},
        {"2001:db8::1", AddressKind::kReserved},
        {"3fff::1", AddressKind::kReserved},
        {"2001::1", AddressKind::kReserved},
        {"100::1", AddressKind::kReserved},
        {"4000::1", AddressKind::kReserved},
        {"2606:4700:4700::1111", AddressKind::kPublic},
        {"2a00:1450:4001:81c::200e", AddressKind::kPublic},
    };
    for (const auto &[text, kind] : cases) {
        AddressKind actual = KindOf(text, __LINE__);
        Check(actual == kind,
              std::string(text) + " is " + AddressKindName(actual) + ", expected " +
                  AddressKindName(kind),
              __FILE__, __LINE__);
    }
    const std::string refused[] = {"",         "1.2.3",     "256.1.1.1",
                                   "01.2.3.4", "localhost", "fe80::1%eth0",
                                   "[::1]",    "1.2.3.4 ",  std::string("1.2.3.4\0", 8),
                                   "::1::2"};
    for (const std::string &text : refused) {
        AddressKind kind = AddressKind::kMulticast;
        CHECK(!ClassifyAddressText(text, &kind));
        CHECK_EQ(kind, AddressKind::kMulticast);
    }

    sockaddr_in ipv4{};
    ipv4.sin_family = AF_INET;
    inet_pton(AF_INET, "10.9.8.7", &ipv4.sin_addr);
    CHECK_EQ(ClassifyAddress(reinterpret_cast<sockaddr *>(&ipv4)), AddressKind::kPrivate);
    inet_pton(AF_INET, "93.184.216.34", &ipv4.sin_addr);
    CHECK_EQ(ClassifyAddress(reinterpret_cast<sockaddr *>(&ipv4)), AddressKind::kPublic);
    sockaddr_in6 ipv6{};
    ipv6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:169.254.169.254", &ipv6.sin6_addr);
    CHECK_EQ(ClassifyAddress(reinterpret_cast<sockaddr *>(&ipv6)), AddressKind::kMetadata);
    inet_pton(AF_INET6, "::1", &ipv6.sin6_addr);
    CHECK_EQ(ClassifyAddress(reinterpret_cast<sockaddr *>(&ipv6)), AddressKind::kLoopback);
    inet_pton(AF_INET6, "2606:4700::1", &ipv6.sin6_addr);
    CHECK_EQ(ClassifyAddress(reinterpret_cast<sockaddr *>(&ipv6)), AddressKind::kPublic);
    sockaddr_un unix_socket{};
    unix_socket.sun_family = AF_UNIX;
    CHECK_EQ(ClassifyAddress(reinterpret_cast<sockaddr *>(&unix_socket)), AddressKind::kReserved);
    CHECK_EQ(ClassifyAddress(nullptr), AddressKind::kReserved);

    CHECK_EQ(std::string(AddressKindName(AddressKind::kPublic)), "public");
    CHECK_EQ(std::string(AddressKindName(AddressKind::kLoopback)), "loopback");
    CHECK_EQ(std::string(AddressKindName(AddressKind::kPrivate)), "private");
    CHECK_EQ(std::string(AddressKindName(AddressKind::kLinkLocal)), "link-local");
    CHECK_EQ(std::string(AddressKindName(AddressKind::kMetadata)), "metadata");
    CHECK_EQ(std::string(AddressKindName(AddressKind::kUnspecified)), "unspecified");
    CHECK_EQ(std::string(AddressKindName(AddressKind::kMulticast)), "multicast");
    CHECK_EQ(std::string(AddressKindName(AddressKind::kReserved)), "reserved");
    CHECK(IsPublicAddress(AddressKind::kPublic));
    const AddressKind not_public[] = {AddressKind::kLoopback,    AddressKind::kPrivate,
                                      AddressKind::kLinkLocal,   AddressKind::kMetadata,
                                      AddressKind::kUnspecified, AddressKind::kMulticast,
                                      AddressKind::kReserved};
    for (AddressKind kind : not_public)
        CHECK(!IsPublicAddress(kind));
}

// Handler URLs that are accepted, and what they split into.
void TestHandlerUrlsAccepted() {
    HandlerUrl url = ParseHandlerUrl("https://example.com/hook");
    CHECK_EQ(url.scheme, "https");
    CHECK_EQ(url.host, "example.com");
    CHECK_EQ(url.port, 443);
    url = ParseHandlerUrl("HTTP://Example.COM:8080/x?y=1&z=%20");
    CHECK_EQ(url.scheme, "http");
    CHECK_EQ(url.host, "example.com");
    CHECK_EQ(url.port, 8080);
    url = ParseHandlerUrl("http://[::1]:8080/x");
    CHECK_EQ(url.host, "::1");
    CHECK_EQ(url.port, 8080);
    url = ParseHandlerUrl("HtTpS://[2001:DB8::1]/");
    CHECK_EQ(url.scheme, "https");
    CHECK_EQ(url.host, "2001:db8::1");
    CHECK_EQ(url.port, 443);
    url = ParseHandlerUrl("http://192.0.2.1");
    CHECK_EQ(url.host, "192.0.2.1");
    CHECK_EQ(url.port, 80);
    url = ParseHandlerUrl("http://example.com?x=1");
    CHECK_EQ(url.host, "example.com");
    url = ParseHandlerUrl("https://my_host.xn--bcher-kva.example.");
    CHECK_EQ(url.host, "my_host.xn--bcher-kva.example.");
    CHECK_EQ(ParseHandlerUrl("http://h:1").port, 1);
    CHECK_EQ(ParseHandlerUrl("http://h:65535/").port, 65535);
    CHECK_EQ(ParseHandlerUrl("https://h:00443").port, 443);
    std::string longest = "https://example.com/";
    longest.append(2048 - longest.size(), 'a');
    CHECK_EQ(ParseHandlerUrl(longest).host, "example.com");
}

// Handler URLs that are refused, with the reason given.
void TestHandlerUrlsRefused() {
    std::string too_long = "https://example.com/";
    too_long.append(2049 - too_long.size(), 'a');
    CHECK_THROWS_22023(ParseHandlerUrl(too_long), "too long");
    CHECK_THROWS_22023(ParseHandlerUrl(""), "must not be empty");
    CHECK_THROWS_22023(ParseHandlerUrl("ftp://example.com/"), "must use http or https");
    CHECK_THROWS_22023(ParseHandlerUrl("file:///etc/passwd"), "must use http or https");
    CHECK_THROWS_22023(ParseHandlerUrl("example.com/hook"), "must start with http");
    CHECK_THROWS_22023(ParseHandlerUrl("javascript:alert(1)"), "must start with http");
    CHECK_THROWS_22023(ParseHandlerUrl("https://user:pass@example.com/"), "user information");
    CHECK_THROWS_22023(ParseHandlerUrl("https://user@example.com"), "user information");
    CHECK_THROWS_22023(ParseHandlerUrl("https:///path"), "no host");
    CHECK_THROWS_22023(ParseHandlerUrl("https://"), "no host");
    CHECK_THROWS_22023(ParseHandlerUrl("https://:443/"), "no host");
    CHECK_THROWS_22023(ParseHandlerUrl("https://example.com/#top"), "fragment");
    CHECK_THROWS_22023(ParseHandlerUrl("https://exa mple.com/"), "whitespace");
    CHECK_THROWS_22023(ParseHandlerUrl("https://example.com/\t"), "whitespace");
    CHECK_THROWS_22023(ParseHandlerUrl("https://example.com/\x7f"), "control");
    CHECK_THROWS_22023(ParseHandlerUrl(std::string("https://example.com/\0", 21)), "control");
    CHECK_THROWS_22023(ParseHandlerUrl("https://b\xc3\xbc"
                                       "cher.de/"),
                       "non-ASCII");
    try {
        ParseHandlerUrl("https://b\xc3\xbc"
                        "cher.de/");
    } catch (const amebo::Error &error) {
        CHECK(error.detail().find("punycode") != std::string::npos);
    }
    CHECK_THROWS_22023(ParseHandlerUrl("https://example.com:0/"), "invalid port");
    CHECK_THROWS_22023(ParseHandlerUrl("https://example.com:65536/"), "invalid port");
    CHECK_THROWS_22023(ParseHandlerUrl("https://example.com:-1/"), "invalid port");
    CHECK_THROWS_22023(ParseHandlerUrl("https://example.com:abc/"), "invalid port");
    CHECK_THROWS_22023(ParseHandlerUrl("https://example.com:/"), "invalid port");
    CHECK_THROWS_22023(ParseHandlerUrl("https://example.com:123456/"), "invalid port");
    CHECK_THROWS_22023(ParseHandlerUrl("https://example.com:80:90/"), "invalid port");
    CHECK_THROWS_22023(ParseHandlerUrl("http://[::1/"), "unterminated IPv6");
    CHECK_THROWS_22023(ParseHandlerUrl("http://[::1]x/"), "after its IPv6 address");
    CHECK_THROWS_22023(ParseHandlerUrl("http://[not-ipv6]/"), "invalid IPv6 address");
    CHECK_THROWS_22023(ParseHandlerUrl("http://[]/"), "invalid IPv6 address");
    CHECK_THROWS_22023(ParseHandlerUrl("http://[fe80::1%25eth0]/"), "invalid IPv6 address");
    CHECK_THROWS_22023(ParseHandlerUrl("http://[::1]:0/"), "invalid port");
    CHECK_THROWS_22023(ParseHandlerUrl("http://::1/"), "no host");
    CHECK_THROWS_22023(ParseHandlerUrl("http://2130706433/"), "ambiguous numeric host");
    CHECK_THROWS_22023(ParseHandlerUrl("http://0x7f.0.0.1/"), "ambiguous numeric host");
    CHECK_THROWS_22023(ParseHandlerUrl("http://127.1/"), "ambiguous numeric host");
    CHECK_THROWS_22023(ParseHandlerUrl("http://010.0.0.1/"), "ambiguous numeric host");
    CHECK_THROWS_22023(ParseHandlerUrl("http://1.2.3.4./"), "ambiguous numeric host");
    CHECK_THROWS_22023(ParseHandlerUrl("http://exa%6dple.com/"), "invalid host name");
    CHECK_THROWS_22023(ParseHandlerUrl("http://a..b/"), "invalid host name");
    CHECK_THROWS_22023(ParseHandlerUrl("http://.example.com/"), "invalid host name");
    CHECK_THROWS_22023(ParseHandlerUrl("http://example.com\\@evil.com/"), "user information");
    CHECK_THROWS_22023(ParseHandlerUrl("http://" + std::string(64, 'a') + ".com/"),
                       "invalid host name");
}

// Exponential backoff with jitter and a cap, for every kind of attempt number.
void TestRetryDelay() {
    CHECK_EQ(RetryDelayMs(1, 1000, 60000, 0.5), 1000);
    CHECK_EQ(RetryDelayMs(2, 1000, 60000, 0.5), 2000);
    CHECK_EQ(RetryDelayMs(3, 1000, 60000, 0.5), 4000);
    CHECK_EQ(RetryDelayMs(6, 1000, 60000, 0.5), 32000);
    CHECK_EQ(RetryDelayMs(7, 1000, 60000, 0.5), 60000);
    CHECK_EQ(RetryDelayMs(1000000, 1000, 60000, 0.5), 60000);
    CHECK_EQ(RetryDelayMs(INT_MAX, 1000, 60000, 0.5), 60000);
    CHECK_EQ(RetryDelayMs(0, 1000, 60000, 0.5), 1000);
    CHECK_EQ(RetryDelayMs(INT_MIN, 1000, 60000, 0.5), 1000);
    CHECK_EQ(RetryDelayMs(1, 1000, 60000, 0.0), 750);
    CHECK_EQ(RetryDelayMs(1, 1000, 60000, 0.999999), 1249);
    CHECK_EQ(RetryDelayMs(1, 1000, 60000, 1.0), 1249);
    CHECK_EQ(RetryDelayMs(1, 1000, 60000, -3.0), 750);
    CHECK_EQ(RetryDelayMs(1, 1000, 60000, std::nan("")), 750);
    CHECK_EQ(RetryDelayMs(3, 0, 60000, 0.5), 0);
    CHECK_EQ(RetryDelayMs(INT_MAX, 0, 60000, 0.5), 0);
    CHECK_EQ(RetryDelayMs(1, 90000, 60000, 0.5), 60000);
    CHECK_EQ(RetryDelayMs(1, -5, -5, 0.5), 0);
    // min(max, 1 * 2^99) is max itself: the cap is reached, not stopped at 2^62.
    CHECK_EQ(RetryDelayMs(100, 1, std::numeric_limits<int64_t>::max(), 0.5),
             std::numeric_limits<int64_t>::max());
    CHECK_EQ(RetryDelayMs(63, 1, std::numeric_limits<int64_t>::max(), 0.5), int64_t{1} << 62);
    int64_t saturated = RetryDelayMs(INT_MAX, std::numeric_limits<int64_t>::max(),
                                     std::numeric_limits<int64_t>::max(), 0.99);
    CHECK_EQ(saturated, std::numeric_limits<int64_t>::max());
    for (int step = 0; step < 100; step++) {
        double unit_random = step / 100.0;
        for (int attempt = 1; attempt <= 10; attempt++) {
            int64_t delay = RetryDelayMs(attempt, 500, 20000, unit_random);
            int64_t backoff = std::min<int64_t>(20000, int64_t{500} << (attempt - 1));
            Check(delay >= backoff * 3 / 4 && delay < backoff * 5 / 4,
                  "jitter bounds at attempt " + std::to_string(attempt), __FILE__, __LINE__);
        }
    }
}

// Retry-After in both forms, trimmed, capped, and refused when malformed.
void TestRetryAfter() {
    const int64_t now = 1445412480; // Wed, 21 Oct 2015 07:28:00 GMT
    CHECK_EQ(ParseRetryAfterMs("120", now), 120000);
    CHECK_EQ(ParseRetryAfterMs(" \t5 ", now), 5000);
    CHECK_EQ(ParseRetryAfterMs("0", now), 0);
    CHECK_EQ(ParseRetryAfterMs("86400", now), 86400000);
    CHECK_EQ(ParseRetryAfterMs("86401", now), 86400000);
    CHECK_EQ(ParseRetryAfterMs("99999999999999999999999999", now), 86400000);
    CHECK_EQ(ParseRetryAfterMs("Wed, 21 Oct 2015 07:28:00 GMT", now - 60), 60000);
    CHECK_EQ(ParseRetryAfterMs("Wed, 21 Oct 2015 07:28:00 GMT", now), 0);
    CHECK_EQ(ParseRetryAfterMs("Wed, 21 Oct 2015 07:28:00 GMT", now + 3600), 0);
    CHECK_EQ(ParseRetryAfterMs("Wed, 21 Oct 2015 07:28:00 GMT", now - 7 * 86400), 86400000);
    CHECK_EQ(
        ParseRetryAfterMs("Wed, 21 Oct 2015 07:28:00 GMT", std::numeric_limits<int64_t>::min()),
        86400000);
    CHECK_EQ(ParseRetryAfterMs("Thu, 29 Feb 2024 00:00:01 GMT", 1709164800), 1000);
    CHECK_EQ(ParseRetryAfterMs("Sun, 01 Jan 2012 00:00:10 GMT", 1325376000), 10000);
    const char *refused[] = {
        "",
        "   ",
        "-5",
        "+5",
        "1.5",
        "5s",
        "abc",
        "Wed, 21 Oct 2015 07:28:00 UTC",
        "Wednesday, 21-Oct-15 07:28:00 GMT",
        "Wed Oct 21 07:28:00 2015",
        "Wed, 31 Feb 2015 07:28:00 GMT",
        "Wed, 29 Feb 2015 07:28:00 GMT",
        "Wed, 21 Foo 2015 07:28:00 GMT",
        "Xyz, 21 Oct 2015 07:28:00 GMT",
        "Wed, 21 Oct 2015 24:00:00 GMT",
        "Wed, 21 Oct 2015 07:60:00 GMT",
        "Wed, 21 Oct 2015 07:28:61 GMT",
        "Wed, 1 Oct 2015 07:28:00 GMT",
        "wed, 21 oct 2015 07:28:00 gmt",
        "Wed, 21 Oct 2015 07:28:00 GMTx",
    };
    for (const char *value : refused)
        Check(ParseRetryAfterMs(value, now) == -1,
              std::string("ParseRetryAfterMs refuses \"") + value + "\"", __FILE__, __LINE__);
}

// Action globs with '*', including a pattern that would be exponential with naive backtracking.
void TestActionMatching() {
    CHECK(ActionMatches("user.*", "user.created"));
    CHECK(ActionMatches("user.*", "user."));
    CHECK(!ActionMatches("user.*", "user"));
    CHECK(!ActionMatches("user.*", "users.created"));
    CHECK(ActionMatches("*", ""));
    CHECK(ActionMatches("*", "anything.at.all"));
    CHECK(ActionMatches("", ""));
    CHECK(!ActionMatches("", "a"));
    CHECK(!ActionMatches("a", ""));
    CHECK(ActionMatches("*.created", "user.created"));
    CHECK(!ActionMatches("*.created", "user.deleted"));
    CHECK(ActionMatches("user.*.done", "user.a.b.done"));
    CHECK(!ActionMatches("user.*.done", "user.done"));
    CHECK(ActionMatches("a*b*c", "abc"));
    CHECK(ActionMatches("a*b*c", "aXbYbZc"));
    CHECK(!ActionMatches("a*b*c", "acb"));
    CHECK(ActionMatches("**", "x"));
    CHECK(ActionMatches("*a", "baa"));
    CHECK(!ActionMatches("ab*", "a"));
    CHECK(ActionMatches("exact", "exact"));
    CHECK(!ActionMatches("exact", "exactly"));
    CHECK(!ActionMatches("exact", "Exact"));
    CHECK(!ActionMatches("a*a*a*a*a*a*a*a*a*a*a*a*b", std::string(20000, 'a')));
    CHECK(ActionMatches("a*a*a*a*a*a*a*a*a*a*a*a*b", std::string(20000, 'a') + "b"));

    CHECK(IsValidActionPattern("user.*"));
    CHECK(IsValidActionPattern("*"));
    CHECK(IsValidActionPattern("order_2.placed"));
    CHECK(IsValidActionPattern(std::string(255, 'a')));
    CHECK(!IsValidActionPattern(std::string(256, 'a')));
    CHECK(!IsValidActionPattern(""));
    CHECK(!IsValidActionPattern("User.*"));
    CHECK(!IsValidActionPattern("user-created"));
    CHECK(!IsValidActionPattern("user created"));
    CHECK(!IsValidActionPattern("a?b"));
    CHECK(!IsValidActionPattern("caf\xc3\xa9"));
}

// jsonb @> containment, mirroring PostgreSQL's documented examples (section 8.14.3) and more.
void TestJsonContainment() {
    CHECK(Contains(R"("foo")", R"("foo")"));
    CHECK(Contains("[1, 2, 3]", "[1, 3]"));
    CHECK(Contains("[1, 2, 3]", "[3, 1]"));
    CHECK(Contains("[1, 2, 3]", "[1, 2, 2]"));
    CHECK(Contains(R"({"product": "PostgreSQL", "version": 9.4, "jsonb": true})",
                   R"({"version": 9.4})"));
    CHECK(!Contains("[1, 2, [1, 3]]", "[1, 3]"));
    CHECK(Contains("[1, 2, [1, 3]]", "[[1, 3]]"));
    CHECK(!Contains(R"({"foo": {"bar": "baz"}})", R"({"bar": "baz"})"));
    CHECK(Contains(R"({"foo": {"bar": "baz"}})", R"({"foo": {}})"));
    CHECK(Contains(R"(["foo", "bar"])", R"("bar")"));
    CHECK(!Contains(R"("bar")", R"(["bar"])"));

    CHECK(!Contains("[1, 2, 3]", "4"));
    CHECK(!Contains("[[1]]", "1"));
    CHECK(!Contains(R"({"a": [1, 2]})", R"({"a": 1})"));
    CHECK(Contains(R"({"a": [1, 2]})", R"({"a": [2]})"));
    CHECK(!Contains(R"([{"a": 1}])", R"({"a": 1})"));
    CHECK(Contains(R"([{"a": 1, "b": 2}, 3])", R"([{"a": 1}])"));
    CHECK(!Contains(R"([{"a": 1}])", R"([{"a": 1, "b": 2}])"));
    CHECK(Contains("[[1, 2, 3]]", "[[3]]"));
    CHECK(!Contains("[[1, 2]]", "[1]"));
    CHECK(!Contains(R"([{"a": 1}])", "[[]]"));
    CHECK(Contains(R"({"a": {"b": [1, {"c": 2, "d": 3}]}})", R"({"a": {"b": [{"c": 2}]}})"));
    CHECK(Contains("1", "1.0"));
    CHECK(Contains(R"({"n": 100})", R"({"n": 1e2})"));
    CHECK(Contains("[0.5, 2]", "[2.0]"));
    CHECK(!Contains(R"({"n": 1})", R"({"n": "1"})"));
    CHECK(!Contains(R"({"n": 1})", R"({"n": true})"));
    CHECK(!Contains(R"({"n": 0})", R"({"n": false})"));
    CHECK(!Contains(R"({"n": 0})", R"({"n": null})"));
    CHECK(Contains("null", "null"));
    CHECK(!Contains("null", "false"));
    CHECK(Contains(R"({"a": null})", R"({"a": null})"));
    CHECK(Contains(R"({"a": null})", "{}"));
    CHECK(!Contains("{}", R"({"a": null})"));
    CHECK(Contains("[]", "[]"));
    CHECK(Contains("[1]", "[]"));
    CHECK(!Contains("[]", "[1]"));
    CHECK(Contains("{}", "{}"));
    CHECK(!Contains(R"({"a": 1})", "[]"));
    CHECK(!Contains("[]", "{}"));
    CHECK(Contains(R"({"n": 18446744073709551615})", R"({"n": 18446744073709551615})"));
    CHECK(!Contains(R"({"n": -1})", R"({"n": 18446744073709551615})"));
    CHECK(Contains(R"({"n": 5})", R"({"n": 5})"));
    CHECK(!Contains(R"({"n": -5})", R"({"n": 5})"));
    CHECK(!Contains(R"({"s": "abc"})", R"({"s": "ab"})"));
    CHECK(Contains(R"({"user": {"plan": "pro", "tags": ["a", "b"]}, "x": 1})",
                   R"({"user": {"tags": ["b"]}})"));
}

// An event of stream "s" at position = version, for the dispatcher.
FeedEvent StreamEvent(int64_t position) {
    FeedEvent event;
    event.position = position;
    event.event_id = "01a21c4e-de36-77a0-bb41-c25c9257648" + std::to_string(position % 10);
    event.stream = "s";
    event.version = position;
    event.action = "a";
    event.payload = "{}";
    event.metadata = "{}";
    return event;
}

// A subscription to every action, with a valid secret, for the dispatcher tests.
Subscription AnySubscription(int64_t id) {
    Subscription subscription;
    subscription.id = id;
    subscription.pattern = "*";
    subscription.handler = "http://127.0.0.1:9/hook";
    subscription.secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    return subscription;
}

// An ordered subscription's message that is held (stored after the hold time, its next event
// stored behind it) and then fails before the records are taken must still be stored first:
// amebo_internal.record_deliveries inserts the rows by seq, and the rows' order is the order in
// which the stored messages are sent again. (The soak test saw a stream's version 290 sent after
// 291 on a stalled worker.)
void TestOrderedHeldThenFailed() {
    DispatchSettings settings;
    settings.hold_ms = 1000;
    settings.request_timeout_ms = 2000;
    Dispatcher dispatcher(settings);
    Subscription subscription = AnySubscription(7);
    subscription.ordered = true;
    dispatcher.SetSubscriptions({subscription});
    const int64_t now = 1000000000, second = 1000000;
    dispatcher.AddEvent(StreamEvent(1), now);
    dispatcher.EndTransaction(100);
    std::vector<HttpRequest> sent = dispatcher.TakeRequests(now, 0);
    CHECK(sent.size() == 1);
    dispatcher.AddEvent(StreamEvent(2), now);
    dispatcher.EndTransaction(200);
    CHECK(dispatcher.TakeRequests(now, 0).empty()); // ordered: one request at a time
    dispatcher.StoreHeld(now + second);
    if (!sent.empty())
        dispatcher.Finish(HttpResponse{sent[0].tag, 0, "timed out", 2000, ""}, now + 2 * second);
    Json records = Json::parse(dispatcher.TakeRecords());
    std::vector<std::pair<int64_t, int64_t>> stores; // (seq, position), as they are inserted
    for (const auto &operation : records["operations"])
        if (operation["op"] == "store")
            stores.push_back(
                {operation["seq"].get<int64_t>(), operation["positions"][0].get<int64_t>()});
    std::sort(stores.begin(), stores.end());
    CHECK(stores.size() == 2);
    CHECK(stores.size() == 2 && stores[0].second == 1 && stores[1].second == 2);
}

// Subscription states from their names in amebo.subscriptions; any other name counts as
// paused, whose messages are stored rather than sent or dropped.
void TestSubscriptionStates() {
    CHECK(ParseSubscriptionState("active") == SubscriptionState::kActive);
    CHECK(ParseSubscriptionState("paused") == SubscriptionState::kPaused);
    CHECK(ParseSubscriptionState("disabled") == SubscriptionState::kDisabled);
    CHECK(ParseSubscriptionState("") == SubscriptionState::kPaused);
}

// A message key's text is what amebo_internal.due_deliveries() takes; keys order by subscription
// first.
void TestMessageKey() {
    MessageKey key{12, "msg_abc"};
    CHECK_EQ(key.Text(), std::string("12 msg_abc"));
    CHECK(MessageKey({9, "z"}) < MessageKey({10, "a"}));
    CHECK(MessageKey({10, "a"}) < MessageKey({10, "b"}));
    CHECK(!(MessageKey({10, "a"}) < MessageKey({10, "a"})));
}

// The outcome log: a message stored twice keeps its first seq and its last state; a delivered
// stored message is deleted; the keys stay "changing" until the records taken are committed.
void TestOutcomeLog() {
    OutcomeLog log;
    MessageKey held{3, "msg_1"}, delivered{3, "msg_2"};
    log.Store(log.Add(held, Json::array({1}), 0), held, MessageState::kPending, 0, 5000000);
    Json &failed = log.Add(held, Json::array({1}), 1);
    OutcomeLog::Logged(failed, HttpResponse{1, 410, "", 2.5, ""}, 4000000, "HTTP 410");
    log.Store(failed, held, MessageState::kDead, 1, 4000000);
    OutcomeLog::Disable(failed);
    Json &sent = log.Add(delivered, Json::array({2}), 1);
    OutcomeLog::Logged(sent, HttpResponse{2, 200, "", 1.0, ""}, 4000000, "");
    log.Delete(sent, delivered);
    CHECK(log.HasRecords());
    CHECK(log.Changing(held) && log.Changing(delivered));
    CHECK_EQ(log.TakeEarliestRetry(), int64_t{5000000});
    CHECK_EQ(log.TakeEarliestRetry(), int64_t{INT64_MAX});
    Json records = Json::parse(log.Take());
    CHECK(!log.HasRecords());
    CHECK(log.Changing(held));
    CHECK_EQ(records["log"].size(), size_t{2});
    CHECK_EQ(records["disable"], Json::array({3}));
    CHECK_EQ(records["subscriptions"], Json::array({3}));
    CHECK_EQ(records["operations"].size(), size_t{2});
    for (const auto &operation : records["operations"]) {
        if (operation["webhook_id"] == "msg_1") {
            CHECK_EQ(operation["op"], Json("store"));
            CHECK_EQ(operation["state"], Json("dead"));
            CHECK_EQ(operation["seq"], Json(0));
        } else {
            CHECK_EQ(operation["op"], Json("delete"));
        }
    }
    std::vector<std::string> keys;
    log.AppendChangingKeys(&keys);
    CHECK(keys == (std::vector<std::string>{"3 msg_1", "3 msg_2"}));
    log.Committed();
    CHECK(!log.Changing(held) && !log.Changing(delivered));
}

// Events in a request's body: 1 for a single envelope, the array's length for a batch.
size_t EventsIn(const HttpRequest &request) {
    Json body = Json::parse(request.body);
    return body.contains("events") ? body["events"].size() : 1;
}

// A batched subscription sends at once while it has nothing in flight; with a request in
// flight, a batch that is not full waits for more events until the linger time ends.
void TestBatchLinger() {
    DispatchSettings settings;
    settings.batch_linger_ms = 20;
    Dispatcher dispatcher(settings);
    Subscription subscription = AnySubscription(1);
    subscription.batch_size = 4;
    dispatcher.SetSubscriptions({subscription});
    int64_t position = 0;
    auto commit = [&](int events, int64_t now) {
        for (int i = 0; i < events; i++)
            dispatcher.AddEvent(StreamEvent(++position), now);
        dispatcher.EndTransaction(static_cast<uint64_t>(position) * 100);
    };
    const int64_t start = 800000000000000;
    commit(1, start);
    std::vector<HttpRequest> first = dispatcher.TakeRequests(start, 0);
    CHECK_EQ(first.size(), 1u);
    CHECK_EQ(EventsIn(first.front()), 1u);
    commit(2, start + 1000);
    CHECK_EQ(dispatcher.TakeRequests(start + 1000, 0).size(), 0u);
    CHECK_EQ(dispatcher.NextDeadline(start + 1000), 20000);
    commit(2, start + 2000);
    std::vector<HttpRequest> full = dispatcher.TakeRequests(start + 2000, 0);
    CHECK_EQ(full.size(), 1u);
    CHECK_EQ(full.empty() ? 0u : EventsIn(full.front()), 4u);
    commit(1, start + 3000);
    CHECK_EQ(dispatcher.TakeRequests(start + 22999, 0).size(), 0u);
    std::vector<HttpRequest> late = dispatcher.TakeRequests(start + 23000, 0);
    CHECK_EQ(late.size(), 1u);
    for (const HttpRequest &request : first)
        dispatcher.Finish(HttpResponse{request.tag, 200, "", 1.0, ""}, start + 24000);
    for (const HttpRequest &request : full)
        dispatcher.Finish(HttpResponse{request.tag, 200, "", 1.0, ""}, start + 24000);
    for (const HttpRequest &request : late)
        dispatcher.Finish(HttpResponse{request.tag, 200, "", 1.0, ""}, start + 24000);
    commit(3, start + 25000);
    std::vector<HttpRequest> idle = dispatcher.TakeRequests(start + 25000, 0);
    CHECK_EQ(idle.size(), 1u);
    CHECK_EQ(idle.empty() ? 0u : EventsIn(idle.front()), 3u);
}

// The token bucket: a burst of a tenth of a second's worth (at least one), then the rate; over
// a long run the requests let through stay within rate x time + burst. Rate 0 is no limit.
void TestRateLimit() {
    CHECK_EQ(RateLimit::Burst(0.5), 1.0);
    CHECK_EQ(RateLimit::Burst(20), 2.0);
    CHECK_EQ(RateLimit::Burst(1000), 100.0);
    RateLimit none;
    CHECK(!none.Limited() && none.Ready(0) && none.WaitUs(0) == 0);
    none.SetRate(-1);
    CHECK(!none.Limited());
    RateLimit limit;
    limit.SetRate(20);
    const int64_t start = 5000000;
    CHECK(limit.Ready(start));
    limit.Take(start);
    limit.Take(start);
    CHECK(!limit.Ready(start));
    CHECK_EQ(limit.WaitUs(start), int64_t{50000});
    CHECK(!limit.Ready(start + 49999));
    CHECK(limit.Ready(start + 50000));
    CHECK_EQ(limit.AllowedWithin(start, 1000000), 20.0);
    CHECK_EQ(limit.PaceAt(start, 3), start + 150000);
    // Ten seconds of a sender that takes whatever it may, checked every millisecond.
    int sent = 0;
    for (int64_t now = start + 50000; now < start + 50000 + 10000000; now += 1000)
        while (limit.Ready(now)) {
            limit.Take(now);
            sent++;
        }
    CHECK(sent >= 199 && sent <= 20 * 10 + 2);
    // A lower rate keeps no more tokens than its burst.
    RateLimit changed;
    changed.SetRate(1000);
    CHECK(changed.Ready(0));
    changed.Take(0);
    changed.SetRate(5);
    changed.Take(0);
    CHECK(!changed.Ready(0));
}

// A rate-limited subscription sends within its limit while another one goes on at full speed;
// its line beyond what it may send within the hold time is stored without an attempt, due
// when the limit will let it go (whole seconds, in order).
void TestRateLimitedSubscription() {
    DispatchSettings settings;
    settings.hold_ms = 1000;
    Dispatcher dispatcher(settings);
    Subscription limited = AnySubscription(1);
    limited.rate_limit = 10;
    dispatcher.SetSubscriptions({limited, AnySubscription(2)});
    const int64_t now = 900000000000000, second = 1000000;
    for (int64_t position = 1; position <= 100; position++) {
        FeedEvent event = StreamEvent(position);
        std::string digits = std::to_string(position);
        event.event_id = "01a21c4e-de36-77a0-bb41-" + std::string(12 - digits.size(), '0') + digits;
        dispatcher.AddEvent(event, now);
    }
    dispatcher.EndTransaction(100);
    std::vector<HttpRequest> sent = dispatcher.TakeRequests(now, 0); // a burst of one, and 16
    CHECK_EQ(sent.size(), size_t{1 + settings.max_requests_per_subscription});
    for (const HttpRequest &request : sent)
        dispatcher.Finish(HttpResponse{request.tag, 200, "", 1.0, ""}, now);
    CHECK_EQ(dispatcher.TakeRequests(now, 0).size(), size_t{16}); // only the unlimited one
    CHECK_EQ(dispatcher.NextDeadline(now), int64_t{100000});
    dispatcher.StoreHeld(now);
    Json records = Json::parse(dispatcher.TakeRecords());
    int64_t last_due = 0;
    size_t stored = 0;
    bool in_order = true;
    for (const auto &operation : records["operations"]) {
        if (operation["op"] != "store")
            continue;
        stored++;
        CHECK_EQ(operation["subscription_id"], Json(1));
        CHECK_EQ(operation["attempt"], Json(0));
        CHECK_EQ(operation["state"], Json("pending"));
        int64_t due = 0;
        CHECK(ParseTimestamp(operation["next_attempt_at"].get<std::string>(), &due));
        CHECK_EQ(due % second, int64_t{0});
        CHECK(due >= now + second && due <= now + 11 * second);
        in_order = in_order && due >= last_due;
        last_due = due;
    }
    CHECK(in_order);
    CHECK_EQ(stored, size_t{99 - 10}); // ten it may send within the hold time stay in memory
    for (const auto &attempt : records["log"])
        CHECK(!attempt.contains("error"));
}

// An ordered, rate-limited subscription whose line exceeds what it may send within the hold
// time stores all of it, in order, and queues its next events behind (they go out in order
// through amebo.deliveries).
void TestRateLimitedOrdered() {
    DispatchSettings settings;
    settings.hold_ms = 1000;
    Dispatcher dispatcher(settings);
    Subscription subscription = AnySubscription(3);
    subscription.ordered = true;
    subscription.rate_limit = 2;
    dispatcher.SetSubscriptions({subscription});
    const int64_t now = 900000000000000;
    for (int64_t position = 1; position <= 5; position++)
        dispatcher.AddEvent(StreamEvent(position), now);
    dispatcher.EndTransaction(100);
    std::vector<HttpRequest> sent = dispatcher.TakeRequests(now, 0);
    CHECK_EQ(sent.size(), size_t{1});
    dispatcher.StoreHeld(now);
    CHECK_EQ(dispatcher.Backlog(), size_t{0});
    dispatcher.AddEvent(StreamEvent(6), now);
    dispatcher.EndTransaction(200);
    Json records = Json::parse(dispatcher.TakeRecords());
    std::vector<std::pair<int64_t, int64_t>> stores; // (seq, position)
    for (const auto &operation : records["operations"])
        if (operation["op"] == "store")
            stores.push_back(
                {operation["seq"].get<int64_t>(), operation["positions"][0].get<int64_t>()});
    std::sort(stores.begin(), stores.end());
    std::vector<int64_t> positions;
    for (const auto &store : stores)
        positions.push_back(store.second);
    CHECK(positions == (std::vector<int64_t>{2, 3, 4, 5, 6}));
}

// A rate-limited subscription that may not send for another reason (an ordered one with its
// request in flight) sets no deadline of its own, so that the worker does not spin.
void TestRateLimitNoSpin() {
    DispatchSettings settings;
    Dispatcher dispatcher(settings);
    Subscription subscription = AnySubscription(4);
    subscription.ordered = true;
    subscription.rate_limit = 1000;
    dispatcher.SetSubscriptions({subscription});
    const int64_t now = 900000000000000;
    for (int64_t position = 1; position <= 3; position++)
        dispatcher.AddEvent(StreamEvent(position), now);
    dispatcher.EndTransaction(100);
    CHECK_EQ(dispatcher.TakeRequests(now, 0).size(), size_t{1});
    const int64_t later = now + 5000; // tokens again, the request still in flight
    dispatcher.StoreHeld(later);
    CHECK(dispatcher.TakeRequests(later, 0).empty());
    CHECK(dispatcher.NextDeadline(later) != 0);
}

// Rotation: two signatures while the replaced secret is in its overlap, one after it.
void TestRotationSignatures() {
    const std::string current = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const std::string previous = "whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2Vj";
    std::string both = SignatureHeaderValue(current, previous, 1000, "m", 999, "{}");
    CHECK_EQ(both,
             SignPayload(current, "m", 999, "{}") + " " + SignPayload(previous, "m", 999, "{}"));
    CHECK_EQ(SignatureHeaderValue(current, previous, 1000, "m", 1000, "{}"),
             SignPayload(current, "m", 1000, "{}"));
    CHECK_EQ(SignatureHeaderValue(current, "", 1000, "m", 999, "{}"),
             SignPayload(current, "m", 999, "{}"));
    CHECK_THROWS_22023(SignatureHeaderValue(current, "whsec_!", 1000, "m", 999, "{}"),
                       "invalid webhook secret");
}

// The ranges of a list, or none with a failed check when it is refused.
std::vector<AddressRange> RangesOf(const char *text, int line) {
    std::vector<AddressRange> ranges;
    std::string error;
    Check(ParseAddressRanges(text, &ranges, &error), std::string("ranges ") + text + ": " + error,
          __FILE__, line);
    return ranges;
}

// Address range lists: accepted forms and refused ones with their reasons.
void TestAddressRangeLists() {
    CHECK_EQ(RangesOf("", __LINE__).size(), 0u);
    CHECK_EQ(RangesOf("  ", __LINE__).size(), 0u);
    CHECK_EQ(RangesOf("10.1.0.0/16, 127.0.0.1/32,fd00::/8 , ::1, 192.168.1.7", __LINE__).size(),
             5u);
    CHECK_EQ(RangesOf("0.0.0.0/0", __LINE__).front().prefix_length, 96);
    CHECK_EQ(RangesOf("::/0", __LINE__).front().prefix_length, 0);
    const std::pair<const char *, const char *> refused[] = {
        {"10.1.0.0/16,", "Entry 2 (\"\") is empty"},
        {",10.0.0.0/8", "Entry 1 (\"\") is empty"},
        {"10.1.2.3/16", "has bits set beyond its /16 prefix"},
        {"10.0.0.0/33", "has a prefix length above 32"},
        {"fd00::/129", "has a prefix length above 128"},
        {"10.0.0.0/", "invalid prefix length"},
        {"10.0.0.0/-1", "invalid prefix length"},
        {"10.0.0.0/8/8", "invalid prefix length"},
        {"10.0.0.0 /8", "is not an IPv4 or IPv6 address"},
        {"localhost", "is not an IPv4 or IPv6 address"},
        {"10.0.0", "is not an IPv4 or IPv6 address"},
        {"fe80::1%eth0", "is not an IPv4 or IPv6 address"},
        {"::ffff:10.0.0.1", "IPv6 form of an IPv4 address"},
        {"10.0.0.0/8; 127.0.0.1", "Entry 1"},
    };
    for (const auto &[text, fragment] : refused) {
        std::vector<AddressRange> ranges = RangesOf("10.0.0.0/8", __LINE__);
        std::string error;
        bool parsed = ParseAddressRanges(text, &ranges, &error);
        Check(!parsed && error.find(fragment) != std::string::npos,
              std::string("refuses \"") + text + "\": " + error, __FILE__, __LINE__);
        CHECK_EQ(ranges.size(), 1u);
    }
}

// Whether rules let a request reach the address text.
bool Reaches(const TargetRules &rules, const char *text, int line) {
    sockaddr_storage address{};
    Check(AddressFromText(text, &address), std::string("address ") + text, __FILE__, line);
    AddressKind kind = AddressKind::kPublic;
    return MayReach(rules, reinterpret_cast<const sockaddr *>(&address), &kind);
}

// Each address class with amebo.allow_private_targets off, on, and with an allowlist.
void TestTargetRules() {
    TargetRules off;
    TargetRules on;
    on.allow_private = true;
    TargetRules listed;
    listed.allowed = RangesOf("10.1.0.0/16, 127.0.0.1/32, fd00::/8, 169.254.169.254", __LINE__);
    TargetRules listed_wide;
    listed_wide.allow_private = true;
    listed_wide.allowed = RangesOf("169.254.0.0/16, 0.0.0.0/0, ::/0", __LINE__);
    struct Case {
        const char *address;
        bool off, on, listed, listed_wide;
    };
    const Case cases[] = {
        {"8.8.8.8", true, true, true, true},
        {"2606:4700:4700::1111", true, true, true, true},
        {"127.0.0.1", false, true, true, true},
        {"127.0.0.2", false, true, false, true},
        {"::ffff:127.0.0.1", false, true, true, true},
        {"::1", false, true, false, true},
        {"10.1.200.3", false, true, true, true},
        {"10.2.0.1", false, true, false, true},
        {"64:ff9b::10.1.0.9", false, true, true, true},
        {"2002:0a01:0001::", false, true, true, true},
        {"192.168.0.1", false, true, false, true},
        {"fd12::1", false, true, true, true},
        {"fe80::1", false, true, false, true},
        {"169.254.1.1", false, true, false, true},
        {"0.0.0.0", false, true, false, true},
        {"224.0.0.1", false, true, false, true},
        // Metadata: refused even with the switch on, unless listed exactly.
        {"169.254.169.254", false, false, true, false},
        {"::ffff:169.254.169.254", false, false, true, false},
        {"64:ff9b::a9fe:a9fe", false, false, true, false},
        {"169.254.170.2", false, false, false, false},
        {"100.100.100.200", false, false, false, false},
        {"fd00:ec2::254", false, false, false, false},
        {"168.63.129.16", false, false, false, false},
    };
    for (const Case &c : cases) {
        std::string what = std::string(c.address) + " under rules ";
        Check(Reaches(off, c.address, __LINE__) == c.off, what + "off", __FILE__, __LINE__);
        Check(Reaches(on, c.address, __LINE__) == c.on, what + "on", __FILE__, __LINE__);
        Check(Reaches(listed, c.address, __LINE__) == c.listed, what + "listed", __FILE__,
              __LINE__);
        Check(Reaches(listed_wide, c.address, __LINE__) == c.listed_wide, what + "listed_wide",
              __FILE__, __LINE__);
    }
    sockaddr_un unix_socket{};
    unix_socket.sun_family = AF_UNIX;
    AddressKind kind = AddressKind::kPublic;
    CHECK(!MayReach(on, reinterpret_cast<sockaddr *>(&unix_socket), &kind));
    sockaddr_storage address{};
    CHECK(!AddressFromText("localhost", &address));
    CHECK(!AddressFromText(std::string("1.2.3.4\0", 8), &address));
}

// An interrupt check that always asks to stop, as a cancelled statement's does.
[[noreturn]] void CancelNow() {
    throw std::runtime_error("canceling statement due to user request");
}

// The cancellable look-up: localhost resolves to loopback addresses, an unknown name to none,
// and a look-up cancelled while glibc runs it throws the check's error without blocking,
// then later look-ups work (the abandoned requests are reaped).
void TestNameLookup() {
    std::vector<sockaddr_storage> found = ResolveHost("localhost");
    CHECK(!found.empty());
    for (const sockaddr_storage &address : found)
        CHECK_EQ(ClassifyAddress(reinterpret_cast<const sockaddr *>(&address)),
                 AddressKind::kLoopback);
    CHECK(ResolveHost("no-such-host.invalid").empty());
    amebo::SetInterruptCheck(CancelNow);
    int cancelled = 0;
    for (int i = 0; i < 20; i++) {
        try {
            CHECK(!ResolveHost("localhost").empty());
        } catch (const std::runtime_error &error) {
            CHECK_EQ(std::string(error.what()), "canceling statement due to user request");
            cancelled++;
        }
    }
    amebo::SetInterruptCheck(nullptr);
    CHECK(!ResolveHost("localhost").empty());
    std::cout << "name look-up: " << cancelled << " of 20 look-ups cancelled in flight\n";
}

} // namespace

// On a shard of amebo_router the envelope carries "shard" after "position" and the webhook id
// names the shard (event ids may repeat across shards); a database that is not a shard sends
// neither. The signature covers the webhook id and body the receiver gets.
void TestShardEnvelopeAndWebhookId() {
    FeedEvent event = SampleEvent();
    std::string plain = BuildEnvelope(event);
    std::string sharded = BuildEnvelope(event, 3);
    CHECK(plain.find("\"shard\"") == std::string::npos);
    CHECK(sharded.find(R"("position":72623859790382856,"shard":3,"action":)") !=
          std::string::npos);
    CHECK_EQ(Json::parse(sharded)["shard"].get<int>(), 3);
    CHECK_EQ(Json::parse(BuildBatch({&event}, 0))["events"][0]["shard"].get<int>(), 0);

    const int64_t now = 1000000000;
    std::vector<std::string> ids;
    for (int shard : {-1, 0, 1}) {
        DispatchSettings settings;
        settings.shard = shard;
        Dispatcher dispatcher(settings);
        dispatcher.SetSubscriptions({AnySubscription(7)});
        dispatcher.AddEvent(StreamEvent(1), now);
        dispatcher.EndTransaction(100);
        std::vector<HttpRequest> sent = dispatcher.TakeRequests(now, 1700000000);
        CHECK(sent.size() == 1);
        if (sent.size() != 1)
            continue;
        std::string id = sent[0].headers[0].substr(std::string("webhook-id: ").size());
        ids.push_back(id);
        Json body = Json::parse(sent[0].body);
        CHECK(shard < 0 ? !body.contains("shard") : body["shard"].get<int>() == shard);
        CHECK_EQ(sent[0].headers[2], "webhook-signature: " +
                                         SignPayload(AnySubscription(7).secret, id, 1700000000,
                                                     sent[0].body));
    }
    CHECK_EQ(ids.size(), 3u);
    if (ids.size() == 3) {
        CHECK_EQ(ids[0], "msg_01a21c4ede3677a0bb41c25c92576481");
        CHECK_EQ(ids[1], "msg_s0_01a21c4ede3677a0bb41c25c92576481");
        CHECK_EQ(ids[2], "msg_s1_01a21c4ede3677a0bb41c25c92576481");
    }
}

int main() {
    TestSigning();
    TestBase64();
    TestTimestamps();
    TestEnvelope();
    TestFeedEvent();
    TestAddressClasses();
    TestHandlerUrlsAccepted();
    TestHandlerUrlsRefused();
    TestRetryDelay();
    TestRetryAfter();
    TestActionMatching();
    TestJsonContainment();
    TestSubscriptionStates();
    TestMessageKey();
    TestOutcomeLog();
    TestOrderedHeldThenFailed();
    TestBatchLinger();
    TestRateLimit();
    TestRateLimitedSubscription();
    TestRateLimitedOrdered();
    TestRateLimitNoSpin();
    TestRotationSignatures();
    TestAddressRangeLists();
    TestTargetRules();
    TestNameLookup();
    TestShardEnvelopeAndWebhookId();
    std::cout << "delivery_test: " << checks_run - checks_failed << " of " << checks_run
              << " checks passed\n";
    return checks_failed == 0 ? 0 : 1;
}
