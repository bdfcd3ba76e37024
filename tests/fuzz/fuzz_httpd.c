/*
 * fuzz_httpd.c: the HTTP request reader (httpd_reader_*) on arbitrary
 * bytes, fed whole and cut in pieces the way TCP may deliver them.
 *
 * Invariants: feed answers "more", "done" or a refusal (400, 413, 431,
 * 503) and keeps that answer; no request is done past the 16 KiB cap; the
 * same bytes cut anywhere give the same answer (or some refusal, for a
 * request with several faults) and the same request (method, path, query,
 * headers, body), so assembling the pieces does not depend on the cuts;
 * every string handed to a handler is NUL-terminated within its buffer and
 * the body is exactly body_len readable bytes; and a body sent again
 * chunked, cut anywhere, decodes to the very same bytes (the chunk framing
 * never reaches the handler: a signed webhook body must arrive as signed).
 */
#include <stdint.h>

#include "fuzz_common.h"
#include "httpd.h"

/* A small deterministic generator, seeded by the input, for the cuts. */
struct cuts {
    uint64_t state;
    size_t max;
};

static uint64_t
cuts_next(struct cuts *c)
{
    c->state ^= c->state << 13;
    c->state ^= c->state >> 7;
    c->state ^= c->state << 17;
    return c->state;
}

static void
cuts_init(struct cuts *c, const uint8_t *data, size_t size)
{
    static const size_t widths[] = {1, 2, 7, 64, 1500};
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 1099511628211ULL;
    c->state = h | 1;
    c->max = widths[cuts_next(c) % (sizeof(widths) / sizeof(widths[0]))];
}

static size_t
cuts_len(struct cuts *c)
{
    return 1 + (size_t)(cuts_next(c) % c->max);
}

static int
valid_answer(int rc)
{
    return rc == HTTPD_READ_MORE || rc == HTTPD_READ_DONE || rc == 400 || rc == 413 || rc == 431 ||
           rc == 503;
}

static int
refused(int rc)
{
    return rc != HTTPD_READ_MORE && rc != HTTPD_READ_DONE;
}

/* Feeds data in pieces (each copied to its own allocation, so ASan sees overreads). */
static int
feed_cut(struct httpd_reader *rd, const char *data, size_t size, struct cuts *c)
{
    int rc = HTTPD_READ_MORE;
    size_t off = 0;

    while (off < size) {
        size_t n = cuts_len(c);
        if (n > size - off)
            n = size - off;
        char *piece = malloc(n);
        CHECK(piece != NULL);
        memcpy(piece, data + off, n);
        int prev = rc;
        rc = httpd_reader_feed(rd, piece, n);
        free(piece);
        CHECK(valid_answer(rc));
        CHECK(prev == HTTPD_READ_MORE || rc == prev); /* an answer, once given, is kept */
        off += n;
    }
    return rc;
}

static void
check_request(const struct httpd_request *req)
{
    CHECK(req->method != NULL && req->method[0] != '\0');
    CHECK(req->path != NULL && req->query != NULL);
    CHECK(strlen(req->path) < 1024 && strlen(req->query) < 1024);
    CHECK(req->nheaders >= 0 && req->nheaders <= HTTPD_MAX_HEADERS);
    for (int i = 0; i < req->nheaders; i++) {
        CHECK(req->header_names[i] != NULL && req->header_values[i] != NULL);
        CHECK(httpd_header(req, req->header_names[i]) != NULL);
    }
    CHECK((req->body == NULL) == (req->body_len == 0));
    CHECK(req->body_len <= HTTPD_MAX_REQUEST);
}

static void
check_same(const struct httpd_request *a, const struct httpd_request *b)
{
    CHECK(strcmp(a->method, b->method) == 0);
    CHECK(strcmp(a->path, b->path) == 0);
    CHECK(strcmp(a->query, b->query) == 0);
    CHECK(a->nheaders == b->nheaders);
    for (int i = 0; i < a->nheaders; i++) {
        CHECK(strcmp(a->header_names[i], b->header_names[i]) == 0);
        CHECK(strcmp(a->header_values[i], b->header_values[i]) == 0);
    }
    CHECK(a->body_len == b->body_len);
    CHECK(a->body_len == 0 || memcmp(a->body, b->body, a->body_len) == 0);
}

