// Removing and redacting events: the one way past amebo.events' immutability. The trigger on
// amebo.events refuses every UPDATE, DELETE and TRUNCATE (AM003), for the owner too, except
// the DELETE that amebo_internal.remove_events runs and the UPDATE that
// amebo_internal.redact_events runs: each raises a flag in this backend's memory for the
// length of its one statement, which no setting, function argument or other SQL can reach. The SQL
// functions that decide what to remove (truncate_stream, delete_stream, the retention pass) are in
// sql/amebo.sql, section "Retention, deletion, erasure".
#include <string>

#include "core/error.hpp"
#include "pg/guard.hpp"
#include "store/append.hpp"
#include "store/arguments.hpp"
#include "store/event_table.hpp"

extern "C" {
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/acl.h"
}

namespace amebo::store {

namespace {

// The one change of amebo.events the trigger lets through right now, if any.
enum class EventChange { kNone, kDelete, kUpdate };
EventChange g_allowed_change = EventChange::kNone;

// Requires the current user to own amebo.events: only the SECURITY DEFINER functions of the
// extension (which run as its owner) remove events.
void RequireEventsOwner(const EventCatalog &catalog) {
    if (!pg_class_ownercheck(catalog.events, GetUserId()))
        throw Error("42501", "permission denied to remove events", "",
                    "Call amebo.truncate_stream, amebo.delete_stream or amebo.set_retention.");
}

// Runs one statement on amebo.events with the trigger letting this kind of change through;
// returns how many rows it changed.
uint64 RunAllowedChange(EventChange change, const char *sql, int nargs, Oid *argtypes,
                        Datum *args) {
    SPI_connect();
    uint64 changed = 0;
    g_allowed_change = change;
    PG_TRY();
    {
        SPI_execute_with_args(sql, nargs, argtypes, args, nullptr, false, 0);
        changed = SPI_processed;
    }
    PG_FINALLY();
    { g_allowed_change = EventChange::kNone; }
    PG_END_TRY();
    SPI_finish();
    return changed;
}

// True when the trigger's event is the change allowed right now.
bool ChangeAllowed(TriggerEvent event) {
    return (TRIGGER_FIRED_BY_DELETE(event) && g_allowed_change == EventChange::kDelete) ||
           (TRIGGER_FIRED_BY_UPDATE(event) && g_allowed_change == EventChange::kUpdate);
}

} // namespace

} // namespace amebo::store

using namespace amebo;
using namespace amebo::store;

extern "C" {
PG_FUNCTION_INFO_V1(amebo_refuse_event_change);
PG_FUNCTION_INFO_V1(amebo_lock_stream);
PG_FUNCTION_INFO_V1(amebo_remove_events);
PG_FUNCTION_INFO_V1(amebo_redact_events);
}

// Trigger of amebo.events: refuses every UPDATE, DELETE and TRUNCATE (AM003) but the DELETE
// of remove_events.
extern "C" Datum amebo_refuse_event_change(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        if (!CALLED_AS_TRIGGER(fcinfo))
            throw Error(sqlstate::kFeatureNotSupported, "refuse_event_change is a trigger");
        auto *trigger = reinterpret_cast<TriggerData *>(fcinfo->context);
        if (ChangeAllowed(trigger->tg_event))
            return PointerGetDatum(nullptr);
        const char *operation = TRIGGER_FIRED_BY_UPDATE(trigger->tg_event)   ? "UPDATE"
                                : TRIGGER_FIRED_BY_DELETE(trigger->tg_event) ? "DELETE"
                                                                             : "TRUNCATE";
        throw Error(sqlstate::kImmutableEvent, "events are immutable",
                    std::string(operation) + " on amebo.events is not allowed.",
                    "Append a compensating event instead.");
    });
}

// amebo_internal.lock_stream(stream): holds the stream's append lock until the transaction
// ends, once no other open transaction has appended to it; returns its head.
extern "C" Datum amebo_lock_stream(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        text *stream = StreamArgument(fcinfo, 0);
        RequireEventsOwner(LookupEventCatalog());
        return Int64GetDatum(LockStreamForRemoval(stream));
    });
}

// amebo_internal.remove_events(positions): deletes the events at these positions; returns
// how many it deleted.
extern "C" Datum amebo_remove_events(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        if (PG_ARGISNULL(0))
            NullArgument("positions");
        RequireEventsOwner(LookupEventCatalog());
        Oid argtypes[1] = {INT8ARRAYOID};
        Datum args[1] = {PG_GETARG_DATUM(0)};
        return Int64GetDatum(static_cast<int64>(RunAllowedChange(
            EventChange::kDelete, "DELETE FROM amebo.events WHERE position = ANY ($1)", 1, argtypes,
            args)));
    });
}

// amebo_internal.redact_events(stream, paths): removes the paths (checked by amebo.redact)
// from the payload and metadata of the stream's events; returns how many events changed.
// Validation does not run again: a redacted payload keeps its schema_version.
extern "C" Datum amebo_redact_events(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        text *stream = StreamArgument(fcinfo, 0);
        if (PG_ARGISNULL(1))
            NullArgument("paths");
        RequireEventsOwner(LookupEventCatalog());
        Oid argtypes[2] = {TEXTOID, TEXTARRAYOID};
        Datum args[2] = {PointerGetDatum(stream), PG_GETARG_DATUM(1)};
        return Int64GetDatum(static_cast<int64>(RunAllowedChange(
            EventChange::kUpdate,
            "UPDATE amebo.events e "
            "SET payload = amebo_internal.without_paths(e.payload, $2), "
            "metadata = amebo_internal.without_paths(e.metadata, $2) "
            "WHERE e.stream = $1 "
            "AND (e.payload OPERATOR(pg_catalog.<>) amebo_internal.without_paths(e.payload, $2) "
            "OR e.metadata OPERATOR(pg_catalog.<>) amebo_internal.without_paths(e.metadata, $2))",
            2, argtypes, args)));
    });
}
