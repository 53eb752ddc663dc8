// The delivery service's slot and catch-up (see service.hpp).
//
// Start: find or create the slot. A new slot (first start, or a promoted standby, which has
// no slots in PostgreSQL 15) begins at "now", so events after the delivery checkpoint that
// committed before it are caught up from the events table first; events the slot will also
// carry are skipped there. Then: decode, dispatch, send, record, confirm (service.cpp).
#include "delivery/service.hpp"

#include <algorithm>
#include <cstring>

#include "pg/guard.hpp"
#include "settings.hpp"

extern "C" {
#include "access/xlog.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
}

namespace amebo::delivery {

namespace {

// Events caught up per chunk.
constexpr int kCatchUpChunk = 1000;
// Intervals, in microseconds.
constexpr int64_t kStartRetry = 5 * 1000000L;
constexpr int64_t kStopPause = 1000000L;

// Lets this process use amebo as an output plugin where the server limits output plugins to
// a list (output_plugin_libraries, in recent minor releases): the worker decodes with its
// own library, which it trusts; other sessions keep the configured list.
void TrustOwnOutputPlugin() {
    pg::Call([] {
        const char *libraries = GetConfigOption("output_plugin_libraries", true, false);
        if (libraries == nullptr || strstr(libraries, "amebo") != nullptr)
            return;
        char *extended = psprintf("%s%samebo", libraries, libraries[0] ? ", " : "");
        SetConfigOption("output_plugin_libraries", extended, PGC_SUSET, PGC_S_SESSION);
    });
}

} // namespace

void DeliveryService::Stop() {
    if (QueueIsOpen())
        CloseQueue();
    http_.reset();
    dispatcher_.reset();
    active_ = false;
    catching_up_ = false;
    next_start_check_ = Now() + kStopPause;
}

// Starts delivery when the extension is installed and wal_level allows; true when active.
bool DeliveryService::Start() {
    next_start_check_ = now_ + kStartRetry;
    if (!XLogLogicalInfoActive())
        return false;
    bool installed = DeliveryInstalled();
    slot_name_ = "amebo_" + std::to_string(MyDatabaseId);
    if (!installed) {
        // Without the extension, a slot left behind would keep WAL forever.
        DropIdleSlot(slot_name_);
        return false;
    }
    TrustOwnOutputPlugin();
    extension_ = ExtensionOid();
    std::optional<SavedCheckpoint> saved = LoadCheckpoint();
    DispatchSettings limits = CurrentSettings();
    dispatcher_ = std::make_unique<Dispatcher>(limits);
    http_ = std::make_unique<HttpClient>(static_cast<long>(limits.max_requests),
                                         static_cast<long>(limits.max_requests_per_subscription));
    LoadSubscriptions();
    skip_positions_.clear();
    checkpoint_candidates_.clear();
    confirmed_ = 0;
    checkpoint_ = saved ? saved->position : 0;
    if (!saved && SlotExists(slot_name_.c_str())) {
        // A slot without a checkpoint is left from an earlier installation of amebo.
        DropSlot(slot_name_);
    }
    DropLostSlot();
    if (!SlotExists(slot_name_.c_str())) {
        BeginCatchUp(saved ? checkpoint_ : -1);
    } else if (saved && saved->catch_up_through > checkpoint_) {
        // The worker stopped during a catch-up: finish it before reading the slot.
        catch_up_after_ = checkpoint_;
        catch_up_through_ = saved->catch_up_through;
        skip_through_ = saved->slot_skip_through;
        catching_up_ = true;
    } else {
        skip_through_ = checkpoint_;
        OpenQueue(slot_name_.c_str());
    }
    active_ = true;
    return true;
}

// Drops the slot if PostgreSQL invalidated it (its WAL passed max_slot_wal_keep_size), so
// that a new one is created and the events after the checkpoint come from the events table.
void DeliveryService::DropLostSlot() {
    if (delivery::DropLostSlot(slot_name_))
        ereport(WARNING,
                (errmsg("amebo: replication slot \"%s\" was invalidated; catching up from the "
                        "delivery checkpoint (position %lld) instead",
                        slot_name_.c_str(), static_cast<long long>(checkpoint_)),
                 errhint("The slot kept more WAL than max_slot_wal_keep_size while delivery "
                         "lagged.")));
}

// Creates the slot and plans the catch-up of what committed before it, after checkpoint
// (-1: no checkpoint yet; then from the oldest subscription's start).
void DeliveryService::BeginCatchUp(int64_t checkpoint) {
    CreateSlot(slot_name_);
    // Every position at or below settled committed before this point, after the slot's start.
    int64_t settled = SettledPosition();
    int64_t head = HeadPosition();
    if (checkpoint < 0)
        checkpoint = OldestSubscriptionStart();
    skip_through_ = std::max(checkpoint, settled);
    catch_up_after_ = checkpoint;
    catch_up_through_ = head;
    checkpoint_ = checkpoint;
    catching_up_ = true;
    PlanCatchUp(slot_name_, checkpoint, head, skip_through_);
    ereport(LOG, (errmsg("amebo: created replication slot \"%s\"; catching up events %lld to "
                         "%lld from the events table",
                         slot_name_.c_str(), static_cast<long long>(checkpoint + 1),
                         static_cast<long long>(head))));
}

// Feeds the next chunk of caught-up events once the previous one is handled; opens the queue
// when all are.
void DeliveryService::CatchUp() {
    if (!dispatcher_->Settled())
        return;
    // Every event up to here is handled: at or below the checkpoint, or caught up.
    checkpoint_candidates_.push_back({std::min(catch_up_after_, skip_through_), 0});
    if (catch_up_after_ >= catch_up_through_) {
        catching_up_ = false;
        checkpoint_candidates_.push_back({skip_through_, 0});
        Record(true);
        EndCatchUp(slot_name_, checkpoint_);
        OpenQueue(slot_name_.c_str());
        return;
    }
    if (subscription_changes_() != loaded_changes_)
        LoadSubscriptions();
    std::vector<FeedEvent> events =
        EventsBetween(catch_up_after_, catch_up_through_, kCatchUpChunk);
    for (FeedEvent &event : events) {
        catch_up_after_ = event.position;
        if (event.position > skip_through_)
            skip_positions_.insert(event.position);
        dispatcher_->AddEvent(std::move(event), now_);
    }
    dispatcher_->EndTransaction(0);
    if (events.empty())
        catch_up_after_ = catch_up_through_;
}

} // namespace amebo::delivery
