// Publishing the settled position for hot standbys (see horizon_pass.hpp), through the
// one-transaction SQL runner.
#include "worker/horizon_pass.hpp"

#include <algorithm>

#include "pg/sql_runner.hpp"
#include "settings.hpp"
#include "worker/pass_errors.hpp"
#include "worker/shared_state.hpp"

namespace amebo::worker {

namespace {

// True when amebo.settled_horizon exists in this database (extension version 1.6 or later).
bool HorizonInstalled() {
    return pg::RunSqlValue("SELECT pg_catalog.to_regclass('amebo.settled_horizon') IS NOT NULL") ==
           "t";
}

// Writes the settled position into amebo.settled_horizon when it differs (inserting the row
// the first time); an unchanged position writes nothing, not even a row lock. The position is
// computed before the write, so this commit comes after the commit of every event at or below
// it in WAL. Nobody waits for it to be durable (a standby just sees it a little later), so the
// commit does not wait for the WAL flush.
void PublishSettledPosition() {
    pg::RunSql("WITH settled AS (SELECT amebo.settled_position() AS position "
               "                 FROM pg_catalog.set_config('synchronous_commit', 'off', true)), "
               "updated AS (UPDATE amebo.settled_horizon h "
               "            SET position = settled.position, published_at = pg_catalog.now() "
               "            FROM settled WHERE h.position <> settled.position) "
               "INSERT INTO amebo.settled_horizon (position) SELECT settled.position FROM settled "
               "WHERE NOT EXISTS (SELECT FROM amebo.settled_horizon)");
}

// Publishes; false when amebo.settled_horizon does not exist.
bool PublishIfInstalled() {
    if (!HorizonInstalled())
        return false;
    PublishSettledPosition();
    return true;
}

} // namespace

void HorizonSchedule::RunIfDue() {
    if (settings::standby_horizon_interval == 0)
        return;
    uint64 ends = AppendEnds();
    TimestampTz now = GetCurrentTimestamp();
    if (ends == published_ends || now < next_run)
        return;
    // ends was read before publishing: an append that ends meanwhile is published next time.
    // Until CREATE EXTENSION (or the update to 1.6), and after an error, look again every
    // naptime.
    if (RunPassLoggingErrors(PublishIfInstalled)) {
        published_ends = ends;
        next_run = now + settings::standby_horizon_interval * INT64CONST(1000);
    } else {
        next_run = now + settings::worker_naptime * INT64CONST(1000);
    }
}

long HorizonSchedule::WaitMilliseconds() const {
    long longest = settings::worker_naptime;
    if (settings::standby_horizon_interval == 0 || WakeAtNextAppendEnd(published_ends))
        return longest;
    long until_due = static_cast<long>((next_run - GetCurrentTimestamp()) / 1000);
    return std::clamp(until_due, 0L, longest);
}

} // namespace amebo::worker