/* The body again, chunked in random sizes, must decode to exactly itself. */
static void
check_chunked(const struct httpd_request *req, struct cuts *c)
{
    static const char head[] = "POST /webhooks/twilio HTTP/1.1\r\nHost: otpd\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n";
    /* 1-byte chunks cost 6 bytes each ("1\r\nX\r\n"). */
    size_t cap = sizeof(head) + req->body_len * 6 + 64, len = 0, off = 0;
    char *wire = malloc(cap);
    struct httpd_request again;

    CHECK(wire != NULL);
    memcpy(wire, head, sizeof(head) - 1);
    len = sizeof(head) - 1;
    while (off < req->body_len) {
        size_t n = cuts_len(c);
        if (n > req->body_len - off)
            n = req->body_len - off;
        len += (size_t)sprintf(wire + len, "%zx\r\n", n);
        memcpy(wire + len, req->body + off, n);
        len += n;
        memcpy(wire + len, "\r\n", 2);
        len += 2;
        off += n;
        CHECK(len + 24 < cap);
    }
    memcpy(wire + len, "0\r\n\r\n", 5);
    len += 5;

    struct httpd_reader *rd = httpd_reader_new();
    CHECK(rd != NULL);
    int rc = feed_cut(rd, wire, len, c);
    if (len > HTTPD_MAX_REQUEST) {
        CHECK(rc == 413);
    } else {
        CHECK(rc == HTTPD_READ_DONE);
        CHECK(httpd_reader_request(rd, &again) == 0);
        CHECK(strcmp(again.method, "POST") == 0 && strcmp(again.path, "/webhooks/twilio") == 0);
        CHECK(again.body_len == req->body_len);
        CHECK(req->body_len == 0 || memcmp(again.body, req->body, req->body_len) == 0);
    }
    httpd_reader_free(rd);
    free(wire);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exact-length copy, not NUL-terminated: the reader takes (data, len). */
    char *copy = malloc(size ? size : 1);
    struct httpd_reader *whole = httpd_reader_new(), *cut = httpd_reader_new();
    struct httpd_request ra, rb;
    struct cuts c;

    CHECK(copy != NULL && whole != NULL && cut != NULL);
    memcpy(copy, data, size);
    cuts_init(&c, data, size);

    int rc = httpd_reader_feed(whole, copy, size);
    CHECK(valid_answer(rc));
    int rc_cut = feed_cut(cut, copy, size, &c);
    /*
     * A request with several faults may be refused for either (400 or 431):
     * http-parser reports a header name when it ends or when the bytes run
     * out, so which fault shows first depends on the cuts.
     */
    CHECK(rc_cut == rc || (refused(rc) && refused(rc_cut)));
    CHECK(httpd_reader_headers_done(whole) == httpd_reader_headers_done(cut));
    if (rc == HTTPD_READ_DONE) {
        int ua = httpd_reader_request(whole, &ra), ub = httpd_reader_request(cut, &rb);
        CHECK(ua == ub && (ua == 0 || ua == -1));
        if (ua == 0) {
            check_request(&ra);
            check_request(&rb);
            check_same(&ra, &rb);
            check_chunked(&ra, &c);
        }
    } else {
        /* Only a complete request yields one. */
        CHECK(httpd_reader_request(whole, &ra) == -1);
    }
    /* An answer is final: a request that follows (pipelined) changes nothing. */
    if (rc != HTTPD_READ_MORE)
        CHECK(httpd_reader_feed(whole, "GET / HTTP/1.1\r\n\r\n", 18) == rc);
    httpd_reader_free(whole);
    httpd_reader_free(cut);
    free(copy);
    return 0;
}
