// The worker's HTTP engine: libcurl's multi interface driven through its socket callbacks,
// with curl's sockets, the worker's latch and postmaster death waited on in one wait set
// (pg/wait_set.hpp); each connection is checked by the address guard (address_guard.hpp).
//
// Everything here runs in the worker process, on its one thread (libcurl's threaded resolver
// only runs getaddrinfo()). curl calls back into this file from inside curl_multi_* calls;
// those callbacks never throw and never call PostgreSQL.
#include "delivery/http_client.hpp"

#include <curl/curl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <exception>
#include <map>
#include <new>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "delivery/address_guard.hpp"
#include "pg/guard.hpp"
#include "pg/wait_set.hpp"

extern "C" {
#include "storage/fd.h"
}

namespace amebo::delivery {

namespace {

using Clock = std::chrono::steady_clock;

#ifndef AMEBO_VERSION
#error "AMEBO_VERSION (the extension's default_version) must be defined: see the Makefile"
#endif
static_assert(sizeof(AMEBO_VERSION) > 1, "AMEBO_VERSION is empty: amebo.control was not read");
constexpr char kUserAgent[] = "amebo/" AMEBO_VERSION;
constexpr char kRetryAfter[] = "retry-after:";
constexpr size_t kMaxRetryAfter = 256;
constexpr size_t kCallbackErrorSize = 256;
constexpr int kReadyBatch = 256; // ready sockets taken from epoll at once
// Descriptors kept free beside PostgreSQL's own files and the HTTP sockets (the wait set's
// epoll descriptor, libcurl's resolver threads' pipes, the logical queue's WAL segment).
constexpr rlim_t kReservedDescriptors = 64;
// Sockets the HTTP client may use when the open-file limit cannot be read.
constexpr size_t kFallbackSockets = 64;

// Copies text into a fixed buffer, truncating; never throws.
template <size_t N> void CopyText(char (&buffer)[N], const char *text) noexcept {
    std::strncpy(buffer, text, N - 1);
    buffer[N - 1] = '\0';
}

// Keeps the first exception a callback caught, as text; call only inside a catch block.
template <size_t N> void RecordCallbackError(char (&buffer)[N]) noexcept {
    if (buffer[0] != '\0')
        return;
    try {
        throw;
    } catch (const std::exception &e) {
        CopyText(buffer, e.what());
    } catch (...) {
        CopyText(buffer, "unknown exception");
    }
}

// c in lowercase, if it is an ASCII letter.
char LowerAscii(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// True when text starts with prefix, ignoring ASCII case.
bool StartsWithNoCase(std::string_view text, std::string_view prefix) {
    if (text.size() < prefix.size())
        return false;
    for (size_t i = 0; i < prefix.size(); i++) {
        if (LowerAscii(text[i]) != LowerAscii(prefix[i]))
            return false;
    }
    return true;
}

// text without leading and trailing spaces, tabs, CRs and LFs.
std::string_view Trim(std::string_view text) {
    constexpr std::string_view kBlank = " \t\r\n";
    size_t first = text.find_first_not_of(kBlank);
    if (first == std::string_view::npos)
        return {};
    size_t last = text.find_last_not_of(kBlank);
    return text.substr(first, last - first + 1);
}

// Milliseconds since start.
double ElapsedMs(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// One request in flight: the request itself (its url and body must outlive the transfer, so
// a Transfer is never moved), its easy handle and what curl's callbacks learned.
struct Transfer {
    HttpRequest request;
    Clock::time_point started;
    CURL *easy = nullptr;
    curl_slist *headers = nullptr;
    char curl_error[CURL_ERROR_SIZE] = {};        // CURLOPT_ERRORBUFFER
    char callback_error[kCallbackErrorSize] = {}; // an exception a callback caught
    std::string refusal;                          // why a connection was refused
    std::string retry_after;
    curl_off_t body_bytes = 0; // response body received and discarded

    Transfer() = default;
    Transfer(const Transfer &) = delete;
    Transfer &operator=(const Transfer &) = delete;
    // Frees the easy handle (already removed from the multi handle, unless it went back to
    // the pool) and its header list.
    ~Transfer() {
        if (easy != nullptr)
            curl_easy_cleanup(easy);
        curl_slist_free_all(headers);
    }
};

// Easy handles of finished transfers, reset and kept for the next ones: creating a handle
// allocates and clears several kilobytes, which showed in the profile of every delivery.
class EasyPool {
  public:
    EasyPool() = default;
    EasyPool(const EasyPool &) = delete;
    EasyPool &operator=(const EasyPool &) = delete;
    ~EasyPool() {
        for (CURL *easy : idle_)
            curl_easy_cleanup(easy);
    }

    // A handle with default options, reused when one is idle; null when curl cannot make one.
    CURL *Take() {
        if (idle_.empty())
            return curl_easy_init();
        CURL *easy = idle_.back();
        idle_.pop_back();
        return easy;
    }

    // Takes back the handle of a transfer removed from the multi handle, reset for reuse.
    void Give(Transfer *transfer) noexcept {
        CURL *easy = std::exchange(transfer->easy, nullptr);
        if (easy == nullptr)
            return;
        curl_easy_reset(easy);
        try {
            idle_.push_back(easy);
        } catch (...) {
            curl_easy_cleanup(easy);
        }
    }

  private:
    std::vector<CURL *> idle_;
};

// What curl asked the application to watch for it: sockets and one timer. The sockets are
// watched by an epoll descriptor of their own, which the worker's wait set watches in turn:
// curl adds and drops a socket whenever a connection starts or ends a request, and the wait
// set (which PostgreSQL 15 cannot shrink) would be built again each time, at a cost that
// grows with the connections open (8% of the worker's CPU with 1,000 endpoints).
struct Watch {
    std::map<curl_socket_t, int> sockets;   // socket -> CURL_POLL_IN, _OUT, _INOUT or _NONE
    int epoll = -1;                         // the sockets curl wants polled, by what it wants
    std::optional<Clock::time_point> timer; // when curl wants CURL_SOCKET_TIMEOUT
    char callback_error[kCallbackErrorSize] = {};

    Watch() = default;
    Watch(const Watch &) = delete;
    Watch &operator=(const Watch &) = delete;
    // Closes the epoll descriptor (after the multi handle is gone: its cleanup calls back).
    ~Watch() {
        if (epoll >= 0)
            close(epoll);
    }
};

// The rules of the addresses transfer may reach (public ones only when it has none).
const TargetRules &RulesOf(const Transfer &transfer) {
    static const TargetRules kPublicOnly;
    return transfer.request.targets ? *transfer.request.targets : kPublicOnly;
}

// The epoll events for curl's CURL_POLL_* wish (0 for CURL_POLL_NONE).
uint32_t EpollEvents(int what) {
    uint32_t events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= EPOLLOUT;
    return events;
}

// Tells the epoll descriptor that socket's wish changed from was to now (CURL_POLL_*, or -1
// for a socket it does not know); returns false when the kernel refused.
bool ChangeEpoll(int epoll, curl_socket_t socket, int was, int now) {
    uint32_t before = was < 0 ? 0 : EpollEvents(was);
    uint32_t after = now < 0 ? 0 : EpollEvents(now);
    if (before == after)
        return true;
    epoll_event event{};
    event.events = after;
    event.data.fd = socket;
    int op = before == 0 ? EPOLL_CTL_ADD : after == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    return epoll_ctl(epoll, op, socket, &event) == 0;
}

// Why transfer may not connect to address, or "" when it may.
std::string CheckAddress(const Transfer &transfer, const curl_sockaddr &address) {
    return RefuseSocketAddress(RulesOf(transfer), address.family, &address.addr, address.addrlen);
}

// CURLOPT_OPENSOCKETFUNCTION: opens a socket for a resolved address unless the request's
// target rules refuse it (every address a name resolves to comes here). curl tries the next
// address, if any.
curl_socket_t OpenSocket(void *clientp, curlsocktype purpose, curl_sockaddr *address) {
    auto *transfer = static_cast<Transfer *>(clientp);
    try {
        std::string refusal = CheckAddress(*transfer, *address);
        if (refusal.empty())
            return socket(address->family, address->socktype, address->protocol);
        if (transfer->refusal.empty())
            transfer->refusal = std::move(refusal);
    } catch (...) {
        RecordCallbackError(transfer->callback_error);
    }
    return CURL_SOCKET_BAD;
}

// CURLOPT_PREREQFUNCTION: checks the peer of the connection a request is about to be sent on.
// OpenSocket checks new connections; this also covers a pooled connection that libcurl
// reuses, which may have been opened under rules that a reload has narrowed since.
int CheckConnection(void *clientp, char *primary_ip, char *local_ip, int primary_port,
                    int local_port) {
    auto *transfer = static_cast<Transfer *>(clientp);
    try {
        std::string refusal = RefusePeerAddress(RulesOf(*transfer), primary_ip);
        if (refusal.empty())
            return CURL_PREREQFUNC_OK;
        if (transfer->refusal.empty())
            transfer->refusal = std::move(refusal);
    } catch (...) {
        RecordCallbackError(transfer->callback_error);
    }
    return CURL_PREREQFUNC_ABORT;
}

// CURLOPT_WRITEFUNCTION: counts the response body and drops it; the caller needs only the
// status.
size_t DiscardBody(char *data, size_t size, size_t nmemb, void *userdata) {
    static_cast<Transfer *>(userdata)->body_bytes += static_cast<curl_off_t>(size * nmemb);
    return size * nmemb;
}

// CURLOPT_HEADERFUNCTION: keeps the final response's Retry-After value. Lines arrive one at a
// time with their CRLF and without a terminating NUL.
size_t ReadHeader(char *buffer, size_t size, size_t nitems, void *userdata) {
    auto *transfer = static_cast<Transfer *>(userdata);
    std::string_view line(buffer, size * nitems);
    try {
        if (StartsWithNoCase(line, "HTTP/"))
            transfer->retry_after.clear(); // a new response starts (after a 1xx one)
        else if (StartsWithNoCase(line, kRetryAfter))
            transfer->retry_after =
                Trim(line.substr(sizeof(kRetryAfter) - 1)).substr(0, kMaxRetryAfter);
        return line.size();
    } catch (...) {
        RecordCallbackError(transfer->callback_error);
        return 0; // fails the transfer with CURLE_WRITE_ERROR
    }
}

// CURLMOPT_SOCKETFUNCTION: records which sockets curl wants watched, and for what.
int WatchSocket(CURL *easy, curl_socket_t socket, int what, void *clientp, void *socketp) {
    auto *watch = static_cast<Watch *>(clientp);
    try {
        auto known = watch->sockets.find(socket);
        int was = known == watch->sockets.end() ? -1 : known->second;
        int now = what == CURL_POLL_REMOVE ? -1 : what;
        // Sockets curl does not want polled are left out of the epoll set (so that a closed
        // idle connection cannot wake the worker over and over); a removed one may be closed
        // already, so a refusal to drop it does not matter.
        if (!ChangeEpoll(watch->epoll, socket, was, now) && what != CURL_POLL_REMOVE)
            throw Error(sqlstate::kInternalError,
                        std::string("could not watch a socket: ") + strerror(errno));
        if (what == CURL_POLL_REMOVE)
            watch->sockets.erase(socket);
        else
            watch->sockets[socket] = what;
        return 0;
    } catch (...) {
        RecordCallbackError(watch->callback_error);
        return -1; // curl aborts the transfers in progress
    }
}

// CURLMOPT_TIMERFUNCTION: records when curl wants CURL_SOCKET_TIMEOUT; -1 cancels the timer.
// Must not call curl_multi_socket_action itself: Wait() does, once the time has come.
int SetTimer(CURLM *multi, long timeout_ms, void *clientp) {
    auto *watch = static_cast<Watch *>(clientp);
    if (timeout_ms < 0)
        watch->timer.reset();
    else
        watch->timer = Clock::now() + std::chrono::milliseconds(timeout_ms);
    return 0;
}

// Appends one header line to transfer's list.
void AppendHeader(Transfer *transfer, const char *header) {
    curl_slist *list = curl_slist_append(transfer->headers, header);
    if (list == nullptr)
        throw std::bad_alloc();
    transfer->headers = list;
}

// Builds transfer's header list: the request's headers, a JSON content type unless one was
// given, and an empty Expect (no 100-continue round trip). Returns what is wrong, or "".
std::string BuildHeaders(Transfer *transfer) {
    bool has_content_type = false;
    for (const std::string &header : transfer->request.headers) {
        if (header.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
            return "a request header contains a line break or a NUL";
        has_content_type = has_content_type || StartsWithNoCase(header, "content-type:");
        AppendHeader(transfer, header.c_str());
    }
    if (!has_content_type)
        AppendHeader(transfer, "Content-Type: application/json");
    AppendHeader(transfer, "Expect:");
    return {};
}

// Sets transfer's easy handle options; returns the first failure.
CURLcode SetOptions(Transfer *transfer) {
    CURL *easy = transfer->easy;
    const HttpRequest &request = transfer->request;
    CURLcode rc = CURLE_OK;
    auto set = [&rc](CURLcode result) {
        if (rc == CURLE_OK)
            rc = result;
    };
    set(curl_easy_setopt(easy, CURLOPT_URL, request.url.c_str()));
    set(curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https"));
    set(curl_easy_setopt(easy, CURLOPT_PROXY, "")); // no proxy from the environment
    set(curl_easy_setopt(easy, CURLOPT_POST, 1L));
    set(curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                         static_cast<curl_off_t>(request.body.size())));
    set(curl_easy_setopt(easy, CURLOPT_POSTFIELDS, request.body.data()));
    set(curl_easy_setopt(easy, CURLOPT_HTTPHEADER, transfer->headers));
    set(curl_easy_setopt(easy, CURLOPT_USERAGENT, kUserAgent));
    set(curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L));
    set(curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 1L));
    set(curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L));
    set(curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, request.timeout_ms));
    set(curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, request.connect_timeout_ms));
    set(curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, transfer->curl_error));
    set(curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, DiscardBody));
    set(curl_easy_setopt(easy, CURLOPT_WRITEDATA, transfer));
    set(curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, ReadHeader));
    set(curl_easy_setopt(easy, CURLOPT_HEADERDATA, transfer));
    set(curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, OpenSocket));
    set(curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, transfer));
    set(curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, CheckConnection));
    set(curl_easy_setopt(easy, CURLOPT_PREREQDATA, transfer));
    return rc;
}

