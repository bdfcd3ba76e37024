/*
 * test_job.c: job payload validation (docs/protocol.md), one rejection
 * reason per rule.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "job.h"
#include "otp.h"

#define NOW_MS INT64_C(1700000000000)

static const struct job_defaults defs = {
    .ttl = 300, .digits = 6, .max_attempts = 5, .max_skew_ms = 60000};

/* Parse a NUL-terminated payload; the job is left for the caller to clear. */
static int
parse(struct job *job, const char *payload, char *err, size_t errlen)
{
    err[0] = '\0';
    return job_parse(job, payload, payload ? strlen(payload) : 0, &defs, NOW_MS, err, errlen);
}

/* The payload is rejected and the reason contains want. */
static void
expect_reject(const char *payload, const char *want)
{
    struct job job;
    char err[REASON_MAX];

    if (parse(&job, payload, err, sizeof(err)) != -1)
        fail_msg("accepted %s", payload);
    if (strstr(err, want) == NULL)
        fail_msg("payload %s: reason \"%s\" does not contain \"%s\"", payload, err, want);
    assert_null(job.message);
    job_clear(&job);
}

static void
test_minimal_defaults(void **state)
{
    struct job job;
    char err[REASON_MAX];

    (void)state;
    assert_int_equal(parse(&job, "{\"to\":\"+14155552671\"}", err, sizeof(err)), 0);
    assert_string_equal(job.to, "+14155552671");
    assert_string_equal(job.id, "");
    assert_string_equal(job.purpose, "login");
    assert_string_equal(job.provider, "");
    assert_int_equal(job.ttl, 300);
    assert_int_equal(job.digits, 6);
    assert_int_equal(job.max_attempts, 5);
    assert_null(job.message);
    assert_true(job.created_ms == NOW_MS);
    assert_true(job.expires_ms == NOW_MS + 300 * 1000);
    job_clear(&job);

    /* Other defaults flow through unchanged. */
    struct job_defaults d2 = {.ttl = 120, .digits = 8, .max_attempts = 3, .max_skew_ms = 60000};
    const char *p = "{\"to\":\"+14155552671\",\"v\":1}";
    assert_int_equal(job_parse(&job, p, strlen(p), &d2, 5000, err, sizeof(err)), 0);
    assert_int_equal(job.ttl, 120);
    assert_int_equal(job.digits, 8);
    assert_int_equal(job.max_attempts, 3);
    assert_true(job.created_ms == 5000);
    assert_true(job.expires_ms == 5000 + 120 * 1000);
    job_clear(&job);
}

static void
test_all_fields(void **state)
{
    struct job job;
    char err[REASON_MAX];
    const char *payload =
        "{\"v\":1,\"id\":\"req_42.a:b-C\",\"to\":\"+919876543210\",\"purpose\":\"password_reset\","
        "\"ttl\":600,\"digits\":8,\"max_attempts\":3,\"provider\":\"msg91\","
        "\"message\":\"Code {code}, valid {minutes} min\",\"created_ms\":1690000000123}";

    (void)state;
    assert_int_equal(parse(&job, payload, err, sizeof(err)), 0);
    assert_string_equal(job.id, "req_42.a:b-C");
    assert_string_equal(job.to, "+919876543210");
    assert_string_equal(job.purpose, "password_reset");
    assert_int_equal(job.ttl, 600);
    assert_int_equal(job.digits, 8);
    assert_int_equal(job.max_attempts, 3);
    assert_string_equal(job.provider, "msg91");
    assert_non_null(job.message);
    assert_string_equal(job.message, "Code {code}, valid {minutes} min");
    assert_true(job.created_ms == INT64_C(1690000000123));
    assert_true(job.expires_ms == INT64_C(1690000000123) + 600 * 1000);
    job_clear(&job);
    /* job_clear leaves a zeroed job (and ASan sees the message freed). */
    assert_null(job.message);
    assert_string_equal(job.id, "");

    for (int i = 0; i < 3; i++) {
        static const char *const providers[] = {"twilio", "msg91", "console"};
        char p[128];
        snprintf(p, sizeof(p), "{\"to\":\"+14155552671\",\"provider\":\"%s\"}", providers[i]);
        assert_int_equal(parse(&job, p, err, sizeof(err)), 0);
        assert_string_equal(job.provider, providers[i]);
        job_clear(&job);
    }
}

