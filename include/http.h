/*
 * http.h: HTTPS client requests on the libuv loop through libcurl's multi
 * interface (socket and timer callbacks; no threads, no polling loop).
 * One engine per provider, so each has its own connection cache and cap
 * and a slow provider cannot hold up another.  TLS verification is always
 * on; the CA bundle comes from OTPD_CA_FILE when set.
 */
#ifndef OTPD_HTTP_H
#define OTPD_HTTP_H

#include <stddef.h>

#include <curl/curl.h>
#include <uv.h>

#include "config.h"
#include "provider.h"

struct http_request {
    const char *url;
    const char *method; /* "GET" or "POST" */
    const char *content_type;
    const char *body; /* copied */
    size_t body_len;
    const char *username, *password; /* Basic auth, or NULL */
    const char *const *headers;      /* NULL-terminated "Name: value" list */
    long timeout_ms;
};

struct http_response {
    CURLcode result;
    long status;
    char *body; /* NUL-terminated; owned by the engine */
    size_t len;
    long retry_after_s; /* -1 if absent */
    int request_sent;   /* bytes of the request went out: a failure is ambiguous */
    int os_errno;       /* errno of a failed connect (EMFILE: our trouble, not theirs) */
    double seconds;
    const char *error; /* curl's text for a transport failure */
};

struct http;
struct http_call;
typedef void http_done_cb(void *arg, const struct http_response *resp);
typedef void http_closed_cb(void *arg);

/* request_cap: the provider's cap on requests in progress (0: none). */
struct http *http_new(uv_loop_t *loop, const struct config *cfg, const char *name, int request_cap);
/* Connections follow the request cap unless OTPD_HTTP_MAX_CONNS is set (reload). */
void http_set_request_cap(struct http *h, int request_cap);
/* The connection cap an engine with this request cap gets (0: no cap). */
int http_conns_cap(const struct config *cfg, int request_cap);
/* NULL if the request could not be started (out of memory, bad option). */
struct http_call *http_start(struct http *h, const struct http_request *req, http_done_cb *cb,
                             void *arg);
/*
 * An easy handle the caller set up for another protocol (SMTP), driven on
 * this engine's loop, share and connection cache.  From success on, the
 * engine owns easy and calls release(ctx) when the call ends; NULL leaves
 * both with the caller.
 */
struct http_call *http_start_prepared(struct http *h, CURL *easy, void (*release)(void *ctx),
                                      void *ctx, http_done_cb *cb, void *arg);
/* The done callback of a cancelled call never runs. */
void http_cancel(struct http *h, struct http_call *call);
void http_close(struct http *h, http_closed_cb *cb, void *arg);

/* Connections opened so far (to report reuse). */
long http_connections(const struct http *h);

/*
 * What a transport failure means for a send: refused before anything was
 * sent (retry), maybe sent (ambiguous), a configuration fault such as a
 * certificate that does not verify (provider-wide), or this host's own
 * trouble such as no descriptor left (local).  Pure.
 */
enum send_outcome http_classify_transport(CURLcode rc, int request_sent, int os_errno);

/*
 * A send's result from an HTTP answer: a transport failure is classified
 * here; an answer goes to the provider's parser.  Retry-After is kept.
 */
typedef void http_parse_fn(long status, const char *body, size_t len, struct send_result *res);
void http_send_result(const struct http_response *r, const char *provider, http_parse_fn *parse,
                      struct send_result *res);

#endif
