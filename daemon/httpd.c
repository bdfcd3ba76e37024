/*
 * httpd.c: accept, read one request with http-parser, hand it to the
 * handler, write the answer, close.  This endpoint faces scrapers and the
 * providers' webhooks, not browsers, and anyone who can reach the port, so
 * everything a client can hold is bounded:
 *
 *   - descriptors: at most max_clients connections.  A newcomer past that
 *     closes the oldest one still without a complete request, so a flood
 *     of idle connections cannot take the descriptors the providers' TLS
 *     connections need (sending would stop), and a scrape still gets in;
 *   - memory: an idle connection is its handles and nothing more.  Reads
 *     land in one buffer of the server's; a connection's own buffers are
 *     made from its first byte and grow with what it sends, up to 16 KiB;
 *   - time: 2 s to send the headers, 5 s for the whole exchange.
 *
 * Two layers: the reader (httpd_reader_*) turns bytes into a request and
 * knows nothing of the loop; the server owns sockets, timers and lists.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <http_parser.h>

#include "buf.h"
#include "httpd.h"
#include "log.h"

#define HTTPD_MAX_URL 1024
/* Room for a whole request's text plus a terminator per URL, name and value. */
#define HTTPD_BUF_MAX (HTTPD_MAX_REQUEST + 2 * HTTPD_MAX_HEADERS + 2)
/* A buffer's first size: a scrape's whole request fits; a webhook's head doubles it once. */
#define HTTPD_BUF_MIN 256
/*
 * Prometheus and the providers send a request's headers in one packet, at
 * once: only a client holding a slot on purpose (slowloris) needs longer
 * than 2 s.  The total bounds a slow body, and a slow reader of the answer.
 */
#define HTTPD_HEADER_TIMEOUT_MS  2000
#define HTTPD_REQUEST_TIMEOUT_MS 5000
#define HTTPD_BACKLOG            64
/* An accept error that lasts (out of descriptors) is logged once a minute per cause. */
#define HTTPD_LOG_PERIOD_MS 60000
#define HTTPD_NO_VALUE      SIZE_MAX

/* --- the reader: bytes in, one request out ------------------------------ */

struct httpd_reader {
    http_parser parser;
    size_t fed; /* bytes taken, framing included: the 16 KiB cap counts these */
    int status; /* HTTPD_READ_MORE, HTTPD_READ_DONE or the status to refuse with */
    int headers_done;
    struct buf head; /* the URL, then each header name and value, NUL-terminated */
    struct buf body; /* as decoded: a chunked body loses its framing here */
    size_t url_len;
    int nheaders, in_value;
    size_t name_off[HTTPD_MAX_HEADERS], value_off[HTTPD_MAX_HEADERS];
};

static int httpd_buf_append(struct buf *b, const char *at, size_t len);
static int httpd_reader_fail(struct httpd_reader *rd, int status);
static int httpd_on_url(http_parser *p, const char *at, size_t len);
static int httpd_header_piece(struct httpd_reader *rd, const char *at, size_t len, int value);
static int httpd_on_header_field(http_parser *p, const char *at, size_t len);
static int httpd_on_header_value(http_parser *p, const char *at, size_t len);
static int httpd_on_headers_complete(http_parser *p);
static int httpd_on_body(http_parser *p, const char *at, size_t len);
static int httpd_on_message_complete(http_parser *p);
static int httpd_reader_url(struct httpd_reader *rd, struct httpd_request *req);

/* --- the server --------------------------------------------------------- */

enum httpd_conn_state {
    HTTPD_CONN_NEW,     /* accepted, not admitted: on no list */
    HTTPD_CONN_READING, /* on srv->idle: no complete request yet, so it may be evicted */
    HTTPD_CONN_WRITING, /* on srv->busy: being answered */
    HTTPD_CONN_CLOSING,
};

/* The answer, with the write request that sends it: made only to answer. */
struct httpd_out {
    uv_write_t wr;
    char data[];
};

