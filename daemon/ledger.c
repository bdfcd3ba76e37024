/*
 * ledger.c: the job's Redis writes, each one script on the writer
 * connection (see ledger.h for the two steps and docs/protocol.md for the
 * keys).  Scripts go by SHA1 (EVALSHA): sending and hashing their text for
 * every job would cost more than the work.  They are loaded on every
 * (re)connect; after a SCRIPT FLUSH the NOSCRIPT reply loads them again and
 * the step is retried like any refused write.
 *
 * The country-budget alert lives here, with the limits that raise it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "ledger.h"
#include "log.h"
#include "protocol.h"
#include "route.h"

extern const char lua_begin[], lua_finish[], lua_note[], lua_reject[], lua_receipt[];

enum { SCRIPT_BEGIN, SCRIPT_FINISH, SCRIPT_NOTE, SCRIPT_REJECT, SCRIPT_RECEIPT, NSCRIPTS };

#define LEDGER_PAYLOAD_MAX 4096 /* of a rejected payload, kept in its dead letter */
#define LEDGER_REJECT_TTL  3600 /* a burst of bad jobs must not fill Redis for a day */
#define LEDGER_KEY_MAX     192

#define LEDGER_PUBLISH_MS 10000 /* the published limits heal this often */

struct ledger {
    uv_loop_t *loop;
    const struct config *cfg;
    struct rconn *w;
    uv_timer_t housekeeping;
    /*
     * The configuration's numbers as the scripts take them, formatted once
     * per load or reload (ledger_reload()), not once per job.
     */
    struct {
        char status_ttl[16], events_maxlen[16], dead_maxlen[16], reject_ttl[16];
        char interval_ms[24], per_hour[24], per_day[24], global_per_hour[24];
    } text;
    void (*closed_cb)(void *arg);
    void *closed_arg;
    char *begin_text; /* limits.lua as check_limits(), then begin.lua */
    char sha[NSCRIPTS][41];
    struct {
        char cc[4];
        uint64_t at_ms;
    } alerts[ROUTE_MAX];
    int nalerts;
};

struct ledger_op {
    struct ledger *l;
    int script;
    char cc[4]; /* begin: the job's calling code, for the country-budget alert */
    ledger_begin_cb *begin_cb;
    ledger_done_cb *done_cb;
    ledger_receipt_cb *receipt_cb;
    void *arg;
};

static const char *
ledger_script_text(const struct ledger *l, int i)
{
    switch (i) {
    case SCRIPT_BEGIN:
        return l->begin_text;
    case SCRIPT_FINISH:
        return lua_finish;
    case SCRIPT_NOTE:
        return lua_note;
    case SCRIPT_REJECT:
        return lua_reject;
    default:
        return lua_receipt;
    }
}

/* begin.lua calls limits.lua, the web app's script, as a local function. */
static char *
ledger_compose_begin(void)
{
    static const char head[] = "local function check_limits(KEYS, ARGV)\n";
    static const char tail[] = "\nend\n";
    size_t n = strlen(head) + strlen(lua_limits) + strlen(tail) + strlen(lua_begin) + 1;
    char *s = malloc(n);

    if (s != NULL)
        snprintf(s, n, "%s%s%s%s", head, lua_limits, tail, lua_begin);
    return s;
}

static void ledger_housekeeping(uv_timer_t *t);

static void
ledger_format_config(struct ledger *l)
{
    const struct config *c = l->cfg;
    int reject_ttl = c->status_ttl < LEDGER_REJECT_TTL ? c->status_ttl : LEDGER_REJECT_TTL;

    snprintf(l->text.status_ttl, sizeof(l->text.status_ttl), "%d", c->status_ttl);
    snprintf(l->text.events_maxlen, sizeof(l->text.events_maxlen), "%d", c->events_maxlen);
    snprintf(l->text.dead_maxlen, sizeof(l->text.dead_maxlen), "%d", c->dead_maxlen);
    snprintf(l->text.reject_ttl, sizeof(l->text.reject_ttl), "%d", reject_ttl);
    snprintf(l->text.interval_ms, sizeof(l->text.interval_ms), "%lld",
             (long long)c->limit_interval_s * 1000);
    snprintf(l->text.per_hour, sizeof(l->text.per_hour), "%d", c->limit_per_hour);
    snprintf(l->text.per_day, sizeof(l->text.per_day), "%d", c->limit_per_day);
    snprintf(l->text.global_per_hour, sizeof(l->text.global_per_hour), "%d",
             c->limit_global_per_hour);
}

