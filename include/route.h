/*
 * route.h: destinations.  Which country a number is in (ITU calling
 * codes), which providers serve it and in what order, and per-country
 * lists (allow-list, hourly budgets).  Pure; unit-tested and fuzzed.
 *
 * Routes are "PREFIX=provider,provider;..." with the longest digit prefix
 * winning and "*" as the fallback, e.g. "91=msg91,twilio;*=twilio,msg91".
 */
#ifndef OTPD_ROUTE_H
#define OTPD_ROUTE_H

#include <stddef.h>

#define ROUTE_MAX           64
#define ROUTE_PROVIDERS_MAX 3
#define ROUTE_PREFIX_MAX    15

struct route {
    char prefix[ROUTE_PREFIX_MAX + 1]; /* digits, or "*" */
    char providers[ROUTE_PROVIDERS_MAX][16];
    int n;
};

struct route_table {
    struct route r[ROUTE_MAX];
    int n;
};

/* Country budgets and lists: "CC=N;CC=N;*=N" or "CC,CC,CC". */
struct country_limits {
    char cc[ROUTE_MAX][4];
    long value[ROUTE_MAX];
    int n;
    long deflt; /* "*" entry, or -1 */
};

/*
 * The calling codes shorter than three digits, from
 * python/otpd/data/calling_codes.txt (generated calling_codes.c): every
 * other code has three digits.
 */
extern const char *const calling_codes[];
extern const size_t calling_codes_count;

/* The calling code of an E.164 number ("+919812345678" -> "91"); 0 or -1. */
int route_country_code(const char *e164, char *out, size_t outlen);
int route_parse(struct route_table *t, const char *spec, char *err, size_t errlen);
/* Longest matching prefix, else "*", else NULL. */
const struct route *route_lookup(const struct route_table *t, const char *e164);

/* "1,44,91" (values 1) or "91=5000;*=1000"; calling codes are checked. */
int route_parse_countries(struct country_limits *cl, const char *spec, int with_values, char *err,
                          size_t errlen);
/* The value for a calling code, the "*" value, or -1 if neither. */
long route_country_value(const struct country_limits *cl, const char *cc);

/* Values of route_parse_countries(): none (a list), whole numbers, or money. */
#define ROUTE_LIST  0
#define ROUTE_COUNT 1
#define ROUTE_MONEY 2 /* "0.0079" -> 7900 micro-units */

/* An amount of money ("12.5") in micro-units; -1 if it is not one. */
long route_parse_money(const char *s);

/* Number prefixes (OTPD_BLOCKED_PREFIXES): "+4470,+88213". */
#define PREFIXES_MAX 64
struct prefix_list {
    char digits[PREFIXES_MAX][16];
    int n;
};
int route_parse_prefixes(struct prefix_list *pl, const char *spec, char *err, size_t errlen);
/* The first prefix of the list that the number (+digits) starts with, or NULL. */
const char *route_prefix_match(const struct prefix_list *pl, const char *number);

#endif
