// SQL functions of subscriptions: handler checks and action patterns.
#include <netdb.h>
#include <sys/socket.h>

#include <string>

#include "core/delivery/matching.hpp"
#include "core/delivery/target_policy.hpp"
#include "core/error.hpp"
#include "core/delivery/name_lookup.hpp"
#include "pg/guard.hpp"
#include "pg/text_view.hpp"
#include "settings.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(amebo_check_handler);
PG_FUNCTION_INFO_V1(amebo_action_matches);
}

namespace amebo::delivery {

namespace {

// Raises 22023 for a handler address that the target settings do not let webhooks reach.
void RefuseAddress(const TargetRules &rules, const HandlerUrl &url, const sockaddr_storage &address,
                   const std::string &text) {
    AddressKind kind = AddressKind::kReserved;
    if (MayReach(rules, reinterpret_cast<const sockaddr *>(&address), &kind))
        return;
    std::string where = url.host == text
                            ? "handler address \"" + url.host + "\""
                            : "handler host \"" + url.host + "\" resolves to " + text + ", which";
    bool metadata = kind == AddressKind::kMetadata;
    throw Error(sqlstate::kInvalidParameterValue,
                where + " is not allowed: " + AddressKindName(kind) + " address",
                metadata ? "Webhooks may not reach cloud metadata addresses."
                         : "Webhooks may not reach loopback, private, link-local or reserved "
                           "addresses.",
                metadata ? "A superuser can allow this exact address by listing it in "
                           "amebo.allowed_private_targets."
                         : "A superuser can allow them with amebo.allow_private_targets = on, "
                           "or list their ranges in amebo.allowed_private_targets.");
}

// The numeric text of an address, such as "10.0.0.1" or "::1".
std::string NumericText(const sockaddr_storage &address) {
    char text[NI_MAXHOST] = "";
    getnameinfo(reinterpret_cast<const sockaddr *>(&address), sizeof(address), text, sizeof(text),
                nullptr, 0, NI_NUMERICHOST);
    return text;
}

// Checks every address the handler's host resolves to; a name that does not resolve now is
// accepted (it is checked again at every connection). The look-up can be cancelled.
void CheckResolvedAddresses(const TargetRules &rules, const HandlerUrl &url) {
    for (const sockaddr_storage &address : ResolveHost(url.host))
        RefuseAddress(rules, url, address, NumericText(address));
}

} // namespace

} // namespace amebo::delivery

using namespace amebo;

// amebo_internal.check_handler(url): raises 22023 unless url is a handler amebo may call.
extern "C" Datum amebo_check_handler(PG_FUNCTION_ARGS) {
    return pg::Entry([&] {
        std::string handler(pg::TextView(PG_GETARG_TEXT_PP(0)));
        delivery::HandlerUrl url = delivery::ParseHandlerUrl(handler);
        delivery::TargetRules rules = settings::CurrentTargetRules();
        sockaddr_storage address{};
        if (delivery::AddressFromText(url.host, &address))
            delivery::RefuseAddress(rules, url, address, url.host);
        else
            delivery::CheckResolvedAddresses(rules, url);
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
