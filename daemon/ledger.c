/*
 * ledger.c: the job's Redis writes, each one script on the writer
 * connection (see ledger.h for the two steps and docs/protocol.md for the
 * keys).  Scripts go by SHA1 (EVALSHA): sending and hashing their text for
 * every job would cost more than the work.  They are loaded on every
 * (re)connect; after a SCRIPT FLUSH the NOSCRIPT reply loads them again and
 * the step is retried like any refused write.
 *
 * The country-budget alert lives here, with the limits that raise it.
 *
 * With OTPD_REDIS_WAIT_REPLICAS, each batch's EVALSHA is followed by WAIT
 * on the same connection, and the batch is answered only when the WAIT is:
 * a begin whose writes did not reach the replicas is answered as an error
 * (the job waits and begins again: nothing is texted whose record a
 * failover could lose); a finish is answered as written, and the shortfall
 * counted and logged (docs/reliability.md section 10 says what that risks).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "buf.h"
#include "job.h"
#include "ledger.h"
#include "log.h"
#include "protocol.h"
#include "route.h"
#include "spend.h"

extern const char lua_batch[], lua_begin[], lua_finish[], lua_note[], lua_reject[], lua_receipt[],
    lua_poll[], lua_fraud[], lua_spend[], lua_fallback[];

enum {
    SCRIPT_BEGIN,
    SCRIPT_FINISH,
    SCRIPT_NOTE,
    SCRIPT_REJECT,
    SCRIPT_RECEIPT,
    SCRIPT_POLL,
    SCRIPT_FALLBACK,
    NSCRIPTS
};

#define LEDGER_PAYLOAD_MAX 4096 /* of a rejected payload, kept in its dead letter */
#define LEDGER_REJECT_TTL  3600 /* a burst of bad jobs must not fill Redis for a day */
#define LEDGER_KEY_MAX     192

#define LEDGER_PUBLISH_MS 10000 /* the published limits heal this often */

/*
 * Begins and finishes go in batches: every job that reaches the step in one
 * turn of the loop shares one EVALSHA, flushed when the turn ends.  A
 * script's set-up, its arguments and the counters are then paid once per
 * batch, and XACK and XDEL take all the batch's entries at once.  64 jobs
 * keep one call to a few milliseconds of Redis's time.
 */
#define LEDGER_BATCH_MAX  64
#define LEDGER_BATCH_HEAD 30 /* at most: the keys and shared arguments before the jobs' */
#define LEDGER_JOB_ARGS   24 /* at most, per job (finish.lua with a fallback) */
#define LEDGER_BATCH_ARGS (3 + 4 + LEDGER_BATCH_HEAD + LEDGER_BATCH_MAX * LEDGER_JOB_ARGS)

struct ledger_sent;

struct ledger_batch {
    int script;               /* SCRIPT_BEGIN or SCRIPT_FINISH */
    struct ledger_sent *sent; /* its ops; NULL while empty */
    /* The arguments, copied (the callers' buffers do not live to the flush). */
    int nargs;
    size_t off[LEDGER_BATCH_ARGS], len[LEDGER_BATCH_ARGS];
    struct buf text; /* the arguments, each NUL-terminated */
};

struct ledger {
    uv_loop_t *loop;
    const struct config *cfg;
    struct rconn *w;
    uv_timer_t housekeeping;
    uv_check_t flush;             /* sends the batches when the loop's turn ends */
    uv_idle_t nowait;             /* while a batch waits: the loop must not block first */
    int open_handles;             /* of the three above, until closed */
    struct ledger_batch batch[2]; /* begin, finish */
    /*
     * The configuration's numbers as the scripts take them, formatted once
     * per load or reload (ledger_reload()), not once per job.
     */
    struct {
        char status_ttl[16], events_maxlen[16], dead_maxlen[16], reject_ttl[16];
        char interval_ms[24], per_hour[24], per_day[24], global_per_hour[24];
        char budget_default[24]; /* OTPD_COUNTRY_HOURLY_BUDGET's "*", "" for none */
        char max_sends[12], poll_first_ms[16], poll_horizon_ms[24];
        /* the pumping model (fraud.lua) */
        char fraud_window_ms[16], fraud_settle_ms[16], fraud_baseline_ms[24], fraud_factor[12],
            fraud_min_codes[12], fraud_min_conversion[8], fraud_pause_ms[24];
        char spend_budget[24]; /* OTPD_DAILY_SPEND_BUDGET in micro-units, "" for none */
    } text;
    struct {
        char jobs[LEDGER_KEY_MAX], events[LEDGER_KEY_MAX], stats[LEDGER_KEY_MAX],
            optout[LEDGER_KEY_MAX], polls[LEDGER_KEY_MAX];
    } k;                        /* the batch scripts' declared keys */
    struct ledger_sent *failed; /* batches that could not be sent, answered next turn */
    char wait_args[2][16];      /* WAIT's replica count and timeout */
    uint64_t wait_warned_ms;
    struct ledger_stats stats;
    void (*closed_cb)(void *arg);
    void *closed_arg;
    char *begin_text; /* batch.lua, limits.lua as check_limits(), fraud.lua, spend.lua, begin.lua */
    char *finish_text; /* batch.lua, then finish.lua */
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
    ledger_polls_cb *polls_cb;
    ledger_fallbacks_cb *fallbacks_cb;
    void *arg;
};

