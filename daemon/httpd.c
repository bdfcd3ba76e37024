/*
 * httpd.c: accept, parse one request with http-parser, hand it to the
 * handler, write the answer, close.  Requests over 16 KiB or slower than
 * 5 s are cut off: this endpoint faces scrapers, not browsers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#include "httpd.h"
#include "log.h"

#define HTTPD_MAX_REQUEST 16384
#define HTTPD_TIMEOUT_MS  5000

struct httpd {
    uv_loop_t *loop;
    uv_tcp_t listener;
    httpd_handler *handler;
    void *arg;
    void (*closed_cb)(void *arg);
    void *closed_arg;
};

struct httpd_conn {
    struct httpd *srv;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wr;
    int open_handles;
    http_parser parser;
    char buf[HTTPD_MAX_REQUEST + 1];
    size_t len;
    char url[1024];
    size_t url_len;
    const char *body;
    size_t body_len;
    int done;
    char *out;
    /* Header names and values, copied here as they arrive (possibly in pieces). */
    char hbuf[8192];
    size_t hlen;
    int nheaders, in_value;
    size_t name_off[HTTPD_MAX_HEADERS], value_off[HTTPD_MAX_HEADERS];
    int hoverflow;
};

static http_parser_settings httpd_settings;

static void
httpd_conn_closed(uv_handle_t *h)
{
    struct httpd_conn *c = h->data;

    if (--c->open_handles == 0) {
        free(c->out);
        free(c);
    }
}

static void
httpd_conn_close(struct httpd_conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_close((uv_handle_t *)&c->tcp, httpd_conn_closed);
        uv_close((uv_handle_t *)&c->timer, httpd_conn_closed);
    }
}

static void
httpd_written(uv_write_t *w, int status)
{
    (void)status;
    httpd_conn_close(w->data);
}

static const char *
httpd_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Payload Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

static void
httpd_send(struct httpd_conn *c, struct httpd_response *r)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     r->status, httpd_reason(r->status),
                     r->content_type ? r->content_type : "text/plain; charset=utf-8", r->len);

    c->out = malloc((size_t)n + r->len);
    if (c->out == NULL) {
        free(r->body);
        httpd_conn_close(c);
        return;
    }
    memcpy(c->out, head, (size_t)n);
    if (r->len)
        memcpy(c->out + n, r->body, r->len);
    free(r->body);
    uv_buf_t b = uv_buf_init(c->out, (unsigned)((size_t)n + r->len));
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, httpd_written) != 0)
        httpd_conn_close(c);
}

static void
httpd_error(struct httpd_conn *c, int status)
{
    struct httpd_response r = {.status = status};
    char *msg = strdup(httpd_reason(status));

    r.body = msg;
    r.len = msg ? strlen(msg) : 0;
    httpd_send(c, &r);
}

static int
on_url(http_parser *p, const char *at, size_t len)
{
    struct httpd_conn *c = p->data;

    if (c->url_len + len >= sizeof(c->url))
        return 1;
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = '\0';
    return 0;
}

/* Append a piece of a header name or value; each is NUL-terminated in hbuf. */
static int
header_piece(struct httpd_conn *c, const char *at, size_t len, int value)
{
    if (value != c->in_value || c->nheaders == 0) {
        if (!value) {
            if (c->nheaders == HTTPD_MAX_HEADERS) {
                c->hoverflow = 1;
                return 0;
            }
            c->name_off[c->nheaders++] = c->hlen;
        } else {
            c->value_off[c->nheaders - 1] = c->hlen;
        }
        c->in_value = value;
    } else if (c->hlen > 0) {
        c->hlen--; /* continue the string: drop its terminator */
    }
    if (c->hoverflow || c->hlen + len + 1 > sizeof(c->hbuf)) {
        c->hoverflow = 1;
        return 0;
    }
    memcpy(c->hbuf + c->hlen, at, len);
    c->hlen += len;
    c->hbuf[c->hlen++] = '\0';
    return 0;
}

static int
on_header_field(http_parser *p, const char *at, size_t len)
{
    return header_piece(p->data, at, len, 0);
}

static int
on_header_value(http_parser *p, const char *at, size_t len)
{
    struct httpd_conn *c = p->data;

    if (c->nheaders == 0)
        return 1;
    return header_piece(c, at, len, 1);
}

const char *
httpd_header(const struct httpd_request *req, const char *name)
{
    for (int i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->header_names[i], name) == 0)
            return req->header_values[i];
    return NULL;
}

static int
on_body(http_parser *p, const char *at, size_t len)
{
    struct httpd_conn *c = p->data;

    /* The body lies in c->buf, contiguous, since the request is parsed whole. */
    if (c->body == NULL)
        c->body = at;
    c->body_len += len;
    return 0;
}