static void
test_bounds_accepted(void **state)
{
    struct job job;
    char err[REASON_MAX];

    (void)state;
    assert_int_equal(parse(&job,
                           "{\"to\":\"+14155552671\",\"ttl\":30,\"digits\":4,"
                           "\"max_attempts\":1,\"created_ms\":0}",
                           err, sizeof(err)),
                     0);
    assert_int_equal(job.ttl, 30);
    assert_int_equal(job.digits, 4);
    assert_int_equal(job.max_attempts, 1);
    assert_true(job.created_ms == 0);
    assert_true(job.expires_ms == 30000);
    job_clear(&job);
    assert_int_equal(parse(&job,
                           "{\"to\":\"+14155552671\",\"ttl\":3600,\"digits\":10,"
                           "\"max_attempts\":20,\"ttl_note\":\"x\"}",
                           err, sizeof(err)),
                     0);
    assert_int_equal(job.ttl, 3600);
    assert_int_equal(job.digits, 10);
    assert_int_equal(job.max_attempts, 20);
    job_clear(&job);
    /* An integer written as 300.0 is still an integer. */
    assert_int_equal(parse(&job, "{\"to\":\"+14155552671\",\"ttl\":300.0}", err, sizeof(err)), 0);
    assert_int_equal(job.ttl, 300);
    job_clear(&job);
}

static void
test_unknown_fields_ignored(void **state)
{
    struct job job;
    char err[REASON_MAX];

    (void)state;
    assert_int_equal(parse(&job,
                           "{\"to\":\"+14155552671\",\"extra\":{\"a\":[1,2,3]},"
                           "\"user_id\":7,\"TTL\":\"nonsense\",\"note\":null}",
                           err, sizeof(err)),
                     0);
    assert_string_equal(job.to, "+14155552671");
    assert_int_equal(job.ttl, 300); /* "TTL" is not "ttl": names are case-sensitive */
    job_clear(&job);
}

static void
test_reject_envelope(void **state)
{
    struct job job;
    char err[REASON_MAX];

    (void)state;
    assert_int_equal(job_parse(&job, NULL, 0, &defs, NOW_MS, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no \"job\" field"));
    job_clear(&job);

    expect_reject("", "not valid JSON");
    expect_reject("{\"to\":", "not valid JSON");
    expect_reject("to=+14155552671", "not valid JSON");
    expect_reject("[{\"to\":\"+14155552671\"}]", "not an object");
    expect_reject("\"+14155552671\"", "not an object");
    expect_reject("42", "not an object");
    expect_reject("null", "not an object");
}

static void
test_reject_payload_size(void **state)
{
    struct job job;
    char err[REASON_MAX];
    const char *head = "{\"to\":\"+14155552671\",\"pad\":\"";
    const char *tail = "\"}";
    size_t fixed = strlen(head) + strlen(tail);
    char *p = malloc(JOB_PAYLOAD_MAX + 2);

    (void)state;
    assert_non_null(p);
    /* Exactly JOB_PAYLOAD_MAX bytes is accepted. */
    strcpy(p, head);
    memset(p + strlen(head), 'x', JOB_PAYLOAD_MAX - fixed);
    strcpy(p + JOB_PAYLOAD_MAX - strlen(tail), tail);
    assert_int_equal(strlen(p), JOB_PAYLOAD_MAX);
    assert_int_equal(parse(&job, p, err, sizeof(err)), 0);
    job_clear(&job);
    /* One more byte is not. */
    strcpy(p, head);
    memset(p + strlen(head), 'x', JOB_PAYLOAD_MAX + 1 - fixed);
    strcpy(p + JOB_PAYLOAD_MAX + 1 - strlen(tail), tail);
    assert_int_equal(strlen(p), JOB_PAYLOAD_MAX + 1);
    assert_int_equal(parse(&job, p, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "65537"));
    assert_non_null(strstr(err, "limit"));
    job_clear(&job);
    free(p);
}