// Configures transfer on an easy handle from pool; returns what went wrong, or "".
std::string Configure(Transfer *transfer, EasyPool *pool) {
    transfer->easy = pool->Take();
    if (transfer->easy == nullptr)
        return "could not create a curl handle";
    std::string problem = BuildHeaders(transfer);
    if (!problem.empty())
        return problem;
    CURLcode rc = SetOptions(transfer);
    if (rc != CURLE_OK)
        return std::string("could not set up the request: ") + curl_easy_strerror(rc);
    return {};
}

// Sets the multi handle's callbacks and connection limits; returns the first failure.
CURLMcode ConfigureMulti(CURLM *multi, Watch *watch, long max_total, long max_per_host) {
    CURLMcode rc = CURLM_OK;
    auto set = [&rc](CURLMcode result) {
        if (rc == CURLM_OK)
            rc = result;
    };
    set(curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, WatchSocket));
    set(curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, watch));
    set(curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, SetTimer));
    set(curl_multi_setopt(multi, CURLMOPT_TIMERDATA, watch));
    // 0 means no limit; the connection cache keeps as many idle connections as may be open.
    set(curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, std::max(0L, max_total)));
    set(curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, std::max(0L, max_per_host)));
    if (max_total > 0)
        set(curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, max_total));
    return rc;
}

