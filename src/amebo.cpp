// The library's entry point: PostgreSQL calls _PG_init once per process that loads amebo.
#include "consumers/notify.hpp"
#include "pg/guard.hpp"
#include "pg/interrupts.hpp"
#include "pg/shared_memory.hpp"
#include "registry/action_rules.hpp"
#include "registry/patterns_pg.hpp"
#include "settings.hpp"
#include "state/inline_projections.hpp"
#include "state/rebuild.hpp"
#include "store/event_table.hpp"
#include "store/inflight.hpp"
#include "worker/worker.hpp"

extern "C" {
PG_MODULE_MAGIC;
void _PG_init(void);
}

// Lets each module register its settings, hooks and callbacks.
void _PG_init(void) {
    amebo::pg::EntryVoid([] {
        amebo::settings::Init();
        amebo::pg::InitInterruptCheck();
        amebo::store::inflight::Init();
        amebo::store::InitEventTable();
        amebo::registry::InitActionRules();
        amebo::registry::InitPatternMatcher();
        amebo::state::InitInlineProjections();
        amebo::state::InitRebuild();
        amebo::consumers::InitConsumerNotify();
        amebo::worker::Init();
        amebo::pg::InstallSharedMemoryHooks();
    });
}
