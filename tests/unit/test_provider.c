/*
 * test_provider.c: the pure wire parsers (Twilio Create Message, MSG91
 * Flow), the transport failure classes and the backoff arithmetic.
 */
#include <setjmp.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backoff.h"
#include "http.h"
#include "provider.h"

#define SID "SM0123456789abcdef0123456789ABCDEF"

/* Parse a NUL-terminated Twilio answer. */
static void
tw(long status, const char *body, struct send_result *res)
{
    memset(res, 0x5a, sizeof(*res)); /* the parser must clear it */
    twilio_parse_create(status, body, strlen(body), res);
}

static void
m91(long status, const char *body, struct send_result *res)
{
    memset(res, 0x5a, sizeof(*res));
    msg91_parse_flow(status, body, strlen(body), res);
}

/* Every text field is NUL-terminated inside its buffer. */
static void
assert_terminated(const struct send_result *res)
{
    assert_true(strnlen(res->ref, sizeof(res->ref)) < sizeof(res->ref));
    assert_true(strnlen(res->provider_status, sizeof(res->provider_status)) <
                sizeof(res->provider_status));
    assert_true(strnlen(res->error_code, sizeof(res->error_code)) < sizeof(res->error_code));
    assert_true(strnlen(res->error, sizeof(res->error)) < sizeof(res->error));
}

/* A Twilio error body with this code gives this outcome and the hint holds want. */
static void
expect_twilio_error(long status, int code, enum send_outcome outcome, const char *want)
{
    struct send_result res;
    char body[256], codestr[16];

    snprintf(body, sizeof(body),
             "{\"code\":%d,\"message\":\"Twilio says no\",\"more_info\":"
             "\"https://www.twilio.com/docs/errors/%d\",\"status\":%ld}",
             code, code, status);
    tw(status, body, &res);
    assert_terminated(&res);
    if (res.outcome != outcome)
        fail_msg("HTTP %ld code %d: outcome %s, want %s", status, code,
                 provider_outcome_name(res.outcome), provider_outcome_name(outcome));
    snprintf(codestr, sizeof(codestr), "%d", code);
    assert_string_equal(res.error_code, codestr);
    assert_string_equal(res.ref, "");
    if (want && strstr(res.error, want) == NULL)
        fail_msg("code %d: error \"%s\" does not contain \"%s\"", code, res.error, want);
}

/* --- Twilio ----------------------------------------------------------- */

static void
test_twilio_created(void **state)
{
    struct send_result res;
    const char *body =
        "{\"account_sid\":\"AC00000000000000000000000000000000\",\"api_version\":\"2010-04-01\","
        "\"body\":\"Your code is 123456\",\"date_created\":\"Thu, 24 Aug 2023 05:01:45 +0000\","
        "\"date_sent\":null,\"date_updated\":\"Thu, 24 Aug 2023 05:01:45 +0000\","
        "\"direction\":\"outbound-api\",\"error_code\":null,\"error_message\":null,"
        "\"from\":\"+15557122661\",\"messaging_service_sid\":null,\"num_media\":\"0\","
        "\"num_segments\":\"1\",\"price\":null,\"price_unit\":\"USD\",\"sid\":\"" SID "\","
        "\"status\":\"queued\",\"subresource_uris\":{\"media\":\"/x\"},"
        "\"to\":\"+14155552671\",\"uri\":\"/2010-04-01/Accounts/AC0/Messages/" SID ".json\"}";

    (void)state;
    tw(201, body, &res);
    assert_int_equal(res.outcome, SEND_OK);
    assert_string_equal(res.ref, SID);
    assert_string_equal(res.provider_status, "queued");
    assert_string_equal(res.error_code, "");
    assert_true(res.retry_after_ms == 0);

    /* MMS sids and any 2xx are accepted too. */
    tw(200, "{\"sid\":\"MMffffffffffffffffffffffffffffffff\",\"status\":\"accepted\"}", &res);
    assert_int_equal(res.outcome, SEND_OK);
    assert_string_equal(res.ref, "MMffffffffffffffffffffffffffffffff");
    assert_string_equal(res.provider_status, "accepted");
}

