/*
 * spend.h: what an SMS costs.  A message's price is its segments times the
 * price of a segment to its country (OTPD_SMS_PRICES), in micro-units of
 * OTPD_PRICE_CURRENCY, until its provider reports the real one.  The daily
 * money budgets are enforced in Redis, by spend.lua inside begin (see
 * docs/fraud.md); this module names the day and hour they are counted in
 * and raises their alert.
 */
#ifndef OTPD_SPEND_H
#define OTPD_SPEND_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* The expected price in micro-units, or -1 if the table has none for cc. */
long spend_price(const struct config *cfg, const char *cc, int segments);

/* The UTC day ("2026-11-30") and hour ("2026-11-30T21") of now_ms, and the ms left in the day. */
struct spend_clock {
    char day[16], hour[20];
    int64_t day_left_ms;
};
void spend_clock(int64_t now_ms, struct spend_clock *out);

/* Micro-units as a decimal ("0.0079", "12.50"): at least two decimals, no trailing zeros past. */
const char *spend_format(long micro, char *buf, size_t len);

/*
 * A send refused by a money budget (error_code spend_budget or
 * country_spend_budget): an ALERT line, once a day per budget.
 */
void spend_budget_alert(const char *error_code, const char *cc);

#endif