static int
on_complete(http_parser *p)
{
    struct httpd_conn *c = p->data;
    struct http_parser_url u;
    char path[1024], query[1024] = "";
    struct httpd_request req;
    struct httpd_response resp = {.status = 404};

    c->done = 1;
    http_parser_url_init(&u);
    if (http_parser_parse_url(c->url, c->url_len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH))) {
        httpd_error(c, 400);
        return 1;
    }
    snprintf(path, sizeof(path), "%.*s", (int)u.field_data[UF_PATH].len,
             c->url + u.field_data[UF_PATH].off);
    if (u.field_set & (1 << UF_QUERY))
        snprintf(query, sizeof(query), "%.*s", (int)u.field_data[UF_QUERY].len,
                 c->url + u.field_data[UF_QUERY].off);
    memset(&req, 0, sizeof(req));
    req.method = http_method_str((enum http_method)p->method);
    req.path = path;
    req.query = query;
    for (int i = 0; i < c->nheaders && !c->hoverflow; i++) {
        req.header_names[req.nheaders] = c->hbuf + c->name_off[i];
        req.header_values[req.nheaders++] = c->value_off[i] ? c->hbuf + c->value_off[i] : "";
    }
    req.body = c->body;
    req.body_len = c->body_len;
    c->srv->handler(c->srv->arg, &req, &resp);
    httpd_send(c, &resp);
    return 1; /* one request per connection */
}

static void
httpd_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct httpd_conn *c = h->data;

    (void)suggested;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(HTTPD_MAX_REQUEST - c->len));
}

static void
httpd_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct httpd_conn *c = s->data;
    size_t parsed;

    (void)b;
    if (n < 0) {
        httpd_conn_close(c);
        return;
    }
    if (n == 0 || c->done)
        return;
    parsed = http_parser_execute(&c->parser, &httpd_settings, c->buf + c->len, (size_t)n);
    c->len += (size_t)n;
    if (c->done) {
        uv_read_stop(s);
        return;
    }
    if (parsed != (size_t)n || HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
        uv_read_stop(s);
        c->done = 1;
        httpd_error(c, 400);
    } else if (c->len >= HTTPD_MAX_REQUEST) {
        uv_read_stop(s);
        c->done = 1;
        httpd_error(c, 413);
    }
}

static void
httpd_timeout(uv_timer_t *t)
{
    httpd_conn_close(t->data);
}

static void
httpd_accept(uv_stream_t *l, int status)
{
    struct httpd *srv = l->data;
    struct httpd_conn *c;

    if (status < 0 || (c = calloc(1, sizeof(*c))) == NULL)
        return;
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        httpd_conn_close(c);
        return;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    uv_timer_start(&c->timer, httpd_timeout, HTTPD_TIMEOUT_MS, 0);
    uv_read_start((uv_stream_t *)&c->tcp, httpd_alloc, httpd_read);
}

static void
httpd_listener_closed(uv_handle_t *h)
{
    struct httpd *s = h->data;

    if (s->closed_cb)
        s->closed_cb(s->closed_arg);
    free(s);
}

struct httpd *
httpd_new(uv_loop_t *loop, const char *addr, httpd_handler *h, void *arg, char *err, size_t errlen)
{
    struct httpd *s;
    struct sockaddr_storage ss;
    char host[128];
    const char *colon = strrchr(addr, ':');
    int port, rc;

    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host) || (port = atoi(colon + 1)) <= 0 ||
        port > 65535) {
        snprintf(err, errlen, "\"%s\" is not host:port", addr);
        return NULL;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
    if (host[0] == '[') {
        memmove(host, host + 1, strlen(host));
        host[strcspn(host, "]")] = '\0';
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
    } else {
        rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    }
    if (rc != 0) {
        snprintf(err, errlen, "\"%s\": not an IP address (%s)", host, uv_strerror(rc));
        return NULL;
    }
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    http_parser_settings_init(&httpd_settings);
    httpd_settings.on_url = on_url;
    httpd_settings.on_header_field = on_header_field;
    httpd_settings.on_header_value = on_header_value;
    httpd_settings.on_body = on_body;
    httpd_settings.on_message_complete = on_complete;
    s->loop = loop;
    s->handler = h;
    s->arg = arg;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    if ((rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&s->listener, 64, httpd_accept)) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, uv_strerror(rc));
        uv_close((uv_handle_t *)&s->listener, httpd_listener_closed);
        return NULL;
    }
    return s;
}

void
httpd_close(struct httpd *s, void (*cb)(void *arg), void *arg)
{
    s->closed_cb = cb;
    s->closed_arg = arg;
    uv_close((uv_handle_t *)&s->listener, httpd_listener_closed);
}
