// The horizon read_all stops at: from shared memory on a primary, from the published row on a
// standby (see settled_horizon.hpp).
#include "store/settled_horizon.hpp"

#include "store/inflight.hpp"

extern "C" {
#include "access/tableam.h"
#include "access/xlog.h"
}

namespace amebo::store {

namespace {

// Attribute number of amebo.settled_horizon's position column.
constexpr AttrNumber kPublishedPosition = 2;

// amebo.settled_horizon, or InvalidOid while the extension is older than 1.6.
Oid PublishedHorizonTable() {
    return get_relname_relid("settled_horizon", get_namespace_oid("amebo", false));
}

// The settled position the primary's worker published, as snapshot sees it (0 before the
// first publication).
int64 PublishedPosition(Oid table, Snapshot snapshot) {
    Relation heap = table_open(table, AccessShareLock);
    TupleTableSlot *slot = table_slot_create(heap, nullptr);
    TableScanDesc scan = table_beginscan(heap, snapshot, 0, nullptr);
    int64 position = 0;
    if (table_scan_getnextslot(scan, ForwardScanDirection, slot)) {
        bool isnull;
        Datum value = slot_getattr(slot, kPublishedPosition, &isnull);
        position = isnull ? 0 : DatumGetInt64(value);
    }
    table_endscan(scan);
    ExecDropSingleTupleTableSlot(slot);
    table_close(heap, AccessShareLock);
    return position;
}

} // namespace

SettledSnapshot TakeSettledSnapshot(const EventCatalog &catalog) {
    Oid published = RecoveryInProgress() ? PublishedHorizonTable() : InvalidOid;
    if (!OidIsValid(published)) {
        // A primary (or a standby still on an extension older than 1.6): the horizon first,
        // the snapshot second, see inflight.hpp.
        int64 horizon = inflight::SafeHorizon(catalog.position_sequence);
        return SettledSnapshot{RegisterSnapshot(GetLatestSnapshot()), horizon};
    }
    // A standby: the snapshot first, then the horizon it sees.
    Snapshot snapshot = RegisterSnapshot(GetLatestSnapshot());
    return SettledSnapshot{snapshot, PublishedPosition(published, snapshot) + 1};
}

} // namespace amebo::store
