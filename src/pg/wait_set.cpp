// The worker's wait set (see wait_set.hpp). PostgreSQL 15 cannot remove a socket from a set,
// and a closed socket's number may come back for a new one, so a change of sockets builds the
// set again; a change of the events wanted on a socket is applied in place.
#include "pg/wait_set.hpp"

#include "pg/guard.hpp"

extern "C" {
#include "utils/wait_event.h"
}

namespace amebo::pg {

SocketWaitSet::~SocketWaitSet() {
    Free();
}

int SocketWaitSet::Wait(uint64_t generation, const std::vector<SocketInterest> &sockets,
                        long timeout_ms, WaitEvent *occurred, int noccurred) {
    return Call([&] {
        return WaitOnSet(generation, sockets.data(), static_cast<int>(sockets.size()), timeout_ms,
                         occurred, noccurred);
    });
}

// Frees the set (PostgreSQL side).
void SocketWaitSet::Free() {
    if (set_ != nullptr)
        FreeWaitEventSet(set_);
    set_ = nullptr;
}

// Builds the set for sockets (PostgreSQL side); on an error the set is freed.
void SocketWaitSet::Build(const SocketInterest *sockets, int nsockets, uint64_t generation) {
    Free();
    set_ = CreateWaitEventSet(TopMemoryContext, nsockets + 2);
    PG_TRY();
    {
        AddWaitEventToSet(set_, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, nullptr);
        if (IsUnderPostmaster)
            AddWaitEventToSet(set_, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, nullptr, nullptr);
        first_socket_ = IsUnderPostmaster ? 2 : 1;
        for (int i = 0; i < nsockets; i++)
            AddWaitEventToSet(set_, sockets[i].events, sockets[i].socket, nullptr, nullptr);
    }
    PG_CATCH();
    {
        Free();
        PG_RE_THROW();
    }
    PG_END_TRY();
    events_.assign(nsockets, 0);
    for (int i = 0; i < nsockets; i++)
        events_[i] = sockets[i].events;
    generation_ = generation;
}

// The PostgreSQL side of a wait; call only through Call. Reuses the set when the sockets are
// the same ones, updating the events wanted; waits.
int SocketWaitSet::WaitOnSet(uint64_t generation, const SocketInterest *sockets, int nsockets,
                             long timeout_ms, WaitEvent *occurred, int noccurred) {
    if (set_ == nullptr || generation_ != generation ||
        static_cast<int>(events_.size()) != nsockets)
        Build(sockets, nsockets, generation);
    for (int i = 0; i < nsockets; i++)
        if (events_[i] != sockets[i].events) {
            ModifyWaitEvent(set_, first_socket_ + i, sockets[i].events, nullptr);
            events_[i] = sockets[i].events;
        }
    return WaitEventSetWait(set_, timeout_ms, occurred, noccurred, PG_WAIT_EXTENSION);
}

bool ResetLatchIfSet() {
    if (!MyLatch->is_set)
        return false;
    ResetLatch(MyLatch);
    return true;
}

} // namespace amebo::pg