struct httpd_conn {
    struct httpd *srv;
    struct httpd_conn *prev, *next; /* on srv->idle or srv->busy, oldest first */
    enum httpd_conn_state state;
    int open_handles;
    uint64_t accepted_at;    /* uv_now(): both deadlines count from it */
    struct httpd_reader *rd; /* from the first byte */
    struct httpd_out *out;   /* from the answer */
    uv_tcp_t tcp;
    uv_timer_t timer;
};

struct httpd_list {
    struct httpd_conn *head, *tail;
};

struct httpd {
    uv_loop_t *loop;
    uv_tcp_t listener;
    httpd_handler *handler;
    void *arg;
    int max_clients;
    struct httpd_list idle, busy;
    struct httpd_stats stats;
    /* The listener, unfreed connections and the spare: the server is freed at 0. */
    int handles;
    int closing;
    void (*closed_cb)(void *arg);
    void *closed_arg;
    /* Takes a connection when there is no memory for one, so the queue drains. */
    uv_tcp_t spare;
    int spare_busy, spare_wanted;
    struct log_limiter accept_log;
    /* Every read lands here and the reader copies what it keeps: reads are synchronous. */
    char rbuf[HTTPD_MAX_REQUEST];
};

static void httpd_list_append(struct httpd_list *l, struct httpd_conn *c);
static void httpd_list_remove(struct httpd_list *l, struct httpd_conn *c);
static void httpd_enter_state(struct httpd_conn *c, enum httpd_conn_state state);
static struct httpd_conn *httpd_conn_new(struct httpd *s);
static void httpd_conn_start(struct httpd_conn *c);
static void httpd_conn_close(struct httpd_conn *c);
static void httpd_conn_closed(uv_handle_t *h);
static void httpd_maybe_done(struct httpd *s);
static int httpd_evict_oldest(struct httpd *s);
static void httpd_log_accept(struct httpd *s, int err);
static void httpd_on_connection(uv_stream_t *l, int status);
static void httpd_accept_spare(struct httpd *s);
static void httpd_spare_closed(uv_handle_t *h);
static void httpd_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void httpd_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b);
static void httpd_on_timeout(uv_timer_t *t);
static void httpd_rearm(struct httpd_conn *c);
static void httpd_answer(struct httpd_conn *c, int rc);
static const char *httpd_reason(int status);
static void httpd_send(struct httpd_conn *c, struct httpd_response *r);
static void httpd_send_error(struct httpd_conn *c, int status);
static void httpd_on_written(uv_write_t *w, int status);
static void httpd_listener_closed(uv_handle_t *h);
static int httpd_parse_addr(const char *addr, struct sockaddr_storage *ss, char *err,
                            size_t errlen);

static const http_parser_settings httpd_settings = {
    .on_url = httpd_on_url,
    .on_header_field = httpd_on_header_field,
    .on_header_value = httpd_on_header_value,
    .on_headers_complete = httpd_on_headers_complete,
    .on_body = httpd_on_body,
    .on_message_complete = httpd_on_message_complete,
};

/* --- the reader ---------------------------------------------------------- */

/*
 * Appends and NUL-terminates; the terminator is not counted in len, so the
 * next append continues the same string.  0, or the status to refuse
 * with: 413 past HTTPD_BUF_MAX, 503 out of memory.
 */
static int
httpd_buf_append(struct buf *b, const char *at, size_t len)
{
    switch (buf_append(b, at, len, HTTPD_BUF_MIN, HTTPD_BUF_MAX)) {
    case 0:
        return 0;
    case BUF_TOO_BIG:
        return 413;
    default:
        return 503;
    }
}

/* Records the first refusal; the nonzero return stops http-parser. */
static int
httpd_reader_fail(struct httpd_reader *rd, int status)
{
    if (rd->status == HTTPD_READ_MORE)
        rd->status = status;
    return 1;
}

