// The wake-up of pull consumers: a NOTIFY on channel amebo_consumer, with the consumer's name
// as payload, from every transaction that appends an event a consumer takes.
//
// Appends write through the heap directly, so no trigger on amebo.events fires: the append
// path calls NotifyConsumers. It needs the active consumers and their action filters, cached
// per backend; a statement trigger on amebo.consumers sends a relcache invalidation of the
// table at commit, and every backend's callback then marks the cache stale. PostgreSQL folds
// identical notifications of one transaction into one and drops them when it aborts. With no
// consumer, an append pays one check of an empty cache.
#pragma once

#include "pg/postgres.hpp"
#include "store/append.hpp"

namespace amebo::consumers {

// Queues the NOTIFY of every active consumer that takes one of the events.
void NotifyConsumers(const store::NewEvent *events, int count);

// Registers the cache's invalidation callback.
void InitConsumerNotify();

} // namespace amebo::consumers