static void
test_twilio_created_malformed(void **state)
{
    static const char *const bodies[] = {
        "{\"status\":\"queued\"}",                           /* no sid */
        "{\"sid\":\"XX123\",\"status\":\"queued\"}",         /* not a sid */
        "{\"sid\":\"SM0123456789abcdef0123456789abcdeg\"}",  /* not hex */
        "{\"sid\":\"SM0123456789abcdef0123456789abcdef0\"}", /* 35 chars */
        "{\"sid\":\"AC0123456789abcdef0123456789abcdef\"}",  /* account sid */
        "{\"sid\":12345,\"status\":\"queued\"}",             /* not a string */
        "{\"sid\":\"" SID "\",\"status\":\"que",             /* truncated */
        "",                                                  /* empty */
        "[\"" SID "\"]",                                     /* not an object */
    };
    struct send_result res;

    (void)state;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        tw(201, bodies[i], &res);
        assert_terminated(&res);
        if (res.outcome != SEND_AMBIGUOUS)
            fail_msg("201 %s: outcome %s, want ambiguous", bodies[i],
                     provider_outcome_name(res.outcome));
        assert_string_equal(res.error_code, "malformed_response");
        assert_string_equal(res.ref, "");
        assert_non_null(strstr(res.error, "201"));
    }
}

static void
test_twilio_job_errors(void **state)
{
    (void)state;
    expect_twilio_error(400, 21211, SEND_FAIL_JOB, "international format");
    expect_twilio_error(400, 21211, SEND_FAIL_JOB, "Twilio says no");
    expect_twilio_error(400, 21608, SEND_FAIL_JOB, "verify");
    expect_twilio_error(400, 21608, SEND_FAIL_JOB, "upgrade");
    expect_twilio_error(400, 21610, SEND_FAIL_JOB, "START");
    expect_twilio_error(400, 21614, SEND_FAIL_JOB, "mobile");
    expect_twilio_error(400, 21408, SEND_FAIL_JOB, "Geo permissions");
    expect_twilio_error(400, 21612, SEND_FAIL_JOB, "route");
}

static void
test_twilio_provider_errors(void **state)
{
    (void)state;
    expect_twilio_error(401, 20003, SEND_FAIL_PROVIDER, "TWILIO_AUTH_TOKEN");
    expect_twilio_error(401, 20003, SEND_FAIL_PROVIDER, "TWILIO_ACCOUNT_SID");
    expect_twilio_error(401, 20005, SEND_FAIL_PROVIDER, "not active");
    expect_twilio_error(403, 20005, SEND_FAIL_PROVIDER, NULL);
    /* A sender problem is the provider's, though it arrives as a 400. */
    expect_twilio_error(400, 21606, SEND_FAIL_PROVIDER, "TWILIO_PHONE_NUMBER");
    expect_twilio_error(400, 21659, SEND_FAIL_PROVIDER, "TWILIO_PHONE_NUMBER");
}

static void
test_twilio_transient_errors(void **state)
{
    struct send_result res;

    (void)state;
    expect_twilio_error(429, 20429, SEND_RETRY, NULL);
    expect_twilio_error(500, 20500, SEND_AMBIGUOUS, NULL);
    /* The HTTP status decides retries, not a code's hint. */
    expect_twilio_error(503, 21211, SEND_AMBIGUOUS, NULL);
    expect_twilio_error(429, 21211, SEND_RETRY, NULL);

    tw(503, "<html><body><h1>503 Service Unavailable</h1></body></html>", &res);
    assert_terminated(&res);
    assert_int_equal(res.outcome, SEND_AMBIGUOUS);
    assert_string_equal(res.error_code, "http_503");
    assert_non_null(strstr(res.error, "503"));

    tw(429, "", &res);
    assert_int_equal(res.outcome, SEND_RETRY);
    assert_string_equal(res.error_code, "http_429");

    tw(502, "{\"status\":502}", &res); /* JSON without a code */
    assert_int_equal(res.outcome, SEND_AMBIGUOUS);
    assert_string_equal(res.error_code, "http_502");
}

static void
test_twilio_unknown_errors(void **state)
{
    struct send_result res;

    (void)state;
    tw(400, "{\"code\":99999,\"message\":\"The frobnicator is out of phase\",\"status\":400}",
       &res);
    assert_int_equal(res.outcome, SEND_FAIL_JOB);
    assert_string_equal(res.error_code, "99999");
    assert_non_null(strstr(res.error, "The frobnicator is out of phase"));
    assert_non_null(strstr(res.error, "400"));

    /* An unknown 4xx is permanent for the job, even without JSON. */
    tw(404, "Not Found", &res);
    assert_int_equal(res.outcome, SEND_FAIL_JOB);
    assert_string_equal(res.error_code, "http_404");

    tw(400, "{\"message\":\"no code here\"}", &res);
    assert_int_equal(res.outcome, SEND_FAIL_JOB);
    assert_string_equal(res.error_code, "http_400");
    assert_non_null(strstr(res.error, "no code here"));
}

