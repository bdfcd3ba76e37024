/*
 * fuzz_twilio.c: twilio_parse_create() and twilio_parse_call_create() on
 * arbitrary status and body (the first byte's low bit picks which).
 *
 * Invariants (on top of fuzz_provider.h): SEND_OK only for a 2xx carrying
 * a valid sid of the right kind (a message's SM/MM, a call's CA, + 32 hex),
 * which becomes the ref; a 2xx
 * without one is ambiguous (it may have been sent), never a retry;
 * 401/403 without a Twilio code is a provider failure; the parse is
 * deterministic.
 */
#include "fuzz_provider.h"

static int
sid_valid(const char *s, int call)
{
    return strlen(s) == 34 &&
           (call ? strncmp(s, "CA", 2) == 0
                 : strncmp(s, "SM", 2) == 0 || strncmp(s, "MM", 2) == 0) &&
           strspn(s + 2, "0123456789abcdefABCDEF") == 32;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct send_result res;
    long status;
    int call = size > 0 && (data[0] & 1);

    if (!fuzz_parse_send(data, size, call ? twilio_parse_call_create : twilio_parse_create, &status,
                         &res))
        return 0;
    if (res.outcome == SEND_OK) {
        CHECK(status >= 200 && status < 300);
        CHECK(sid_valid(res.ref, call));
        CHECK(res.error_code[0] == '\0' && res.error[0] == '\0');
    }
    if (status >= 200 && status < 300)
        CHECK(res.outcome == SEND_OK || res.outcome == SEND_AMBIGUOUS);
    return 0;
}