void
ledger_reload(struct ledger *l)
{
    ledger_format_config(l);
    ledger_publish_limits(l);
}

struct ledger *
ledger_new(uv_loop_t *loop, const struct config *cfg, struct rconn *writer)
{
    struct ledger *l = calloc(1, sizeof(*l));

    if (l == NULL)
        return NULL;
    l->loop = loop;
    l->cfg = cfg;
    ledger_format_config(l);
    l->w = writer;
    if ((l->begin_text = ledger_compose_begin()) == NULL) {
        free(l);
        return NULL;
    }
    for (int i = 0; i < NSCRIPTS; i++) {
        unsigned char md[20];
        unsigned int mdlen = 0;
        const char *text = ledger_script_text(l, i);
        if (!EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha1(), NULL) || mdlen != 20) {
            ledger_free(l);
            return NULL;
        }
        sodium_bin2hex(l->sha[i], sizeof(l->sha[i]), md, sizeof(md));
    }
    uv_timer_init(loop, &l->housekeeping);
    l->housekeeping.data = l;
    uv_timer_start(&l->housekeeping, ledger_housekeeping, LEDGER_PUBLISH_MS, LEDGER_PUBLISH_MS);
    return l;
}

static void
ledger_closed(uv_handle_t *h)
{
    struct ledger *l = h->data;

    if (l->closed_cb)
        l->closed_cb(l->closed_arg);
}

void
ledger_close(struct ledger *l, void (*cb)(void *arg), void *arg)
{
    l->closed_cb = cb;
    l->closed_arg = arg;
    uv_close((uv_handle_t *)&l->housekeeping, ledger_closed);
}

void
ledger_free(struct ledger *l)
{
    if (l == NULL)
        return;
    free(l->begin_text);
    free(l);
}

static void
ledger_loaded(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;

    (void)ac;
    (void)priv;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_err("ledger: SCRIPT LOAD refused: %s", reply->str);
}

static void
ledger_load_scripts(struct ledger *l)
{
    for (int i = 0; i < NSCRIPTS; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", ledger_script_text(l, i)};
        rconn_command(l->w, ledger_loaded, NULL, NARGS(argv), argv, NULL);
    }
}

void
ledger_writer_up(struct ledger *l)
{
    ledger_load_scripts(l);
    ledger_publish_limits(l);
}

/* A NOSCRIPT reply: someone flushed the script cache; load again, the step is retried. */
static void
ledger_check_noscript(struct ledger *l, const char *err)
{
    if (err && strncmp(err, "NOSCRIPT", 8) == 0)
        ledger_load_scripts(l);
}

static struct ledger_op *
ledger_op_new(struct ledger *l, int script, void *arg)
{
    struct ledger_op *op = calloc(1, sizeof(*op));

    if (op != NULL) {
        op->l = l;
        op->script = script;
        op->arg = arg;
    }
    return op;
}

/* EVALSHA; -1 (and op freed) if the writer is down. */
static int
ledger_eval(struct ledger_op *op, redisCallbackFn *reply_cb, int nkeys, const char **keys,
            int nargs, const char **args, const size_t *arglens)
{
    const char *argv[64];
    size_t lens[64];
    char numkeys[8];
    int argc = 0;

    snprintf(numkeys, sizeof(numkeys), "%d", nkeys);
    argv[argc++] = "EVALSHA";
    argv[argc++] = op->l->sha[op->script];
    argv[argc++] = numkeys;
    for (int i = 0; i < nkeys; i++)
        argv[argc++] = keys[i];
    for (int i = 0; i < nargs; i++)
        argv[argc++] = args[i];
    for (int i = 0; i < argc; i++)
        lens[i] = i >= 3 + nkeys && arglens ? arglens[i - 3 - nkeys] : strlen(argv[i]);
    if (!rconn_is_up(op->l->w) || rconn_command(op->l->w, reply_cb, op, argc, argv, lens) < 0) {
        free(op);
        return -1;
    }
    return 0;
}

