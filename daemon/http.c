/*
 * http.c: libcurl multi driven by libuv, after curl's multi-uv.c example
 * with its gaps closed: poll errors reach curl as CURL_CSELECT_ERR, a zero
 * timeout becomes 1 ms instead of a re-entrant call, handles are removed
 * only from the info_read drain, and shutdown keeps socket contexts alive
 * through curl_multi_cleanup.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <sodium.h>

#include "buf.h"
#include "http.h"
#include "log.h"

struct http_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct http *h;
};

/*
 * A request's headers and body live in one allocation owned by its call:
 * curl reads the header list and the POST body in place (no per-header
 * curl_slist_append copy, no CURLOPT_COPYPOSTFIELDS copy).
 */
#define HTTP_MAX_HEADERS 8
#define HTTP_BODY_MAX    (256 * 1024) /* a provider answer longer than this is cut */
#define HTTP_SPARE_MAX   64

struct http_call {
    struct http_call *prev, *next;
    struct http *h;
    CURL *easy;
    struct curl_slist headers[HTTP_MAX_HEADERS];
    char *store;  /* the header lines and the request body */
    int prepared; /* the caller's own easy handle (another protocol): cleaned up, not kept */
    void (*release)(void *ctx);
    void *release_ctx;
    char *reqbody;   /* in store */
    struct buf body; /* the answer */
    long retry_after_s;
    int open_errno; /* socket() failed: EMFILE is ours to fix, not the provider's */
    http_done_cb *cb;
    void *arg;
};

struct http {
    uv_loop_t *loop;
    const struct config *cfg;
    char name[16];
    CURLM *multi;
    CURLSH *share;
    uv_timer_t timer;
    struct http_call *calls;
    CURL *spare[HTTP_SPARE_MAX]; /* finished handles, for the next requests */
    int nspare;
    long connections;
    int closing;
    http_closed_cb *closed_cb;
    void *closed_arg;
};

static void http_drain(struct http *h);
static void http_easy_put(struct http *h, CURL *e);

static void
http_sock_closed(uv_handle_t *hd)
{
    free(hd->data);
}

static void
http_poll_cb(uv_poll_t *p, int status, int events)
{
    struct http_sock *s = p->data;
    struct http *h = s->h;
    int flags = 0, running;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(h->multi, s->fd, flags, &running);
    http_drain(h);
}

static int
http_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct http *h = userp;
    struct http_sock *s = socketp;
    int events = 0;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            /* Stop now: curl closes the fd next and its number may be reused. */
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, http_sock_closed);
            curl_multi_assign(h->multi, fd, NULL);
        }
        return 0;
    }
    if (s == NULL) {
        if ((s = calloc(1, sizeof(*s))) == NULL)
            return -1;
        if (uv_poll_init_socket(h->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->fd = fd;
        s->h = h;
        s->poll.data = s;
        curl_multi_assign(h->multi, fd, s);
    }
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, http_poll_cb);
    return 0;
}

static void
http_timer_cb(uv_timer_t *t)
{
    struct http *h = t->data;
    int running;

    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    http_drain(h);
}

static int
http_timerfunc(CURLM *multi, long timeout_ms, void *userp)
{
    struct http *h = userp;

    (void)multi;
    if (timeout_ms < 0)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, http_timer_cb, timeout_ms == 0 ? 1 : (uint64_t)timeout_ms, 0);
    return 0;
}

int
http_conns_cap(const struct config *cfg, int request_cap)
{
    return cfg->http_max_conns > 0 ? cfg->http_max_conns : request_cap;
}

/*
 * Over HTTP/1.1 each request in progress needs a connection of its own,
 * so a cap below the request cap would quietly become the throughput
 * limit (20 connections against a 300 ms API is 66 requests a second).
 * HTTP/2 multiplexes: PIPEWAIT keeps curl on the connections it has.
 */
void
http_set_request_cap(struct http *h, int request_cap)
{
    long conns = (long)http_conns_cap(h->cfg, request_cap);

    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, conns);
    /* The idle cache must hold them all, or HTTP/1.1 reconnects after every burst. */
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, conns > 0 ? conns : -1L);
}

struct http *
http_new(uv_loop_t *loop, const struct config *cfg, const char *name, int request_cap)
{
    struct http *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return NULL;
    h->loop = loop;
    h->cfg = cfg;
    snprintf(h->name, sizeof(h->name), "%s", name);
    if ((h->multi = curl_multi_init()) == NULL || (h->share = curl_share_init()) == NULL) {
        curl_multi_cleanup(h->multi);
        free(h);
        return NULL;
    }
    /* TLS sessions and DNS answers survive across requests. */
    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, http_socket_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, http_timerfunc);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    http_set_request_cap(h, request_cap);
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    return h;
}