static const char *
ledger_script_text(const struct ledger *l, int i)
{
    switch (i) {
    case SCRIPT_BEGIN:
        return l->begin_text;
    case SCRIPT_FINISH:
        return l->finish_text;
    case SCRIPT_NOTE:
        return lua_note;
    case SCRIPT_REJECT:
        return lua_reject;
    case SCRIPT_POLL:
        return lua_poll;
    case SCRIPT_FALLBACK:
        return lua_fallback;
    default:
        return lua_receipt;
    }
}

/*
 * The batch scripts as Redis runs them: batch.lua (what begin and finish
 * share) first; then for begin limits.lua, the web app's script, as a
 * local function, and fraud.lua and spend.lua, whose functions begin.lua
 * calls.  begin: 1 for begin.
 */
static char *
ledger_compose(const char *script, int begin)
{
    static const char head[] = "local function check_limits(KEYS, ARGV)\n";
    static const char tail[] = "\nend\n";
    const char *parts[] = {lua_batch, head, lua_limits, tail, lua_fraud, lua_spend, script};
    size_t n = 1;
    char *s;

    for (int i = 0; i < NARGS(parts); i++)
        if (begin || i == 0 || i == NARGS(parts) - 1)
            n += strlen(parts[i]) + 1;
    if ((s = malloc(n)) == NULL)
        return NULL;
    s[0] = '\0';
    for (int i = 0; i < NARGS(parts); i++)
        if (begin || i == 0 || i == NARGS(parts) - 1) {
            strcat(s, parts[i]);
            strcat(s, "\n");
        }
    return s;
}

static void ledger_housekeeping(uv_timer_t *t);

