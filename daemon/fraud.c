/*
 * fraud.c: the pumping model's report and alerts (fraud.h).  The decisions
 * are fraud.lua's, in Redis; this file reads what they left.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <sodium.h>

#include "fraud.h"
#include "log.h"
#include "otpd.h"
#include "protocol.h"
#include "spend.h"

#define FRAUD_REPORT_MS 15000

extern const char lua_fraud_stats[];

struct fraud {
    const struct config *cfg;
    struct rconn *w;
    uv_timer_t timer;
    char sha[41];
    char rules_key[256];
    int closing;
    void (*closed_cb)(void *arg);
    void *closed_arg;
    struct fraud_view view;
};

void
fraud_prefix(const struct config *cfg, const char *e164, char out[16])
{
    const char *d = e164[0] == '+' ? e164 + 1 : e164;
    size_t n = (size_t)cfg->fraud_prefix_digits;

    out[0] = '\0';
    if (n == 0 || strlen(d) <= n || n > 15)
        return;
    memcpy(out, d, n);
    out[n] = '\0';
}

void
fraud_pause_alert(const char *job_id, const char *text)
{
    log_err("ALERT: suspected SMS pumping (job %s): %s", job_id, text);
}

/* --- the report ---------------------------------------------------------- */

static long
num(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1e15 ? (long)v->valuedouble
                                                                             : 0;
}

static void
str(char *out, size_t len, const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

    snprintf(out, len, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

/* Digits only: labels and log lines must hold nothing else. */
static int
digits(const char *s, size_t max)
{
    size_t n = strlen(s);

    return n <= max && strspn(s, "0123456789") == n;
}

static void
report_conversion(const cJSON *rows, struct fraud_view *v)
{
    const cJSON *row;

    cJSON_ArrayForEach(row, rows)
    {
        struct fraud_conversion *c = &v->conv[v->nconv];
        if (v->nconv == FRAUD_ROWS)
            break;
        str(c->channel, sizeof(c->channel), row, "channel");
        str(c->cc, sizeof(c->cc), row, "cc");
        if ((strcmp(c->channel, "sms") != 0 && strcmp(c->channel, "email") != 0) ||
            !digits(c->cc, 3))
            continue;
        c->codes = num(row, "codes");
        c->sends = num(row, "sends");
        c->verified = num(row, "verified");
        v->nconv++;
    }
}

static void
report_rules(const cJSON *rules, struct fraud_view *v)
{
    const cJSON *r;

    cJSON_ArrayForEach(r, rules)
    {
        char kind[8], prefix[16];
        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "live")))
            continue;
        str(kind, sizeof(kind), r, "kind");
        str(prefix, sizeof(prefix), r, "prefix");
        v->paused += strcmp(kind, "paused") == 0;
        v->blocked += strcmp(kind, "block") == 0;
        v->allowed += strcmp(kind, "allow") == 0;
        for (int i = 0; i < v->nprefixes; i++)
            if (strcmp(v->prefixes[i].prefix, prefix) == 0)
                snprintf(v->prefixes[i].rule, sizeof(v->prefixes[i].rule), "%s", kind);
    }
}

static void
report_prefixes(const cJSON *rows, struct fraud_view *v)
{
    const cJSON *row;

    cJSON_ArrayForEach(row, rows)
    {
        struct fraud_prefix *p = &v->prefixes[v->nprefixes];
        const cJSON *base = cJSON_GetObjectItemCaseSensitive(row, "baseline");
        if (v->nprefixes == FRAUD_ROWS)
            break;
        memset(p, 0, sizeof(*p));
        str(p->prefix, sizeof(p->prefix), row, "prefix");
        if (p->prefix[0] == '\0' || !digits(p->prefix, 15))
            continue;
        p->codes = num(row, "codes");
        p->verified = num(row, "verified");
        p->judged = num(row, "judged");
        p->baseline = cJSON_IsNumber(base) && base->valuedouble >= 0 ? base->valuedouble : 0;
        v->nprefixes++;
    }
}

/* A sum of micro-units: refunds may take it a little below zero, never past a long. */
static int
in_range(const cJSON *e)
{
    return cJSON_IsNumber(e) && e->valuedouble > -1e15 && e->valuedouble < 1e15;
}

/* Today's and this hour's spend, by calling code ("*" the total). */
static struct fraud_spend *
spend_row(struct fraud_view *v, const char *cc)
{
    for (int i = 0; i < v->nspend; i++)
        if (strcmp(v->spend[i].cc, cc) == 0)
            return &v->spend[i];
    if (v->nspend == FRAUD_ROWS || (strcmp(cc, "*") != 0 && !digits(cc, 3)) || *cc == '\0')
        return NULL;
    snprintf(v->spend[v->nspend].cc, sizeof(v->spend[0].cc), "%s", cc);
    return &v->spend[v->nspend++];
}

