// SQL functions of subscriptions: handler checks and action patterns.
#include <netdb.h>
#include <sys/socket.h>

#include <memory>
#include <string>

#include "core/delivery/matching.hpp"
#include "core/delivery/target_policy.hpp"
#include "core/error.hpp"
#include "pg/guard.hpp"
#include "pg/text_view.hpp"
#include "settings.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(amebo_check_handler);
PG_FUNCTION_INFO_V1(amebo_action_matches);
}

namespace amebo::delivery {

namespace {

// Raises 22023 for a handler address that amebo.allow_private_targets does not allow.
void RefuseAddress(const HandlerUrl &url, const char *address, AddressKind kind) {
    if (settings::allow_private_targets || IsPublicAddress(kind))
        return;
    std::string where = url.host == address ? "handler address \"" + url.host + "\""
                                            : "handler host \"" + url.host + "\" resolves to " +
                                                  address + ", which";
    throw Error(sqlstate::kInvalidParameterValue,
                where + " is not allowed: " + AddressKindName(kind) + " address",
                "Webhooks may not reach loopback, private, link-local or metadata addresses.",
                "A superuser can allow them with amebo.allow_private_targets = on.");
}

// Checks every address host resolves to; a name that does not resolve now is accepted (it is
// checked again at every connection). With private targets allowed every address passes, so
// the look-up (which blocks, and cannot be cancelled) is skipped.
void CheckResolvedAddresses(const HandlerUrl &url) {
    if (settings::allow_private_targets)
        return;
    struct addrinfo hints = {};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo *found = nullptr;
    if (getaddrinfo(url.host.c_str(), nullptr, &hints, &found) != 0)
        return;
    std::unique_ptr<struct addrinfo, void (*)(struct addrinfo *)> owned(found, freeaddrinfo);
    for (auto *entry = found; entry != nullptr; entry = entry->ai_next) {
        char text[NI_MAXHOST] = "";
        getnameinfo(entry->ai_addr, entry->ai_addrlen, text, sizeof(text), nullptr, 0,
                    NI_NUMERICHOST);
        RefuseAddress(url, text, ClassifyAddress(entry->ai_addr));
    }
}

} // namespace

} // namespace amebo::delivery

using namespace amebo;

// amebo_internal.check_handler(url): raises 22023 unless url is a handler amebo may call.
extern "C" Datum amebo_check_handler(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        std::string handler(pg::TextView(PG_GETARG_TEXT_PP(0)));
        delivery::HandlerUrl url = delivery::ParseHandlerUrl(handler);
        delivery::AddressKind kind;
        if (delivery::ClassifyAddressText(url.host, &kind))
            delivery::RefuseAddress(url, url.host.c_str(), kind);
        else
            delivery::CheckResolvedAddresses(url);
        PG_RETURN_VOID();
    });
}

// amebo.action_matches(pattern, action): true when action matches the pattern.
extern "C" Datum amebo_action_matches(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        bool matches = delivery::ActionMatches(pg::TextView(PG_GETARG_TEXT_PP(0)),
                                               pg::TextView(PG_GETARG_TEXT_PP(1)));
        PG_RETURN_BOOL(matches);
    });
}