/* {prefix} then a PROTO_KEY_* name (include/protocol.h, next to docs/protocol.md). */
static void key(char *buf, const struct config *cfg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

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
    snprintf(l->text.max_sends, sizeof(l->text.max_sends), "%d", c->max_sends_per_code);
    snprintf(l->text.fraud_window_ms, sizeof(l->text.fraud_window_ms), "%lld",
             (long long)c->fraud_window_s * 1000);
    snprintf(l->text.fraud_settle_ms, sizeof(l->text.fraud_settle_ms), "%lld",
             (long long)c->fraud_settle_s * 1000);
    snprintf(l->text.fraud_baseline_ms, sizeof(l->text.fraud_baseline_ms), "%lld",
             (long long)c->fraud_baseline_s * 1000);
    snprintf(l->text.fraud_factor, sizeof(l->text.fraud_factor), "%d", c->fraud_spike_factor);
    snprintf(l->text.fraud_min_codes, sizeof(l->text.fraud_min_codes), "%d", c->fraud_min_codes);
    snprintf(l->text.fraud_min_conversion, sizeof(l->text.fraud_min_conversion), "%d",
             c->fraud_min_conversion);
    snprintf(l->text.fraud_pause_ms, sizeof(l->text.fraud_pause_ms), "%lld",
             (long long)c->fraud_pause_s * 1000);
    l->text.spend_budget[0] = '\0';
    if (c->spend_budget >= 0)
        snprintf(l->text.spend_budget, sizeof(l->text.spend_budget), "%ld", c->spend_budget);
    l->text.budget_default[0] = '\0';
    if (c->budgets.deflt >= 0)
        snprintf(l->text.budget_default, sizeof(l->text.budget_default), "%ld", c->budgets.deflt);
    key(l->k.jobs, c, PROTO_KEY_JOBS);
    key(l->k.events, c, PROTO_KEY_EVENTS);
    key(l->k.stats, c, PROTO_KEY_STATS);
    key(l->k.optout, c, PROTO_KEY_OPTOUT);
    key(l->k.polls, c, PROTO_KEY_POLLS);
    snprintf(l->text.poll_first_ms, sizeof(l->text.poll_first_ms), "%d", c->dlr_poll_first_ms);
    snprintf(l->text.poll_horizon_ms, sizeof(l->text.poll_horizon_ms), "%lld",
             (long long)c->dlr_poll_horizon_s * 1000);
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
    snprintf(l->wait_args[0], sizeof(l->wait_args[0]), "%d", cfg->redis_wait_replicas);
    snprintf(l->wait_args[1], sizeof(l->wait_args[1]), "%d", cfg->redis_wait_timeout_ms);
    if ((l->begin_text = ledger_compose(lua_begin, 1)) == NULL ||
        (l->finish_text = ledger_compose(lua_finish, 0)) == NULL) {
        free(l->begin_text);
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
    l->batch[0].script = SCRIPT_BEGIN;
    l->batch[1].script = SCRIPT_FINISH;
    uv_timer_init(loop, &l->housekeeping);
    uv_check_init(loop, &l->flush);
    uv_idle_init(loop, &l->nowait);
    l->housekeeping.data = l->flush.data = l->nowait.data = l;
    l->open_handles = 3;
    uv_timer_start(&l->housekeeping, ledger_housekeeping, LEDGER_PUBLISH_MS, LEDGER_PUBLISH_MS);
    return l;
}

const struct ledger_stats *
ledger_stats(const struct ledger *l)
{
    return &l->stats;
}

static void
ledger_closed(uv_handle_t *h)
{
    struct ledger *l = h->data;

    if (--l->open_handles == 0 && l->closed_cb)
        l->closed_cb(l->closed_arg);
}

static void ledger_flush_all(struct ledger *l);

/* Waiting batches go to the writer first: its close answers them like any command. */
void
ledger_close(struct ledger *l, void (*cb)(void *arg), void *arg)
{
    ledger_flush_all(l);
    l->closed_cb = cb;
    l->closed_arg = arg;
    uv_close((uv_handle_t *)&l->housekeeping, ledger_closed);
    uv_close((uv_handle_t *)&l->flush, ledger_closed);
    uv_close((uv_handle_t *)&l->nowait, ledger_closed);
}

void
ledger_free(struct ledger *l)
{
    if (l == NULL)
        return;
    for (int i = 0; i < 2; i++) {
        buf_free(&l->batch[i].text);
        free(l->batch[i].sent);
    }
    free(l->begin_text);
    free(l->finish_text);
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

/* --- batches ------------------------------------------------------------- */

/*
 * A batch's ops, answered in order by its script's reply.  Made with room
 * for a full batch when the first job joins, so sending never allocates.
 */
struct ledger_sent {
    struct ledger *l;
    struct ledger_sent *next; /* on l->failed */
    const char *err;          /* why it could not be sent */
    int script, njobs;
    /* A WAIT follows the script: its reply (a copy) or failure is kept until the WAIT's. */
    int waiting;
    redisReply *reply;
    char why[160];
    struct ledger_op *ops[LEDGER_BATCH_MAX];
};

static void ledger_answer(struct ledger_sent *sent, const redisReply *reply, const char *err);

/* hiredis frees a reply when its callback returns; one that must wait for the WAIT is copied. */
static redisReply *
reply_copy(const redisReply *r)
{
    redisReply *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->type = r->type;
    c->integer = r->integer;
    if (r->str != NULL) {
        if ((c->str = malloc(r->len + 1)) == NULL) {
            free(c);
            return NULL;
        }
        memcpy(c->str, r->str, r->len + 1);
        c->len = r->len;
    }
    if (r->elements > 0 && (c->element = calloc(r->elements, sizeof(redisReply *))) == NULL) {
        freeReplyObject(c);
        return NULL;
    }
    for (size_t i = 0; i < r->elements; i++) {
        c->elements = i + 1;
        if ((c->element[i] = reply_copy(r->element[i])) == NULL) {
            freeReplyObject(c);
            return NULL;
        }
    }
    return c;
}

static void ledger_wait_reply(redisAsyncContext *ac, void *r, void *priv);

static void
ledger_batch_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct ledger_sent *sent = priv;
    const redisReply *reply = r;
    const char *err = NULL;

    (void)ac;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
        reply->elements != (size_t)sent->njobs) {
        err = reply && reply->type != REDIS_REPLY_ERROR ? "unexpected reply from the ledger script"
                                                        : rconn_reply_error(reply);
        ledger_check_noscript(sent->l, err);
        reply = NULL;
    }
    if (!sent->waiting) {
        ledger_answer(sent, reply, err);
        return;
    }
    if (reply != NULL && (sent->reply = reply_copy(reply)) == NULL)
        err = "out of memory";
    if (sent->reply == NULL)
        snprintf(sent->why, sizeof(sent->why), "%s", err);
    if (sent->waiting == 2)
        ledger_wait_reply(ac, NULL, sent);
}