// Initializes libcurl once in this process (the worker is one process, one thread).
void InitCurlOnce() {
    static bool initialized = false;
    if (initialized)
        return;
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK)
        throw Error(sqlstate::kInternalError,
                    std::string("could not initialize libcurl: ") + curl_easy_strerror(rc));
    initialized = true;
}

// What went wrong with a transfer that ended without an HTTP response.
std::string ErrorText(const Transfer &transfer, CURLcode code) {
    if (transfer.callback_error[0] != '\0')
        return std::string("internal error in a curl callback: ") + transfer.callback_error;
    if (!transfer.refusal.empty())
        return transfer.refusal;
    if (code == CURLE_OK)
        return "no HTTP response";
    std::string text = curl_easy_strerror(code);
    if (transfer.curl_error[0] != '\0')
        text += std::string(": ") + transfer.curl_error;
    return text;
}

// The result of a transfer curl finished with code.
HttpResponse FinishedResult(const Transfer &transfer, CURLcode code) {
    HttpResponse result;
    result.tag = transfer.request.tag;
    long status = 0;
    if (curl_easy_getinfo(transfer.easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK)
        result.status = status;
    if (result.status == 0)
        result.error = ErrorText(transfer, code);
    result.duration_ms = ElapsedMs(transfer.started);
    result.retry_after = transfer.retry_after;
    return result;
}

// The result of a transfer that ended without curl finishing it.
HttpResponse FailedResult(const Transfer &transfer, std::string error) {
    HttpResponse result;
    result.tag = transfer.request.tag;
    result.error = std::move(error);
    result.duration_ms = ElapsedMs(transfer.started);
    return result;
}

} // namespace