struct httpd_reader *
httpd_reader_new(void)
{
    struct httpd_reader *rd = calloc(1, sizeof(*rd));

    if (rd == NULL)
        return NULL;
    http_parser_init(&rd->parser, HTTP_REQUEST);
    rd->parser.data = rd;
    return rd;
}

void
httpd_reader_free(struct httpd_reader *rd)
{
    if (rd == NULL)
        return;
    buf_free(&rd->head);
    buf_free(&rd->body);
    free(rd);
}

static int
httpd_on_url(http_parser *p, const char *at, size_t len)
{
    struct httpd_reader *rd = p->data;
    int rc;

    if (rd->url_len + len >= HTTPD_MAX_URL)
        return httpd_reader_fail(rd, 400);
    if ((rc = httpd_buf_append(&rd->head, at, len)) != 0)
        return httpd_reader_fail(rd, rc);
    rd->url_len += len;
    return 0;
}

/* Appends a piece of a header name or value; either may come in several. */
static int
httpd_header_piece(struct httpd_reader *rd, const char *at, size_t len, int value)
{
    int rc;

    if (rd->headers_done)
        return 0; /* a chunked body's trailers: never signed by a provider, so ignored */
    if (value != rd->in_value || rd->nheaders == 0) {
        /* A new string starts past the last one's terminator (the URL's, at least). */
        if (rd->head.data != NULL)
            rd->head.len++;
        if (!value) {
            if (rd->nheaders == HTTPD_MAX_HEADERS)
                return httpd_reader_fail(rd, 431);
            rd->name_off[rd->nheaders] = rd->head.len;
            rd->value_off[rd->nheaders++] = HTTPD_NO_VALUE;
        } else {
            rd->value_off[rd->nheaders - 1] = rd->head.len;
        }
        rd->in_value = value;
    }
    if ((rc = httpd_buf_append(&rd->head, at, len)) != 0)
        return httpd_reader_fail(rd, rc);
    return 0;
}

static int
httpd_on_header_field(http_parser *p, const char *at, size_t len)
{
    return httpd_header_piece(p->data, at, len, 0);
}

static int
httpd_on_header_value(http_parser *p, const char *at, size_t len)
{
    struct httpd_reader *rd = p->data;

    if (rd->nheaders == 0 && !rd->headers_done)
        return httpd_reader_fail(rd, 400);
    return httpd_header_piece(rd, at, len, 1);
}

static int
httpd_on_headers_complete(http_parser *p)
{
    struct httpd_reader *rd = p->data;

    rd->headers_done = 1;
    /* A declared length past the cap is refused now, not after 16 KiB or the timeout. */
    if (p->content_length != ULLONG_MAX && p->content_length > HTTPD_MAX_REQUEST) {
        httpd_reader_fail(rd, 413);
        return -1; /* 1 would mean "no body" here, not "stop" */
    }
    return 0;
}

/* Copies the body out as decoded, so the handler sees what was signed. */
static int
httpd_on_body(http_parser *p, const char *at, size_t len)
{
    struct httpd_reader *rd = p->data;
    int rc;

    if ((rc = httpd_buf_append(&rd->body, at, len)) != 0)
        return httpd_reader_fail(rd, rc);
    return 0;
}

static int
httpd_on_message_complete(http_parser *p)
{
    struct httpd_reader *rd = p->data;

    if (rd->status == HTTPD_READ_MORE)
        rd->status = HTTPD_READ_DONE;
    return 1; /* one request per connection: what follows is not parsed */
}

int
httpd_reader_feed(struct httpd_reader *rd, const char *data, size_t len)
{
    size_t room = HTTPD_MAX_REQUEST - rd->fed, take = len < room ? len : room, parsed;

    /* Zero bytes would tell http-parser the stream ended. */
    if (rd->status != HTTPD_READ_MORE || take == 0)
        return rd->status;
    rd->fed += take;
    parsed = http_parser_execute(&rd->parser, &httpd_settings, data, take);
    if (rd->status != HTTPD_READ_MORE)
        return rd->status;
    if (parsed != take || HTTP_PARSER_ERRNO(&rd->parser) != HPE_OK)
        rd->status = 400;
    else if (rd->fed >= HTTPD_MAX_REQUEST)
        rd->status = 413;
    return rd->status;
}

