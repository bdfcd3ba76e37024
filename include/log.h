/*
 * log.h: one line per event on stderr, each prefixed with its syslog
 * priority ("<3>") so journald keeps the level.  Never pass an OTP code,
 * a secret, a full phone number or a whole e-mail address: mask them with
 * log_mask_to().
 */
#ifndef OTPD_LOG_H
#define OTPD_LOG_H

#include <stddef.h>
#include <stdint.h>

enum log_level {
    LOG_LVL_ERR = 3,
    LOG_LVL_WARNING = 4,
    LOG_LVL_NOTICE = 5,
    LOG_LVL_INFO = 6,
    LOG_LVL_DEBUG = 7,
};

extern int log_verbosity;

int log_level_parse(const char *name);
const char *log_level_name(int level);
void log_init(int level);

void log_emit(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Arguments are not evaluated below the current level (Redis serverLog). */
#define log_at(lvl, ...)                                                                           \
    do {                                                                                           \
        if ((lvl) <= log_verbosity)                                                                \
            log_emit((lvl), __VA_ARGS__);                                                          \
    } while (0)

#define log_err(...)    log_at(LOG_LVL_ERR, __VA_ARGS__)
#define log_warnx(...)  log_at(LOG_LVL_WARNING, __VA_ARGS__)
#define log_notice(...) log_at(LOG_LVL_NOTICE, __VA_ARGS__)
#define log_info(...)   log_at(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)  log_at(LOG_LVL_DEBUG, __VA_ARGS__)

void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/*
 * A job's recipient, masked: "+14155552671" -> "+1415*****71" (anything
 * shorter is fully starred), "alice@example.com" -> "a***e@example.com".
 */
#define LOG_MASK_MAX 264 /* a masked number, or a masked e-mail address and its domain */
const char *log_mask_to(const char *to, char *buf, size_t len);

/*
 * Masks, in place, every run of 7 or more digits (with an optional leading
 * "+") the way log_mask_to() masks a number: providers quote the
 * recipient in their error text ("The 'To' number +14155552671 is not...").
 */
void log_mask_numbers(char *text);

/*
 * Rate limits for log lines that an outage or a flood would repeat: each
 * cause (a short key) may log `burst` lines per `period_ms`; the first line
 * allowed after a quiet spell learns how many were held back.  A few causes
 * are remembered at once, the least recent forgotten first, so two causes
 * that alternate no longer defeat the limit.
 */
#define LOG_LIMIT_SLOTS 8
struct log_limit_slot {
    char key[96];
    uint64_t window_start, last;
    unsigned count, suppressed;
};
struct log_limiter {
    uint64_t period_ms;
    unsigned burst;
    struct log_limit_slot slot[LOG_LIMIT_SLOTS];
};
/* 1: log now, with *held_back lines held back before it; 0: hold this one back. */
int log_limit_allow(struct log_limiter *l, const char *key, uint64_t now_ms, unsigned *held_back);

#endif