// The multi handle, what curl asked to be watched and the transfers in flight.
struct HttpClient::State {
    EasyPool easy_pool; // outlives the multi handle: freed after it
    CURLM *multi = nullptr;
    Watch watch;
    std::unordered_map<CURL *, std::unique_ptr<Transfer>> transfers; // added to multi
    std::vector<HttpResponse> failed_to_start;                       // returned by the next Wait()
    std::string multi_error; // a curl_multi_socket_action failure
    pg::SocketWaitSet wait_set;

    State() = default;
    State(const State &) = delete;
    State &operator=(const State &) = delete;
    ~State();

    void Start(std::unique_ptr<Transfer> transfer);
    void Act(curl_socket_t socket, int flags);
    void RunTimerIfDue();
    long WaitBudget(long timeout_ms) const;
    bool WaitForEvents(long timeout_ms);
    void ActOnReadySockets();
    void Collect(std::vector<HttpResponse> *finished);
    void FailAll(std::vector<HttpResponse> *finished);
};

// Removes every easy handle from the multi handle, frees them, then frees the multi handle
// (the order libcurl requires). curl's callbacks may still run here: Watch is alive.
HttpClient::State::~State() {
    for (auto &entry : transfers)
        curl_multi_remove_handle(multi, entry.first);
    transfers.clear();
    if (multi != nullptr)
        curl_multi_cleanup(multi);
}

