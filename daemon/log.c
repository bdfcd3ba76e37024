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

/* a***e@example.com: the local part's ends and the domain, enough to tell addresses apart. */
static const char *
log_mask_email(const char *addr, const char *at, char *buf, size_t len)
{
    size_t local = (size_t)(at - addr);

    if (local >= 2)
        snprintf(buf, len, "%c***%c%s", addr[0], at[-1], at);
    else
        snprintf(buf, len, "***%s", at);
    return buf;
}

const char *
log_mask_to(const char *to, char *buf, size_t len)
{
    size_t n = to ? strlen(to) : 0;
    size_t i;
    const char *at = to ? strchr(to, '@') : NULL;

    if (at != NULL)
        return log_mask_email(to, at, buf, len);
    /* Keep "+CCCC" and the last two digits: enough to tell numbers apart. */
    if (n < 8 || n + 1 > len || to[0] != '+') {
        snprintf(buf, len, "***");
        return buf;
    }
    for (i = 0; i < n; i++)
        buf[i] = (i < 5 || i >= n - 2) ? to[i] : '*';
    buf[i] = '\0';
    return buf;
}

static int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

void
log_mask_numbers(char *text)
{
    char *p = text;

    while (*p) {
        char *start = p, *d = *p == '+' ? p + 1 : p;
        size_t n = 0;
        if (!is_digit(*d) || (start > text && is_digit(start[-1]))) {
            p++;
            continue;
        }
        while (is_digit(d[n]))
            n++;
        if (n >= 7) {
            /* Keep the first three digits and the last two, as log_mask_to() does. */
            for (size_t i = 3; i + 2 < n; i++)
                d[i] = '*';
        }
        p = d + n;
    }
}

static struct log_limit_slot *
log_limit_slot(struct log_limiter *l, const char *key)
{
    struct log_limit_slot *oldest = &l->slot[0];
    size_t n = sizeof(oldest->key) - 1;

    /* Causes are told apart by their first bytes, as they are stored. */
    for (int i = 0; i < LOG_LIMIT_SLOTS; i++) {
        if (l->slot[i].last != 0 && strncmp(l->slot[i].key, key, n) == 0)
            return &l->slot[i];
        if (l->slot[i].last < oldest->last)
            oldest = &l->slot[i];
    }
    memset(oldest, 0, sizeof(*oldest));
    snprintf(oldest->key, sizeof(oldest->key), "%s", key);
    return oldest;
}

int
log_limit_allow(struct log_limiter *l, const char *key, uint64_t now_ms, unsigned *held_back)
{
    struct log_limit_slot *s = log_limit_slot(l, key);

    s->last = now_ms;
    if (s->count == 0 || now_ms - s->window_start >= l->period_ms) {
        s->window_start = now_ms;
        s->count = 0;
    }
    if (s->count >= l->burst) {
        s->suppressed++;
        return 0;
    }
    s->count++;
    *held_back = s->suppressed;
    s->suppressed = 0;
    return 1;
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
