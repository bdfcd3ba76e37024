/*
 * fuzz_fraud.c: what otpd reads for the SMS-pumping defence and the spend:
 * fraud_stats.lua's JSON report (fraud_report_parse(), shown as metrics),
 * money amounts (route_parse_money(), OTPD_SMS_PRICES and the budgets) and
 * prefix lists (route_parse_prefixes(), OTPD_BLOCKED_PREFIXES).
 *
 * Invariants: a report's rows fit their arrays, every label is digits only
 * (prefixes, calling codes; "*" for the spend total) or a known channel,
 * counts are not negative; an amount is -1 or a non-negative number of
 * micro-units that formats back to the same value; a parsed prefix is 1..15
 * digits not starting with 0, and a number that starts with it matches.
 */
#include <stdint.h>

#include "fraud.h"
#include "fuzz_common.h"
#include "route.h"
#include "spend.h"

static int
all_digits(const char *s)
{
    return *s && strspn(s, "0123456789") == strlen(s);
}

static void
check_report(const char *text, size_t len)
{
    static struct fraud_view v;

    if (fraud_report_parse(text, len, &v) < 0) {
        CHECK(!v.valid);
        return;
    }
    CHECK(v.valid);
    CHECK(v.nconv >= 0 && v.nconv <= FRAUD_ROWS);
    CHECK(v.nprefixes >= 0 && v.nprefixes <= FRAUD_ROWS);
    CHECK(v.nspend >= 0 && v.nspend <= FRAUD_ROWS);
    CHECK(v.paused >= 0 && v.blocked >= 0 && v.allowed >= 0);
    for (int i = 0; i < v.nconv; i++) {
        CHECK(NUL_IN(v.conv[i].channel) && NUL_IN(v.conv[i].cc));
        CHECK(strcmp(v.conv[i].channel, "sms") == 0 || strcmp(v.conv[i].channel, "email") == 0);
        CHECK(v.conv[i].cc[0] == '\0' || all_digits(v.conv[i].cc));
        CHECK(v.conv[i].codes >= 0 && v.conv[i].sends >= 0 && v.conv[i].verified >= 0);
    }
    for (int i = 0; i < v.nprefixes; i++) {
        const struct fraud_prefix *p = &v.prefixes[i];
        CHECK(NUL_IN(p->prefix) && NUL_IN(p->rule) && all_digits(p->prefix));
        CHECK(p->codes >= 0 && p->verified >= 0 && p->judged >= 0 && p->baseline >= 0);
        CHECK(p->rule[0] == '\0' || strchr(p->rule, '"') == NULL);
    }
    for (int i = 0; i < v.nspend; i++) {
        CHECK(NUL_IN(v.spend[i].cc));
        CHECK(strcmp(v.spend[i].cc, "*") == 0 || all_digits(v.spend[i].cc));
    }
}

static void
check_money(const char *text)
{
    long v = route_parse_money(text);
    char buf[48];

    CHECK(v >= -1);
    if (v < 0)
        return;
    CHECK(route_parse_money(spend_format(v, buf, sizeof(buf))) == v);
}

static void
check_prefixes(const char *text)
{
    struct prefix_list pl;
    char err[160] = "", number[24];

    if (route_parse_prefixes(&pl, text, err, sizeof(err)) < 0) {
        CHECK(err[0] != '\0');
        return;
    }
    CHECK(pl.n >= 0 && pl.n <= PREFIXES_MAX);
    for (int i = 0; i < pl.n; i++) {
        size_t n = strlen(pl.digits[i]);
        CHECK(NUL_IN(pl.digits[i]) && n >= 1 && n <= 15 && all_digits(pl.digits[i]));
        CHECK(pl.digits[i][0] != '0');
        snprintf(number, sizeof(number), "+%s1", pl.digits[i]);
        CHECK(route_prefix_match(&pl, number) != NULL);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text;

    if (size < 1)
        return 0;
    text = fuzz_strndup(data + 1, size - 1);
    switch (data[0] % 3) {
    case 0:
        check_report((const char *)data + 1, size - 1);
        break;
    case 1:
        check_money(text);
        break;
    default:
        check_prefixes(text);
        break;
    }
    free(text);
    return 0;
}
