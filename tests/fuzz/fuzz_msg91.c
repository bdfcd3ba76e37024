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
    msg91_parse_flow(status, body, len, &res);
    check_result_common(status, &res);
    if (status == 401 || status == 403)
        CHECK(res.outcome == SEND_FAIL_PROVIDER);
    if (res.outcome == SEND_OK) {
        CHECK(strlen(res.ref) <= 70);
        CHECK(strcmp(res.provider_status, "accepted") == 0 ||
              strcmp(res.provider_status, "duplicate_discarded") == 0);
    }

    memset(&again, 0xa5, sizeof(again));
    msg91_parse_flow(status, body, len, &again);
    CHECK(memcmp(&res, &again, sizeof(res)) == 0);
    free(body);
    return 0;
}
