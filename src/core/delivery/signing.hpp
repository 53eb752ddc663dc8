// Standard Webhooks signatures. Pure C++ (OpenSSL's HMAC).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace amebo::delivery {

// "v1," + base64(HMAC-SHA256(key, id + "." + timestamp + "." + body)), where key is the
// base64-decoded part of secret after "whsec_" (a secret without the prefix is decoded whole,
// as the Standard Webhooks libraries do). Throws amebo::Error (22023) when the secret is empty
// or not base64.
std::string SignPayload(std::string_view secret, std::string_view message_id, int64_t unix_seconds,
                        std::string_view body);

// The webhook-signature header's value: SignPayload with secret and, while unix_seconds is
// before previous_until (a rotation's overlap), a second signature with previous_secret,
// separated by a space as Standard Webhooks allows. Throws as SignPayload does.
std::string SignatureHeaderValue(std::string_view secret, std::string_view previous_secret,
                                 int64_t previous_until, std::string_view message_id,
                                 int64_t unix_seconds, std::string_view body);

// Standard base64 with padding.
std::string Base64Encode(std::string_view bytes);

// Decodes standard base64 (padding required, no whitespace); false when text is not base64.
bool Base64Decode(std::string_view text, std::string *bytes);

} // namespace amebo::delivery
