// The per-backend cache of inline projections and their dispatch.
#include "state/inline_projections.hpp"

#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "pg/guard.hpp"
#include "pg/owner_access.hpp"
#include "pg/text_view.hpp"
#include "state/spi_rows.hpp"

extern "C" {
#include "catalog/pg_proc.h"
#include "utils/array.h"
#include "utils/syscache.h"
}

namespace amebo::state {

namespace {

// One inline projection, ready to call.
struct InlineProjection {
    std::string name;
    FmgrInfo handler;
    std::vector<std::string> actions; // empty: every action
    // The last role found allowed to execute handler, while g_privileges_generation is still
    // allowed_generation (a verdict, not part of the projection: hence mutable).
    mutable Oid allowed_role = InvalidOid;
    mutable uint64 allowed_generation = 0;
};

// Replaced, never modified (but for the verdicts above), on reload: a dispatch holds its own
// reference, so a handler that appends (and so may reload the cache) cannot free the list
// being dispatched.
std::shared_ptr<const std::vector<InlineProjection>> g_projections =
    std::make_shared<const std::vector<InlineProjection>>();
bool g_loaded = false;
Oid g_projections_relid = InvalidOid;

// Advanced whenever a function, a role or a role membership changes (GRANT and REVOKE
// included), which voids every remembered EXECUTE verdict. Starts above the verdicts' 0.
uint64 g_privileges_generation = 1;

// The inline projections as amebo.projections lists them (none before extension 1.2).
struct ProjectionRow {
    char *name;
    Oid handler;
    char **actions; // NUL-terminated copies, so the C++ side calls nothing of PostgreSQL's
    int action_count;
};

// Reads the inline projections into rows (PostgreSQL side: plain values only).
int ReadInlineProjections(ProjectionRow **rows) {
    Oid schema = get_namespace_oid("amebo", true);
    Oid relid = OidIsValid(schema) ? get_relname_relid("projections", schema) : InvalidOid;
    g_projections_relid = relid;
    *rows = nullptr;
    if (!OidIsValid(relid))
        return 0;
    // As the tables' owner: appending needs no privilege on amebo.projections.
    pg::OwnerAccess owner = pg::EnterOwnerAccess();
    SPI_connect();
    // A fresh snapshot: the caller's may predate the change whose invalidation brought us
    // here (REPEATABLE READ, or a statement that waited for a lock), and the cache would
    // then keep the old rows until the next change.
    PushActiveSnapshot(GetLatestSnapshot());
    uint64 count = SpiQuery("SELECT name, handler::oid, actions FROM amebo.projections "
                            "WHERE mode = 'inline' AND state = 'running' ORDER BY name",
                            0, nullptr, nullptr, true);
    MemoryContext spi = MemoryContextSwitchTo(CurTransactionContext);
    *rows = static_cast<ProjectionRow *>(palloc0(sizeof(ProjectionRow) * (count + 1)));
    MemoryContextSwitchTo(spi);
    for (uint64 i = 0; i < count; i++) {
        HeapTuple tuple = SPI_tuptable->vals[i];
        TupleDesc desc = SPI_tuptable->tupdesc;
        bool isnull;
        ProjectionRow &row = (*rows)[i];
        MemoryContext old = MemoryContextSwitchTo(CurTransactionContext);
        row.name = SPI_getvalue(tuple, desc, 1);
        row.handler = DatumGetObjectId(SPI_getbinval(tuple, desc, 2, &isnull));
        Datum actions = SPI_getbinval(tuple, desc, 3, &isnull);
        if (!isnull) {
            bool *nulls;
            Datum *elements;
            deconstruct_array(DatumGetArrayTypePCopy(actions), TEXTOID, -1, false, TYPALIGN_INT,
                              &elements, &nulls, &row.action_count);
            row.actions = static_cast<char **>(palloc(sizeof(char *) * (row.action_count + 1)));
            for (int a = 0; a < row.action_count; a++)
                row.actions[a] = TextDatumGetCString(elements[a]);
        }
        MemoryContextSwitchTo(old);
    }
    PopActiveSnapshot();
    SPI_finish();
    pg::LeaveOwnerAccess(owner);
    return static_cast<int>(count);
}

// Loads the cache if an invalidation emptied it.
void EnsureLoaded() {
    pg::Call([] { AcceptInvalidationMessages(); });
    if (g_loaded)
        return;
    ProjectionRow *rows = nullptr;
    int count = pg::Call([&] { return ReadInlineProjections(&rows); });
    std::vector<InlineProjection> projections(count);
    for (int i = 0; i < count; i++) {
        projections[i].name = rows[i].name;
        Oid handler = rows[i].handler;
        FmgrInfo *info = &projections[i].handler;
        pg::Call([&] { fmgr_info_cxt(handler, info, TopMemoryContext); });
        for (int a = 0; a < rows[i].action_count; a++)
            projections[i].actions.emplace_back(rows[i].actions[a]);
    }
    g_projections = std::make_shared<const std::vector<InlineProjection>>(std::move(projections));
    // Without amebo.projections (extension 1.1 or older) nothing would ever invalidate the
    // cache once an upgrade creates it, so look again at the next append (a cheap miss).
    g_loaded = OidIsValid(g_projections_relid);
}

// True when the projection wants events of this action.
bool Wants(const InlineProjection &projection, std::string_view action) {
    if (projection.actions.empty())
        return true;
    for (const auto &wanted : projection.actions)
        if (wanted == action)
            return true;
    return false;
}

// Empties the cache when amebo.projections changes (or everything is invalidated).
void OnRelcacheInvalidation(Datum, Oid relid) {
    if (relid == InvalidOid || relid == g_projections_relid)
        g_loaded = false;
}

// Forgets the EXECUTE verdicts when pg_proc, pg_authid or pg_auth_members changes.
void OnPrivilegeInvalidation(Datum, int, uint32) {
    g_privileges_generation++;
}

// Raises 42501 unless the current role may execute the projection's handler. The verdict is
// remembered per role, as pg_proc_aclcheck depends only on the role and those catalogs.
void RequireExecuteNow(const InlineProjection &projection) {
    Oid role = GetUserId();
    uint64 generation = g_privileges_generation;
    if (projection.allowed_role == role && projection.allowed_generation == generation)
        return;
    // The generation read before the check: an invalidation taken during it voids the verdict.
    pg::RequireExecute(projection.handler.fn_oid, role);
    projection.allowed_role = role;
    projection.allowed_generation = generation;
}

// Calls each projection that wants each event, in order (PostgreSQL side: the caller holds
// the list). Handlers run as the appending role, as triggers run as the role that fires
// them, which must be allowed to execute them (fmgr checks nothing).
void CallProjections(const std::vector<InlineProjection> &projections,
                     const store::NewEvent *events, const Datum *rows, int count) {
    for (int i = 0; i < count; i++) {
        std::string_view action = pg::TextView(events[i].action);
        for (const InlineProjection &projection : projections) {
            if (!Wants(projection, action))
                continue;
            RequireExecuteNow(projection);
            CallHandler(const_cast<FmgrInfo *>(&projection.handler), rows[i]);
        }
    }
}

} // namespace

void CallHandler(FmgrInfo *handler, Datum event) {
    LOCAL_FCINFO(fcinfo, 1);
    InitFunctionCallInfoData(*fcinfo, handler, 1, InvalidOid, nullptr, nullptr);
    fcinfo->args[0].value = event;
    fcinfo->args[0].isnull = false;
    (void)FunctionCallInvoke(fcinfo);
}

bool HaveInlineProjections() {
    EnsureLoaded();
    return !g_projections->empty();
}

void DispatchInline(const store::NewEvent *events, const Datum *rows, int count) {
    std::shared_ptr<const std::vector<InlineProjection>> projections = g_projections;
    pg::Call([&] { CallProjections(*projections, events, rows, count); });
}

void InitInlineProjections() {
    CacheRegisterRelcacheCallback(OnRelcacheInvalidation, (Datum)0);
    CacheRegisterSyscacheCallback(PROCOID, OnPrivilegeInvalidation, (Datum)0);
    CacheRegisterSyscacheCallback(AUTHOID, OnPrivilegeInvalidation, (Datum)0);
    CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, OnPrivilegeInvalidation, (Datum)0);
}

} // namespace amebo::state