int
httpd_reader_headers_done(const struct httpd_reader *rd)
{
    return rd->headers_done;
}

/* Cuts the path and the query out of the URL in place: each ends at '?', '#' or the end. */
static int
httpd_reader_url(struct httpd_reader *rd, struct httpd_request *req)
{
    struct http_parser_url u;
    char *url = rd->head.data;
    size_t path_end, query_end;

    http_parser_url_init(&u);
    if (url == NULL || http_parser_parse_url(url, rd->url_len, 0, &u) != 0 ||
        !(u.field_set & (1 << UF_PATH)))
        return -1;
    req->path = url + u.field_data[UF_PATH].off;
    path_end = (size_t)u.field_data[UF_PATH].off + u.field_data[UF_PATH].len;
    req->query = "";
    if (u.field_set & (1 << UF_QUERY)) {
        req->query = url + u.field_data[UF_QUERY].off;
        query_end = (size_t)u.field_data[UF_QUERY].off + u.field_data[UF_QUERY].len;
        url[query_end] = '\0';
    }
    url[path_end] = '\0';
    return 0;
}

int
httpd_reader_request(struct httpd_reader *rd, struct httpd_request *req)
{
    memset(req, 0, sizeof(*req));
    if (rd->status != HTTPD_READ_DONE || httpd_reader_url(rd, req) != 0)
        return -1;
    req->method = http_method_str((enum http_method)rd->parser.method);
    for (int i = 0; i < rd->nheaders; i++) {
        req->header_names[i] = rd->head.data + rd->name_off[i];
        req->header_values[i] =
            rd->value_off[i] == HTTPD_NO_VALUE ? "" : rd->head.data + rd->value_off[i];
    }
    req->nheaders = rd->nheaders;
    req->body = rd->body.len > 0 ? rd->body.data : NULL;
    req->body_len = rd->body.len;
    return 0;
}

const char *
httpd_header(const struct httpd_request *req, const char *name)
{
    for (int i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->header_names[i], name) == 0)
            return req->header_values[i];
    return NULL;
}

void
httpd_respond(struct httpd_response *resp, int status, const char *text)
{
    resp->status = status;
    resp->body = strdup(text);
    resp->len = resp->body ? strlen(resp->body) : 0;
}

static void
plus_to_space(char *s)
{
    for (; *s; s++)
        if (*s == '+')
            *s = ' ';
}

int
httpd_form_parse(struct httpd_form *f, const char *body, size_t len)
{
    size_t end = strnlen(body, len); /* not strndup: body need not hold a NUL */
    char *copy = malloc(end + 1), *save = NULL, *pair;

    f->n = 0;
    if (copy == NULL)
        return -1;
    memcpy(copy, body, end);
    copy[end] = '\0';
    for (pair = strtok_r(copy, "&", &save); pair && f->n < HTTPD_FORM_MAX;
         pair = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(pair, '=');
        if (eq)
            *eq = '\0';
        plus_to_space(pair);
        if (eq)
            plus_to_space(eq + 1);
        f->names[f->n] = curl_easy_unescape(NULL, pair, 0, NULL);
        f->values[f->n] = curl_easy_unescape(NULL, eq ? eq + 1 : "", 0, NULL);
        if (f->names[f->n] == NULL || f->values[f->n] == NULL) {
            curl_free(f->names[f->n]);
            curl_free(f->values[f->n]);
            break;
        }
        f->n++;
    }
    free(copy);
    return 0;
}

const char *
httpd_form_get(const struct httpd_form *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->names[i], name) == 0)
            return f->values[i];
    return NULL;
}

void
httpd_form_free(struct httpd_form *f)
{
    for (int i = 0; i < f->n; i++) {
        curl_free(f->names[i]);
        curl_free(f->values[i]);
    }
    f->n = 0;
}