/* The WAIT after a batch: how many replicas have its writes. */
static void
ledger_wait_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct ledger_sent *sent = priv;
    struct ledger *l = sent->l;
    const redisReply *w = r;
    redisReply *kept = sent->reply;
    long long acked = w != NULL && w->type == REDIS_REPLY_INTEGER ? w->integer : -1;
    int step = sent->script == SCRIPT_BEGIN ? 0 : 1, need = l->cfg->redis_wait_replicas;
    uint64_t now = uv_now(l->loop);

    (void)ac;
    l->stats.waits[step]++;
    if (kept == NULL) {
        ledger_answer(sent, NULL, sent->why);
        return;
    }
    if (acked < need) {
        l->stats.waits_short[step]++;
        snprintf(sent->why, sizeof(sent->why),
                 "%lld of the %d replicas OTPD_REDIS_WAIT_REPLICAS asks for confirmed the %s "
                 "within %d ms",
                 acked < 0 ? 0 : acked, need, step == 0 ? "OTP records" : "final statuses",
                 l->cfg->redis_wait_timeout_ms);
        if (step == 1 && now - l->wait_warned_ms >= 10000) {
            log_warnx("ledger: %s; a failover now could lose them (the jobs would be sent "
                      "again with the same codes)",
                      sent->why);
            l->wait_warned_ms = now;
        }
        if (step == 0) {
            sent->reply = NULL;
            freeReplyObject(kept);
            ledger_answer(sent, NULL, sent->why);
            return;
        }
    }
    ledger_answer(sent, kept, NULL);
    freeReplyObject(kept);
}

/* One argument, copied into the batch. */
static int
batch_push(struct ledger_batch *b, const char *s, size_t len)
{
    size_t at = b->text.len;

    if (b->nargs == LEDGER_BATCH_ARGS || buf_append(&b->text, s, len, 8192, 0) != 0 ||
        buf_append(&b->text, "", 1, 8192, 0) != 0) {
        b->text.len = at;
        return -1;
    }
    b->off[b->nargs] = at;
    b->len[b->nargs++] = len;
    return 0;
}

/*
 * The script's number of keys, its keys and shared arguments, before the
 * jobs'.  clk: the UTC day and hour the spend is counted in (begin).
 */
static int
batch_head(const struct ledger *l, int script, const char *now, const struct spend_clock *clk,
           char *left, size_t leftlen, const char **v)
{
    const struct config *c = l->cfg;
    int n = 0;

    v[n++] = script == SCRIPT_FINISH ? "5" : "4";
    v[n++] = l->k.jobs;
    v[n++] = l->k.events;
    v[n++] = l->k.stats;
    v[n++] = l->k.optout;
    if (script == SCRIPT_FINISH)
        v[n++] = l->k.polls;
    v[n++] = c->prefix;
    v[n++] = c->group;
    v[n++] = now;
    v[n++] = l->text.status_ttl;
    v[n++] = l->text.events_maxlen;
    if (script == SCRIPT_FINISH) {
        v[n++] = l->text.poll_first_ms;
        v[n++] = l->text.poll_horizon_ms;
        return n;
    }
    v[n++] = l->text.interval_ms;
    v[n++] = l->text.per_hour;
    v[n++] = l->text.per_day;
    v[n++] = l->text.global_per_hour;
    v[n++] = l->text.budget_default;
    v[n++] = l->text.max_sends;
    v[n++] = l->text.fraud_window_ms;
    v[n++] = l->text.fraud_settle_ms;
    v[n++] = l->text.fraud_baseline_ms;
    v[n++] = l->text.fraud_factor;
    v[n++] = l->text.fraud_min_codes;
    v[n++] = l->text.fraud_min_conversion;
    v[n++] = l->text.fraud_pause_ms;
    v[n++] = c->fraud_auto_pause ? "1" : "0";
    snprintf(left, leftlen, "%lld", (long long)clk->day_left_ms);
    v[n++] = clk->day;
    v[n++] = clk->hour;
    v[n++] = left;
    v[n++] = l->text.spend_budget;
    v[n++] = c->price_currency;
    return n;
}

/* One EVALSHA for the batch's jobs; the batch is empty again after. */
static void
ledger_flush(struct ledger *l, struct ledger_batch *b)
{
    static const char *argv[2 + LEDGER_BATCH_HEAD + LEDGER_BATCH_ARGS];
    static size_t lens[NARGS(argv)];
    struct ledger_sent *sent = b->sent;
    struct spend_clock clk;
    char now[24], left[24];
    int64_t ms = otpd_now_ms();
    int argc = 2;

    if (sent == NULL)
        return;
    b->sent = NULL;
    snprintf(now, sizeof(now), "%lld", (long long)ms);
    spend_clock(ms, &clk);
    argv[0] = "EVALSHA";
    argv[1] = l->sha[b->script];
    argc += batch_head(l, b->script, now, &clk, left, sizeof(left), argv + argc);
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    for (int i = 0; i < b->nargs; i++, argc++) {
        argv[argc] = b->text.data + b->off[i];
        lens[argc] = b->len[i];
    }
    b->nargs = 0;
    b->text.len = 0;
    if (!rconn_is_up(l->w) || rconn_command(l->w, ledger_batch_reply, sent, argc, argv, lens) < 0) {
        /* Answered from the loop, never inside a caller's own ledger_*() call. */
        sent->err = "Redis is not connected";
        sent->next = l->failed;
        l->failed = sent;
        return;
    }
    if (l->cfg->redis_wait_replicas > 0) {
        const char *wait[] = {"WAIT", l->wait_args[0], l->wait_args[1]};
        sent->waiting = 1;
        /* Unsent, the WAIT's callback still runs (with NULL) when the connection goes. */
        if (rconn_command(l->w, ledger_wait_reply, sent, NARGS(wait), wait, NULL) < 0)
            sent->waiting = 2; /* as a WAIT no replica answered, once the script's reply is in */
    }
}

