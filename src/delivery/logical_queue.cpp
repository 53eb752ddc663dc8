// In-process logical decoding of amebo's slot (see logical_queue.hpp).
#include "delivery/logical_queue.hpp"

#include "core/delivery/feed_event.hpp"
#include "pg/guard.hpp"

extern "C" {
#include "access/xlog.h"
#include "access/xlogreader.h"
#include "access/xlogutils.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/slot.h"
#include "utils/resowner.h"
}

namespace amebo::delivery {

namespace {

// The decoding context while the queue is open, and where its output goes during a read.
LogicalDecodingContext *g_context = nullptr;
QueueSink *g_sink = nullptr;
size_t g_records = 0;
// True while decoding runs; still true after an error escaped decoding, whose state is then
// unknown.
bool g_decoding = false;

// Nothing to prepare: the output buffer is the context's own.
void PrepareWrite(LogicalDecodingContext *ctx, XLogRecPtr, TransactionId, bool) {
    resetStringInfo(ctx->out);
}

// Hands one plugin record to the sink (called by PostgreSQL, inside decoding).
void Write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId, bool) {
    pg::EntryVoid([&] {
        std::string_view record(ctx->out->data, ctx->out->len);
        if (record.size() == 1 && record[0] == kCommitMarker) {
            g_sink->Commit(lsn);
        } else {
            g_sink->Event(record);
            g_records++;
        }
    });
}

// Creates the decoding context for the acquired slot (PostgreSQL side).
void StartDecoding() {
    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    static XLogReaderRoutine routine = {read_local_xlog_page, wal_segment_open, wal_segment_close};
    g_context = CreateDecodingContext(InvalidXLogRecPtr, NIL, false, &routine, PrepareWrite, Write,
                                      nullptr);
    MemoryContextSwitchTo(old);
    XLogBeginRead(g_context->reader, MyReplicationSlot->data.restart_lsn);
}

// Decodes records up to end (flushed WAL) or max_records (PostgreSQL side).
XLogRecPtr DecodeAvailable(size_t max_records, XLogRecPtr end) {
    ResourceOwner owner = CurrentResourceOwner;
    g_decoding = true;
    while (g_context->reader->EndRecPtr < end && g_records < max_records) {
        char *message = nullptr;
        XLogRecord *record = XLogReadRecord(g_context->reader, &message);
        if (message != nullptr)
            elog(ERROR, "could not read WAL for amebo's logical queue: %s", message);
        if (record == nullptr)
            break;
        LogicalDecodingProcessRecord(g_context, g_context->reader);
        CHECK_FOR_INTERRUPTS();
    }
    // Decoding runs transactions of its own; they may leave another owner current.
    CurrentResourceOwner = owner;
    g_decoding = false;
    return g_context->reader->EndRecPtr;
}

} // namespace

bool SlotExists(const char *slot_name) {
    return pg::Call([&] {
        LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
        bool found = SearchNamedReplicationSlot(slot_name, false) != nullptr;
        LWLockRelease(ReplicationSlotControlLock);
        return found;
    });
}

void OpenQueue(const char *slot_name) {
    pg::Call([&] {
        ReplicationSlotAcquire(slot_name, true);
        StartDecoding();
    });
}

bool QueueIsOpen() {
    return g_context != nullptr;
}

uint64_t FlushedWal() {
    return GetFlushRecPtr(nullptr);
}

uint64_t ReadQueue(QueueSink *sink, size_t max_records, uint64_t up_to) {
    g_sink = sink;
    g_records = 0;
    XLogRecPtr end = pg::Call([&] { return DecodeAvailable(max_records, up_to); });
    g_sink = nullptr;
    return end;
}

void ConfirmQueue(uint64_t lsn) {
    pg::Call([&] {
        LogicalConfirmReceivedLocation(lsn);
        ReplicationSlotMarkDirty();
    });
}

void CloseQueue() {
    if (g_context == nullptr)
        return;
    pg::Call([&] {
        if (g_decoding)
            ereport(FATAL, (errmsg("amebo: logical decoding failed; the worker restarts")));
        FreeDecodingContext(g_context);
        g_context = nullptr;
        ReplicationSlotRelease();
    });
}

} // namespace amebo::delivery
