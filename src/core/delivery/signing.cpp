// Standard Webhooks signatures (HMAC-SHA256 through OpenSSL 3's EVP_MAC) and base64. Pure C++.
#include "core/delivery/signing.hpp"

#include <algorithm>
#include <initializer_list>
#include <memory>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "core/error.hpp"

namespace amebo::delivery {

namespace {

constexpr std::string_view kSecretPrefix = "whsec_";
constexpr char kBase64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Owners of OpenSSL's MAC objects, freed on every path.
struct MacDeleter {
    void operator()(EVP_MAC *mac) const { EVP_MAC_free(mac); }
    void operator()(EVP_MAC_CTX *context) const { EVP_MAC_CTX_free(context); }
};
using MacPtr = std::unique_ptr<EVP_MAC, MacDeleter>;
using MacContextPtr = std::unique_ptr<EVP_MAC_CTX, MacDeleter>;

// The 6-bit value of a base64 character, or -1 for any other byte.
int Base64Value(char c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

// Number of '=' at the end of a base64 text (at most 2 are allowed).
size_t PaddingLength(std::string_view text) {
    size_t padding = 0;
    while (padding < text.size() && text[text.size() - 1 - padding] == '=')
        padding++;
    return padding;
}

// The HMAC key of a webhook secret: the base64 after "whsec_". Secrets without the prefix are
// accepted too, as the Standard Webhooks libraries do. Throws for anything else.
std::string SecretKey(std::string_view secret) {
    if (secret.substr(0, kSecretPrefix.size()) == kSecretPrefix)
        secret.remove_prefix(kSecretPrefix.size());
    std::string key;
    if (secret.empty() || !Base64Decode(secret, &key))
        throw Error(sqlstate::kInvalidParameterValue, "invalid webhook secret",
                    "A webhook secret is \"whsec_\" followed by the key in standard base64.");
    return key;
}

// Throws the error for a failed OpenSSL call.
[[noreturn]] void ThrowSigningFailure() {
    throw Error(sqlstate::kInternalError, "could not compute a webhook signature",
                "OpenSSL's HMAC-SHA256 failed.");
}

// HMAC-SHA256 of the concatenated parts under key.
std::string HmacSha256(std::string_view key, std::initializer_list<std::string_view> parts) {
    MacPtr mac(EVP_MAC_fetch(nullptr, OSSL_MAC_NAME_HMAC, nullptr));
    if (!mac)
        ThrowSigningFailure();
    MacContextPtr context(EVP_MAC_CTX_new(mac.get()));
    char digest_name[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
                           OSSL_PARAM_construct_end()};
    if (!context ||
        !EVP_MAC_init(context.get(), reinterpret_cast<const unsigned char *>(key.data()),
                      key.size(), params))
        ThrowSigningFailure();
    for (std::string_view part : parts)
        if (!EVP_MAC_update(context.get(), reinterpret_cast<const unsigned char *>(part.data()),
                            part.size()))
            ThrowSigningFailure();
    unsigned char digest[EVP_MAX_MD_SIZE];
    size_t digest_length = 0;
    if (!EVP_MAC_final(context.get(), digest, &digest_length, sizeof digest))
        ThrowSigningFailure();
    return std::string(reinterpret_cast<const char *>(digest), digest_length);
}

} // namespace

std::string SignPayload(std::string_view secret, std::string_view message_id, int64_t unix_seconds,
                        std::string_view body) {
    std::string key = SecretKey(secret);
    std::string timestamp = std::to_string(unix_seconds);
    return "v1," + Base64Encode(HmacSha256(key, {message_id, ".", timestamp, ".", body}));
}

std::string SignatureHeaderValue(std::string_view secret, std::string_view previous_secret,
                                 int64_t previous_until, std::string_view message_id,
                                 int64_t unix_seconds, std::string_view body) {
    std::string value = SignPayload(secret, message_id, unix_seconds, body);
    if (!previous_secret.empty() && unix_seconds < previous_until)
        value += " " + SignPayload(previous_secret, message_id, unix_seconds, body);
    return value;
}

std::string Base64Encode(std::string_view bytes) {
    std::string text;
    text.reserve((bytes.size() + 2) / 3 * 4);
    for (size_t i = 0; i < bytes.size(); i += 3) {
        size_t count = std::min<size_t>(3, bytes.size() - i);
        uint32_t group = 0;
        for (size_t j = 0; j < 3; j++)
            group = (group << 8) | (j < count ? static_cast<unsigned char>(bytes[i + j]) : 0);
        for (size_t j = 0; j < 4; j++)
            text.push_back(j <= count ? kBase64Alphabet[(group >> (18 - 6 * j)) & 0x3f] : '=');
    }
    return text;
}

bool Base64Decode(std::string_view text, std::string *bytes) {
    size_t padding = PaddingLength(text);
    if (text.size() % 4 != 0 || padding > 2)
        return false;
    std::string decoded;
    decoded.reserve(text.size() / 4 * 3);
    uint32_t group = 0;
    size_t data_length = text.size() - padding;
    for (size_t i = 0; i < data_length; i++) {
        int value = Base64Value(text[i]);
        if (value < 0)
            return false;
        group = (group << 6) | static_cast<uint32_t>(value);
        if (i % 4 == 3)
            for (int shift = 16; shift >= 0; shift -= 8)
                decoded.push_back(static_cast<char>((group >> shift) & 0xff));
    }
    if (padding == 2)
        decoded.push_back(static_cast<char>((group >> 4) & 0xff));
    if (padding == 1) {
        decoded.push_back(static_cast<char>((group >> 10) & 0xff));
        decoded.push_back(static_cast<char>((group >> 2) & 0xff));
    }
    *bytes = std::move(decoded);
    return true;
}

} // namespace amebo::delivery