/* {prefix} then a PROTO_KEY_* name (include/protocol.h, next to docs/protocol.md). */
static void key(char *buf, const struct config *cfg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
key(char *buf, const struct config *cfg, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(buf, LEDGER_KEY_MAX, "%s", cfg->prefix);

    va_start(ap, fmt);
    vsnprintf(buf + n, LEDGER_KEY_MAX - (size_t)n, fmt, ap);
    va_end(ap);
}

/* The common keys: job record, OTP record, events, stats, job stream. */
static void
ledger_keys(const struct ledger *l, const struct job *job, char k[5][LEDGER_KEY_MAX])
{
    key(k[0], l->cfg, PROTO_KEY_JOB, job->id);
    key(k[1], l->cfg, PROTO_KEY_OTP, job->purpose, job->to);
    key(k[2], l->cfg, PROTO_KEY_EVENTS);
    key(k[3], l->cfg, PROTO_KEY_STATS);
    key(k[4], l->cfg, PROTO_KEY_JOBS);
}

/* --- the country-budget alert ------------------------------------------ */

/* SMS pumping shows as one country's volume jumping: say so, once an hour. */
static void
ledger_budget_alert(struct ledger *l, const char *cc)
{
    uint64_t now = (uint64_t)otpd_now_ms();
    int i;

    for (i = 0; i < l->nalerts; i++)
        if (strcmp(l->alerts[i].cc, cc) == 0)
            break;
    if (i < l->nalerts && now - l->alerts[i].at_ms < 3600000)
        return;
    if (i == l->nalerts) {
        if (l->nalerts == ROUTE_MAX)
            i = 0;
        else
            l->nalerts++;
    }
    snprintf(l->alerts[i].cc, sizeof(l->alerts[i].cc), "%s", cc);
    l->alerts[i].at_ms = now;
    log_err("ALERT: hourly budget for country +%s exceeded (OTPD_COUNTRY_HOURLY_BUDGET); sends "
            "there stop until the hour rolls over. Possible SMS pumping: check the otpd:events "
            "stream and the site's traffic",
            cc);
}

/* --- begin --------------------------------------------------------------- */

static const char *
reply_str(const redisReply *r, size_t i)
{
    if (r->elements <= i || r->element[i]->type != REDIS_REPLY_STRING)
        return "";
    return r->element[i]->str;
}

static void
ledger_begin_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct ledger_op *op = priv;
    redisReply *reply = r;
    struct ledger_begun b = {.verdict = LEDGER_ERROR, .status = "", .error_code = "", .error = ""};
    const char *word;

    (void)ac;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) {
        b.err = reply && reply->type != REDIS_REPLY_ERROR ? "unexpected reply from begin.lua"
                                                          : rconn_reply_error(reply);
        ledger_check_noscript(op->l, b.err);
        op->begin_cb(op->arg, &b);
        free(op);
        return;
    }
    word = reply_str(reply, 0);
    b.status = reply_str(reply, 1);
    if (strcmp(word, "go") == 0) {
        b.verdict = LEDGER_GO;
    } else if (strcmp(word, "done") == 0) {
        b.verdict = LEDGER_DONE;
    } else if (strcmp(word, PROTO_STATUS_DUPLICATE) == 0) {
        b.verdict = LEDGER_DUPLICATE;
    } else if (strcmp(word, "denied") == 0) {
        b.verdict = LEDGER_DENIED;
        b.error_code = reply_str(reply, 2);
        b.error = reply_str(reply, 3);
        if (reply->elements > 4 && reply->element[4]->type == REDIS_REPLY_INTEGER)
            b.retry_after_ms = reply->element[4]->integer;
    } else {
        b.err = "unexpected verdict from begin.lua";
    }
    /* The alert is the limits' business; the delivery sees the verdict only. */
    if (b.verdict == LEDGER_DENIED && strcmp(b.error_code, "country_budget") == 0)
        ledger_budget_alert(op->l, op->cc);
    op->begin_cb(op->arg, &b);
    free(op);
}

/*
 * limits.lua's ARGV 10-11 for this calling code: its budget (the "*" one
 * if it has none of its own) and the "*" budget; "" is none.
 */
