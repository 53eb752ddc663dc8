// The border guards: PostgreSQL errors into C++ exceptions and back.
#include "pg/guard.hpp"

#include <cstring>
#include <exception>
#include <new>

#include "core/error.hpp"

namespace amebo::pg {

// What Entry() caught. Static and fixed-size: filling it inside a catch block must not
// allocate, because an allocation failure there would longjmp out of the catch block.
struct CaughtError {
    ErrorData *pg_error;
    char code[6];
    char message[1024];
    char detail[1024];
    char hint[512];
};

namespace {

CaughtError g_caught;

// Copies src into a fixed buffer, truncating.
template <std::size_t N> void CopyText(char (&dst)[N], const char *src) {
    std::strncpy(dst, src, N - 1);
    dst[N - 1] = '\0';
}

// Fills g_caught with a code and texts.
CaughtError *Record(const char *code, const char *message, const char *detail, const char *hint) {
    g_caught.pg_error = nullptr;
    CopyText(g_caught.code, code);
    CopyText(g_caught.message, message);
    CopyText(g_caught.detail, detail);
    CopyText(g_caught.hint, hint);
    return &g_caught;
}

} // namespace

void CallRaw(void (*fn)(void *), void *arg) {
    MemoryContext caller_context = CurrentMemoryContext;
    ErrorData *volatile error = nullptr;
    // A C++ exception must not leave the PG_TRY block: it would skip PG_END_TRY and leave
    // PostgreSQL's error handler pointing into this dead frame. Catch it, rethrow it after.
    std::exception_ptr exception;
    PG_TRY();
    {
        try {
            fn(arg);
        } catch (...) {
            exception = std::current_exception();
        }
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(caller_context);
        error = CopyErrorData();
        FlushErrorState();
    }
    PG_END_TRY();
    if (error != nullptr)
        throw PgError(error);
    if (exception)
        std::rethrow_exception(exception);
}

CaughtError *CatchCurrent() noexcept {
    try {
        throw;
    } catch (const PgError &e) {
        g_caught.pg_error = e.data();
        return &g_caught;
    } catch (const amebo::Error &e) {
        return Record(e.code().c_str(), e.what(), e.detail().c_str(), e.hint().c_str());
    } catch (const std::bad_alloc &) {
        return Record("53200", "out of memory", "", "");
    } catch (const std::exception &e) {
        return Record(sqlstate::kInternalError, e.what(), "", "");
    } catch (...) {
        return Record(sqlstate::kInternalError, "unknown C++ exception", "", "");
    }
}

void RaiseCaught(CaughtError *caught) {
    if (caught->pg_error != nullptr)
        ReThrowError(caught->pg_error);
    const char *c = caught->code;
    ereport(ERROR, (errcode(MAKE_SQLSTATE(c[0], c[1], c[2], c[3], c[4])),
                    errmsg_internal("%s", caught->message),
                    caught->detail[0] ? errdetail_internal("%s", caught->detail) : 0,
                    caught->hint[0] ? errhint("%s", caught->hint) : 0));
    pg_unreachable();
}

} // namespace amebo::pg
