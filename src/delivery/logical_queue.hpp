// The logical queue: amebo's replication slot, decoded in-process by the worker with the
// output plugin (output_plugin.cpp), like a walsender does, so that reading continues where
// it stopped instead of decoding again from the slot's restart point on each read.
// PostgreSQL side; callable from C++ (errors come back as pg::PgError).
#pragma once

#include <cstdint>
#include <string_view>

namespace amebo::delivery {

// Receives what the plugin writes, in commit order.
class QueueSink {
  public:
    virtual ~QueueSink() = default;
    // One event record (core/delivery/feed_event.hpp).
    virtual void Event(std::string_view record) = 0;
    // The end of a transaction that wrote events, at WAL position lsn.
    virtual void Commit(uint64_t lsn) = 0;
};

// True when a slot of that name exists.
bool SlotExists(const char *slot_name);

// Acquires the slot and starts decoding from its restart point.
void OpenQueue(const char *slot_name);

// True between OpenQueue() and CloseQueue().
bool QueueIsOpen();

// The end of the WAL flushed so far.
uint64_t FlushedWal();

// Decodes the WAL up to up_to (at most FlushedWal()), stopping early once max_records were
// written; returns the position read up to.
uint64_t ReadQueue(QueueSink *sink, size_t max_records, uint64_t up_to);

// Tells the slot that everything before lsn is handled (the WAL before it may go).
void ConfirmQueue(uint64_t lsn);

// Stops decoding and releases the slot.
void CloseQueue();

} // namespace amebo::delivery