static void
test_twilio_long_fields(void **state)
{
    static char body[4096];
    struct send_result res;
    char msg[2001];
    const int codes[] = {99999, 21211, 20003};

    (void)state;
    memset(msg, 'x', 2000);
    msg[2000] = '\0';
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        snprintf(body, sizeof(body), "{\"code\":%d,\"message\":\"%s\"}", codes[i], msg);
        tw(400, body, &res);
        assert_terminated(&res);
        assert_true(strlen(res.error) < sizeof(res.error));
        assert_non_null(strstr(res.error, "xxxx"));
    }

    /* A huge status string is cut to fit. */
    snprintf(body, sizeof(body), "{\"sid\":\"" SID "\",\"status\":\"%s\"}", msg);
    tw(201, body, &res);
    assert_int_equal(res.outcome, SEND_OK);
    assert_terminated(&res);
    assert_int_equal(strlen(res.provider_status), sizeof(res.provider_status) - 1);
}

/* --- MSG91 ------------------------------------------------------------ */

static void
expect_m91(long status, const char *body, enum send_outcome outcome)
{
    struct send_result res;

    m91(status, body, &res);
    assert_terminated(&res);
    if (res.outcome != outcome)
        fail_msg("HTTP %ld %s: outcome %s, want %s", status, body,
                 provider_outcome_name(res.outcome), provider_outcome_name(outcome));
}

static void
test_msg91_success(void **state)
{
    struct send_result res;

    (void)state;
    m91(200, "{\"type\":\"success\",\"message\":\"5f1b2c3d4e5f6a7b8c9d0e1f\"}", &res);
    assert_int_equal(res.outcome, SEND_OK);
    assert_string_equal(res.ref, "5f1b2c3d4e5f6a7b8c9d0e1f");
    assert_string_equal(res.error_code, "");

    m91(200, "{\"type\":\"success\",\"request_id\":\"abc\"}", &res);
    assert_int_equal(res.outcome, SEND_OK);
    assert_string_equal(res.ref, "abc");

    expect_m91(200, "{\"type\":\"success\"}", SEND_OK);
    expect_m91(202, "{\"type\":\"success\"}", SEND_OK);
    /* Success needs a 2xx and type "success". */
    expect_m91(400, "{\"type\":\"success\"}", SEND_FAIL_JOB);
    expect_m91(302, "{\"type\":\"success\",\"message\":\"abc\"}", SEND_FAIL_JOB);
}

static void
test_msg91_errors(void **state)
{
    struct send_result res;
    const char *auth =
        "{\"type\":\"error\",\"message\":\"AuthenticationFailure\",\"code\":\"201\"}";

    (void)state;
    m91(200, auth, &res);
    assert_int_equal(res.outcome, SEND_FAIL_PROVIDER);
    assert_string_equal(res.ref, "");
    assert_string_equal(res.error_code, "201");
    assert_non_null(strstr(res.error, "MSG91_AUTH_KEY"));
    expect_m91(401, auth, SEND_FAIL_PROVIDER);
    expect_m91(200, "{\"type\":\"error\",\"message\":\"Invalid authkey\",\"code\":207}",
               SEND_FAIL_PROVIDER);
    expect_m91(403, "{\"type\":\"error\",\"message\":\"Forbidden\"}", SEND_FAIL_PROVIDER);

    m91(200, "{\"type\":\"error\",\"message\":\"Insufficient Balance\"}", &res);
    assert_int_equal(res.outcome, SEND_FAIL_PROVIDER);
    assert_non_null(strstr(res.error, "recharge"));

    m91(200, "{\"type\":\"error\",\"message\":\"IP not allowed\",\"code\":\"418\"}", &res);
    assert_int_equal(res.outcome, SEND_FAIL_PROVIDER);
    assert_string_equal(res.error_code, "418");

    m91(200, "{\"type\":\"error\",\"message\":\"Invalid template\"}", &res);
    assert_int_equal(res.outcome, SEND_FAIL_PROVIDER);
    assert_non_null(strstr(res.error, "MSG91_TEMPLATE_ID"));

    m91(200, "{\"type\":\"error\",\"message\":\"Mobile no. not found\"}", &res);
    assert_int_equal(res.outcome, SEND_FAIL_JOB);
    assert_non_null(strstr(res.error, "Mobile no. not found"));
    expect_m91(400, "{\"type\":\"error\",\"message\":\"invalid mobile\",\"code\":\"202\"}",
               SEND_FAIL_JOB);
}

