// Fuzz target for webhook signing and base64 (src/core/delivery/signing.cpp). Input:
// "secret\nmessage id\nunix seconds\nbody" (the body keeps any further newlines).
// Properties: base64 encoding equals OpenSSL's, and decoding gives back the bytes; a text is
// decoded exactly when it is strict base64 (alphabet, length a multiple of 4, at most two '='
// at the end only), to the bytes OpenSSL decodes; SignPayload either refuses the secret with
// amebo::Error 22023 exactly when its key part is empty or not base64, or returns "v1," and
// the base64 HMAC-SHA256 that OpenSSL's one-shot HMAC computes over id.timestamp.body (the
// receiver's verification), which changes when one byte of the body does.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdlib>
#include <string>

#include "core/delivery/signing.hpp"
#include "core/error.hpp"
#include "fuzz_check.hpp"

namespace {

using amebo::delivery::Base64Decode;
using amebo::delivery::Base64Encode;

// OpenSSL's base64 of bytes.
std::string OpensslEncode(std::string_view bytes) {
    std::string text(4 * ((bytes.size() + 2) / 3) + 1, '\0');
    int length = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(text.data()),
                                 reinterpret_cast<const unsigned char *>(bytes.data()),
                                 static_cast<int>(bytes.size()));
    text.resize(static_cast<size_t>(length));
    return text;
}

// True when text is strict standard base64 with padding, by its grammar.
bool IsStrictBase64(std::string_view text) {
    if (text.size() % 4 != 0)
        return false;
    size_t padding = 0;
    while (padding < text.size() && text[text.size() - 1 - padding] == '=')
        padding++;
    if (padding > 2)
        return false;
    for (size_t i = 0; i < text.size() - padding; i++) {
        char c = text[i];
        bool in_alphabet = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                           (c >= '0' && c <= '9') || c == '+' || c == '/';
        if (!in_alphabet)
            return false;
    }
    return true;
}

// OpenSSL's decoding of strict base64 text (it returns whole groups; padding is cut off here).
std::string OpensslDecode(std::string_view text) {
    std::string bytes(text.size() / 4 * 3 + 1, '\0');
    int length = EVP_DecodeBlock(reinterpret_cast<unsigned char *>(bytes.data()),
                                 reinterpret_cast<const unsigned char *>(text.data()),
                                 static_cast<int>(text.size()));
    FUZZ_CHECK(length >= 0, "OpenSSL refused strict base64");
    size_t padding = text.size() - std::string_view(text).find_last_not_of('=') - 1;
    bytes.resize(static_cast<size_t>(length) - (text.empty() ? 0 : padding));
    return bytes;
}

// Base64 both ways on arbitrary bytes and on the same bytes read as text.
void CheckBase64(std::string_view bytes) {
    std::string encoded = Base64Encode(bytes);
    FUZZ_CHECK(encoded == OpensslEncode(bytes), "encoding differs from OpenSSL's");
    std::string decoded;
    FUZZ_CHECK(Base64Decode(encoded, &decoded) && decoded == bytes, "decode(encode(x)) != x");
    std::string from_text = "unchanged";
    bool accepted = Base64Decode(bytes, &from_text);
    FUZZ_CHECK(accepted == IsStrictBase64(bytes), std::string(bytes));
    if (accepted)
        FUZZ_CHECK(from_text == OpensslDecode(bytes), "decoding differs from OpenSSL's");
    else
        FUZZ_CHECK(from_text == "unchanged", "a refused decode wrote its output");
}

// The signature a receiver expects, computed with OpenSSL's one-shot HMAC.
std::string ExpectedSignature(const std::string &key, std::string_view id, int64_t seconds,
                              std::string_view body) {
    std::string message = std::string(id) + "." + std::to_string(seconds) + "." + std::string(body);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    FUZZ_CHECK(HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                    reinterpret_cast<const unsigned char *>(message.data()), message.size(), digest,
                    &length) != nullptr,
               "OpenSSL HMAC failed");
    return "v1," + OpensslEncode(std::string_view(reinterpret_cast<char *>(digest), length));
}

// Signs, and checks the refusal or the signature.
void CheckSignature(std::string_view secret, std::string_view id, int64_t seconds,
                    std::string body) {
    std::string_view key_text = secret.substr(0, 6) == "whsec_" ? secret.substr(6) : secret;
    std::string key;
    bool valid = !key_text.empty() && IsStrictBase64(key_text);
    if (valid)
        key = OpensslDecode(key_text);
    std::string signature;
    try {
        signature = amebo::delivery::SignPayload(secret, id, seconds, body);
    } catch (const amebo::Error &e) {
        FUZZ_CHECK(e.code() == amebo::sqlstate::kInvalidParameterValue, e.code());
        FUZZ_CHECK(!valid, "a valid secret was refused: " + std::string(secret));
        return;
    }
    FUZZ_CHECK(valid, "an invalid secret was accepted: " + std::string(secret));
    FUZZ_CHECK(signature == ExpectedSignature(key, id, seconds, body), "signature differs");
    body.push_back('x');
    FUZZ_CHECK(amebo::delivery::SignPayload(secret, id, seconds, body) != signature,
               "a changed body kept its signature");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string_view input = amebo::fuzz::AsText(data, size);
    CheckBase64(input);
    auto fields = amebo::fuzz::SplitFields(input, 4);
    int64_t seconds = std::strtoll(std::string(fields[2]).c_str(), nullptr, 10);
    CheckSignature(fields[0], fields[1], seconds, std::string(fields[3]));
    return 0;
}
