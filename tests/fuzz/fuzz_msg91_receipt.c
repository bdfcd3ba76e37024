/*
 * fuzz_msg91_receipt.c: msg91_parse_reports() on arbitrary delivery-report
 * bodies.  Input: byte 0 picks the Content-Type (bits 0-1: form, JSON,
 * none, form with a charset) and whether the sink refuses every receipt
 * (bit 2, as when Redis is down); the rest is the body (an exact-length
 * heap block without a NUL).
 *
 * Invariants: the answer is 200, 400 or 503; 400 hands over no receipt,
 * 503 only when the sink refused one, 200 never when it did; every receipt
 * is delivered or undelivered, carries error code "dlr_<status>" and that
 * status as the provider's word, an explanation exactly when undelivered,
 * and NUL-terminated fields; the parse is deterministic.
 */
#include "fuzz_common.h"
#include "provider.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct sink {
    int refuse;
    int taken;
    unsigned long long hash; /* FNV-1a over the receipts, for determinism */
};

static int
take(void *arg, const struct receipt *r)
{
    struct sink *s = arg;
    const unsigned char *b = (const unsigned char *)r;

    CHECK(NUL_IN(r->ref) && NUL_IN(r->provider_status) && NUL_IN(r->error_code) &&
          NUL_IN(r->error));
    CHECK(r->status == JOB_DELIVERED || r->status == JOB_UNDELIVERED);
    CHECK(strncmp(r->error_code, "dlr_", 4) == 0 && r->error_code[4] != '\0');
    CHECK(strcmp(r->provider_status, r->error_code + 4) == 0);
    CHECK((r->status == JOB_DELIVERED) == (r->error[0] == '\0'));
    s->taken++;
    for (size_t i = 0; i < sizeof(*r); i++)
        s->hash = (s->hash ^ b[i]) * 1099511628211ULL;
    return s->refuse ? -1 : 0;
}

static int
parse(const char *ct, const char *body, size_t len, int refuse, struct sink *s)
{
    int rc;

    memset(s, 0, sizeof(*s));
    s->refuse = refuse;
    s->hash = 14695981039346656037ULL;
    rc = msg91_parse_reports(ct, body, len, take, s);
    CHECK(rc == 200 || rc == 400 || rc == 503);
    if (rc == 400)
        CHECK(s->taken == 0);
    if (rc == 503)
        CHECK(refuse && s->taken > 0);
    if (rc == 200)
        CHECK(!refuse || s->taken == 0);
    return rc;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const types[] = {"application/x-www-form-urlencoded", "application/json",
                                        NULL, "application/x-www-form-urlencoded; charset=UTF-8"};
    struct sink a, b;
    size_t len;
    char *body;
    int refuse;

    if (size < 1)
        return 0;
    refuse = (data[0] & 4) != 0;
    len = size - 1;
    if ((body = malloc(len ? len : 1)) == NULL)
        abort();
    memcpy(body, data + 1, len);
    CHECK(parse(types[data[0] & 3], body, len, refuse, &a) ==
          parse(types[data[0] & 3], body, len, refuse, &b));
    CHECK(a.taken == b.taken && a.hash == b.hash);
    free(body);
    return 0;
}
