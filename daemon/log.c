/*
 * log.c: stderr logging with syslog priority prefixes, and phone masking.
 *
 * The log module is the one place a phone number is turned into text for
 * humans, so masking lives here.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "otpd.h"

int log_verbosity = LOG_LVL_INFO;

static const struct {
    const char *name;
    int level;
} log_levels[] = {
    {"error", LOG_LVL_ERR}, {"warning", LOG_LVL_WARNING}, {"notice", LOG_LVL_NOTICE},
    {"info", LOG_LVL_INFO}, {"debug", LOG_LVL_DEBUG},     {"warn", LOG_LVL_WARNING},
};

int
log_level_parse(const char *name)
{
    for (size_t i = 0; i < sizeof(log_levels) / sizeof(log_levels[0]); i++)
        if (strcasecmp(name, log_levels[i].name) == 0)
            return log_levels[i].level;
    return -1;
}

const char *
log_level_name(int level)
{
    for (size_t i = 0; i < sizeof(log_levels) / sizeof(log_levels[0]); i++)
        if (log_levels[i].level == level)
            return log_levels[i].name;
    return "info";
}

void
log_init(int level)
{
    log_verbosity = level;
}

static void
log_vemit(int level, const char *fmt, va_list ap)
{
    char line[2048];
    int n;

    /* Build the whole line first so concurrent writers never interleave. */
    n = snprintf(line, sizeof(line), "<%d>otpd: ", level);
    vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    fprintf(stderr, "%s\n", line);
}

void
log_emit(int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vemit(level, fmt, ap);
    va_end(ap);
}

void
fatalx(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vemit(LOG_LVL_ERR, fmt, ap);
    va_end(ap);
    exit(1);
}

const char *
log_mask_phone(const char *e164, char *buf, size_t len)
{
    size_t n = e164 ? strlen(e164) : 0;
    size_t i;

    /* Keep "+CCCC" and the last two digits: enough to tell numbers apart. */
    if (n < 8 || n + 1 > len || e164[0] != '+') {
        snprintf(buf, len, "***");
        return buf;
    }
    for (i = 0; i < n; i++)
        buf[i] = (i < 5 || i >= n - 2) ? e164[i] : '*';
    buf[i] = '\0';
    return buf;
}

int64_t
otpd_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
otpd_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}