/* The loop's turn ends: send what waits, answer what could not be sent. */
static void
ledger_flush_all(struct ledger *l)
{
    struct ledger_sent *failed;

    for (int i = 0; i < 2; i++)
        ledger_flush(l, &l->batch[i]);
    uv_check_stop(&l->flush);
    uv_idle_stop(&l->nowait);
    failed = l->failed;
    l->failed = NULL;
    while (failed != NULL) {
        struct ledger_sent *next = failed->next;
        ledger_answer(failed, NULL, failed->err);
        failed = next;
    }
}

static void
ledger_flush_cb(uv_check_t *h)
{
    ledger_flush_all(h->data);
}

/* Active only to keep the loop from blocking; the check handle does the work. */
static void
ledger_idle_cb(uv_idle_t *h)
{
    (void)h;
}

/*
 * A job joins its step's batch: op and its arguments (copied).  -1 if
 * nothing could be queued (no memory): the caller's callback does not run.
 */
static int
ledger_join(struct ledger *l, struct ledger_batch *b, struct ledger_op *op, int argc,
            const char **argv, const size_t *lens)
{
    int nargs = b->nargs;
    size_t used = b->text.len;

    if (b->sent == NULL) {
        if ((b->sent = calloc(1, sizeof(*b->sent))) == NULL)
            return -1;
        b->sent->l = l;
        b->sent->script = b->script;
    }
    for (int i = 0; i < argc; i++) {
        if (batch_push(b, argv[i], lens ? lens[i] : strlen(argv[i])) < 0) {
            b->nargs = nargs;
            b->text.len = used;
            if (b->sent->njobs == 0) {
                free(b->sent);
                b->sent = NULL;
            }
            return -1;
        }
    }
    b->sent->ops[b->sent->njobs++] = op;
    if (b->sent->njobs == LEDGER_BATCH_MAX)
        ledger_flush(l, b);
    /* The loop must not sleep in poll before its check phase sends the batch. */
    if (!uv_is_active((uv_handle_t *)&l->flush)) {
        uv_check_start(&l->flush, ledger_flush_cb);
        uv_idle_start(&l->nowait, ledger_idle_cb);
    }
    return 0;
}

/* --- begin --------------------------------------------------------------- */

static const char *
reply_str(const redisReply *r, size_t i)
{
    if (r->elements <= i || r->element[i]->type != REDIS_REPLY_STRING)
        return "";
    return r->element[i]->str;
}

/* One job's verdict out of begin.lua's reply (r NULL: err says why). */
static void
ledger_begun(struct ledger_op *op, const redisReply *r, const char *err)
{
    struct ledger_begun b = {.verdict = LEDGER_ERROR, .status = "", .error_code = "", .error = ""};
    const char *word;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        b.err = err ? err : "unexpected reply from begin.lua";
        op->begin_cb(op->arg, &b);
        return;
    }
    word = reply_str(r, 0);
    b.status = reply_str(r, 1);
    if (strcmp(word, "go") == 0) {
        b.verdict = LEDGER_GO;
    } else if (strcmp(word, "done") == 0) {
        b.verdict = LEDGER_DONE;
    } else if (strcmp(word, PROTO_STATUS_DUPLICATE) == 0) {
        b.verdict = LEDGER_DUPLICATE;
    } else if (strcmp(word, "denied") == 0) {
        b.verdict = LEDGER_DENIED;
        b.error_code = reply_str(r, 2);
        b.error = reply_str(r, 3);
        if (r->elements > 4 && r->element[4]->type == REDIS_REPLY_INTEGER)
            b.retry_after_ms = r->element[4]->integer;
        b.paused = strcmp(reply_str(r, 5), "1") == 0;
    } else if (strcmp(word, "resend") == 0) {
        b.verdict = LEDGER_RESEND;
        b.sealed = reply_str(r, 1);
        b.expires_ms = atoll(reply_str(r, 2));
        b.reclaimed = strcmp(reply_str(r, 3), "1") == 0;
        b.status = "";
    } else if (strcmp(word, "error") == 0) {
        b.err = reply_str(r, 1);
        b.status = "";
    } else {
        b.err = "unexpected verdict from begin.lua";
    }
    /* The alert is the limits' business; the delivery sees the verdict only. */
    if (b.verdict == LEDGER_DENIED && strcmp(b.error_code, "country_budget") == 0)
        ledger_budget_alert(op->l, op->cc);
    if (b.verdict == LEDGER_DENIED && strstr(b.error_code, "spend_budget") != NULL)
        spend_budget_alert(b.error_code, op->cc);
    op->begin_cb(op->arg, &b);
}

