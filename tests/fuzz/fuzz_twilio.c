/*
 * fuzz_twilio.c: twilio_parse_create() on arbitrary status and body.
 *
 * Invariants (on top of fuzz_provider.h): SEND_OK only for a 2xx carrying
 * a valid message sid (SM/MM + 32 hex), which becomes the ref; a 2xx
 * without one is ambiguous (it may have been sent), never a retry;
 * 401/403 without a Twilio code is a provider failure; the parse is
 * deterministic.
 */
#include "fuzz_provider.h"

static int
sid_valid(const char *s)
{
    return strlen(s) == 34 && (strncmp(s, "SM", 2) == 0 || strncmp(s, "MM", 2) == 0) &&
           strspn(s + 2, "0123456789abcdefABCDEF") == 32;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    long status = fuzz_status(data);
    size_t len = size - 2;
    char *body = malloc(len ? len : 1);
    if (body == NULL)
        abort();
    memcpy(body, data + 2, len);

    struct send_result res, again;
    memset(&res, 0x5a, sizeof(res));
    twilio_parse_create(status, body, len, &res);
    check_result_common(status, &res);
    if (res.outcome == SEND_OK) {
        CHECK(status >= 200 && status < 300);
        CHECK(sid_valid(res.ref));
        CHECK(res.error_code[0] == '\0' && res.error[0] == '\0');
    }
    if (status >= 200 && status < 300)
        CHECK(res.outcome == SEND_OK || res.outcome == SEND_AMBIGUOUS);

    memset(&again, 0xa5, sizeof(again));
    twilio_parse_create(status, body, len, &again);
    CHECK(memcmp(&res, &again, sizeof(res)) == 0);
    free(body);
    return 0;
}
