/*
 * fuzz_msg91.c: msg91_parse_flow() on arbitrary status and body.
 *
 * Invariants (on top of fuzz_provider.h): SEND_OK only below 500, not 429,
 * 401 or 403, and then with a ref of at most 70 characters; a 2xx is OK
 * only with type "success" or a duplicate-discard answer; 401/403 is
 * always a provider failure; the parse is deterministic.
 */
#include "fuzz_provider.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct send_result res;
    long status;

    if (!fuzz_parse_send(data, size, msg91_parse_flow, &status, &res))
        return 0;
    if (status == 401 || status == 403)
        CHECK(res.outcome == SEND_FAIL_PROVIDER);
    if (res.outcome == SEND_OK) {
        CHECK(strlen(res.ref) <= 70);
        CHECK(strcmp(res.provider_status, "accepted") == 0 ||
              strcmp(res.provider_status, "duplicate_discarded") == 0);
    }
    return 0;
}