/* One job's answer out of finish.lua's reply: 1, or {'error', why}. */
static void
ledger_finished(struct ledger_op *op, const redisReply *r, const char *err)
{
    if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
        op->done_cb(op->arg, 0, NULL);
        return;
    }
    if (r != NULL && r->type == REDIS_REPLY_ARRAY)
        err = reply_str(r, 1);
    op->done_cb(op->arg, -1, err && *err ? err : "unexpected reply from finish.lua");
}

/* Each op of a batch gets its own answer, in order; then the batch goes. */
static void
ledger_answer(struct ledger_sent *sent, const redisReply *reply, const char *err)
{
    for (int i = 0; i < sent->njobs; i++) {
        struct ledger_op *op = sent->ops[i];
        const redisReply *r = reply ? reply->element[i] : NULL;
        if (sent->script == SCRIPT_BEGIN)
            ledger_begun(op, r, err);
        else
            ledger_finished(op, r, err);
        free(op);
    }
    free(sent);
}

/* begin.lua's budget fields for this calling code: its own ("" is none). */
static void
ledger_budget(const struct config *c, const char *cc, char budget[24])
{
    long own = route_country_value(&c->budgets, cc);

    budget[0] = '\0';
    if (own >= 0)
        snprintf(budget, 24, "%ld", own);
}

/* The job's price and segments as begin.lua takes them ("" where none). */
struct begin_cost {
    char segments[12], price[24], spend_budget[24];
};

static void
ledger_cost(const struct config *c, const struct ledger_job *lj, struct begin_cost *bc)
{
    long budget = route_country_value(&c->spend_budgets, lj->cc);

    bc->segments[0] = bc->price[0] = bc->spend_budget[0] = '\0';
    if (lj->job->channel != JOB_CHANNEL_SMS)
        return;
    snprintf(bc->segments, sizeof(bc->segments), "%d", lj->segments);
    if (lj->price_micro >= 0)
        snprintf(bc->price, sizeof(bc->price), "%ld", lj->price_micro);
    if (budget >= 0)
        snprintf(bc->spend_budget, sizeof(bc->spend_budget), "%ld", budget);
}

