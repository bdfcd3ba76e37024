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
    struct send_result res;
    long status;

    if (!fuzz_parse_send(data, size, twilio_parse_create, &status, &res))
        return 0;
    if (res.outcome == SEND_OK) {
        CHECK(status >= 200 && status < 300);
        CHECK(sid_valid(res.ref));
        CHECK(res.error_code[0] == '\0' && res.error[0] == '\0');
    }
    if (status >= 200 && status < 300)
        CHECK(res.outcome == SEND_OK || res.outcome == SEND_AMBIGUOUS);
    return 0;
}
