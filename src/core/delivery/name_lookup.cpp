// Cancellable host name resolution (see name_lookup.hpp).
#include "core/delivery/name_lookup.hpp"

#include <netdb.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <memory>

#include "core/interrupts.hpp"

namespace amebo::delivery {

namespace {

// How long one wait for the resolver lasts before the interrupt check runs again.
constexpr long kPollNanoseconds = 20 * 1000 * 1000;

// One asynchronous look-up: the request and what it points to, which glibc's resolver
// thread uses until the request completes or is cancelled.
struct Lookup {
    std::string host;
    addrinfo hints{};
    gaicb request{};
};

// Look-ups cancelled while glibc was already running them: they must stay allocated until
// glibc finishes them. Freed by the next ResolveHost() once done.
std::vector<std::unique_ptr<Lookup>> abandoned;

// Frees the abandoned look-ups that glibc has finished.
void FreeFinishedAbandoned() {
    auto finished = [](const std::unique_ptr<Lookup> &lookup) {
        if (gai_error(&lookup->request) == EAI_INPROGRESS)
            return false;
        freeaddrinfo(lookup->request.ar_result);
        return true;
    };
    abandoned.erase(std::remove_if(abandoned.begin(), abandoned.end(), finished), abandoned.end());
}

// Cancels lookup, or keeps it for later freeing when glibc cannot cancel it any more.
void Abandon(std::unique_ptr<Lookup> lookup) {
    if (gai_cancel(&lookup->request) == EAI_CANCELED)
        return;
    if (gai_error(&lookup->request) != EAI_INPROGRESS) {
        freeaddrinfo(lookup->request.ar_result);
        return;
    }
    abandoned.push_back(std::move(lookup));
}

// Waits until lookup completes, running the interrupt check between short waits; cancels
// it when the check throws.
void AwaitLookup(std::unique_ptr<Lookup> &lookup) {
    const gaicb *waited[] = {&lookup->request};
    const timespec poll = {0, kPollNanoseconds};
    while (gai_error(&lookup->request) == EAI_INPROGRESS) {
        try {
            CheckInterrupts();
        } catch (...) {
            Abandon(std::move(lookup));
            throw;
        }
        gai_suspend(waited, 1, &poll);
    }
}

// The addresses of a finished look-up's result list.
std::vector<sockaddr_storage> AddressesOf(const addrinfo *found) {
    std::vector<sockaddr_storage> addresses;
    for (const addrinfo *entry = found; entry != nullptr; entry = entry->ai_next) {
        sockaddr_storage address{};
        std::memcpy(&address, entry->ai_addr, std::min<size_t>(entry->ai_addrlen, sizeof(address)));
        addresses.push_back(address);
    }
    return addresses;
}

} // namespace

std::vector<sockaddr_storage> ResolveHost(const std::string &host) {
    FreeFinishedAbandoned();
    auto lookup = std::make_unique<Lookup>();
    lookup->host = host;
    lookup->hints.ai_family = AF_UNSPEC;
    lookup->hints.ai_socktype = SOCK_STREAM;
    lookup->request.ar_name = lookup->host.c_str();
    lookup->request.ar_request = &lookup->hints;
    gaicb *requests[] = {&lookup->request};
    if (getaddrinfo_a(GAI_NOWAIT, requests, 1, nullptr) != 0)
        return {};
    AwaitLookup(lookup);
    if (gai_error(&lookup->request) != 0)
        return {};
    std::unique_ptr<addrinfo, void (*)(addrinfo *)> found(lookup->request.ar_result, freeaddrinfo);
    return AddressesOf(found.get());
}

} // namespace amebo::delivery
