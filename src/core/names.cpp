// Stream and action name rules. Pure C++.
#include "core/names.hpp"

#include <string>

#include "core/error.hpp"

namespace amebo::names {

namespace {

// True when the byte is an ASCII control character or a space.
bool IsControlOrSpace(unsigned char c) {
    return c <= 0x20 || c == 0x7f;
}

// Throws unless name is non-empty, short enough and free of control characters and spaces.
void ValidateName(const char *what, std::string_view name) {
    if (name.empty())
        throw Error(sqlstate::kInvalidParameterValue, std::string(what) + " must not be empty");
    if (name.size() > kMaxNameBytes)
        throw Error(sqlstate::kInvalidParameterValue, std::string(what) + " is too long",
                    std::string(what) + " names are limited to " + std::to_string(kMaxNameBytes) +
                        " bytes; this one has " + std::to_string(name.size()) + ".");
    for (unsigned char c : name)
        if (IsControlOrSpace(c))
            throw Error(sqlstate::kInvalidParameterValue,
                        std::string(what) + " must not contain spaces or control characters");
}

} // namespace

void ValidateStream(std::string_view stream) {
    ValidateName("stream", stream);
}

void ValidateAction(std::string_view action) {
    ValidateName("action", action);
}

std::string_view StreamCategory(std::string_view stream) {
    return stream.substr(0, stream.find('-'));
}

} // namespace amebo::names
