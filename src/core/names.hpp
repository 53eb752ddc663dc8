// Rules for the names users give to streams and actions. Pure C++.
#pragma once

#include <cstddef>
#include <string_view>

namespace amebo::names {

// The longest stream or action name accepted, in bytes (keeps index entries small).
inline constexpr std::size_t kMaxNameBytes = 255;

// Throws amebo::Error unless stream is a usable stream name.
void ValidateStream(std::string_view stream);

// Throws amebo::Error unless action is a usable action name.
void ValidateAction(std::string_view action);

// The category of a stream: the text before its first '-', or the whole name.
std::string_view StreamCategory(std::string_view stream);

} // namespace amebo::names