static void
ledger_budgets(const struct config *c, const char *cc, char budget[2][24])
{
    long own = route_country_value(&c->budgets, cc);

    budget[0][0] = budget[1][0] = '\0';
    if (own >= 0)
        snprintf(budget[0], sizeof(budget[0]), "%ld", own);
    if (c->budgets.deflt >= 0)
        snprintf(budget[1], sizeof(budget[1]), "%ld", c->budgets.deflt);
}

static void
ledger_limit_keys(const struct ledger *l, const struct job *job, const char *cc,
                  char k[7][LEDGER_KEY_MAX])
{
    key(k[0], l->cfg, PROTO_KEY_LIMITS);
    key(k[1], l->cfg, PROTO_KEY_RL_LAST, job->purpose, job->to);
    key(k[2], l->cfg, PROTO_KEY_RL_NUM, job->to);
    key(k[3], l->cfg, PROTO_KEY_RL_GLOBAL);
    key(k[4], l->cfg, PROTO_KEY_RL_CC, cc);
    key(k[5], l->cfg, PROTO_KEY_OPTOUT);
    key(k[6], l->cfg, PROTO_KEY_ALERT_COUNTRY_BUDGET, cc);
}

int
ledger_begin(struct ledger *l, const struct ledger_job *lj, const char *mac, ledger_begin_cb *cb,
             void *arg)
{
    const struct job *job = lj->job;
    char k[12][LEDGER_KEY_MAX], a[21][40], masked[LOG_MASK_MAX], budget[2][24];
    const char *keys[12], *args[21];
    int64_t now = otpd_now_ms(), left = job->expires_ms - now;
    struct ledger_op *op = ledger_op_new(l, SCRIPT_BEGIN, arg);

    if (op == NULL)
        return -1;
    snprintf(op->cc, sizeof(op->cc), "%s", lj->cc);
    op->begin_cb = cb;
    ledger_keys(l, job, k);
    ledger_limit_keys(l, job, lj->cc, k + 5);
    for (int i = 0; i < 12; i++)
        keys[i] = k[i];
    ledger_budgets(l->cfg, lj->cc, budget);
    log_mask_phone(job->to, masked, sizeof(masked));
    snprintf(a[3], sizeof(a[3]), "%lld", (long long)now);
    snprintf(a[7], sizeof(a[7]), "%lld", (long long)job->created_ms);
    snprintf(a[8], sizeof(a[8]), "%lld", (long long)job->expires_ms);
    snprintf(a[9], sizeof(a[9]), "%d", job->max_attempts);
    snprintf(a[10], sizeof(a[10]), "%lld", (long long)(left > 1 ? left : 1));
    args[0] = lj->stream_id;
    args[1] = l->cfg->group;
    args[2] = job->id;
    for (int i = 3; i < 11; i++)
        args[i] = a[i];
    args[4] = l->text.status_ttl;
    args[5] = l->text.events_maxlen;
    args[6] = mac;
    args[11] = masked;
    args[12] = job->purpose;
    args[13] = lj->cc;
    args[14] = job->to;
    args[15] = l->text.interval_ms;
    args[16] = l->text.per_hour;
    args[17] = l->text.per_day;
    args[18] = l->text.global_per_hour;
    args[19] = budget[0];
    args[20] = budget[1];
    return ledger_eval(op, ledger_begin_reply, 12, keys, 21, args, NULL);
}

/* --- finish, note, reject ------------------------------------------------ */

static void
ledger_done_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct ledger_op *op = priv;
    redisReply *reply = r;
    const char *err = NULL;

    (void)ac;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        err = rconn_reply_error(reply);
        ledger_check_noscript(op->l, err);
    }
    op->done_cb(op->arg, err ? -1 : 0, err);
    free(op);
}

static struct ledger_op *
ledger_done_op(struct ledger *l, int script, ledger_done_cb *cb, void *arg)
{
    struct ledger_op *op = ledger_op_new(l, script, arg);

    if (op != NULL)
        op->done_cb = cb;
    return op;
}

