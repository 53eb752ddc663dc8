// The worker's SQL functions: its status, its live delivery figures, and the wake-ups that
// sessions ask for (see worker.hpp).
#include "pg/guard.hpp"
#include "worker/shared_state.hpp"
#include "worker/worker.hpp"

extern "C" {
#include "commands/dbcommands.h"
}

using namespace amebo;

extern "C" {
PG_FUNCTION_INFO_V1(amebo_worker_status);
PG_FUNCTION_INFO_V1(amebo_wake_worker);
PG_FUNCTION_INFO_V1(amebo_delivery_worker_stats);
PG_FUNCTION_INFO_V1(amebo_note_subscription_change);
}

// amebo_internal.note_subscription_change(): tells the worker, at commit, that subscriptions
// changed.
extern "C" Datum amebo_note_subscription_change(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        worker::NoteSubscriptionChange();
        PG_RETURN_VOID();
    });
}

// amebo_internal.delivery_worker_stats() -> (subscription_id, in_flight, queued) per subscription
// the worker delivers to; nothing in other databases (a restored copy has the same subscription
// ids)
extern "C" Datum amebo_delivery_worker_stats(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        InitMaterializedSRF(fcinfo, 0);
        auto *result = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
        worker::WorkerShared *copy = worker::CopySharedState();
        if (copy == nullptr)
            return (Datum)0;
        const char *here = get_database_name(MyDatabaseId);
        if (here == nullptr || strcmp(copy->database, here) != 0)
            return (Datum)0;
        for (int i = 0; copy->pid != 0 && i < copy->figure_count; i++) {
            const auto &figures = copy->figures[i];
            Datum values[3] = {Int64GetDatum(figures.subscription_id),
                               Int32GetDatum(figures.in_flight), Int32GetDatum(figures.queued)};
            bool nulls[3] = {false, false, false};
            tuplestore_putvalues(result->setResult, result->setDesc, values, nulls);
        }
        return (Datum)0;
    });
}

// amebo.worker_status() -> (pid, database, started_at, last_run_at), one row while it runs
extern "C" Datum amebo_worker_status(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        InitMaterializedSRF(fcinfo, 0);
        auto *result = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
        worker::WorkerShared *copy = worker::CopySharedState();
        if (copy == nullptr || copy->pid == 0)
            return (Datum)0;
        Datum values[4] = {Int32GetDatum(copy->pid), CStringGetTextDatum(copy->database),
                           TimestampTzGetDatum(copy->started_at),
                           TimestampTzGetDatum(copy->last_run_at)};
        bool nulls[4] = {false, false, false, copy->last_run_at == 0};
        tuplestore_putvalues(result->setResult, result->setDesc, values, nulls);
        return (Datum)0;
    });
}

// amebo.wake_worker(): sets the worker's latch.
extern "C" Datum amebo_wake_worker(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        worker::Wake();
        PG_RETURN_VOID();
    });
}
