// Shared by amebo's fuzz targets (test/fuzz/*.cpp): the property check that stops a run, and
// the splitting of an input into fields. Pure C++: the targets link only src/core.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace amebo::fuzz {

// The file being replayed by replay_main.cpp; null under libFuzzer (which names it itself).
inline const char *g_replayed_file = nullptr;

// Prints which property failed, and where, then aborts so that the fuzzer keeps the input.
[[noreturn]] inline void PropertyFailed(const char *file, int line, const char *what,
                                        const std::string &detail) {
    std::fprintf(stderr, "%s:%d: property failed: %s%s%s%s%s%s\n", file, line, what,
                 detail.empty() ? "" : " (", detail.c_str(), detail.empty() ? "" : ")",
                 g_replayed_file ? " on input " : "", g_replayed_file ? g_replayed_file : "");
    std::abort();
}

// Splits data at its first count - 1 newlines; the last field keeps the rest, newlines and all.
inline std::vector<std::string_view> SplitFields(std::string_view data, size_t count) {
    std::vector<std::string_view> fields;
    while (fields.size() + 1 < count) {
        size_t newline = data.find('\n');
        if (newline == std::string_view::npos)
            break;
        fields.push_back(data.substr(0, newline));
        data.remove_prefix(newline + 1);
    }
    fields.push_back(data);
    fields.resize(count);
    return fields;
}

// The input as text.
inline std::string_view AsText(const uint8_t *data, size_t size) {
    return std::string_view(reinterpret_cast<const char *>(data), size);
}

// True when text is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF), the strings PostgreSQL stores in a UTF8 database.
inline bool IsValidUtf8(std::string_view text) {
    size_t i = 0;
    while (i < text.size()) {
        auto byte = static_cast<unsigned char>(text[i]);
        size_t length = byte < 0x80         ? 1
                        : (byte >> 5) == 6  ? 2
                        : (byte >> 4) == 14 ? 3
                        : (byte >> 3) == 30 ? 4
                                            : 0;
        if (length == 0 || i + length > text.size())
            return false;
        uint32_t code = length == 1 ? byte : byte & (0x7f >> length);
        for (size_t j = 1; j < length; j++) {
            auto next = static_cast<unsigned char>(text[i + j]);
            if ((next & 0xc0) != 0x80)
                return false;
            code = code << 6 | (next & 0x3f);
        }
        static constexpr uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
        if (code < kSmallest[length] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff))
            return false;
        i += length;
    }
    return true;
}

} // namespace amebo::fuzz

// Checks a property of the code under test; on failure prints it and aborts.
#define FUZZ_CHECK(condition, detail)                                                              \
    do {                                                                                           \
        if (!(condition))                                                                          \
            ::amebo::fuzz::PropertyFailed(__FILE__, __LINE__, #condition, (detail));               \
    } while (0)