int
ledger_finish(struct ledger *l, const struct ledger_job *lj, const struct ledger_outcome *o,
              ledger_done_cb *cb, void *arg)
{
    const struct job *job = lj->job;
    const char *provider = o->provider ? o->provider : "";
    const char *ref = o->provider_ref ? o->provider_ref : "";
    char k[7][LEDGER_KEY_MAX], now[24], attempts[12], sent[24];
    char created[24], expires[24], masked[LOG_MASK_MAX];
    const char *keys[7], *args[21];
    struct ledger_op *op = ledger_done_op(l, SCRIPT_FINISH, cb, arg);

    if (op == NULL)
        return -1;
    ledger_keys(l, job, k);
    key(k[5], l->cfg, PROTO_KEY_REF, provider, ref);
    key(k[6], l->cfg, PROTO_KEY_OPTOUT);
    for (int i = 0; i < 7; i++)
        keys[i] = k[i];
    snprintf(now, sizeof(now), "%lld", (long long)otpd_now_ms());
    snprintf(attempts, sizeof(attempts), "%d", o->attempts);
    snprintf(sent, sizeof(sent), "%lld", (long long)o->sent_ms);
    snprintf(created, sizeof(created), "%lld", (long long)job->created_ms);
    snprintf(expires, sizeof(expires), "%lld", (long long)job->expires_ms);
    log_mask_phone(job->to, masked, sizeof(masked));
    const char *v[] = {lj->stream_id,
                       l->cfg->group,
                       job->id,
                       now,
                       l->text.status_ttl,
                       l->text.events_maxlen,
                       job_status_name(o->status),
                       provider,
                       ref,
                       o->provider_status ? o->provider_status : "",
                       o->error_code ? o->error_code : "",
                       o->error ? o->error : "",
                       attempts,
                       o->sent_ms ? sent : "",
                       o->begun ? "" : masked,
                       job->purpose,
                       o->begun ? "" : created,
                       expires,
                       lj->cc,
                       o->opted_out ? job->to : "",
                       o->burn_code ? "1" : "0"};
    memcpy(args, v, sizeof(v));
    return ledger_eval(op, ledger_done_reply, 7, keys, 21, args, NULL);
}

int
ledger_note(struct ledger *l, const struct ledger_job *lj, const struct ledger_outcome *o,
            ledger_done_cb *cb, void *arg)
{
    char k[5][LEDGER_KEY_MAX], now[24], attempts[12];
    struct ledger_op *op = ledger_done_op(l, SCRIPT_NOTE, cb, arg);

    if (op == NULL)
        return -1;
    ledger_keys(l, lj->job, k);
    snprintf(now, sizeof(now), "%lld", (long long)otpd_now_ms());
    snprintf(attempts, sizeof(attempts), "%d", o->attempts);
    const char *keys[] = {k[0], k[2], k[3]};
    const char *args[] = {lj->job->id,
                          now,
                          l->text.status_ttl,
                          l->text.events_maxlen,
                          o->provider ? o->provider : "",
                          o->error_code ? o->error_code : "",
                          o->error ? o->error : "",
                          attempts};
    return ledger_eval(op, ledger_done_reply, NARGS(keys), keys, NARGS(args), args, NULL);
}

int
ledger_reject(struct ledger *l, const struct ledger_job *lj, const char *payload, size_t len,
              const char *reason, ledger_done_cb *cb, void *arg)
{
    char k[5][LEDGER_KEY_MAX], dead[LEDGER_KEY_MAX], now[24];
    struct ledger_op *op = ledger_done_op(l, SCRIPT_REJECT, cb, arg);

    if (op == NULL)
        return -1;
    ledger_keys(l, lj->job, k);
    key(dead, l->cfg, PROTO_KEY_DEAD);
    snprintf(now, sizeof(now), "%lld", (long long)otpd_now_ms());
    if (payload == NULL) {
        payload = "";
        len = 0;
    }
    if (reason == NULL)
        reason = "";
    const char *keys[] = {k[0], dead, k[2], k[3], k[4]};
    const char *args[] = {
        lj->stream_id,         l->cfg->group,       lj->job->id, now,   l->text.reject_ttl,
        l->text.events_maxlen, l->text.dead_maxlen, payload,     reason};
    /* The payload may hold any bytes: its length, cut, goes as is. */
    size_t lens[NARGS(args)];
    for (int i = 0; i < NARGS(args); i++)
        lens[i] = args[i] ? strlen(args[i]) : 0;
    lens[7] = len < LEDGER_PAYLOAD_MAX ? len : LEDGER_PAYLOAD_MAX;
    return ledger_eval(op, ledger_done_reply, NARGS(keys), keys, NARGS(args), args, lens);
}

