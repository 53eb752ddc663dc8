// The statements the delivery service runs (each in a transaction of its own, through
// pg/sql_runner) and their rows mapped to its types. PostgreSQL side; errors come back as
// pg::PgError.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/delivery/dispatcher.hpp"

namespace amebo::delivery {

// The delivery checkpoint as amebo.delivery_checkpoint keeps it.
struct SavedCheckpoint {
    int64_t position = 0;          // every event at or below is handled
    int64_t catch_up_through = 0;  // a catch-up in progress ends here
    int64_t slot_skip_through = 0; // the slot's events at or below were caught up
};

// A candidate for the next checkpoint: the position every event at or below is committed,
// and the WAL insert position, measured together.
struct CheckpointMeasurement {
    int64_t settled = 0;
    uint64_t wal_insert = 0;
};

// Stored messages that are due, by message id.
using DueMessages = std::map<int64_t, StoredMessage>;

// Which ordered subscriptions are blocked by stored messages, and when the next stored message
// is due (PostgreSQL microseconds), if one is.
struct DueSchedule {
    std::vector<int64_t> blocked;
    std::optional<int64_t> next_due_at;
};

// True when amebo is installed here with its delivery tables.
bool DeliveryInstalled();

// The OID of the amebo extension, as text ("" when it is not installed).
std::string ExtensionOid();

// Drops the slot if no process uses it.
void DropIdleSlot(const std::string &slot);

// Drops the slot.
void DropSlot(const std::string &slot);

// Drops the slot if PostgreSQL invalidated it and no process uses it; true when it did.
bool DropLostSlot(const std::string &slot);

// Creates the logical slot with amebo's output plugin.
void CreateSlot(const std::string &slot);

// The saved checkpoint, if any.
std::optional<SavedCheckpoint> LoadCheckpoint();

// amebo.settled_position().
int64_t SettledPosition();

// The highest event position, or 0.
int64_t HeadPosition();

// The oldest subscription's start position, or else the head, or 0.
int64_t OldestSubscriptionStart();

// Records the catch-up of events after checkpoint through head, whose slot events at or below
// skip_through are skipped.
void PlanCatchUp(const std::string &slot, int64_t checkpoint, int64_t head, int64_t skip_through);

// Records that the catch-up ended at checkpoint.
void EndCatchUp(const std::string &slot, int64_t checkpoint);

// Up to limit events after position after, through position through, in order.
std::vector<FeedEvent> EventsBetween(int64_t after, int64_t through, int limit);

// Every subscription with its application's secret, and the replaced one while it still signs.
std::vector<Subscription> LoadSubscriptions();

// This database's shard of amebo_router (amebo.shard_identity), or -1 when it is not a shard.
int LoadShard();

// Up to limit stored messages that are due, leaving out the keys skip (MessageKey::Text()).
DueMessages LoadDueMessages(const std::vector<std::string> &skip, int limit);

// The blocked ordered subscriptions and when the next stored message is due, leaving out the
// keys skip.
DueSchedule LoadDueSchedule(const std::vector<std::string> &skip);

// Writes the outcomes (Dispatcher::TakeRecords()) and, if given, the checkpoint; measures a
// checkpoint candidate in the same transaction.
std::optional<CheckpointMeasurement> RecordDeliveries(const std::string &records,
                                                      std::optional<int64_t> checkpoint,
                                                      const std::string &slot);

// Measures a checkpoint candidate.
CheckpointMeasurement MeasureCheckpoint();

// Removes delivery log rows older than retention_seconds.
void PruneDeliveryLog(int retention_seconds);

} // namespace amebo::delivery