static void
test_msg91_transient(void **state)
{
    struct send_result res;

    (void)state;
    expect_m91(429, "{\"type\":\"error\",\"message\":\"Too many requests\"}", SEND_RETRY);
    expect_m91(429, "", SEND_RETRY);
    expect_m91(500, "{\"type\":\"error\",\"message\":\"AuthenticationFailure\"}", SEND_AMBIGUOUS);
    expect_m91(502, "<html>Bad Gateway</html>", SEND_AMBIGUOUS);

    m91(200, "<html>OK</html>", &res);
    assert_int_equal(res.outcome, SEND_AMBIGUOUS);
    assert_string_equal(res.error_code, "malformed_response");
    expect_m91(200, "{\"type\":\"succ", SEND_AMBIGUOUS);
    expect_m91(200, "{\"message\":\"abc\"}", SEND_AMBIGUOUS);
    expect_m91(200, "", SEND_AMBIGUOUS);
}

static void
test_msg91_long_fields(void **state)
{
    static char body[4096];
    struct send_result res;
    char big[2001];

    (void)state;
    memset(big, 'y', 2000);
    big[2000] = '\0';
    snprintf(body, sizeof(body), "{\"type\":\"error\",\"message\":\"%s\",\"code\":\"%s\"}", big,
             big);
    m91(200, body, &res);
    assert_terminated(&res);
    assert_non_null(strstr(res.error, "yyyy"));

    snprintf(body, sizeof(body), "{\"type\":\"success\",\"message\":\"%s\"}", big);
    m91(200, body, &res);
    assert_int_equal(res.outcome, SEND_OK);
    assert_terminated(&res);
}

/* --- transport -------------------------------------------------------- */

static void
test_transport(void **state)
{
    (void)state;
    for (int sent = 0; sent <= 1; sent++) {
        assert_int_equal(http_classify_transport(CURLE_COULDNT_CONNECT, sent, 0), SEND_RETRY);
        assert_int_equal(http_classify_transport(CURLE_COULDNT_RESOLVE_HOST, sent, 0), SEND_RETRY);
        assert_int_equal(http_classify_transport(CURLE_PEER_FAILED_VERIFICATION, sent, 0),
                         SEND_FAIL_PROVIDER);
    }
    assert_int_equal(http_classify_transport(CURLE_OPERATION_TIMEDOUT, 0, 0), SEND_RETRY);
    assert_int_equal(http_classify_transport(CURLE_OPERATION_TIMEDOUT, 1, 0), SEND_AMBIGUOUS);
    assert_int_equal(http_classify_transport(CURLE_RECV_ERROR, 1, 0), SEND_AMBIGUOUS);
    assert_int_equal(http_classify_transport(CURLE_GOT_NOTHING, 1, 0), SEND_AMBIGUOUS);
    assert_int_equal(http_classify_transport(CURLE_SEND_ERROR, 0, 0), SEND_RETRY);
    /* Out of descriptors: curl fails to read the CA file; not the provider's fault. */
    assert_int_equal(http_classify_transport(CURLE_SSL_CACERT_BADFILE, 0, 0), SEND_LOCAL);
    assert_int_equal(http_classify_transport(CURLE_COULDNT_CONNECT, 0, EMFILE), SEND_LOCAL);
    assert_int_equal(http_classify_transport(CURLE_OUT_OF_MEMORY, 0, 0), SEND_LOCAL);
    assert_int_equal(http_classify_transport(CURLE_COULDNT_CONNECT, 0, ECONNREFUSED), SEND_RETRY);
}

/* --- backoff ---------------------------------------------------------- */

