// Argument checks shared by the store's SQL functions.
#include "store/arguments.hpp"

#include <string>

#include "core/error.hpp"
#include "core/names.hpp"

namespace amebo::store {

void NullArgument(const char *name) {
    throw Error(sqlstate::kNullValueNotAllowed, std::string(name) + " must not be NULL");
}

text *StreamArgument(FunctionCallInfo fcinfo, int arg) {
    if (PG_ARGISNULL(arg))
        NullArgument("stream");
    text *stream = PG_GETARG_TEXT_PP(arg);
    names::ValidateStream(TextView(stream));
    return stream;
}

} // namespace amebo::store