/* --- connections ----------------------------------------------------------- */

static void
httpd_list_append(struct httpd_list *l, struct httpd_conn *c)
{
    c->next = NULL;
    c->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
}

static void
httpd_list_remove(struct httpd_list *l, struct httpd_conn *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
}

/* The list a connection is on, and the open count, follow its state. */
static void
httpd_enter_state(struct httpd_conn *c, enum httpd_conn_state state)
{
    struct httpd *s = c->srv;

    if (c->state == HTTPD_CONN_READING)
        httpd_list_remove(&s->idle, c);
    else if (c->state == HTTPD_CONN_WRITING)
        httpd_list_remove(&s->busy, c);
    if (c->state == HTTPD_CONN_NEW && state != HTTPD_CONN_CLOSING)
        s->stats.open++;
    else if (c->state != HTTPD_CONN_NEW && state == HTTPD_CONN_CLOSING)
        s->stats.open--;
    if (state == HTTPD_CONN_READING)
        httpd_list_append(&s->idle, c);
    else if (state == HTTPD_CONN_WRITING)
        httpd_list_append(&s->busy, c);
    c->state = state;
}

static struct httpd_conn *
httpd_conn_new(struct httpd *s)
{
    struct httpd_conn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    if (uv_tcp_init(s->loop, &c->tcp) != 0) {
        free(c);
        return NULL;
    }
    uv_timer_init(s->loop, &c->timer);
    c->srv = s;
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    c->state = HTTPD_CONN_NEW;
    s->handles++;
    return c;
}

static void
httpd_conn_start(struct httpd_conn *c)
{
    c->accepted_at = uv_now(c->srv->loop);
    uv_timer_start(&c->timer, httpd_on_timeout, HTTPD_HEADER_TIMEOUT_MS, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, httpd_on_alloc, httpd_on_read) != 0) {
        httpd_conn_close(c);
        return;
    }
    httpd_enter_state(c, HTTPD_CONN_READING);
}

static void
httpd_conn_close(struct httpd_conn *c)
{
    if (c->state == HTTPD_CONN_CLOSING)
        return;
    httpd_enter_state(c, HTTPD_CONN_CLOSING);
    /* uv_close() shuts the descriptor now; the memory goes in the callbacks. */
    uv_close((uv_handle_t *)&c->tcp, httpd_conn_closed);
    uv_close((uv_handle_t *)&c->timer, httpd_conn_closed);
}

static void
httpd_conn_closed(uv_handle_t *h)
{
    struct httpd_conn *c = h->data;
    struct httpd *s = c->srv;

    if (--c->open_handles > 0)
        return;
    httpd_reader_free(c->rd);
    free(c->out);
    free(c);
    s->handles--;
    httpd_maybe_done(s);
}

static void
httpd_maybe_done(struct httpd *s)
{
    if (!s->closing || s->handles > 0)
        return;
    if (s->closed_cb)
        s->closed_cb(s->closed_arg);
    free(s);
}

/* Closes the oldest connection without a complete request; 0 if there is none. */
static int
httpd_evict_oldest(struct httpd *s)
{
    if (s->idle.head == NULL)
        return 0;
    httpd_conn_close(s->idle.head);
    s->stats.evicted++;
    return 1;
}

/* --- accepting --------------------------------------------------------------- */

static void
httpd_log_accept(struct httpd *s, int err)
{
    unsigned held = 0;

    if (log_limit_allow(&s->accept_log, uv_err_name(err), uv_now(s->loop), &held))
        log_warnx("httpd: cannot take a connection: %s (%u more since the last report)",
                  uv_strerror(err), held);
}

/*
 * Every connection is accepted, even one that is closed at once: one left
 * in the queue stops libuv polling the listener, and the kernel's queue
 * would fill with connections no one reads.
 */