static void
test_backoff_ceiling(void **state)
{
    uint64_t prev = 0;

    (void)state;
    assert_true(backoff_ceiling(1, 500, 30000) == 500);
    assert_true(backoff_ceiling(2, 500, 30000) == 1000);
    assert_true(backoff_ceiling(3, 500, 30000) == 2000);
    assert_true(backoff_ceiling(6, 500, 30000) == 16000);
    assert_true(backoff_ceiling(7, 500, 30000) == 30000);
    for (int n = 1; n <= 64; n++) {
        uint64_t c = backoff_ceiling(n, 500, 30000);
        assert_true(c >= prev);
        assert_true(c <= 30000);
        prev = c;
    }
    assert_true(backoff_ceiling(20, 500, 30000) == 30000);
    assert_true(backoff_ceiling(1000, 500, 30000) == 30000);
    assert_true(backoff_ceiling(1000, 1, UINT64_C(1) << 62) == UINT64_C(1) << 62);
}

/* xorshift32: fixed seed, so the test is repeatable. */
static uint32_t
next_rnd(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void
test_backoff_jitter(void **state)
{
    uint32_t seed = 0x9e3779b9u;
    const int n = 10000;
    double sum = 0;

    (void)state;
    for (int retry = 1; retry <= 30; retry++) {
        uint64_t ceil = backoff_ceiling(retry, 500, 30000);
        uint64_t hi = backoff_full_jitter(retry, 500, 30000, UINT32_MAX);
        assert_true(backoff_full_jitter(retry, 500, 30000, 0) == 0);
        assert_true(hi <= ceil);
        assert_true((double)hi >= (double)ceil * 0.99);
    }
    for (int i = 0; i < n; i++) {
        uint64_t d = backoff_full_jitter(7, 500, 30000, next_rnd(&seed));
        assert_true(d <= 30000);
        sum += (double)d;
    }
    sum /= n;
    if (sum < 15000 * 0.95 || sum > 15000 * 1.05)
        fail_msg("mean delay %.1f is not near 15000", sum);
}

/* Found by fuzz_msg91 (tests/fuzz/regressions/msg91-*). */
static void
test_msg91_fuzz_regressions(void **state)
{
    struct send_result res;

    (void)state;
    m91(500, "", &res);
    assert_int_equal(res.outcome, SEND_AMBIGUOUS);
    assert_string_equal(res.error_code, "http_500");
    m91(429, "{\"type\":\"error\",\"message\":\"slow down\"}", &res);
    assert_int_equal(res.outcome, SEND_RETRY);
    assert_string_equal(res.error_code, "http_429");
    m91(401, "", &res);
    assert_int_equal(res.outcome, SEND_FAIL_PROVIDER);
    m91(403, "<html>forbidden</html>", &res);
    assert_int_equal(res.outcome, SEND_FAIL_PROVIDER);
    m91(401, "{\"type\":\"error\",\"message\":\"Request discarded as duplicate\"}", &res);
    assert_int_equal(res.outcome, SEND_FAIL_PROVIDER);
    assert_true(res.error[0] != '\0');
    assert_string_equal(res.provider_status, "");
}

static void
test_twilio_stop_is_remembered(void **state)
{
    struct send_result res;

    (void)state;
    tw(400, "{\"code\":21610,\"message\":\"Attempt to send to unsubscribed recipient\"}", &res);
    assert_int_equal(res.outcome, SEND_FAIL_JOB);
    assert_int_equal(res.opted_out, 1);
    tw(400, "{\"code\":21211,\"message\":\"bad\"}", &res);
    assert_int_equal(res.opted_out, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_twilio_created),
        cmocka_unit_test(test_twilio_created_malformed),
        cmocka_unit_test(test_twilio_job_errors),
        cmocka_unit_test(test_twilio_provider_errors),
        cmocka_unit_test(test_twilio_transient_errors),
        cmocka_unit_test(test_twilio_unknown_errors),
        cmocka_unit_test(test_twilio_long_fields),
        cmocka_unit_test(test_msg91_success),
        cmocka_unit_test(test_msg91_errors),
        cmocka_unit_test(test_msg91_transient),
        cmocka_unit_test(test_msg91_long_fields),
        cmocka_unit_test(test_msg91_fuzz_regressions),
        cmocka_unit_test(test_twilio_stop_is_remembered),
        cmocka_unit_test(test_transport),
        cmocka_unit_test(test_backoff_ceiling),
        cmocka_unit_test(test_backoff_jitter),
    };

    return cmocka_run_group_tests_name("provider", tests, NULL, NULL);
}