static size_t
http_write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
    struct http_call *c = userp;
    size_t n = size * nmemb;

    /* Provider answers are small; a runaway body is cut, not buffered. */
    if (buf_append(&c->body, data, n, 1024, HTTP_BODY_MAX + 1) != 0)
        return 0;
    return n;
}

static size_t
http_header_cb(char *data, size_t size, size_t nmemb, void *userp)
{
    struct http_call *c = userp;
    size_t n = size * nmemb;

    /* Retry-After in seconds; the HTTP-date form is rare for APIs and ignored. */
    if (n > 12 && strncasecmp(data, "Retry-After:", 12) == 0) {
        char buf[32];
        size_t k = n - 12 < sizeof(buf) - 1 ? n - 12 : sizeof(buf) - 1;
        memcpy(buf, data + 12, k);
        buf[k] = '\0';
        char *end;
        long v = strtol(buf, &end, 10);
        if (end != buf && v >= 0 && v < 86400)
            c->retry_after_s = v;
    }
    return n;
}

/*
 * curl reports a failed socket() as CURLE_COULDNT_CONNECT with no errno,
 * the same as a refused connection; opening the socket here keeps the
 * errno, so running out of descriptors is not blamed on the provider.
 */
static curl_socket_t
http_open_socket(void *userp, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct http_call *c = userp;
    curl_socket_t fd;

    (void)purpose;
    fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd == CURL_SOCKET_BAD)
        c->open_errno = errno;
    return fd;
}

static void
http_call_free(struct http_call *c)
{
    struct http *h = c->h;

    if (c->prev)
        c->prev->next = c->next;
    else
        h->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->prepared) {
        curl_multi_remove_handle(h->multi, c->easy);
        curl_easy_cleanup(c->easy);
        if (c->release)
            c->release(c->release_ctx);
    } else {
        http_easy_put(h, c->easy);
    }
    free(c->store);
    buf_free(&c->body);
    free(c);
}

/* "Authorization: Basic base64(user:password)" into out; -1 if too long. */
static int
http_basic_auth(char *out, size_t outlen, const char *user, const char *password)
{
    static const char head[] = "Authorization: Basic ";
    char cred[512];
    int n = snprintf(cred, sizeof(cred), "%s:%s", user, password ? password : "");
    int rc = -1;

    if (n > 0 && (size_t)n < sizeof(cred) &&
        outlen >= sizeof(head) - 1 +
                      sodium_base64_ENCODED_LEN((size_t)n, sodium_base64_VARIANT_ORIGINAL)) {
        memcpy(out, head, sizeof(head) - 1);
        sodium_bin2base64(out + sizeof(head) - 1, outlen - (sizeof(head) - 1),
                          (const unsigned char *)cred, (size_t)n, sodium_base64_VARIANT_ORIGINAL);
        rc = 0;
    }
    sodium_memzero(cred, n > 0 && (size_t)n < sizeof(cred) ? (size_t)n : sizeof(cred));
    return rc;
}

/*
 * The call's header lines and body, copied into one allocation and linked
 * as curl's list: the request's own headers, then Content-Type, Basic
 * auth and User-Agent (given as headers, curl formats none of them).
 */
static int
http_store(struct http_call *c, const struct http_request *req)
{
    static char user_agent[] = "User-Agent: otpd/" OTPD_VERSION;
    char ct[128], auth[1024];
    const char *lines[HTTP_MAX_HEADERS];
    size_t n = 0, size = req->body_len + 1;

    for (const char *const *hd = req->headers; hd && *hd; hd++) {
        if (n == HTTP_MAX_HEADERS - 3)
            return -1;
        lines[n++] = *hd;
    }
    if (req->content_type) {
        snprintf(ct, sizeof(ct), "Content-Type: %s", req->content_type);
        lines[n++] = ct;
    }
    if (req->username) {
        if (http_basic_auth(auth, sizeof(auth), req->username, req->password) < 0)
            return -1;
        lines[n++] = auth;
    }
    for (size_t i = 0; i < n; i++)
        size += strlen(lines[i]) + 1;
    if ((c->store = malloc(size)) == NULL) {
        sodium_memzero(auth, req->username ? strlen(auth) : 0);
        return -1;
    }
    char *w = c->store;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(lines[i]) + 1;
        memcpy(w, lines[i], len);
        c->headers[i].data = w;
        c->headers[i].next = &c->headers[i + 1];
        w += len;
    }
    sodium_memzero(auth, req->username ? strlen(auth) : 0);
    c->headers[n].data = user_agent;
    c->headers[n].next = NULL;
    if (req->body_len)
        memcpy(w, req->body, req->body_len);
    w[req->body_len] = '\0';
    c->reqbody = w;
    return 0;
}

