// Fuzz target for stream and action names (src/core/names.cpp). Input: the name's bytes.
// Properties: ValidateStream and ValidateAction accept exactly the names that are 1 to 255
// bytes with no byte <= 0x20 or 0x7f, and refuse with amebo::Error 22023 only (any other
// exception escapes and crashes the run); StreamCategory is the prefix before the first '-'.
#include <string>

#include "core/error.hpp"
#include "core/names.hpp"
#include "fuzz_check.hpp"

namespace {

// The rule, written independently: length and forbidden bytes.
bool ShouldAccept(std::string_view name) {
    if (name.empty() || name.size() > amebo::names::kMaxNameBytes)
        return false;
    for (unsigned char c : name)
        if (c <= 0x20 || c == 0x7f)
            return false;
    return true;
}

// True when validate accepts name; fails the run on an error with another SQLSTATE.
template <typename Validate> bool Accepts(Validate validate, std::string_view name) {
    try {
        validate(name);
        return true;
    } catch (const amebo::Error &e) {
        FUZZ_CHECK(e.code() == amebo::sqlstate::kInvalidParameterValue, e.code());
        FUZZ_CHECK(std::string(e.what()).find("must") != std::string::npos ||
                       std::string(e.what()).find("too long") != std::string::npos,
                   e.what());
        return false;
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string_view name = amebo::fuzz::AsText(data, size);
    bool expected = ShouldAccept(name);
    FUZZ_CHECK(Accepts(amebo::names::ValidateStream, name) == expected, std::string(name));
    FUZZ_CHECK(Accepts(amebo::names::ValidateAction, name) == expected, std::string(name));
    std::string_view category = amebo::names::StreamCategory(name);
    FUZZ_CHECK(name.substr(0, category.size()) == category, "category is not a prefix");
    FUZZ_CHECK(category.find('-') == std::string_view::npos, "category holds a '-'");
    FUZZ_CHECK(category.size() == name.size() || name[category.size()] == '-',
               "category stops before the first '-'");
    return 0;
}
