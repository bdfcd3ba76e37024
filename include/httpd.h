/*
 * httpd.h: a small HTTP/1.1 server on the loop for the operator's
 * endpoints (Prometheus /metrics) and the providers' webhooks.  Requests
 * are parsed with Debian's http-parser; one request per connection,
 * answered and closed.  Whoever reaches the port may be hostile, so every
 * resource a client can hold is capped (see httpd.c).
 */
#ifndef OTPD_HTTPD_H
#define OTPD_HTTPD_H

#include <stddef.h>

#include <uv.h>

#define HTTPD_MAX_HEADERS 32
#define HTTPD_MAX_REQUEST 16384 /* bytes of one request as sent, framing included */

struct httpd_request {
    const char *method;
    const char *path;  /* without the query */
    const char *query; /* after "?", or "" */
    const char *body;  /* decoded (no chunk framing); NULL when empty */
    size_t body_len;
    int nheaders;
    const char *header_names[HTTPD_MAX_HEADERS];
    const char *header_values[HTTPD_MAX_HEADERS];
};

/* A request header's value (names compare case-insensitively), or NULL. */
const char *httpd_header(const struct httpd_request *req, const char *name);

struct httpd_response {
    int status;
    const char *content_type;
    char *body; /* malloc'd; the server frees it */
    size_t len;
};

/* A response with a short text body (copied). */
void httpd_respond(struct httpd_response *resp, int status, const char *text);

/*
 * An application/x-www-form-urlencoded body, decoded ("+" is a space):
 * the first HTTPD_FORM_MAX pairs, in order; a name without "=" has the
 * value "".  body need not hold a NUL.
 */
#define HTTPD_FORM_MAX 64
struct httpd_form {
    int n;
    char *names[HTTPD_FORM_MAX];
    char *values[HTTPD_FORM_MAX];
};
/* 0, or -1 out of memory (nothing to free then). */
int httpd_form_parse(struct httpd_form *f, const char *body, size_t len);
/* The first value of name, or NULL. */
const char *httpd_form_get(const struct httpd_form *f, const char *name);
void httpd_form_free(struct httpd_form *f);

typedef void httpd_handler(void *arg, const struct httpd_request *req, struct httpd_response *resp);

struct httpd;
/*
 * addr is "host:port" (IPv4 or [IPv6]).  At most max_clients (>= 1)
 * connections are open at once: a newcomer past that closes the oldest
 * connection that has not sent a complete request, or is itself closed if
 * every one is being answered.  NULL with the reason on failure.
 */
struct httpd *httpd_new(uv_loop_t *loop, const char *addr, int max_clients, httpd_handler *h,
                        void *arg, char *err, size_t errlen);
/* Closes the listener and every connection; cb runs once all are gone. */
void httpd_close(struct httpd *s, void (*cb)(void *arg), void *arg);

struct httpd_stats {
    unsigned long long accepted; /* connections taken off the listen queue */
    unsigned long long evicted;  /* idle ones closed to make room for a newcomer */
    unsigned long long refused;  /* newcomers closed at once: no room to make */
    unsigned long long open;     /* connections open now */
};
void httpd_get_stats(const struct httpd *s, struct httpd_stats *out);

/*
 * The request reader, without the loop: bytes in, one request out.  The
 * server runs one per connection from its first byte; the fuzz target
 * drives it directly.
 */
#define HTTPD_READ_MORE 0 /* feed more bytes */
#define HTTPD_READ_DONE 1 /* a complete request: httpd_reader_request() */
struct httpd_reader;
struct httpd_reader *httpd_reader_new(void); /* NULL if out of memory */
void httpd_reader_free(struct httpd_reader *rd);
/*
 * Takes the next bytes as they came off the wire; returns HTTPD_READ_MORE,
 * HTTPD_READ_DONE or the HTTP status to refuse the request with (400, 413,
 * 431, 503), and keeps returning it: bytes after the request are ignored.
 */
int httpd_reader_feed(struct httpd_reader *rd, const char *data, size_t len);
/* 1 once the request's headers are all in. */
int httpd_reader_headers_done(const struct httpd_reader *rd);
/*
 * Once per complete request: fills req with strings that live as long as
 * rd; 0, or -1 if the request target is not a usable URL (400).
 */
int httpd_reader_request(struct httpd_reader *rd, struct httpd_request *req);

#endif
