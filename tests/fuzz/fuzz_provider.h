/*
 * fuzz_provider.h: the part the Twilio and MSG91 targets share.  Input:
 * bytes 0-1 pick the HTTP status, the rest is the body, handed over as an
 * exact-length heap block without a NUL (the parsers take body and len).
 */
#ifndef OTPD_FUZZ_PROVIDER_H
#define OTPD_FUZZ_PROVIDER_H

#include <stdint.h>

#include "fuzz_common.h"
#include "provider.h"

static long
fuzz_status(const uint8_t *data)
{
    static const long common[] = {200, 201, 202, 204, 400, 401, 403, 404, 409, 422,
                                  429, 500, 502, 503, 504, 0,   100, 301, -1,  99999999};
    if (data[0] < 128)
        return common[data[1] % (sizeof(common) / sizeof(common[0]))];
    return (long)((data[0] - 128) << 8 | data[1]) % 1000;
}

/* Invariants every send result meets, whatever the provider. */
static void
check_result_common(long status, const struct send_result *res)
{
    CHECK(res->outcome >= SEND_OK && res->outcome <= SEND_AMBIGUOUS);
    CHECK(NUL_IN(res->ref) && NUL_IN(res->provider_status) && NUL_IN(res->error_code) &&
          NUL_IN(res->error));
    CHECK(strcmp(provider_outcome_name(res->outcome), "unknown") != 0);
    CHECK(res->retry_after_ms >= 0);
    if (res->outcome == SEND_OK) {
        CHECK(status != 429 && status < 500);
        CHECK(res->error[0] == '\0');
    } else {
        /* A failure always tells the operator something, and the status record and
         * events stream a machine-readable code (Twilio: "http_503", "21211", ...). */
        CHECK(res->error[0] != '\0');
        CHECK(res->error_code[0] != '\0');
    }
    if (status == 429)
        CHECK(res->outcome == SEND_RETRY);
    if (status >= 500)
        CHECK(res->outcome == SEND_AMBIGUOUS);
}

typedef void parse_send_fn(long status, const char *body, size_t len, struct send_result *res);

/*
 * Split the input, parse it, check the common invariants and that a second
 * parse gives the same bytes.  0 if the input is too short to use.
 */
static int
fuzz_parse_send(const uint8_t *data, size_t size, parse_send_fn *parse, long *status,
                struct send_result *res)
{
    struct send_result again;
    size_t len;
    char *body;

    if (size < 2)
        return 0;
    *status = fuzz_status(data);
    len = size - 2;
    if ((body = malloc(len ? len : 1)) == NULL)
        abort();
    memcpy(body, data + 2, len);
    memset(res, 0x5a, sizeof(*res));
    parse(*status, body, len, res);
    check_result_common(*status, res);
    memset(&again, 0xa5, sizeof(again));
    parse(*status, body, len, &again);
    CHECK(memcmp(res, &again, sizeof(again)) == 0);
    free(body);
    return 1;
}

#endif
