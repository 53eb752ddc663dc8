// amebo's own table access on behalf of a role that may not write amebo's tables.
//
// Only the owner of amebo's tables (the role that created the extension) writes them. The C
// functions that must write them for another role (rebuild_projection, say) switch to that
// owner around their own queries only, as a SECURITY DEFINER function would, but without a
// SET clause on the function: the caller's code they also run (projection handlers, resets)
// stays the caller's, and a function with no table access to do (append_event, which writes
// through the heap directly) pays nothing. Inside, search_path is pg_catalog, pg_temp, so that
// no object of the caller's can stand in for one the query names without a schema.
// PostgreSQL side: no C++ objects. An error inside needs no cleanup: the (sub)transaction
// abort restores the user and the settings.
#pragma once

#include "pg/postgres.hpp"

namespace amebo::pg {

// What EnterOwnerAccess changed, for LeaveOwnerAccess to restore.
struct OwnerAccess {
    Oid saved_user;
    int saved_context;
    int guc_level;
};

// The owner of amebo.events, which owns every amebo table; errors if the extension is missing.
Oid AmeboTableOwner();

// Becomes the owner of amebo's tables with search_path = pg_catalog, pg_temp.
OwnerAccess EnterOwnerAccess();

// Restores the user and search_path EnterOwnerAccess found.
void LeaveOwnerAccess(const OwnerAccess &access);

// Raises 42501 unless the role may execute the function (for users' functions amebo calls
// through fmgr, which checks nothing).
void RequireExecute(Oid function, Oid role);

} // namespace amebo::pg
