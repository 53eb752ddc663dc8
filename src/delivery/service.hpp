// Webhook delivery as the worker runs it: the logical queue in, the dispatcher in the middle,
// HTTP out, and the bookkeeping written back to amebo's tables. PostgreSQL side (through
// queries.hpp and the queue); one instance lives in the worker process. Its methods live in
// service.cpp (what runs when: reading, fetching, recording, waiting) and slot.cpp (the slot's
// life and the catch-up from the events table).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "core/delivery/dispatcher.hpp"
#include "delivery/http_client.hpp"
#include "delivery/logical_queue.hpp"
#include "delivery/queries.hpp"

namespace amebo::delivery {

// The delivery side of the worker.
class DeliveryService : private QueueSink {
  public:
    // Reads how many transactions changed subscriptions so far (counted at their commit).
    using ChangeCounter = uint64_t (*)();

    // subscription_changes: the counter the worker keeps for sessions that change
    // subscriptions; a new count makes the service load them again.
    explicit DeliveryService(ChangeCounter subscription_changes);
    ~DeliveryService() override;

    // One turn: start when possible, take in new events, send requests, write down outcomes.
    // subscriptions_changed: a transaction changed subscriptions or stored messages.
    void Step(bool subscriptions_changed);

    // Waits up to timeout_ms (shortened to the next thing to do) for the latch, HTTP sockets
    // or postmaster death, then takes in the requests that finished.
    void Wait(long timeout_ms);

    // Stops decoding and drops requests in flight (they are delivered again later).
    void Stop();

    // True while delivery runs (the extension is installed and wal_level is logical).
    bool Active() const { return active_; }

    // Per subscription figures, for the status view.
    std::vector<SubscriptionFigures> Figures() const;

  private:
    void Event(std::string_view record) override;
    void Commit(uint64_t lsn) override;

    bool Start();
    void DropLostSlot();
    void BeginCatchUp(int64_t checkpoint);
    void CatchUp();
    void LoadSubscriptions();
    void ReadNew();
    size_t ReadBatch() const;
    void FetchDue();
    void Record(bool force);
    void Confirm();
    void MeasureCheckpoint();
    void Prune();
    void RefreshTargetRules();
    void LimitCpu();
    int64_t Now() const;
    static DispatchSettings CurrentSettings();

    ChangeCounter subscription_changes_;
    std::unique_ptr<Dispatcher> dispatcher_;
    std::unique_ptr<HttpClient> http_;
    std::string slot_name_;
    std::string extension_; // the OID of the amebo extension delivery started with
    bool active_ = false;
    int64_t next_start_check_ = 0;
    bool catching_up_ = false;
    int64_t catch_up_after_ = 0; // events at or below are handled
    int64_t catch_up_through_ = 0;
    std::unordered_set<int64_t> skip_positions_; // caught up from the table, also in the slot
    int64_t skip_through_ = 0;
    uint64_t confirmed_ = 0;
    bool more_to_read_ = false;  // the last read stopped before the flushed end of WAL
    uint64_t read_up_to_ = 0;    // where the last read of the queue ended
    uint64_t measured_read_ = 0; // read_up_to_ when the last idle measurement was taken
    int64_t next_measure_ = 0;
    // Checkpoint candidates, oldest first; one becomes the checkpoint once the queue is
    // confirmed past its WAL position.
    std::deque<CheckpointMeasurement> checkpoint_candidates_;
    int64_t checkpoint_ = 0;
    int64_t last_record_ = 0;
    int64_t next_due_fetch_ = 0;
    int64_t next_subscription_load_ = 0;
    uint64_t loaded_changes_ = 0; // the subscription change count the list was loaded at
    int64_t next_prune_ = 0;
    int64_t now_ = 0;
    std::shared_ptr<const TargetRules> targets_; // what new requests may reach
    uint64_t targets_version_ = 0;               // settings::TargetRulesVersion() of targets_
    int64_t cpu_window_start_ = 0;    // when the current window of amebo.worker_cpu_limit began
    int64_t cpu_at_window_start_ = 0; // the process's CPU time then, microseconds
};

} // namespace amebo::delivery