using namespace amebo;

extern "C" {
PG_FUNCTION_INFO_V1(amebo_call_as_owner);
}

namespace {

// Throws unless handler exists and takes exactly one argument of event_type (calling any other
// function with an event would hand it a row where it reads something else).
void CheckHandlerTakesEvent(Oid handler, Oid event_type) {
    HeapTuple tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(handler));
    if (!HeapTupleIsValid(tuple))
        throw Error("42883", "function with OID " + std::to_string(handler) + " does not exist");
    auto *proc = reinterpret_cast<Form_pg_proc>(GETSTRUCT(tuple));
    bool takes_event = proc->prokind == PROKIND_FUNCTION && proc->pronargs == 1 &&
                       proc->proargtypes.values[0] == event_type;
    ReleaseSysCache(tuple);
    if (!takes_event)
        throw Error(sqlstate::kInvalidParameterValue,
                    "handler must be a function of one amebo.events argument");
}

} // namespace

// amebo_internal.call_as_owner(handler, owner, event): the worker's way to run a handler with the
// owner's privileges only; SECURITY_RESTRICTED_OPERATION stops it from changing role back.
extern "C" Datum amebo_call_as_owner(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        if (!superuser())
            throw Error("42501", "only a superuser may call amebo_internal.call_as_owner");
        if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
            throw Error(sqlstate::kNullValueNotAllowed,
                        "handler, owner and event must not be NULL");
        Oid handler = PG_GETARG_OID(0);
        Oid owner = PG_GETARG_OID(1);
        Datum event = PG_GETARG_DATUM(2);
        CheckHandlerTakesEvent(handler, get_fn_expr_argtype(fcinfo->flinfo, 2));
        pg::RequireExecute(handler, owner);
        Oid saved_user;
        int saved_context;
        GetUserIdAndSecContext(&saved_user, &saved_context);
        SetUserIdAndSecContext(owner, saved_context | SECURITY_LOCAL_USERID_CHANGE |
                                          SECURITY_RESTRICTED_OPERATION);
        FmgrInfo info;
        fmgr_info(handler, &info);
        state::CallHandler(&info, event);
        SetUserIdAndSecContext(saved_user, saved_context);
        PG_RETURN_VOID();
    });
}
