// amebo.create_projection: registers a projection owned by the calling role.
//
// The owner is who the worker runs an async projection's handler as. A SECURITY DEFINER
// function cannot name its caller (current_user is its own owner inside), so this C function
// takes the caller's role before anything changes it, checks that role may execute the
// handler and the reset function, and runs amebo_internal.register_projection (SQL, executable by
// the tables' owner only) as the owner of amebo's tables.
#include "core/error.hpp"
#include "pg/guard.hpp"
#include "pg/owner_access.hpp"
#include "state/spi_rows.hpp"

using namespace amebo;

extern "C" {
PG_FUNCTION_INFO_V1(amebo_create_projection);
}

namespace {

// Validates and inserts the projection as the tables' owner, with the given arguments.
void RegisterAsOwner(Datum *args, const char *nulls) {
    Oid argtypes[6] = {TEXTOID, REGPROCEDUREOID, TEXTARRAYOID,
                       TEXTOID, REGPROCEDUREOID, REGROLEOID};
    pg::OwnerAccess owner = pg::EnterOwnerAccess();
    SPI_connect();
    int result =
        SPI_execute_with_args("SELECT amebo_internal.register_projection($1, $2, $3, $4, $5, $6)",
                              6, argtypes, args, nulls, false, 0);
    if (result != SPI_OK_SELECT)
        elog(ERROR, "amebo_internal.register_projection failed: %s",
             SPI_result_code_string(result));
    SPI_finish();
    pg::LeaveOwnerAccess(owner);
}

} // namespace

// amebo.create_projection(name, handler, actions, mode, reset)
extern "C" Datum amebo_create_projection(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        Oid caller = GetUserId();
        Datum args[6];
        char nulls[7] = "      ";
        for (int i = 0; i < 5; i++) {
            args[i] = PG_GETARG_DATUM(i);
            nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
        }
        args[5] = ObjectIdGetDatum(caller);
        // A NULL handler is register_projection's error to raise (22004).
        if (!PG_ARGISNULL(1))
            pg::RequireExecute(PG_GETARG_OID(1), caller);
        if (!PG_ARGISNULL(4))
            pg::RequireExecute(PG_GETARG_OID(4), caller);
        RegisterAsOwner(args, nulls);
        PG_RETURN_VOID();
    });
}