// Configures transfer and adds it to the multi handle; a failure becomes a result for the
// next Wait(). Throws only when memory runs out, and then nothing was started.
void HttpClient::State::Start(std::unique_ptr<Transfer> transfer) {
    std::string problem = Configure(transfer.get(), &easy_pool);
    if (problem.empty()) {
        CURL *easy = transfer->easy;
        auto slot = transfers.emplace(easy, std::move(transfer)).first;
        CURLMcode rc = curl_multi_add_handle(multi, easy);
        if (rc == CURLM_OK)
            return; // curl's timer callback asked for a timeout of 0: Wait() starts it
        problem = std::string("could not start the request: ") + curl_multi_strerror(rc);
        transfer = std::move(slot->second);
        transfers.erase(slot);
    }
    failed_to_start.push_back(FailedResult(*transfer, std::move(problem)));
}

// Tells curl about activity on socket, or with CURL_SOCKET_TIMEOUT that its timer expired.
void HttpClient::State::Act(curl_socket_t socket, int flags) {
    int running = 0;
    CURLMcode rc = curl_multi_socket_action(multi, socket, flags, &running);
    if (rc != CURLM_OK && rc != CURLM_BAD_SOCKET && multi_error.empty())
        multi_error = curl_multi_strerror(rc);
}

