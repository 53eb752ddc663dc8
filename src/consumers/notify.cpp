// The per-backend cache of active consumers and the NOTIFY of the append path.
#include "consumers/notify.hpp"

#include <string>
#include <string_view>
#include <vector>

#include "pg/guard.hpp"
#include "pg/owner_access.hpp"
#include "pg/text_view.hpp"

extern "C" {
#include "commands/async.h"
#include "executor/spi.h"
}

namespace amebo::consumers {

namespace {

constexpr char kChannel[] = "amebo_consumer";

// An active consumer: its name and the actions it takes (empty: every action).
struct Consumer {
    std::string name;
    std::vector<std::string> actions;
};

// The rows of amebo.consumers' active consumers, one per (name, action), read with SPI
// (PostgreSQL side: plain values only). action is nullptr for a consumer of every action.
struct ConsumerRows {
    int count;
    char **names;
    char **actions;
};

std::vector<Consumer> g_consumers;
bool g_stale = true;
Oid g_consumers_relid = InvalidOid;

// Reads the active consumers, one row per action, as the tables' owner; none when the
// extension predates consumers.
void ReadConsumers(ConsumerRows *out) {
    out->count = 0;
    Oid schema = get_namespace_oid("amebo", true);
    g_consumers_relid = OidIsValid(schema) ? get_relname_relid("consumers", schema) : InvalidOid;
    if (!OidIsValid(g_consumers_relid))
        return;
    MemoryContext caller = CurrentMemoryContext;
    pg::OwnerAccess owner = pg::EnterOwnerAccess();
    SPI_connect();
    // A fresh snapshot, as for the action rules: the caller's may predate the change.
    PushActiveSnapshot(GetLatestSnapshot());
    SPI_execute("SELECT c.name, a.action FROM amebo.consumers c "
                "LEFT JOIN LATERAL unnest(c.actions) AS a(action) ON true "
                "WHERE c.state = 'active' ORDER BY c.name",
                true, 0);
    MemoryContext spi = MemoryContextSwitchTo(caller);
    out->count = static_cast<int>(SPI_processed);
    out->names = static_cast<char **>(palloc(sizeof(char *) * (out->count + 1)));
    out->actions = static_cast<char **>(palloc(sizeof(char *) * (out->count + 1)));
    for (int i = 0; i < out->count; i++) {
        out->names[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
        out->actions[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
    }
    MemoryContextSwitchTo(spi);
    PopActiveSnapshot();
    SPI_finish();
    pg::LeaveOwnerAccess(owner);
}

// The active consumers, reloaded when amebo.consumers changed since the last load.
const std::vector<Consumer> &ActiveConsumers() {
    pg::Call([] { AcceptInvalidationMessages(); });
    if (!g_stale)
        return g_consumers;
    ConsumerRows rows;
    pg::Call([&] { ReadConsumers(&rows); });
    g_consumers.clear();
    for (int i = 0; i < rows.count; i++) {
        if (g_consumers.empty() || g_consumers.back().name != rows.names[i])
            g_consumers.push_back(Consumer{rows.names[i], {}});
        if (rows.actions[i] != nullptr)
            g_consumers.back().actions.emplace_back(rows.actions[i]);
    }
    g_stale = false;
    return g_consumers;
}

// True when the consumer takes an event of this action.
bool Takes(const Consumer &consumer, std::string_view action) {
    if (consumer.actions.empty())
        return true;
    for (const std::string &taken : consumer.actions)
        if (taken == action)
            return true;
    return false;
}

// Marks the cache stale when amebo.consumers is invalidated (or everything is). Before the
// table is known (not loaded yet, or an extension older than consumers) any invalidation
// does, so that the table's creation is noticed; reloading then costs a catalog lookup.
void OnRelcacheInvalidation(Datum, Oid relid) {
    if (relid == InvalidOid || relid == g_consumers_relid || !OidIsValid(g_consumers_relid))
        g_stale = true;
}

} // namespace

void NotifyConsumers(const store::NewEvent *events, int count) {
    const std::vector<Consumer> &consumers = ActiveConsumers();
    for (const Consumer &consumer : consumers) {
        for (int i = 0; i < count; i++) {
            if (Takes(consumer, pg::TextView(events[i].action))) {
                pg::Call([&] { Async_Notify(kChannel, consumer.name.c_str()); });
                break;
            }
        }
    }
}

void InitConsumerNotify() {
    CacheRegisterRelcacheCallback(OnRelcacheInvalidation, (Datum)0);
}

} // namespace amebo::consumers