int
ledger_begin(struct ledger *l, const struct ledger_job *lj, const char *mac, const char *sealed,
             ledger_begin_cb *cb, void *arg)
{
    const struct job *job = lj->job;
    char created[24], expires[24], attempts[12], ttl[24], masked[LOG_MASK_MAX], budget[24];
    int64_t left = job->expires_ms - otpd_now_ms();
    struct begin_cost bc;
    struct ledger_op *op;

    if (!rconn_is_up(l->w) || (op = ledger_op_new(l, SCRIPT_BEGIN, arg)) == NULL)
        return -1;
    snprintf(op->cc, sizeof(op->cc), "%s", lj->cc);
    op->begin_cb = cb;
    /* Country budgets are an SMS-pumping defence: "0" turns them off for e-mail. */
    if (job->channel == JOB_CHANNEL_EMAIL)
        snprintf(budget, sizeof(budget), "0");
    else
        ledger_budget(l->cfg, lj->cc, budget);
    ledger_cost(l->cfg, lj, &bc);
    log_mask_to(job->to, masked, sizeof(masked));
    snprintf(created, sizeof(created), "%lld", (long long)job->created_ms);
    snprintf(expires, sizeof(expires), "%lld", (long long)job->expires_ms);
    snprintf(attempts, sizeof(attempts), "%d", job->max_attempts);
    snprintf(ttl, sizeof(ttl), "%lld", (long long)(left > 1 ? left : 1));
    const char *v[] = {lj->stream_id,
                       job->id,
                       mac,
                       created,
                       expires,
                       attempts,
                       ttl,
                       masked,
                       job->purpose,
                       lj->cc,
                       job->to,
                       budget,
                       sealed,
                       lj->replace_code ? "2"
                       : job->fresh     ? "1"
                                        : "",
                       job_channel_name(job->channel),
                       lj->fraud_prefix ? lj->fraud_prefix : "",
                       bc.segments,
                       job->channel == JOB_CHANNEL_SMS && lj->encoding ? lj->encoding : "",
                       bc.price,
                       bc.spend_budget,
                       job->fallback_of,
                       job->code_for};
    if (ledger_join(l, &l->batch[0], op, NARGS(v), v, NULL) < 0) {
        free(op);
        return -1;
    }
    return 0;
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
    char attempts[12], sent[24], created[24], expires[24], masked[LOG_MASK_MAX], flags[6];
    struct ledger_op *op;
    int n = 0;

    if (!rconn_is_up(l->w) || (op = ledger_done_op(l, SCRIPT_FINISH, cb, arg)) == NULL)
        return -1;
    snprintf(attempts, sizeof(attempts), "%d", o->attempts);
    snprintf(sent, sizeof(sent), "%lld", (long long)o->sent_ms);
    if (!o->begun)
        flags[n++] = 'n';
    if (o->burn_code)
        flags[n++] = 'b';
    if (o->opted_out)
        flags[n++] = 'o';
    if (o->poll)
        flags[n++] = 'p';
    if (o->fallback != NULL)
        flags[n++] = 'f';
    flags[n] = '\0';
    const char *v[LEDGER_JOB_ARGS] = {lj->stream_id,
                                      job->id,
                                      job_status_name(o->status),
                                      o->provider ? o->provider : "",
                                      o->provider_ref ? o->provider_ref : "",
                                      o->provider_status ? o->provider_status : "",
                                      o->error_code ? o->error_code : "",
                                      o->error ? o->error : "",
                                      attempts,
                                      o->sent_ms ? sent : "",
                                      job->to,
                                      job->purpose,
                                      flags,
                                      job_channel_name(job->channel)};
    int argc = 14;
    if (!o->begun) {
        /* The record's fixed fields, which begin would have written. */
        snprintf(created, sizeof(created), "%lld", (long long)job->created_ms);
        snprintf(expires, sizeof(expires), "%lld", (long long)job->expires_ms);
        v[argc++] = log_mask_to(job->to, masked, sizeof(masked));
        v[argc++] = created;
        v[argc++] = expires;
        v[argc++] = lj->cc;
    }
    char fb_expires[24], fb_due[24];
    if (o->fallback != NULL) {
        const struct ledger_fallback *f = o->fallback;
        snprintf(fb_expires, sizeof(fb_expires), "%lld", (long long)f->expires_ms);
        snprintf(fb_due, sizeof(fb_due), "%lld", (long long)f->due_ms);
        v[argc++] = f->job_json;
        v[argc++] = f->next_id;
        v[argc++] = job_channel_name(f->channel);
        v[argc++] = f->otp;
        v[argc++] = fb_expires;
        v[argc++] = fb_due;
    }
    if (ledger_join(l, &l->batch[1], op, argc, v, NULL) < 0) {
        free(op);
        return -1;
    }
    return 0;
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
               long price_micro, const char *price_unit, ledger_receipt_cb *cb, void *arg)
{
    char refkey[LEDGER_KEY_MAX], events[LEDGER_KEY_MAX], stats[LEDGER_KEY_MAX], now[24], price[24];
    struct ledger_op *op = ledger_op_new(l, SCRIPT_RECEIPT, arg);
    struct spend_clock clk;

    if (op == NULL)
        return -1;
    op->receipt_cb = cb;
    key(refkey, l->cfg, PROTO_KEY_REF, provider, ref);
    key(events, l->cfg, PROTO_KEY_EVENTS);
    key(stats, l->cfg, PROTO_KEY_STATS);
    snprintf(now, sizeof(now), "%lld", (long long)otpd_now_ms());
    spend_clock(otpd_now_ms(), &clk);
    price[0] = '\0';
    if (price_micro >= 0)
        snprintf(price, sizeof(price), "%ld", price_micro);
    const char *keys[] = {refkey, events, stats};
    const char *args[] = {l->cfg->prefix,  job_status_name(status),
                          provider_status, error_code,
                          error,           now,
                          provider,        l->text.events_maxlen,
                          price,           price_unit ? price_unit : "",
                          clk.hour,        l->cfg->price_currency};
    return ledger_eval(op, ledger_receipt_reply, NARGS(keys), keys, NARGS(args), args, NULL);
}

/* --- the polling schedule ------------------------------------------------- */

static void
ledger_polls_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct ledger_op *op = priv;
    redisReply *reply = r;
    const char *members[128];
    size_t n = 0;

    (void)ac;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        const char *err = rconn_reply_error(reply);
        ledger_check_noscript(op->l, err);
        op->polls_cb(op->arg, NULL, 0, err ? err : "unexpected reply from poll.lua");
        free(op);
        return;
    }
    for (size_t i = 0; i < reply->elements && n < NARGS(members); i++)
        if (reply->element[i]->type == REDIS_REPLY_STRING)
            members[n++] = reply->element[i]->str;
    op->polls_cb(op->arg, members, n, NULL);
    free(op);
}