static void
report_spend(const cJSON *spend, struct fraud_view *v)
{
    const cJSON *day = cJSON_GetObjectItemCaseSensitive(spend, "day");
    const cJSON *hour = cJSON_GetObjectItemCaseSensitive(spend, "hour");
    const cJSON *e;
    struct fraud_spend *s;

    cJSON_ArrayForEach(e, day)
    {
        if (in_range(e) && e->string && (s = spend_row(v, e->string)) != NULL)
            s->day = (long)e->valuedouble;
    }
    cJSON_ArrayForEach(e, hour)
    {
        if (in_range(e) && e->string && (s = spend_row(v, e->string)) != NULL)
            s->hour = (long)e->valuedouble;
    }
}

int
fraud_report_parse(const char *json, size_t len, struct fraud_view *out)
{
    cJSON *root = cJSON_ParseWithLength(json, len);

    memset(out, 0, sizeof(*out));
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return -1;
    }
    out->window_ms = num(root, "window_ms");
    report_conversion(cJSON_GetObjectItemCaseSensitive(root, "conversion"), out);
    report_prefixes(cJSON_GetObjectItemCaseSensitive(root, "prefixes"), out);
    report_rules(cJSON_GetObjectItemCaseSensitive(root, "rules"), out);
    report_spend(cJSON_GetObjectItemCaseSensitive(root, "spend"), out);
    out->valid = 1;
    cJSON_Delete(root);
    return 0;
}

/* --- reading it ---------------------------------------------------------- */

static void
fraud_loaded(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    (void)r;
    (void)priv;
}

static void
fraud_load(struct fraud *f)
{
    const char *argv[] = {"SCRIPT", "LOAD", lua_fraud_stats};

    rconn_command(f->w, fraud_loaded, NULL, NARGS(argv), argv, NULL);
}

static void
fraud_reply(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;
    struct fraud *f = priv;
    struct fraud_view v;

    (void)ac;
    if (reply == NULL)
        return; /* the connection went: f may be going too */
    if (reply->type == REDIS_REPLY_ERROR) {
        if (strncmp(reply->str, "NOSCRIPT", 8) == 0)
            fraud_load(f);
        else
            log_debug("fraud report: %s", reply->str);
        return;
    }
    if (reply->type != REDIS_REPLY_STRING || fraud_report_parse(reply->str, reply->len, &v) < 0)
        return;
    v.at_ms = otpd_now_ms();
    f->view = v;
}

static void
fraud_tick(uv_timer_t *t)
{
    struct fraud *f = t->data;
    const struct config *c = f->cfg;
    char now[24], window[16], settle[16], baseline[24], top[8];
    struct spend_clock clk;
    int64_t ms = otpd_now_ms();

    if (!rconn_is_up(f->w))
        return;
    spend_clock(ms, &clk);
    snprintf(now, sizeof(now), "%lld", (long long)ms);
    snprintf(window, sizeof(window), "%lld", (long long)c->fraud_window_s * 1000);
    snprintf(settle, sizeof(settle), "%lld", (long long)c->fraud_settle_s * 1000);
    snprintf(baseline, sizeof(baseline), "%lld", (long long)c->fraud_baseline_s * 1000);
    snprintf(top, sizeof(top), "%d", FRAUD_TOP);
    const char *argv[] = {"EVALSHA", f->sha, "1",      f->rules_key, c->prefix, now,
                          window,    settle, baseline, top,          clk.day,   clk.hour};
    rconn_command(f->w, fraud_reply, f, NARGS(argv), argv, NULL);
}

struct fraud *
fraud_new(uv_loop_t *loop, const struct config *cfg, struct rconn *writer)
{
    struct fraud *f = calloc(1, sizeof(*f));
    unsigned char md[20];
    unsigned int mdlen = 0;

    if (f == NULL)
        return NULL;
    f->cfg = cfg;
    f->w = writer;
    snprintf(f->rules_key, sizeof(f->rules_key), "%s" PROTO_KEY_FRAUD_RULES, cfg->prefix);
    if (!EVP_Digest(lua_fraud_stats, strlen(lua_fraud_stats), md, &mdlen, EVP_sha1(), NULL) ||
        mdlen != 20) {
        free(f);
        return NULL;
    }
    sodium_bin2hex(f->sha, sizeof(f->sha), md, sizeof(md));
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    uv_timer_start(&f->timer, fraud_tick, 1000, FRAUD_REPORT_MS);
    return f;
}

void
fraud_writer_up(struct fraud *f)
{
    fraud_load(f);
}

static void
fraud_closed(uv_handle_t *h)
{
    struct fraud *f = h->data;

    if (f->closed_cb)
        f->closed_cb(f->closed_arg);
}

void
fraud_close(struct fraud *f, void (*cb)(void *arg), void *arg)
{
    f->closed_cb = cb;
    f->closed_arg = arg;
    uv_close((uv_handle_t *)&f->timer, fraud_closed);
}

void
fraud_free(struct fraud *f)
{
    free(f);
}

const struct fraud_view *
fraud_view(const struct fraud *f)
{
    return &f->view;
}
