/*
 * httpd.h: a small HTTP/1.1 server on the loop for the operator's
 * endpoints (Prometheus /metrics).  Requests are parsed with Debian's
 * http-parser; one request per connection, answered and closed.
 */
#ifndef OTPD_HTTPD_H
#define OTPD_HTTPD_H

#include <stddef.h>

#include <uv.h>

#define HTTPD_MAX_HEADERS 32

struct httpd_request {
    const char *method;
    const char *path;  /* without the query */
    const char *query; /* after "?", or "" */
    const char *body;
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

typedef void httpd_handler(void *arg, const struct httpd_request *req, struct httpd_response *resp);

struct httpd;
/* addr is "host:port" (IPv4 or [IPv6]); NULL with the reason on failure. */
struct httpd *httpd_new(uv_loop_t *loop, const char *addr, httpd_handler *h, void *arg, char *err,
                        size_t errlen);
void httpd_close(struct httpd *s, void (*cb)(void *arg), void *arg);

#endif