/*
 * A new easy handle with the options every request shares.  Handles are
 * kept and reused (curl's own advice): making one zeroes a large struct and
 * allocates its buffers, and curl_easy_reset() cannot be used instead,
 * since 7.88 refuses a new CURLOPT_BUFFERSIZE on a handle that has one.
 */
static CURL *
http_easy_new(struct http *h)
{
    CURL *e = curl_easy_init();
    int bad = 0;

    if (e == NULL)
        return NULL;
    bad |= curl_easy_setopt(e, CURLOPT_SHARE, h->share) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK;
    /* Verification on, always; nothing in otpd can turn it off. */
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
    /*
     * Provider answers are a few hundred bytes: curl's default 16 KiB
     * receive and 64 KiB upload buffers per transfer would dominate the
     * memory of thousands in flight.
     */
    bad |= curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 4096L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 16384L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_write_cb) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_header_cb) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, http_open_socket) != CURLE_OK;
    if (bad) {
        curl_easy_cleanup(e);
        return NULL;
    }
    return e;
}

static CURL *
http_easy_get(struct http *h)
{
    return h->nspare > 0 ? h->spare[--h->nspare] : http_easy_new(h);
}

/* Out of the multi, and kept for the next request unless enough are. */
static void
http_easy_put(struct http *h, CURL *e)
{
    if (e == NULL)
        return;
    curl_multi_remove_handle(h->multi, e);
    if (h->closing || h->nspare == HTTP_SPARE_MAX)
        curl_easy_cleanup(e);
    else
        h->spare[h->nspare++] = e;
}

/* This request's options; every one a reused handle may hold from the last is set again. */
static int
http_setup(struct http *h, struct http_call *c, const struct http_request *req)
{
    const struct config *cfg = h->cfg;
    CURL *e = c->easy;
    int bad = 0;

    if (http_store(c, req) < 0)
        return -1;
    bad |= curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, c) != CURLE_OK;
    /* From the configuration, which a reload may change. */
    bad |= curl_easy_setopt(e, CURLOPT_CAINFO,
                            cfg->ca_file && *cfg->ca_file ? cfg->ca_file : NULL) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->http_connect_timeout_ms) !=
           CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, req->timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, c) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, c) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, c) != CURLE_OK;
    if (strcmp(req->method, "POST") == 0) {
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)req->body_len) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->reqbody) != CURLE_OK;
    } else {
        bad |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) != CURLE_OK;
    }
    return bad ? -1 : 0;
}

struct http_call *
http_start(struct http *h, const struct http_request *req, http_done_cb *cb, void *arg)
{
    struct http_call *c;

    if (h->closing || (c = calloc(1, sizeof(*c))) == NULL)
        return NULL;
    c->h = h;
    c->cb = cb;
    c->arg = arg;
    c->retry_after_s = -1;
    if ((c->easy = http_easy_get(h)) == NULL || http_setup(h, c, req) < 0) {
        http_easy_put(h, c->easy);
        free(c->store);
        free(c);
        return NULL;
    }
    c->next = h->calls;
    if (h->calls)
        h->calls->prev = c;
    h->calls = c;
    /* Added from an ordinary loop callback, never from inside curl. */
    if (curl_multi_add_handle(h->multi, c->easy) != CURLM_OK) {
        http_call_free(c);
        return NULL;
    }
    return c;
}

struct http_call *
http_start_prepared(struct http *h, CURL *easy, void (*release)(void *ctx), void *ctx,
                    http_done_cb *cb, void *arg)
{
    struct http_call *c;
    int bad = 0;

    if (h->closing || (c = calloc(1, sizeof(*c))) == NULL)
        return NULL;
    c->h = h;
    c->easy = easy;
    c->prepared = 1;
    c->cb = cb;
    c->arg = arg;
    c->retry_after_s = -1;
    bad |= curl_easy_setopt(easy, CURLOPT_PRIVATE, c) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_SHARE, h->share) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, http_open_socket) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, c) != CURLE_OK;
    if (bad || curl_multi_add_handle(h->multi, easy) != CURLM_OK) {
        free(c); /* the caller still owns easy and ctx */
        return NULL;
    }
    c->release = release;
    c->release_ctx = ctx;
    c->next = h->calls;
    if (h->calls)
        h->calls->prev = c;
    h->calls = c;
    return c;
}