static void
test_length_bounds_parse(void **state)
{
    struct job job;
    char err[REASON_MAX];
    /* Stream field values are not NUL-terminated: only len bytes count. */
    char buf[] = "{\"to\":\"+14155552671\"}XXXX";
    size_t objlen = strlen(buf) - 4;

    (void)state;
    assert_int_equal(job_parse(&job, buf, objlen, &defs, NOW_MS, err, sizeof(err)), 0);
    assert_string_equal(job.to, "+14155552671");
    job_clear(&job);
    assert_int_equal(job_parse(&job, buf, objlen - 1, &defs, NOW_MS, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not valid JSON"));
    job_clear(&job);
}

static void
test_reject_to(void **state)
{
    (void)state;
    expect_reject("{}", "field to: missing");
    expect_reject("{\"id\":\"a1\"}", "field to: missing");
    expect_reject("{\"to\":\"\"}", "field to: missing");
    expect_reject("{\"to\":14155552671}", "field to: must be a string");
    expect_reject("{\"to\":null}", "field to: must be a string");
    expect_reject("{\"to\":[\"+14155552671\"]}", "field to: must be a string");
    expect_reject("{\"to\":\"14155552671\"}", "field to: not an E.164");
    expect_reject("{\"to\":\"+04155552671\"}", "field to: not an E.164");
    expect_reject("{\"to\":\"+123456\"}", "field to: not an E.164");
    expect_reject("{\"to\":\"+1234567890123456\"}", "field to: not an E.164");
    expect_reject("{\"to\":\"+1415555CALL\"}", "field to: not an E.164");
    expect_reject("{\"to\":\"+1 415 555 2671\"}", "field to: not an E.164");
    expect_reject("{\"to\":\" +14155552671\"}", "field to: not an E.164");
    expect_reject("{\"to\":\"+14155552671 \"}", "field to: not an E.164");
    expect_reject("{\"to\":\"+1-415-555-2671\"}", "field to: not an E.164");
    expect_reject("{\"to\":\"+\"}", "field to: not an E.164");
}

static void
test_reject_version(void **state)
{
    (void)state;
    expect_reject("{\"v\":2,\"to\":\"+14155552671\"}", "field v: unsupported contract version 2");
    expect_reject("{\"v\":0,\"to\":\"+14155552671\"}", "field v: unsupported");
    expect_reject("{\"v\":\"1\",\"to\":\"+14155552671\"}", "field v: must be an integer");
    expect_reject("{\"v\":1.5,\"to\":\"+14155552671\"}", "field v: must be an integer");
    expect_reject("{\"v\":-1,\"to\":\"+14155552671\"}", "field v");
}

static void
test_reject_numbers(void **state)
{
    (void)state;
    expect_reject("{\"to\":\"+14155552671\",\"ttl\":29}", "field ttl: 29 is out of range 30..3600");
    expect_reject("{\"to\":\"+14155552671\",\"ttl\":3601}", "field ttl: 3601 is out of range");
    expect_reject("{\"to\":\"+14155552671\",\"digits\":3}",
                  "field digits: 3 is out of range 4..10");
    expect_reject("{\"to\":\"+14155552671\",\"digits\":11}", "field digits: 11 is out of range");
    expect_reject("{\"to\":\"+14155552671\",\"max_attempts\":0}",
                  "field max_attempts: 0 is out of range 1..20");
    expect_reject("{\"to\":\"+14155552671\",\"max_attempts\":21}", "field max_attempts: 21");
    expect_reject("{\"to\":\"+14155552671\",\"ttl\":300.5}", "field ttl: must be an integer");
    expect_reject("{\"to\":\"+14155552671\",\"ttl\":\"300\"}", "field ttl: must be an integer");
    expect_reject("{\"to\":\"+14155552671\",\"ttl\":true}", "field ttl: must be an integer");
    expect_reject("{\"to\":\"+14155552671\",\"ttl\":null}", "field ttl: must be an integer");
    expect_reject("{\"to\":\"+14155552671\",\"ttl\":-300}", "field ttl");
    expect_reject("{\"to\":\"+14155552671\",\"ttl\":1e30}", "field ttl");
    expect_reject("{\"to\":\"+14155552671\",\"digits\":6.000001}",
                  "field digits: must be an integer");
    expect_reject("{\"to\":\"+14155552671\",\"max_attempts\":\"5\"}",
                  "field max_attempts: must be an integer");
}

static void
test_reject_strings(void **state)
{
    (void)state;
    expect_reject("{\"to\":\"+14155552671\",\"provider\":\"sns\"}",
                  "field provider: must be one of twilio, msg91, console");
    expect_reject("{\"to\":\"+14155552671\",\"provider\":\"Twilio\"}", "field provider");
    expect_reject("{\"to\":\"+14155552671\",\"provider\":\"\"}", "field provider");
    expect_reject("{\"to\":\"+14155552671\",\"provider\":1}", "field provider: must be a string");
    expect_reject("{\"to\":\"+14155552671\",\"purpose\":\"Bad\"}", "field purpose: must be");
    expect_reject("{\"to\":\"+14155552671\",\"purpose\":\"\"}", "field purpose");
    expect_reject("{\"to\":\"+14155552671\",\"purpose\":\"pass reset\"}", "field purpose");
    expect_reject("{\"to\":\"+14155552671\",\"purpose\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
                  "field purpose"); /* 33 */
    expect_reject("{\"to\":\"+14155552671\",\"purpose\":7}", "field purpose: must be a string");
    expect_reject("{\"to\":\"+14155552671\",\"created_ms\":-1}", "field created_ms");
    expect_reject("{\"to\":\"+14155552671\",\"created_ms\":\"1700000000000\"}",
                  "field created_ms: must be epoch milliseconds");
    expect_reject("{\"to\":\"+14155552671\",\"created_ms\":1700000000000.5}", "field created_ms");
    /* A clock far ahead, or a forged creation time, would keep a code alive for ages. */
    expect_reject("{\"to\":\"+14155552671\",\"created_ms\":1000000000000000}",
                  "field created_ms: 998300000000 s ahead");
    expect_reject("{\"to\":\"+14155552671\",\"created_ms\":1700000060001}",
                  "field created_ms: 60 s ahead of this host's clock");
}

/* Within the skew tolerance, the lifetime counts from now: no code outlives its ttl. */
static void
test_created_ahead_within_skew(void **state)
{
    struct job job;
    char err[REASON_MAX];

    (void)state;
    assert_int_equal(
        parse(&job, "{\"to\":\"+14155552671\",\"created_ms\":1700000059000}", err, sizeof(err)), 0);
    assert_true(job.created_ms == NOW_MS);
    assert_true(job.expires_ms == NOW_MS + 300 * 1000);
    job_clear(&job);
}

static void
test_reject_message(void **state)
{
    char payload[2048];
    struct job job;
    char err[REASON_MAX];

    (void)state;
    expect_reject("{\"to\":\"+14155552671\",\"message\":\"Your code expires soon\"}",
                  "field message: must contain {code}");
    expect_reject("{\"to\":\"+14155552671\",\"message\":\"\"}", "field message");
    expect_reject("{\"to\":\"+14155552671\",\"message\":42}", "field message: must be a string");

    /* 474 'a' + 6 digits = 480 characters: accepted. */
    snprintf(payload, sizeof(payload), "{\"to\":\"+14155552671\",\"message\":\"%0474d{code}\"}", 0);
    assert_int_equal(parse(&job, payload, err, sizeof(err)), 0);
    assert_non_null(job.message);
    assert_int_equal(strlen(job.message), 474 + 6);
    job_clear(&job);

    /* The same template with 7 digits renders to 481. */
    snprintf(payload, sizeof(payload),
             "{\"to\":\"+14155552671\",\"digits\":7,\"message\":\"%0474d{code}\"}", 0);
    expect_reject(payload, "field message: renders to 481 characters");

    /* {minutes} is counted at its rendered width: ttl 3600 -> "60". */
    snprintf(payload, sizeof(payload),
             "{\"to\":\"+14155552671\",\"ttl\":3600,\"message\":\"%0473d{code}{minutes}\"}", 0);
    expect_reject(payload, "field message: renders to 481");
    snprintf(payload, sizeof(payload),
             "{\"to\":\"+14155552671\",\"ttl\":540,\"message\":\"%0473d{code}{minutes}\"}", 0);
    assert_int_equal(parse(&job, payload, err, sizeof(err)), 0); /* "9": 480 */
    job_clear(&job);
}

static void
test_reject_id(void **state)
{
    char payload[256];

    (void)state;
    expect_reject("{\"id\":\"a b\",\"to\":\"+14155552671\"}", "field id");
    expect_reject("{\"id\":\"x/y\",\"to\":\"+14155552671\"}", "field id");
    expect_reject("{\"id\":\"\",\"to\":\"+14155552671\"}", "field id");
    expect_reject("{\"id\":12,\"to\":\"+14155552671\"}", "field id: must be a string");
    snprintf(payload, sizeof(payload), "{\"id\":\"%065d\",\"to\":\"+14155552671\"}", 0);
    expect_reject(payload, "field id: must be 1 to 64");
}

static void
test_id_kept_on_rejection(void **state)
{
    static const char *const payloads[] = {
        "{\"id\":\"job-1\"}",
        "{\"id\":\"job-1\",\"to\":\"+0123\"}",
        "{\"id\":\"job-1\",\"v\":2,\"to\":\"+14155552671\"}",
        "{\"id\":\"job-1\",\"to\":\"+14155552671\",\"ttl\":5}",
        "{\"id\":\"job-1\",\"to\":\"+14155552671\",\"provider\":\"x\"}",
        "{\"id\":\"job-1\",\"to\":\"+14155552671\",\"message\":\"no code\"}",
        "{\"to\":\"+14155552671\",\"created_ms\":-5,\"id\":\"job-1\"}",
    };
    struct job job;
    char err[REASON_MAX];
    char payload[128];

    (void)state;
    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        assert_int_equal(parse(&job, payloads[i], err, sizeof(err)), -1);
        assert_string_equal(job.id, "job-1");
        assert_null(job.message);
        job_clear(&job);
    }
    /* A 64-character id is valid and kept whole. */
    snprintf(payload, sizeof(payload), "{\"id\":\"%064d\",\"digits\":99}", 7);
    assert_int_equal(parse(&job, payload, err, sizeof(err)), -1);
    assert_int_equal(strlen(job.id), 64);
    assert_int_equal(job.id[63], '7');
    job_clear(&job);
    /* An invalid id is not copied. */
    assert_int_equal(parse(&job, "{\"id\":\"a b\",\"to\":\"+14155552671\"}", err, sizeof(err)), -1);
    assert_string_equal(job.id, "");
    job_clear(&job);
}

static void
test_email_addresses(void **state)
{
    char out[JOB_TO_MAX + 1], big[400];

    (void)state;
    assert_int_equal(job_email_normalize("  Alice.Smith@Example.COM\t", out, sizeof(out)), 0);
    assert_string_equal(out, "alice.smith@example.com");
    assert_true(job_email_valid(out));
    assert_true(job_email_valid("a+tag@mail.example.co.uk"));
    assert_true(job_email_valid("o'brien@x-y.example"));
    assert_false(job_email_valid("a@b"));              /* one label */
    assert_false(job_email_valid("a..b@example.com")); /* empty atom */
    assert_false(job_email_valid(".a@example.com"));
    assert_false(job_email_valid("a.@example.com"));
    assert_false(job_email_valid("a@-example.com")); /* label starts with a hyphen */
    assert_false(job_email_valid("a@example-.com"));
    assert_false(job_email_valid("a@example.com."));
    assert_false(job_email_valid("a@@example.com"));
    assert_false(job_email_valid("a b@example.com"));
    assert_false(job_email_valid("@example.com"));
    assert_false(job_email_valid("+14155552671"));
    memset(big, 'a', 65);
    snprintf(big + 65, sizeof(big) - 65, "@example.com");
    assert_false(job_email_valid(big)); /* local part over 64 */
    memset(big, 'a', 300);
    big[300] = '\0';
    assert_int_equal(job_email_normalize(big, out, sizeof(out)), -1);
}

static void
test_email_job(void **state)
{
    struct job job;
    char err[256];
    const char *ok = "{\"to\":\" Bob@Example.org \",\"channel\":\"email\"}";
    const char *bad = "{\"to\":\"bob@\",\"channel\":\"email\"}";
    const char *fax = "{\"to\":\"+14155552671\",\"channel\":\"fax\"}";

    (void)state;
    memset(&job, 0, sizeof(job));
    assert_int_equal(job_parse(&job, ok, strlen(ok), &defs, 1000, err, sizeof(err)), 0);
    assert_int_equal(job.channel, JOB_CHANNEL_EMAIL);
    assert_string_equal(job.to, "bob@example.org");
    job_clear(&job);
    assert_int_equal(job_parse(&job, bad, strlen(bad), &defs, 1000, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not an e-mail address"));
    job_clear(&job);
    assert_int_equal(job_parse(&job, fax, strlen(fax), &defs, 1000, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "field channel"));
    job_clear(&job);
}

static void
test_phone_valid(void **state)
{
    (void)state;
    assert_true(job_phone_valid("+1234567"));         /* 7 digits */
    assert_true(job_phone_valid("+123456789012345")); /* 15 digits */
    assert_true(job_phone_valid("+14155552671"));
    assert_true(job_phone_valid("+919876543210"));
    assert_false(job_phone_valid("+123456"));           /* 6 */
    assert_false(job_phone_valid("+1234567890123456")); /* 16 */
    assert_false(job_phone_valid("+0234567"));
    assert_false(job_phone_valid("1234567"));
    assert_false(job_phone_valid("++1234567"));
    assert_false(job_phone_valid("+123456a"));
    assert_false(job_phone_valid("+1234 567"));
    assert_false(job_phone_valid("+"));
    assert_false(job_phone_valid(""));
}

static void
test_id_valid(void **state)
{
    char id[JOB_ID_MAX + 2];

    (void)state;
    assert_true(job_id_valid("a"));
    assert_true(job_id_valid("AZaz09_.:-"));
    assert_true(job_id_valid("550e8400-e29b-41d4-a716-446655440000"));
    memset(id, 'x', JOB_ID_MAX);
    id[JOB_ID_MAX] = '\0';
    assert_true(job_id_valid(id));
    id[JOB_ID_MAX] = 'x';
    id[JOB_ID_MAX + 1] = '\0';
    assert_false(job_id_valid(id));
    assert_false(job_id_valid(""));
    assert_false(job_id_valid("a b"));
    assert_false(job_id_valid("x/y"));
    assert_false(job_id_valid("a\nb"));
    assert_false(job_id_valid("{id}"));
    assert_false(job_id_valid("caf\xc3\xa9"));
}

static void
test_status_names(void **state)
{
    (void)state;
    assert_string_equal(job_status_name(JOB_QUEUED), "queued");
    assert_string_equal(job_status_name(JOB_RATE_LIMITED), "rate_limited");
    assert_string_equal(job_status_name(JOB_DUPLICATE), "duplicate");
    assert_string_equal(job_status_name((enum job_status)99), "unknown");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_created_ahead_within_skew),
        cmocka_unit_test(test_minimal_defaults),
        cmocka_unit_test(test_all_fields),
        cmocka_unit_test(test_bounds_accepted),
        cmocka_unit_test(test_unknown_fields_ignored),
        cmocka_unit_test(test_reject_envelope),
        cmocka_unit_test(test_reject_payload_size),
        cmocka_unit_test(test_length_bounds_parse),
        cmocka_unit_test(test_reject_to),
        cmocka_unit_test(test_reject_version),
        cmocka_unit_test(test_reject_numbers),
        cmocka_unit_test(test_reject_strings),
        cmocka_unit_test(test_reject_message),
        cmocka_unit_test(test_reject_id),
        cmocka_unit_test(test_id_kept_on_rejection),
        cmocka_unit_test(test_phone_valid),
        cmocka_unit_test(test_email_addresses),
        cmocka_unit_test(test_email_job),
        cmocka_unit_test(test_id_valid),
        cmocka_unit_test(test_status_names),
    };

    if (sodium_init() < 0) {
        fprintf(stderr, "sodium_init failed\n");
        return 1;
    }
    return cmocka_run_group_tests_name("job", tests, NULL, NULL);
}