int
ledger_poll_take(struct ledger *l, int max, int lease_ms, ledger_polls_cb *cb, void *arg)
{
    char now[24], lease[16], most[16];
    struct ledger_op *op = ledger_op_new(l, SCRIPT_POLL, arg);

    if (op == NULL)
        return -1;
    op->polls_cb = cb;
    snprintf(now, sizeof(now), "%lld", (long long)otpd_now_ms());
    snprintf(lease, sizeof(lease), "%d", lease_ms);
    snprintf(most, sizeof(most), "%d", max < 128 ? max : 128);
    const char *keys[] = {l->k.polls};
    const char *args[] = {"take", now, lease, most};
    return ledger_eval(op, ledger_polls_reply, NARGS(keys), keys, NARGS(args), args, NULL);
}

static void
ledger_poll_moved(void *arg, int ok, const char *err)
{
    (void)arg;
    if (ok < 0)
        log_warnx("ledger: could not reschedule a receipt poll: %s (it is due again when its "
                  "lease ends)",
                  err);
}

int
ledger_poll_next(struct ledger *l, const char *member, const char *next, int64_t next_ms)
{
    char at[24];
    struct ledger_op *op = ledger_done_op(l, SCRIPT_POLL, ledger_poll_moved, NULL);

    if (op == NULL)
        return -1;
    snprintf(at, sizeof(at), "%lld", (long long)next_ms);
    const char *keys[] = {l->k.polls};
    const char *args[] = {"next", member, next ? next : "", at};
    return ledger_eval(op, ledger_done_reply, NARGS(keys), keys, NARGS(args), args, NULL);
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
    const char *argv[22 + 2 * (ROUTE_MAX + 1)];
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
    /* The pumping model's settings, for otpctl fraud and the site's reports. */
    char digits[8];
    snprintf(digits, sizeof(digits), "%d", c->fraud_prefix_digits);
    const char *fraud[] = {"fraud_prefix_digits", digits,
                           "fraud_window_ms",     l->text.fraud_window_ms,
                           "fraud_settle_ms",     l->text.fraud_settle_ms,
                           "fraud_baseline_ms",   l->text.fraud_baseline_ms,
                           "price_currency",      c->price_currency,
                           "spend_budget_micro",  l->text.spend_budget};
    for (int i = 0; i < NARGS(fraud); i++)
        argv[argc++] = fraud[i];
    const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"}, *del[] = {"DEL", k};
    rconn_command(l->w, NULL, NULL, NARGS(multi), multi, NULL);
    rconn_command(l->w, NULL, NULL, NARGS(del), del, NULL);
    rconn_command(l->w, NULL, NULL, argc, argv, NULL);
    rconn_command(l->w, NULL, NULL, NARGS(exec), exec, NULL);
}

/* --- fallbacks ------------------------------------------------------------- */

static void
ledger_fallbacks_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct ledger_op *op = priv;
    redisReply *reply = r;
    struct ledger_fallback_fired fired[64];
    size_t n = 0;

    (void)ac;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        ledger_check_noscript(op->l, rconn_reply_error(reply));
        op->fallbacks_cb(op->arg, NULL, 0, rconn_reply_error(reply));
        free(op);
        return;
    }
    for (size_t i = 0; i < reply->elements && n < 64; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 4)
            continue;
        fired[n].id = reply_str(e, 0);
        fired[n].verdict = reply_str(e, 1);
        fired[n].channel = reply_str(e, 2);
        fired[n].next_id = reply_str(e, 3);
        n++;
    }
    op->fallbacks_cb(op->arg, fired, n, NULL);
    free(op);
}

int
ledger_fallbacks_fire(struct ledger *l, int max, ledger_fallbacks_cb *cb, void *arg)
{
    char now[24], most[16], due[LEDGER_KEY_MAX];
    struct ledger_op *op;

    if (!rconn_is_up(l->w) || (op = ledger_op_new(l, SCRIPT_FALLBACK, arg)) == NULL)
        return -1;
    op->fallbacks_cb = cb;
    snprintf(now, sizeof(now), "%lld", (long long)otpd_now_ms());
    snprintf(most, sizeof(most), "%d", max < 64 ? max : 64);
    key(due, l->cfg, PROTO_KEY_FALLBACKS);
    const char *keys[] = {due, l->k.jobs, l->k.events};
    const char *args[] = {l->cfg->prefix, now, most, l->text.events_maxlen};
    return ledger_eval(op, ledger_fallbacks_reply, NARGS(keys), keys, NARGS(args), args, NULL);
}

/* --- housekeeping ---------------------------------------------------------- */

/* The published limits are written again every ten seconds: a FLUSHDB or an eviction heals. */
static void
ledger_housekeeping(uv_timer_t *t)
{
    ledger_publish_limits(t->data);
}