// Lets curl run its timeouts (and start newly added transfers) once its timer is due.
void HttpClient::State::RunTimerIfDue() {
    if (watch.timer && *watch.timer <= Clock::now())
        Act(CURL_SOCKET_TIMEOUT, 0);
}

// How long a wait may block: timeout_ms (negative: no limit), cut short by curl's timer.
long HttpClient::State::WaitBudget(long timeout_ms) const {
    long budget = timeout_ms < 0 ? -1 : timeout_ms;
    if (watch.timer) {
        // Rounded up, so that the wait ends at or after the timer, never just before it.
        auto left = std::chrono::ceil<std::chrono::milliseconds>(*watch.timer - Clock::now());
        long timer_ms = static_cast<long>(std::clamp<int64_t>(left.count(), 0, INT_MAX));
        budget = budget < 0 ? timer_ms : std::min(budget, timer_ms);
    }
    return std::min<long>(budget, INT_MAX);
}

// Waits on the latch, postmaster death and the epoll descriptor of curl's sockets, and acts
// on every socket that is ready; returns true when the latch was set.
bool HttpClient::State::WaitForEvents(long timeout_ms) {
    const std::vector<pg::SocketInterest> interests = {{watch.epoll, WL_SOCKET_READABLE}};
    WaitEvent occurred[3];
    int count = wait_set.Wait(1, interests, timeout_ms, occurred, 3);
    bool latch_set = false;
    for (int i = 0; i < count; i++) {
        if (occurred[i].events & WL_LATCH_SET) {
            ResetLatch(MyLatch);
            latch_set = true;
        } else if (occurred[i].fd == watch.epoll) {
            ActOnReadySockets();
        }
    }
    return latch_set;
}

// Passes the sockets the epoll descriptor finds ready to curl, without waiting.
void HttpClient::State::ActOnReadySockets() {
    epoll_event ready[kReadyBatch];
    int count = epoll_wait(watch.epoll, ready, kReadyBatch, 0);
    for (int i = 0; i < count; i++) {
        curl_socket_t socket = ready[i].data.fd;
        // Acting on an earlier socket may have made curl drop this one: skip it then.
        if (watch.sockets.count(socket) == 0)
            continue;
        int flags = 0;
        if (ready[i].events & (EPOLLIN | EPOLLHUP))
            flags |= CURL_CSELECT_IN;
        if (ready[i].events & EPOLLOUT)
            flags |= CURL_CSELECT_OUT;
        if (ready[i].events & EPOLLERR)
            flags |= CURL_CSELECT_ERR;
        Act(socket, flags);
    }
}

