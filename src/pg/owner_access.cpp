// Switching to the owner of amebo's tables around amebo's own queries (see owner_access.hpp).
#include "pg/owner_access.hpp"

extern "C" {
#include "catalog/pg_class.h"
#include "utils/acl.h"
#include "utils/syscache.h"
}

namespace amebo::pg {

Oid AmeboTableOwner() {
    Oid schema = get_namespace_oid("amebo", true);
    Oid events = OidIsValid(schema) ? get_relname_relid("events", schema) : InvalidOid;
    HeapTuple tuple =
        OidIsValid(events) ? SearchSysCache1(RELOID, ObjectIdGetDatum(events)) : nullptr;
    if (!HeapTupleIsValid(tuple))
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("extension amebo is not installed in this database"),
                        errhint("Run CREATE EXTENSION amebo.")));
    Oid owner = reinterpret_cast<Form_pg_class>(GETSTRUCT(tuple))->relowner;
    ReleaseSysCache(tuple);
    return owner;
}

OwnerAccess EnterOwnerAccess() {
    Oid owner = AmeboTableOwner();
    OwnerAccess access;
    GetUserIdAndSecContext(&access.saved_user, &access.saved_context);
    // As fmgr_security_definer does it: the user first, then the setting, both undone at abort.
    SetUserIdAndSecContext(owner, access.saved_context | SECURITY_LOCAL_USERID_CHANGE);
    access.guc_level = NewGUCNestLevel();
    (void)set_config_option("search_path", "pg_catalog, pg_temp",
                            superuser() ? PGC_SUSET : PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
                            true, 0, false);
    return access;
}

void LeaveOwnerAccess(const OwnerAccess &access) {
    AtEOXact_GUC(true, access.guc_level);
    SetUserIdAndSecContext(access.saved_user, access.saved_context);
}

void RequireExecute(Oid function, Oid role) {
    if (pg_proc_aclcheck(function, role, ACL_EXECUTE) != ACLCHECK_OK)
        aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(function));
}

} // namespace amebo::pg
