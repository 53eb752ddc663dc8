// Index scans over amebo.events shared by the read functions, state loading and rebuilds.
#pragma once

#include "pg/postgres.hpp"
#include "store/event_table.hpp"

namespace amebo::store {

// What a visitor says about one event, in index order.
enum class Verdict { kTake, kSkip, kStop };

// Called for each event a scan returns.
using Visitor = Verdict (*)(TupleTableSlot *slot, void *state);

// Scans an index of amebo.events forward from keys under snapshot, calling visit for each
// event, until max_taken events were taken (negative: no limit) or visit says stop. Returns
// how many were taken.
int64 ScanEvents(const EventCatalog &catalog, Oid index_oid, Snapshot snapshot, ScanKey keys,
                 int nkeys, int64 max_taken, Visitor visit, void *state);

// Fills keys[0..1] for "stream = stream AND version > after_version" on (stream, version).
void StreamKeys(const EventCatalog &catalog, text *stream, int64 after_version, ScanKey keys);

// Fills key for "position > after_position" on the primary key.
void PositionKey(int64 after_position, ScanKey key);

// read_all's filters, also used by projection rebuilds.
struct EventFilter {
    int64 horizon;  // positions from here on are not settled: stop
    Datum *actions; // nullptr: every action
    int action_count;
    bool has_since;
    TimestampTz since;
    Datum payload_filter; // 0: none
};

// Stops at the horizon, skips what the filter excludes, takes the rest.
Verdict ApplyFilter(const EventFilter &filter, TupleTableSlot *slot);

} // namespace amebo::store