// Moves every transfer curl has finished into finished; if the multi handle failed, ends all
// the others too.
void HttpClient::State::Collect(std::vector<HttpResponse> *finished) {
    int left = 0;
    while (CURLMsg *message = curl_multi_info_read(multi, &left)) {
        if (message->msg != CURLMSG_DONE)
            continue;
        // message is invalid once its handle is removed: read it first.
        CURL *easy = message->easy_handle;
        CURLcode code = message->data.result;
        auto found = transfers.find(easy);
        if (found == transfers.end())
            continue;
        HttpResponse result = FinishedResult(*found->second, code);
        curl_multi_remove_handle(multi, easy);
        easy_pool.Give(found->second.get());
        transfers.erase(found);
        finished->push_back(std::move(result));
    }
    if (!multi_error.empty())
        FailAll(finished);
}

// Ends every transfer in flight with the multi handle's failure.
void HttpClient::State::FailAll(std::vector<HttpResponse> *finished) {
    std::string why = "curl failed: " + multi_error;
    if (watch.callback_error[0] != '\0')
        why += std::string(" (internal error in a curl callback: ") + watch.callback_error + ")";
    for (auto &[easy, transfer] : transfers) {
        finished->push_back(FailedResult(*transfer, why));
        curl_multi_remove_handle(multi, easy);
    }
    transfers.clear();
    multi_error.clear();
    watch.callback_error[0] = '\0';
}

size_t SocketBudget() {
    static bool raised = false;
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0)
        return kFallbackSockets;
    if (!raised && limit.rlim_cur < limit.rlim_max) {
        rlimit wanted = limit;
        wanted.rlim_cur = limit.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &wanted) == 0)
            limit = wanted;
    }
    raised = true;
    rlim_t used = static_cast<rlim_t>(std::max(0, max_safe_fds)) + kReservedDescriptors;
    if (limit.rlim_cur == RLIM_INFINITY)
        return SIZE_MAX;
    return limit.rlim_cur > used + kFallbackSockets ? static_cast<size_t>(limit.rlim_cur - used)
                                                    : kFallbackSockets;
}

HttpClient::HttpClient(long max_total, long max_per_host) : state_(std::make_unique<State>()) {
    InitCurlOnce();
    state_->watch.epoll = epoll_create1(EPOLL_CLOEXEC);
    if (state_->watch.epoll < 0)
        throw Error(sqlstate::kInternalError,
                    std::string("could not create an epoll descriptor: ") + strerror(errno));
    state_->multi = curl_multi_init();
    if (state_->multi == nullptr)
        throw Error(sqlstate::kInternalError, "could not create a curl multi handle");
    CURLMcode rc = ConfigureMulti(state_->multi, &state_->watch, max_total, max_per_host);
    if (rc != CURLM_OK)
        throw Error(sqlstate::kInternalError,
                    std::string("could not configure libcurl: ") + curl_multi_strerror(rc));
}

HttpClient::~HttpClient() = default;

void HttpClient::Submit(HttpRequest request) {
    auto transfer = std::make_unique<Transfer>();
    transfer->started = Clock::now();
    transfer->request = std::move(request);
    state_->Start(std::move(transfer));
}

size_t HttpClient::InFlight() const {
    return state_->transfers.size() + state_->failed_to_start.size();
}

WaitOutcome HttpClient::Wait(long timeout_ms) {
    State &state = *state_;
    WaitOutcome outcome;
    outcome.finished.swap(state.failed_to_start);
    state.RunTimerIfDue();
    state.Collect(&outcome.finished);
    outcome.latch_set = pg::ResetLatchIfSet();
    // Something to report already: only look at what is ready, do not block.
    bool report_now = outcome.latch_set || !outcome.finished.empty();
    long wait_ms = report_now ? 0 : state.WaitBudget(timeout_ms);
    if ((wait_ms != 0 || !state.watch.sockets.empty()) && state.WaitForEvents(wait_ms))
        outcome.latch_set = true;
    state.RunTimerIfDue();
    state.Collect(&outcome.finished);
    return outcome;
}

} // namespace amebo::delivery
