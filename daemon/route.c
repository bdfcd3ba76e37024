/*
 * route.c: calling codes and routing tables.
 *
 * ITU calling codes are prefix-free and only 1 and 7 are one digit long;
 * those and the two-digit ones are listed in calling_codes[] (from
 * python/otpd/data/calling_codes.txt, which the Python client reads too)
 * and everything else is three digits, so no full table of countries is
 * needed.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "otpd.h"
#include "provider.h"
#include "route.h"

static size_t
cc_length(const char *digits)
{
    for (size_t i = 0; i < calling_codes_count; i++) {
        size_t n = strlen(calling_codes[i]);
        if (strncmp(digits, calling_codes[i], n) == 0)
            return n;
    }
    return 3;
}

int
route_country_code(const char *e164, char *out, size_t outlen)
{
    const char *d = e164[0] == '+' ? e164 + 1 : e164;
    size_t n, len = strlen(d);

    if (len < 1 || outlen < 4)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)d[i]))
            return -1;
    n = cc_length(d);
    if (n > len)
        return -1;
    memcpy(out, d, n);
    out[n] = '\0';
    return 0;
}

static char *
trim(char *s)
{
    char *e;

    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        *--e = '\0';
    return s;
}

static int
valid_prefix(const char *p)
{
    size_t n = strlen(p);

    if (strcmp(p, "*") == 0)
        return 1;
    if (n == 0 || n > ROUTE_PREFIX_MAX || p[0] == '0')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)p[i]))
            return 0;
    return 1;
}

int
route_parse(struct route_table *t, const char *spec, char *err, size_t errlen)
{
    char *copy = strdup(spec), *save = NULL, *item;
    int rc = -1;

    memset(t, 0, sizeof(*t));
    if (copy == NULL) {
        otpd_seterr(err, errlen, "out of memory");
        return -1;
    }
    for (item = strtok_r(copy, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(item, '='), *save2 = NULL, *prov;
        struct route *r;
        item = trim(item);
        if (*item == '\0')
            continue;
        if (eq == NULL) {
            otpd_seterr(err, errlen, "\"%s\": expected PREFIX=provider[,provider]", item);
            goto out;
        }
        *eq = '\0';
        if (t->n == ROUTE_MAX) {
            otpd_seterr(err, errlen, "more than %d routes", ROUTE_MAX);
            goto out;
        }
        r = &t->r[t->n];
        char *prefix = trim(item);
        if (prefix[0] == '+')
            prefix++;
        if (!valid_prefix(prefix)) {
            otpd_seterr(err, errlen, "\"%s\": a prefix is digits (a calling code such as 91) or *",
                        prefix);
            goto out;
        }
        for (int i = 0; i < t->n; i++) {
            if (strcmp(t->r[i].prefix, prefix) == 0) {
                otpd_seterr(err, errlen, "prefix %s given twice", prefix);
                goto out;
            }
        }
        snprintf(r->prefix, sizeof(r->prefix), "%s", prefix);
        for (prov = strtok_r(eq + 1, ",", &save2); prov; prov = strtok_r(NULL, ",", &save2)) {
            prov = trim(prov);
            if (!provider_registered(prov)) {
                char names[128];
                otpd_seterr(err, errlen, "\"%s\": providers are %s", prov,
                            provider_registered_names(names, sizeof(names)));
                goto out;
            }
            if (r->n == ROUTE_PROVIDERS_MAX) {
                otpd_seterr(err, errlen, "prefix %s: at most %d providers", r->prefix,
                            ROUTE_PROVIDERS_MAX);
                goto out;
            }
            snprintf(r->providers[r->n++], sizeof(r->providers[0]), "%s", prov);
        }
        if (r->n == 0) {
            otpd_seterr(err, errlen, "prefix %s: no provider", r->prefix);
            goto out;
        }
        t->n++;
    }
    rc = 0;
out:
    free(copy);
    return rc;
}

const struct route *
route_lookup(const struct route_table *t, const char *e164)
{
    const char *d = e164[0] == '+' ? e164 + 1 : e164;
    const struct route *best = NULL, *star = NULL;
    size_t best_len = 0;

    for (int i = 0; i < t->n; i++) {
        const struct route *r = &t->r[i];
        size_t n = strlen(r->prefix);
        if (strcmp(r->prefix, "*") == 0)
            star = r;
        else if (n > best_len && strncmp(d, r->prefix, n) == 0) {
            best = r;
            best_len = n;
        }
    }
    return best ? best : star;
}

static int
valid_country(const char *cc)
{
    char check[8];
    size_t n = strlen(cc);

    if (n < 1 || n > 3)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)cc[i]))
            return 0;
    /* The code must be a whole calling code: "9" or "912" are not. */
    char padded[24];
    snprintf(padded, sizeof(padded), "%s0000000", cc);
    return route_country_code(padded, check, sizeof(check)) == 0 && strcmp(check, cc) == 0;
}

