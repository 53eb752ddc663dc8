// SQL-callable probes that prove the border works in both directions. They are not part of
// the extension's SQL script; the regression test border.sql declares them itself.
#include <string>
#include <vector>

#include "core/error.hpp"
#include "pg/guard.hpp"

namespace {

// Counts destructor runs of Witness objects, so a test can see C++ unwinding happened.
int g_witness_destroyed = 0;

// An object whose destructor must run when an error crosses its frame.
struct Witness {
    std::vector<std::string> payload{"kept", "in", "C++", "memory"};
    ~Witness() { g_witness_destroyed++; }
};

// Throws an amebo::Error from a few frames down, with C++ objects alive in each.
[[noreturn]] void ThrowFromDepth(int depth, const std::string &code) {
    Witness witness;
    if (depth == 0)
        throw amebo::Error(code.c_str(),
                           "raised " + std::to_string(witness.payload.size()) +
                               " frames deep in C++",
                           "the border kept the SQLSTATE", "nothing to do: this is a test");
    ThrowFromDepth(depth - 1, code);
}

} // namespace

extern "C" {
PG_FUNCTION_INFO_V1(amebo_selftest_throw_deep);
PG_FUNCTION_INFO_V1(amebo_selftest_pg_error_in_cpp);
PG_FUNCTION_INFO_V1(amebo_selftest_destroyed);
PG_FUNCTION_INFO_V1(amebo_selftest_throw_inside_call);
}

// Throws an amebo::Error from inside a guarded call (C++ called back from the PostgreSQL
// side, as the jsonb walk does): the exception must leave PG_TRY cleanly, so that the next
// PostgreSQL error still finds a live handler.
extern "C" Datum amebo_selftest_throw_inside_call(PG_FUNCTION_ARGS) {
    return amebo::pg::Entry([&]() -> Datum {
        Witness witness;
        amebo::pg::Call([] { throw amebo::Error("AM998", "thrown inside a guarded call"); });
        return (Datum)0;
    });
}

// Raises an amebo::Error with the given SQLSTATE from deep inside C++.
extern "C" Datum amebo_selftest_throw_deep(PG_FUNCTION_ARGS) {
    return amebo::pg::Entry([&]() -> Datum {
        std::string code = text_to_cstring(PG_GETARG_TEXT_PP(0));
        ThrowFromDepth(3, code);
    });
}

// Calls int4in() on the argument through Call() while Witness objects are alive; a
// PostgreSQL error must unwind them and reach the client unchanged.
extern "C" Datum amebo_selftest_pg_error_in_cpp(PG_FUNCTION_ARGS) {
    return amebo::pg::Entry([&]() -> Datum {
        Witness outer;
        char *input = text_to_cstring(PG_GETARG_TEXT_PP(0));
        Witness inner;
        Datum parsed =
            amebo::pg::Call([&] { return DirectFunctionCall1(int4in, CStringGetDatum(input)); });
        return Int32GetDatum(DatumGetInt32(parsed) +
                             static_cast<int>(outer.payload.size() - inner.payload.size()));
    });
}

// Returns how many Witness destructors have run in this backend.
extern "C" Datum amebo_selftest_destroyed(PG_FUNCTION_ARGS) {
    return Int32GetDatum(g_witness_destroyed);
}
