/*
 * spend.c: prices and the clock of the money budgets (spend.h).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "otpd.h"
#include "route.h"
#include "spend.h"

long
spend_price(const struct config *cfg, const char *cc, int segments)
{
    long each = route_country_value(&cfg->prices, cc);

    if (each < 0 || segments < 1)
        return -1;
    return each * segments;
}

void
spend_clock(int64_t now_ms, struct spend_clock *out)
{
    time_t t = (time_t)(now_ms / 1000);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out->day, sizeof(out->day), "%Y-%m-%d", &tm);
    strftime(out->hour, sizeof(out->hour), "%Y-%m-%dT%H", &tm);
    out->day_left_ms = 86400000 - now_ms % 86400000;
}

const char *
spend_format(long micro, char *buf, size_t len)
{
    long abs = micro < 0 ? -micro : micro, frac = abs % 1000000;
    int digits = 6;

    while (digits > 2 && frac % 10 == 0) {
        frac /= 10;
        digits--;
    }
    snprintf(buf, len, "%s%ld.%0*ld", micro < 0 ? "-" : "", abs / 1000000, digits, frac);
    return buf;
}

void
spend_budget_alert(const char *error_code, const char *cc)
{
    static struct {
        char what[32];
        int64_t day;
    } said[8];
    static int next;
    char what[32];
    int64_t day = otpd_now_ms() / 86400000;

    snprintf(what, sizeof(what), "%s:%s", error_code, cc);
    for (int i = 0; i < 8; i++)
        if (said[i].day == day && strcmp(said[i].what, what) == 0)
            return;
    snprintf(said[next].what, sizeof(said[next].what), "%s", what);
    said[next].day = day;
    next = (next + 1) % 8;
    if (strcmp(error_code, "spend_budget") == 0)
        log_err("ALERT: today's SMS spend reached OTPD_DAILY_SPEND_BUDGET; SMS sends stop until "
                "00:00 UTC. Check otpctl fraud for the prefixes and countries that spent it");
    else
        log_err("ALERT: today's SMS spend to +%s reached OTPD_COUNTRY_DAILY_SPEND_BUDGET; sends "
                "there stop until 00:00 UTC. Possible SMS pumping: check otpctl fraud",
                cc);
}
