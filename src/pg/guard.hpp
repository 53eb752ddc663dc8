// The border between C++ and PostgreSQL, in both directions.
//
// PostgreSQL reports errors with ereport(), which longjmp()s over C++ destructors; C++ throws
// exceptions, which must never unwind through PostgreSQL's frames. So:
//  - every function PostgreSQL calls runs its body through Entry(), which catches everything
//    and raises the PostgreSQL error only after the catch block has closed;
//  - C++ code that holds objects with destructors calls PostgreSQL only through Call(), which
//    turns an ereport(ERROR) into a PgError exception that unwinds those objects and is
//    re-raised, SQLSTATE intact, by Entry().
// Frames without such objects (the store's tuple code, for instance) may call PostgreSQL
// directly: a longjmp through them skips nothing, and the transaction abort that follows
// releases every PostgreSQL resource they held.
#pragma once

#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "pg/postgres.hpp"

namespace amebo::pg {

// A PostgreSQL error caught by Call(), travelling through C++ frames back to Entry().
// Never catch it anywhere else: the transaction must abort.
class PgError : public std::exception {
  public:
    explicit PgError(ErrorData *data) : data_(data) {}
    const char *what() const noexcept override { return data_->message; }
    ErrorData *data() const { return data_; }

  private:
    ErrorData *data_;
};

// Runs fn(arg) under PG_TRY; throws PgError if PostgreSQL raised an error, and rethrows (after
// PG_END_TRY) any C++ exception fn threw.
void CallRaw(void (*fn)(void *), void *arg);

// Calls a function that may ereport() from C++ code that owns objects with destructors.
// f must not itself create such objects: it is the PostgreSQL side of the border.
template <typename F> auto Call(F &&f) -> decltype(f()) {
    using Result = decltype(f());
    if constexpr (std::is_void_v<Result>) {
        CallRaw([](void *p) { (*static_cast<F *>(p))(); }, &f);
    } else {
        static_assert(std::is_trivially_copyable_v<Result>,
                      "Call() returns only plain values (Datums, pointers, numbers)");
        Result result{};
        struct Frame {
            F *f;
            Result *out;
        } frame{&f, &result};
        CallRaw(
            [](void *p) {
                auto *fr = static_cast<Frame *>(p);
                *fr->out = (*fr->f)();
            },
            &frame);
        return result;
    }
}

// What Entry() caught, held in PostgreSQL memory so it can be raised after the catch.
struct CaughtError;

// Raises the caught error as a PostgreSQL error; never returns.
[[noreturn]] void RaiseCaught(CaughtError *caught);

// Records the exception being handled (call only inside a catch block); never throws.
CaughtError *CatchCurrent() noexcept;

// Runs the body of a function PostgreSQL calls; no C++ exception escapes it.
template <typename Body> Datum Entry(Body &&body) {
    CaughtError *caught = nullptr;
    try {
        return body();
    } catch (...) {
        caught = CatchCurrent();
    }
    RaiseCaught(caught);
}

// Same as Entry(), for callbacks that return nothing (hooks, transaction callbacks).
template <typename Body> void EntryVoid(Body &&body) {
    CaughtError *caught = nullptr;
    try {
        body();
        return;
    } catch (...) {
        caught = CatchCurrent();
    }
    RaiseCaught(caught);
}

} // namespace amebo::pg