int
route_parse_countries(struct country_limits *cl, const char *spec, int with_values, char *err,
                      size_t errlen)
{
    char *copy = strdup(spec), *save = NULL, *item;
    int rc = -1;

    memset(cl, 0, sizeof(*cl));
    cl->deflt = -1;
    if (copy == NULL) {
        otpd_seterr(err, errlen, "out of memory");
        return -1;
    }
    for (item = strtok_r(copy, with_values ? ";" : ",", &save); item;
         item = strtok_r(NULL, with_values ? ";" : ",", &save)) {
        char *cc = trim(item), *eq = NULL, *end;
        long v = 1;
        if (*cc == '\0')
            continue;
        if (with_values) {
            if ((eq = strchr(cc, '=')) == NULL) {
                otpd_seterr(err, errlen, "\"%s\": expected CODE=NUMBER", cc);
                goto out;
            }
            *eq = '\0';
            if (with_values == ROUTE_MONEY) {
                if ((v = route_parse_money(trim(eq + 1))) < 0) {
                    otpd_seterr(err, errlen, "\"%s\": not an amount such as 0.0079", eq + 1);
                    goto out;
                }
            } else {
                v = strtol(trim(eq + 1), &end, 10);
                if (*trim(eq + 1) == '\0' || *end != '\0' || v < 0) {
                    otpd_seterr(err, errlen, "\"%s\": not a number", eq + 1);
                    goto out;
                }
            }
            cc = trim(cc);
        }
        if (cc[0] == '+')
            cc++;
        if (with_values && strcmp(cc, "*") == 0) {
            cl->deflt = v;
            continue;
        }
        if (!valid_country(cc)) {
            otpd_seterr(err, errlen, "\"%s\" is not a country calling code", cc);
            goto out;
        }
        if (cl->n == ROUTE_MAX) {
            otpd_seterr(err, errlen, "more than %d countries", ROUTE_MAX);
            goto out;
        }
        snprintf(cl->cc[cl->n], sizeof(cl->cc[0]), "%s", cc);
        cl->value[cl->n++] = v;
    }
    rc = 0;
out:
    free(copy);
    return rc;
}

long
route_country_value(const struct country_limits *cl, const char *cc)
{
    for (int i = 0; i < cl->n; i++)
        if (strcmp(cl->cc[i], cc) == 0)
            return cl->value[i];
    return cl->deflt;
}

/*
 * Amounts are kept in micro-units (millionths of the currency) so that
 * Redis adds them exactly (HINCRBY) however many messages are summed;
 * strtod() reads the decimal, which needs nothing finer than 1e-6.
 */
long
route_parse_money(const char *s)
{
    char *end;
    double v;

    if (s == NULL || *s == '\0' || !(isdigit((unsigned char)*s) || *s == '.'))
        return -1;
    v = strtod(s, &end);
    if (*end != '\0' || !(v >= 0) || v > 1e9)
        return -1;
    return (long)(v * 1e6 + 0.5);
}

int
route_parse_prefixes(struct prefix_list *pl, const char *spec, char *err, size_t errlen)
{
    char *copy = strdup(spec), *save = NULL, *item;
    int rc = -1;

    memset(pl, 0, sizeof(*pl));
    if (copy == NULL) {
        otpd_seterr(err, errlen, "out of memory");
        return -1;
    }
    for (item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *p = trim(item);
        size_t n;
        if (*p == '\0')
            continue;
        if (*p == '+')
            p++;
        n = strlen(p);
        if (n < 1 || n > 15 || strspn(p, "0123456789") != n || p[0] == '0') {
            otpd_seterr(err, errlen, "\"%s\": expected +DIGITS, a number's first digits", item);
            goto out;
        }
        if (pl->n == PREFIXES_MAX) {
            otpd_seterr(err, errlen, "more than %d prefixes", PREFIXES_MAX);
            goto out;
        }
        memcpy(pl->digits[pl->n++], p, n + 1);
    }
    rc = 0;
out:
    free(copy);
    return rc;
}

const char *
route_prefix_match(const struct prefix_list *pl, const char *number)
{
    const char *d = number[0] == '+' ? number + 1 : number;

    for (int i = 0; i < pl->n; i++)
        if (strncmp(d, pl->digits[i], strlen(pl->digits[i])) == 0)
            return pl->digits[i];
    return NULL;
}