static void
httpd_on_connection(uv_stream_t *l, int status)
{
    struct httpd *s = l->data;
    struct httpd_conn *c;

    if (status < 0) {
        httpd_log_accept(s, status);
        /* libuv retries at once while out of descriptors: an idle client's lets it on. */
        if (status == UV_EMFILE || status == UV_ENFILE)
            httpd_evict_oldest(s);
        return;
    }
    if ((c = httpd_conn_new(s)) == NULL) {
        httpd_accept_spare(s);
        return;
    }
    if ((status = uv_accept(l, (uv_stream_t *)&c->tcp)) != 0) {
        httpd_log_accept(s, status);
        httpd_conn_close(c);
        return;
    }
    s->stats.accepted++;
    if (s->stats.open >= (unsigned long long)s->max_clients && !httpd_evict_oldest(s)) {
        s->stats.refused++;
        httpd_conn_close(c);
        return;
    }
    httpd_conn_start(c);
}

/*
 * No memory for a connection: take it on the server's spare handle and
 * close it.  If the spare is still closing, the connection waits in libuv,
 * which stops polling the listener until uv_accept(): httpd_spare_closed()
 * takes it then.
 */
static void
httpd_accept_spare(struct httpd *s)
{
    httpd_log_accept(s, UV_ENOMEM);
    if (s->spare_busy) {
        s->spare_wanted = 1;
        return;
    }
    if (uv_tcp_init(s->loop, &s->spare) != 0)
        return;
    s->spare.data = s;
    s->spare_busy = 1;
    s->handles++;
    if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&s->spare) == 0) {
        s->stats.accepted++;
        s->stats.refused++;
    }
    uv_close((uv_handle_t *)&s->spare, httpd_spare_closed);
}

static void
httpd_spare_closed(uv_handle_t *h)
{
    struct httpd *s = h->data;

    s->spare_busy = 0;
    s->handles--;
    if (s->spare_wanted && !s->closing) {
        s->spare_wanted = 0;
        httpd_accept_spare(s);
    }
    httpd_maybe_done(s);
}

/* --- reading ------------------------------------------------------------------ */

static void
httpd_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct httpd_conn *c = h->data;

    (void)suggested;
    *b = uv_buf_init(c->srv->rbuf, sizeof(c->srv->rbuf));
}

static void
httpd_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct httpd_conn *c = st->data;
    int had_headers, rc;

    if (n < 0) {
        httpd_conn_close(c);
        return;
    }
    if (n == 0 || c->state != HTTPD_CONN_READING)
        return;
    if (c->rd == NULL && (c->rd = httpd_reader_new()) == NULL) {
        httpd_conn_close(c);
        return;
    }
    had_headers = httpd_reader_headers_done(c->rd);
    rc = httpd_reader_feed(c->rd, b->base, (size_t)n);
    if (!had_headers && httpd_reader_headers_done(c->rd))
        httpd_rearm(c);
    if (rc == HTTPD_READ_MORE)
        return;
    uv_read_stop(st);
    httpd_answer(c, rc);
}

static void
httpd_on_timeout(uv_timer_t *t)
{
    httpd_conn_close(t->data);
}

/* The headers are in: the rest of the request has what is left of its total. */
static void
httpd_rearm(struct httpd_conn *c)
{
    uint64_t spent = uv_now(c->srv->loop) - c->accepted_at;
    uint64_t left = spent < HTTPD_REQUEST_TIMEOUT_MS ? HTTPD_REQUEST_TIMEOUT_MS - spent : 0;

    uv_timer_start(&c->timer, httpd_on_timeout, left, 0);
}

/* --- answering ------------------------------------------------------------- */

