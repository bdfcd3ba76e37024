/*
 * fallback.c: the next channel (fallback.h).  What decides is fallback.lua,
 * atomically in Redis, so a restart or another instance fires what is due;
 * this file writes the next job and asks every second what is due.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fallback.h"
#include "job.h"
#include "log.h"

#define FALLBACK_TICK_MS 1000

struct fallbacks {
    struct ledger *ledger;
    uv_timer_t timer;
    int busy; /* a fire is out: one at a time */
    struct fallback_stats stats;
    void (*closed_cb)(void *arg);
    void *closed_arg;
};

int
fallback_parse_setting(const char *spec, int *channels, int *n, char *err, size_t errlen)
{
    char copy[64], *save = NULL;

    *n = 0;
    if (strlen(spec) >= sizeof(copy)) {
        otpd_seterr(err, errlen, "too long");
        return -1;
    }
    snprintf(copy, sizeof(copy), "%s", spec);
    for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        /* E-mail needs an address the setting cannot give; SMS is the channel it follows. */
        if (strcmp(t, "voice") != 0 || *n == JOB_FALLBACK_MAX) {
            otpd_seterr(err, errlen,
                        "\"%s\": only \"voice\" can follow every SMS job (an e-mail "
                        "fallback needs the job's fallback_email)",
                        t);
            return -1;
        }
        channels[(*n)++] = JOB_CHANNEL_VOICE;
    }
    return 0;
}

/* The next job's id: this one's, shortened if need be, and "-fb" and the channel. */
static void
fallback_id(const struct job *job, int channel, char *out, size_t len)
{
    const char *name = job_channel_name(channel);
    int keep = JOB_ID_MAX - 4 - (int)strlen(name);

    snprintf(out, len, "%.*s-fb-%s", keep, job->id, name);
}

static int
fallback_json(const struct job *job, int channel, const char *next_id, char *out, size_t len)
{
    cJSON *o = cJSON_CreateObject(), *rest = cJSON_CreateArray();
    int ok;

    if (o == NULL || rest == NULL) {
        cJSON_Delete(o);
        cJSON_Delete(rest);
        return -1;
    }
    cJSON_AddNumberToObject(o, "v", 1);
    cJSON_AddStringToObject(o, "id", next_id);
    cJSON_AddStringToObject(o, "channel", job_channel_name(channel));
    cJSON_AddStringToObject(o, "to", channel == JOB_CHANNEL_EMAIL ? job->fallback_email : job->to);
    if (channel == JOB_CHANNEL_EMAIL)
        cJSON_AddStringToObject(o, "code_for", job->code_for[0] ? job->code_for : job->to);
    cJSON_AddStringToObject(o, "purpose", job->purpose);
    /* The same deadline: created_ms + ttl is the code's expiry. */
    cJSON_AddNumberToObject(o, "ttl", job->ttl);
    cJSON_AddNumberToObject(o, "created_ms", (double)(job->expires_ms - (int64_t)job->ttl * 1000));
    cJSON_AddNumberToObject(o, "digits", job->digits);
    cJSON_AddNumberToObject(o, "max_attempts", job->max_attempts);
    if (job->locale[0])
        cJSON_AddStringToObject(o, "locale", job->locale);
    cJSON_AddStringToObject(o, "fallback_of", job->id);
    /* What is left of the list goes with it; the e-mail address for a later e-mail. */
    for (int i = 1; i < job->nfallback; i++)
        cJSON_AddItemToArray(rest, cJSON_CreateString(job_channel_name(job->fallback[i])));
    if (cJSON_GetArraySize(rest) > 0) {
        cJSON_AddItemToObject(o, "fallback", rest);
        if (job->fallback_email[0])
            cJSON_AddStringToObject(o, "fallback_email", job->fallback_email);
    } else {
        cJSON_Delete(rest);
    }
    ok = cJSON_PrintPreallocated(o, out, (int)len, 0);
    cJSON_Delete(o);
    return ok ? 0 : -1;
}

int
fallback_next_job(const struct config *cfg, const struct job *job, int64_t sent_ms,
                  struct fallback_next *out)
{
    int channel;
    int64_t due;

    if (job->nfallback == 0 || job->channel == JOB_CHANNEL_EMAIL)
        return -1;
    channel = job->fallback[0];
    fallback_id(job, channel, out->next_id, sizeof(out->next_id));
    if (fallback_json(job, channel, out->next_id, out->json, sizeof(out->json)) < 0)
        return -1;
    snprintf(out->otp, sizeof(out->otp), "%s:%s", job->purpose,
             job->code_for[0] ? job->code_for : job->to);
    due = (sent_ms ? sent_ms : otpd_now_ms()) + (int64_t)cfg->fallback_delay_s * 1000;
    out->lf = (struct ledger_fallback){
        .job_json = out->json,
        .next_id = out->next_id,
        .channel = channel,
        .otp = out->otp,
        .expires_ms = job->expires_ms,
        .due_ms = due,
    };
    return 0;
}

/* --- the tick --------------------------------------------------------------- */

static void
fallbacks_fired(void *arg, const struct ledger_fallback_fired *f, size_t n, const char *err)
{
    struct fallbacks *fb = arg;

    fb->busy = 0;
    if (err != NULL) {
        log_debug("fallback: could not read what is due: %s", err);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(f[i].verdict, "queued") == 0) {
            fb->stats.queued++;
            log_info("job %s: not verified or not delivered in time: the same code goes by %s "
                     "(job %s)",
                     f[i].id, f[i].channel, f[i].next_id);
        } else {
            fb->stats.not_needed++;
            log_debug("job %s: no %s fallback: %s", f[i].id, f[i].channel, f[i].verdict);
        }
    }
}

static void
fallbacks_tick(uv_timer_t *t)
{
    struct fallbacks *fb = t->data;

    if (fb->busy)
        return;
    if (ledger_fallbacks_fire(fb->ledger, 64, fallbacks_fired, fb) == 0)
        fb->busy = 1;
}

struct fallbacks *
fallbacks_new(uv_loop_t *loop, struct ledger *ledger)
{
    struct fallbacks *fb = calloc(1, sizeof(*fb));

    if (fb == NULL)
        return NULL;
    fb->ledger = ledger;
    uv_timer_init(loop, &fb->timer);
    fb->timer.data = fb;
    uv_timer_start(&fb->timer, fallbacks_tick, FALLBACK_TICK_MS, FALLBACK_TICK_MS);
    return fb;
}

static void
fallbacks_closed(uv_handle_t *h)
{
    struct fallbacks *fb = h->data;

    if (fb->closed_cb)
        fb->closed_cb(fb->closed_arg);
}

void
fallbacks_close(struct fallbacks *fb, void (*cb)(void *arg), void *arg)
{
    fb->closed_cb = cb;
    fb->closed_arg = arg;
    uv_close((uv_handle_t *)&fb->timer, fallbacks_closed);
}

void
fallbacks_free(struct fallbacks *fb)
{
    free(fb);
}

const struct fallback_stats *
fallbacks_stats(const struct fallbacks *fb)
{
    return &fb->stats;
}