void
http_cancel(struct http *h, struct http_call *call)
{
    (void)h;
    http_call_free(call);
}

static void
http_finish(struct http *h, CURL *easy, CURLcode rc)
{
    struct http_call *c = NULL;
    struct http_response r;
    curl_off_t uploaded = 0;
    long reqsize = 0, newconns = 0, os_errno = 0;
    double total = 0;

    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&c);
    memset(&r, 0, sizeof(r));
    r.result = rc;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_getinfo(easy, CURLINFO_REQUEST_SIZE, &reqsize);
    curl_easy_getinfo(easy, CURLINFO_SIZE_UPLOAD_T, &uploaded);
    curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME, &total);
    curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &newconns);
    curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);
    r.os_errno = c->open_errno ? c->open_errno : (int)os_errno;
    h->connections += newconns;
    r.request_sent = reqsize > 0 || uploaded > 0;
    r.seconds = total;
    r.body = c->body.data ? c->body.data : "";
    r.len = c->body.len;
    r.retry_after_s = c->retry_after_s;
    r.error = rc == CURLE_OK ? NULL : curl_easy_strerror(rc);
    /* The call is freed after its callback, never inside it. */
    c->cb(c->arg, &r);
    http_call_free(c);
}

static void
http_drain(struct http *h)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (msg->msg == CURLMSG_DONE) {
            CURL *easy = msg->easy_handle;
            CURLcode rc = msg->data.result; /* msg dies with the removal */
            http_finish(h, easy, rc);
        }
    }
}

long
http_connections(const struct http *h)
{
    return h->connections;
}

static void
http_timer_closed(uv_handle_t *hd)
{
    struct http *h = hd->data;

    if (h->closed_cb)
        h->closed_cb(h->closed_arg);
    free(h);
}

void
http_close(struct http *h, http_closed_cb *cb, void *arg)
{
    h->closing = 1;
    h->closed_cb = cb;
    h->closed_arg = arg;
    for (struct http_call *c = h->calls, *next; c != NULL; c = next) {
        next = c->next;
        http_call_free(c);
    }
    /* Spares hold a reference to the share: they go before it. */
    while (h->nspare > 0)
        curl_easy_cleanup(h->spare[--h->nspare]);
    /* curl may still call the socket callback here, so the loop is alive. */
    curl_multi_cleanup(h->multi);
    curl_share_cleanup(h->share);
    uv_close((uv_handle_t *)&h->timer, http_timer_closed);
}

void
http_send_result(const struct http_response *r, const char *provider, http_parse_fn *parse,
                 struct send_result *res)
{
    if (r->result != CURLE_OK) {
        memset(res, 0, sizeof(*res));
        res->outcome = http_classify_transport(r->result, r->request_sent, r->os_errno);
        snprintf(res->error_code, sizeof(res->error_code), "curl_%d", (int)r->result);
        snprintf(res->error, sizeof(res->error), "%s request failed: %s%s%s%s", provider, r->error,
                 r->os_errno ? ": " : "", r->os_errno ? strerror(r->os_errno) : "",
                 r->result == CURLE_PEER_FAILED_VERIFICATION
                     ? " (TLS certificate not trusted: check OTPD_CA_FILE)"
                     : "");
        return;
    }
    parse(r->status, r->body, r->len, res);
    if (r->retry_after_s >= 0)
        res->retry_after_ms = r->retry_after_s * 1000;
}

/* Out of descriptors or memory: this host's trouble, whichever provider it was for. */
static int
http_errno_local(int os_errno)
{
    return os_errno == EMFILE || os_errno == ENFILE || os_errno == ENOBUFS || os_errno == ENOMEM;
}

enum send_outcome
http_classify_transport(CURLcode rc, int request_sent, int os_errno)
{
    /*
     * With no descriptor left, OpenSSL cannot open the CA file and curl says
     * CURLE_SSL_CACERT_BADFILE: a local failure, never the provider's.  A CA
     * file that is truly unreadable is refused at start-up.
     */
    if (http_errno_local(os_errno) && !request_sent)
        return SEND_LOCAL;
    switch (rc) {
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_OUT_OF_MEMORY:
    case CURLE_FAILED_INIT:
        return SEND_LOCAL;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
        return SEND_RETRY; /* nothing reached the provider */
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return SEND_FAIL_PROVIDER; /* configuration: retrying cannot help */
    default:
        /* Timeouts, resets, empty replies: it depends whether we had spoken. */
        return request_sent ? SEND_AMBIGUOUS : SEND_RETRY;
    }
}