/* --- receipts ------------------------------------------------------------ */

static void
ledger_receipt_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct ledger_op *op = priv;
    redisReply *reply = r;
    int verdict = -1;

    (void)ac;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER)
        verdict = (int)reply->element[0]->integer;
    if (verdict < 0) {
        ledger_check_noscript(op->l, rconn_reply_error(reply));
        op->receipt_cb(op->arg, -1, "", 0, "", rconn_reply_error(reply));
    } else {
        op->receipt_cb(op->arg, verdict, reply_str(reply, 1), atoll(reply_str(reply, 2)),
                       reply_str(reply, 3), NULL);
    }
    free(op);
}

int
ledger_receipt(struct ledger *l, const char *provider, const char *ref, enum job_status status,
               const char *provider_status, const char *error_code, const char *error,
               ledger_receipt_cb *cb, void *arg)
{
    char refkey[LEDGER_KEY_MAX], events[LEDGER_KEY_MAX], stats[LEDGER_KEY_MAX], now[24];
    struct ledger_op *op = ledger_op_new(l, SCRIPT_RECEIPT, arg);

    if (op == NULL)
        return -1;
    op->receipt_cb = cb;
    key(refkey, l->cfg, PROTO_KEY_REF, provider, ref);
    key(events, l->cfg, PROTO_KEY_EVENTS);
    key(stats, l->cfg, PROTO_KEY_STATS);
    snprintf(now, sizeof(now), "%lld", (long long)otpd_now_ms());
    const char *keys[] = {refkey, events, stats};
    const char *args[] = {
        l->cfg->prefix, job_status_name(status), provider_status, error_code, error, now,
        provider,       l->text.events_maxlen};
    return ledger_eval(op, ledger_receipt_reply, NARGS(keys), keys, NARGS(args), args, NULL);
}

/* --- the published limits ------------------------------------------------ */

/*
 * The limits for the web app's early check.  Every instance publishes on
 * connect, on reload and every 10 s; run them all with the same
 * configuration.  The daemon itself passes its limits to the script.
 */
void
ledger_publish_limits(struct ledger *l)
{
    const struct config *c = l->cfg;
    char k[LEDGER_KEY_MAX], fields[ROUTE_MAX + 1][40], vals[ROUTE_MAX + 1][24];
    const char *argv[10 + 2 * (ROUTE_MAX + 1)];
    int argc = 0, n = 0;

    if (!rconn_is_up(l->w))
        return;
    key(k, c, PROTO_KEY_LIMITS);
    argv[argc++] = "HSET";
    argv[argc++] = k;
    argv[argc++] = "interval_ms";
    argv[argc++] = l->text.interval_ms;
    argv[argc++] = "per_hour";
    argv[argc++] = l->text.per_hour;
    argv[argc++] = "per_day";
    argv[argc++] = l->text.per_day;
    argv[argc++] = "global_per_hour";
    argv[argc++] = l->text.global_per_hour;
    for (int i = 0; i < c->budgets.n; i++, n++) {
        snprintf(fields[n], sizeof(fields[n]), "country_budget:%s", c->budgets.cc[i]);
        snprintf(vals[n], sizeof(vals[n]), "%ld", c->budgets.value[i]);
        argv[argc++] = fields[n];
        argv[argc++] = vals[n];
    }
    if (c->budgets.deflt >= 0) {
        snprintf(fields[n], sizeof(fields[n]), "country_budget:*");
        snprintf(vals[n], sizeof(vals[n]), "%ld", c->budgets.deflt);
        argv[argc++] = fields[n];
        argv[argc++] = vals[n];
    }
    const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"}, *del[] = {"DEL", k};
    rconn_command(l->w, NULL, NULL, NARGS(multi), multi, NULL);
    rconn_command(l->w, NULL, NULL, NARGS(del), del, NULL);
    rconn_command(l->w, NULL, NULL, argc, argv, NULL);
    rconn_command(l->w, NULL, NULL, NARGS(exec), exec, NULL);
}

/* --- housekeeping ---------------------------------------------------------- */

/* The published limits are written again every ten seconds: a FLUSHDB or an eviction heals. */
static void
ledger_housekeeping(uv_timer_t *t)
{
    ledger_publish_limits(t->data);
}