/* rc: HTTPD_READ_DONE, or the status the reader refused the request with. */
static void
httpd_answer(struct httpd_conn *c, int rc)
{
    struct httpd_request req;
    struct httpd_response resp = {.status = 404};

    httpd_enter_state(c, HTTPD_CONN_WRITING);
    if (rc != HTTPD_READ_DONE) {
        httpd_send_error(c, rc);
    } else if (httpd_reader_request(c->rd, &req) != 0) {
        httpd_send_error(c, 400);
    } else {
        c->srv->handler(c->srv->arg, &req, &resp);
        httpd_send(c, &resp);
    }
    /* The answer is a copy: the request's buffers can go now. */
    httpd_reader_free(c->rd);
    c->rd = NULL;
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
    case 431:
        return "Request Header Fields Too Large";
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
    uv_buf_t b;
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     r->status, httpd_reason(r->status),
                     r->content_type ? r->content_type : "text/plain; charset=utf-8", r->len);

    if (n < 0 || (size_t)n >= sizeof(head) ||
        (c->out = malloc(sizeof(*c->out) + (size_t)n + r->len)) == NULL) {
        free(r->body);
        httpd_conn_close(c);
        return;
    }
    memcpy(c->out->data, head, (size_t)n);
    if (r->len)
        memcpy(c->out->data + n, r->body, r->len);
    free(r->body);
    b = uv_buf_init(c->out->data, (unsigned)((size_t)n + r->len));
    c->out->wr.data = c;
    if (uv_write(&c->out->wr, (uv_stream_t *)&c->tcp, &b, 1, httpd_on_written) != 0)
        httpd_conn_close(c);
}

static void
httpd_send_error(struct httpd_conn *c, int status)
{
    struct httpd_response r = {.status = status};
    char *msg = strdup(httpd_reason(status));

    r.body = msg;
    r.len = msg ? strlen(msg) : 0;
    httpd_send(c, &r);
}

static void
httpd_on_written(uv_write_t *w, int status)
{
    (void)status;
    httpd_conn_close(w->data);
}

/* --- the server ------------------------------------------------------------ */

static void
httpd_listener_closed(uv_handle_t *h)
{
    struct httpd *s = h->data;

    s->handles--;
    httpd_maybe_done(s);
}

/* "host:port" or "[v6]:port" into ss; 0, or -1 with the reason. */
static int
httpd_parse_addr(const char *addr, struct sockaddr_storage *ss, char *err, size_t errlen)
{
    char host[128];
    const char *colon = strrchr(addr, ':');
    int port, rc;

    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host) || (port = atoi(colon + 1)) <= 0 ||
        port > 65535) {
        snprintf(err, errlen, "\"%s\" is not host:port", addr);
        return -1;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
    if (host[0] == '[') {
        memmove(host, host + 1, strlen(host));
        host[strcspn(host, "]")] = '\0';
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss);
    } else {
        rc = uv_ip4_addr(host, port, (struct sockaddr_in *)ss);
    }
    if (rc != 0) {
        snprintf(err, errlen, "\"%s\": not an IP address (%s)", host, uv_strerror(rc));
        return -1;
    }
    return 0;
}

struct httpd *
httpd_new(uv_loop_t *loop, const char *addr, int max_clients, httpd_handler *h, void *arg,
          char *err, size_t errlen)
{
    struct httpd *s;
    struct sockaddr_storage ss;
    int rc;

    if (max_clients < 1) {
        snprintf(err, errlen, "at least one client must be allowed (got %d)", max_clients);
        return NULL;
    }
    if (httpd_parse_addr(addr, &ss, err, errlen) != 0)
        return NULL;
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->loop = loop;
    s->handler = h;
    s->arg = arg;
    s->max_clients = max_clients;
    s->accept_log.period_ms = HTTPD_LOG_PERIOD_MS;
    s->accept_log.burst = 1;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    s->handles = 1;
    if ((rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&s->listener, HTTPD_BACKLOG, httpd_on_connection)) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, uv_strerror(rc));
        s->closing = 1;
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
    s->closing = 1;
    while (s->idle.head != NULL)
        httpd_conn_close(s->idle.head);
    while (s->busy.head != NULL)
        httpd_conn_close(s->busy.head);
    uv_close((uv_handle_t *)&s->listener, httpd_listener_closed);
}

void
httpd_get_stats(const struct httpd *s, struct httpd_stats *out)
{
    *out = s->stats;
}
