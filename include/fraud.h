/*
 * fraud.h: the SMS-pumping model's report, as this instance sees it.
 *
 * The model itself runs in Redis, so every instance decides alike: begin
 * counts each new code per number prefix and pauses a prefix whose codes
 * jump over its own baseline while few are verified (fraud.lua), verify
 * counts the codes people typed in (verify.lua), and operators allow or
 * block prefixes with otpctl fraud.  Here: the prefix a number is counted
 * under, the log line of a pause this instance made, and, every 15 s, the
 * report (fraud_stats.lua: conversion by country and prefix, the rules,
 * today's spend) that the metrics show.  See docs/fraud.md.
 */
#ifndef OTPD_FRAUD_H
#define OTPD_FRAUD_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "rconn.h"

#define FRAUD_ROWS 64 /* conversion rows, prefixes and countries in a report, at most */
#define FRAUD_TOP  20 /* prefixes reported (the busiest), besides those with a rule */

/* The prefix of a number for the model: its first OTPD_FRAUD_PREFIX_DIGITS digits ("": off). */
void fraud_prefix(const struct config *cfg, const char *e164, char out[16]);

/* Begin paused a prefix on this instance's job: an ALERT line with the model's figures. */
void fraud_pause_alert(const char *job_id, const char *text);

struct fraud_conversion {
    char channel[8], cc[4];
    long codes, sends, verified;
};
struct fraud_prefix {
    char prefix[16];
    char rule[8]; /* "paused", "allow", "block" (live), or "" */
    long codes, verified, judged;
    double baseline;
};
struct fraud_spend {
    char cc[4];     /* "*": all countries */
    long day, hour; /* micro-units */
};
struct fraud_view {
    int valid;
    int64_t at_ms;
    long window_ms;
    int nconv, nprefixes, nspend;
    int paused, blocked, allowed; /* live rules of each kind */
    struct fraud_conversion conv[FRAUD_ROWS];
    struct fraud_prefix prefixes[FRAUD_ROWS];
    struct fraud_spend spend[FRAUD_ROWS];
};
/* fraud_stats.lua's JSON into a view: 0, or -1 if it is not such a report. */
int fraud_report_parse(const char *json, size_t len, struct fraud_view *out);

struct fraud;
struct fraud *fraud_new(uv_loop_t *loop, const struct config *cfg, struct rconn *writer);
void fraud_writer_up(struct fraud *f);
void fraud_close(struct fraud *f, void (*cb)(void *arg), void *arg);
void fraud_free(struct fraud *f);
/* The last report read (valid 0 until one was). */
const struct fraud_view *fraud_view(const struct fraud *f);

#endif
