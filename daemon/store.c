/*
 * store.c: writes the OTP record, the status record and events.
 *
 * Each call is one MULTI/EXEC on the writer connection, so the web app
 * never sees an OTP record without its status or the other way round.
 * Scripts run inside the transaction for the two compare-and-set steps.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "log.h"
#include "route.h"
#include "store.h"

/*
 * KEYS[1] otp record; ARGV: mac job created_ms max_attempts ttl_ms.
 * A record from a newer job wins (latest code wins even if jobs are
 * processed out of order after a reclaim); DEL first so no stale field
 * such as "locked" survives a replacement.
 */
static const char store_begin_lua[] =
    "local cur = redis.call('HGET', KEYS[1], 'created_ms')\n"
    "if cur and tonumber(cur) > tonumber(ARGV[3]) then return 0 end\n"
    "redis.call('DEL', KEYS[1])\n"
    "redis.call('HSET', KEYS[1], 'mac', ARGV[1], 'job', ARGV[2], 'attempts', '0',\n"
    "  'max_attempts', ARGV[4], 'created_ms', ARGV[3])\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[5])\n"
    "return 1\n";

/*
 * Send limits, shared word for word with the Python client (which runs it
 * with mode "check" before enqueueing; the daemon runs "take" before
 * sending).  The daemon passes its own limits (ARGV 6-11), so a deleted or
 * evicted limits hash can never turn them off; the client reads them from
 * the KEYS[1] hash, which the daemon publishes on connect, on reload and
 * every few seconds.
 * KEYS: limits, last-send, per-number zset, global zset, country zset,
 *       opt-outs, country alert.
 * ARGV: mode, now_ms, job id, number, calling code[, interval_ms, per_hour,
 *       per_day, global_per_hour, this country's budget, other countries'
 *       budget ("" for none)].
 * Returns {0} or {1, reason, retry_after_ms}.  A job already counted
 * (a reclaim) passes again.
 */
const char store_limits_lua[] =
    "local L = {ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]}\n"
    "if not ARGV[6] then\n"
    "  L = redis.call('HMGET', KEYS[1], 'interval_ms', 'per_hour', 'per_day',\n"
    "    'global_per_hour', 'country_budget:' .. ARGV[5], 'country_budget:*')\n"
    "end\n"
    "local now, job = tonumber(ARGV[2]), ARGV[3]\n"
    "local HOUR, DAY = 3600000, 86400000\n"
    "if redis.call('HEXISTS', KEYS[6], ARGV[4]) == 1 then return {1, 'opted_out', 0} end\n"
    "local interval = tonumber(L[1]) or 0\n"
    "if interval > 0 then\n"
    "  local last = redis.call('GET', KEYS[2])\n"
    "  if last and last ~= job then return {1, 'interval', redis.call('PTTL', KEYS[2])} end\n"
    "end\n"
    "local function full(key, span, keep, max)\n"
    "  if not max or max <= 0 then return nil end\n"
    "  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - keep)\n"
    "  if redis.call('ZSCORE', key, job) then return nil end\n"
    "  if redis.call('ZCOUNT', key, now - span + 1, '+inf') < max then return nil end\n"
    "  local first = redis.call('ZRANGEBYSCORE', key, now - span + 1, '+inf', 'WITHSCORES',\n"
    "    'LIMIT', 0, 1)\n"
    "  return tonumber(first[2]) + span - now\n"
    "end\n"
    "local budget = tonumber(L[5]) or tonumber(L[6]) or 0\n"
    "local checks = {\n"
    "  {KEYS[3], HOUR, DAY, tonumber(L[2]), 'per_hour'},\n"
    "  {KEYS[3], DAY, DAY, tonumber(L[3]), 'per_day'},\n"
    "  {KEYS[4], HOUR, HOUR, tonumber(L[4]), 'global_per_hour'},\n"
    "  {KEYS[5], HOUR, HOUR, budget, 'country_budget'}}\n"
    "for _, c in ipairs(checks) do\n"
    "  local wait = full(c[1], c[2], c[3], c[4])\n"
    "  if wait then\n"
    "    if c[5] == 'country_budget' and ARGV[1] == 'take' then\n"
    "      redis.call('SET', KEYS[7], now, 'PX', HOUR)\n"
    "    end\n"
    "    return {1, c[5], wait}\n"
    "  end\n"
    "end\n"
    "if ARGV[1] ~= 'take' then return {0} end\n"
    "if interval > 0 then redis.call('SET', KEYS[2], job, 'PX', interval) end\n"
    "redis.call('ZADD', KEYS[3], now, job)\n"
    "redis.call('PEXPIRE', KEYS[3], DAY)\n"
    "if (tonumber(L[4]) or 0) > 0 then redis.call('ZADD', KEYS[4], now, job) end\n"
    "if budget > 0 then\n"
    "  redis.call('ZADD', KEYS[5], now, job)\n"
    "  redis.call('PEXPIRE', KEYS[5], HOUR)\n"
    "end\n"
    "return {0}\n";

/*
 * A delivery receipt.  KEYS: ref index, events, stats.  ARGV: prefix,
 * status, provider status, error code, error, now, provider, events maxlen.
 * Statuses only move forward (sent < delivered/undelivered/failed) and the
 * first final one wins, so late or repeated callbacks change nothing.
 * Returns {0} (unknown ref), {1, id} (no change) or
 * {2, id, sent_ms, calling code} (applied).
 */
static const char store_receipt_lua[] =
    "local id = redis.call('GET', KEYS[1])\n"
    "if not id then return {0} end\n"
    "local jk = ARGV[1] .. 'job:' .. id\n"
    "local cur = redis.call('HGET', jk, 'status')\n"
    "if not cur then return {0} end\n"
    "local rank = {queued = 0, sending = 1, retrying = 1, sent = 2, delivered = 3,\n"
    "  undelivered = 3, failed = 3}\n"
    "if (rank[ARGV[2]] or 0) <= (rank[cur] or 0) then return {1, id} end\n"
    "redis.call('HSET', jk, 'status', ARGV[2], 'provider_status', ARGV[3], 'error_code',\n"
    "  ARGV[4], 'error', ARGV[5], 'updated_ms', ARGV[6])\n"
    "local sent = redis.call('HGET', jk, 'sent_ms') or ''\n"
    "local latency = ''\n"
    "if ARGV[2] == 'delivered' then\n"
    "  redis.call('HSET', jk, 'delivered_ms', ARGV[6])\n"
    "  if sent ~= '' then latency = tostring(tonumber(ARGV[6]) - tonumber(sent)) end\n"
    "end\n"
    "local cc = redis.call('HGET', jk, 'cc') or ''\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'id', id, 'status', ARGV[2],\n"
    "  'provider', ARGV[7], 'error_code', ARGV[4], 'ts_ms', ARGV[6], 'latency_ms', latency,\n"
    "  'cc', cc)\n"
    "redis.call('HINCRBY', KEYS[3], 'jobs:' .. ARGV[2], 1)\n"
    "redis.call('HINCRBY', KEYS[3], 'provider:' .. ARGV[7] .. ':' .. ARGV[2], 1)\n"
    "return {2, id, sent, cc}\n";

/* KEYS[1] otp record; ARGV[1] job id: burn the record only if still ours. */
static const char store_burn_lua[] = "if redis.call('HGET', KEYS[1], 'job') == ARGV[1] then\n"
                                     "  return redis.call('DEL', KEYS[1]) end\n"
                                     "return 0\n";

/* KEYS[1] status record; ARGV: stream entry id, status TTL.  See store_claim(). */
static const char store_claim_lua[] =
    "local owner = redis.call('HGET', KEYS[1], 'stream_id')\n"
    "local st = redis.call('HGET', KEYS[1], 'status') or ''\n"
    "if owner and owner ~= ARGV[1] then return {2, st} end\n"
    "if st == 'sent' or st == 'delivered' or st == 'undelivered' or st == 'failed' or\n"
    "   st == 'expired' or st == 'rejected' or st == 'rate_limited' then return {1, st} end\n"
    "redis.call('HSET', KEYS[1], 'stream_id', ARGV[1])\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
    "return {0, st}\n";

/*
 * KEYS[1] status record; ARGV: stream entry id, reason, now_ms, ttl_s.
 * A rejected entry may carry any id, including one that belongs to
 * another job: it writes the record only if there is none, or it is its
 * own, or it is the client's "queued" placeholder that no entry has
 * claimed yet.  Returns 1 if written, 0 if left alone.
 */
static const char store_reject_lua[] =
    "local owner = redis.call('HGET', KEYS[1], 'stream_id')\n"
    "if owner and owner ~= ARGV[1] then return 0 end\n"
    "if not owner and redis.call('EXISTS', KEYS[1]) == 1 and\n"
    "   redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'status', 'rejected', 'stream_id', ARGV[1], 'error', ARGV[2],\n"
    "  'error_code', 'rejected', 'updated_ms', ARGV[3])\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[4])\n"
    "return 1\n";

/*
 * Scripts go by SHA1 (EVALSHA): sending and hashing the text for every job
 * would cost more than the work.  They are loaded on every (re)connect;
 * after a SCRIPT FLUSH the NOSCRIPT error reloads them and the step is
 * retried like any refused write.
 */
enum {
    SCRIPT_CLAIM,
    SCRIPT_BEGIN,
    SCRIPT_BURN,
    SCRIPT_LIMITS,
    SCRIPT_RECEIPT,
    SCRIPT_REJECT,
    NSCRIPTS
};

struct store {
    const struct config *cfg;
    struct rconn *w;
    char sha[NSCRIPTS][41];
    char events[128];
    char stats[128];
    char maxlen[16];
    char queue_err[128];
};

static const char *store_script_text(int i);

struct store_op {
    struct store *st;
    store_done_cb *cb;
    void *arg;
    int begin; /* the first queued reply is the begin script's verdict */
};

struct store *
store_new(const struct config *cfg, struct rconn *writer)
{
    struct store *st = calloc(1, sizeof(*st));

    if (st == NULL)
        return NULL;
    st->cfg = cfg;
    st->w = writer;
    snprintf(st->events, sizeof(st->events), "%sevents", cfg->prefix);
    snprintf(st->stats, sizeof(st->stats), "%sstats", cfg->prefix);
    snprintf(st->maxlen, sizeof(st->maxlen), "%d", cfg->events_maxlen);
    for (int i = 0; i < NSCRIPTS; i++) {
        unsigned char md[20];
        unsigned int mdlen = 0;
        const char *text = store_script_text(i);
        if (!EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha1(), NULL) || mdlen != 20) {
            free(st);
            return NULL;
        }
        sodium_bin2hex(st->sha[i], sizeof(st->sha[i]), md, sizeof(md));
    }
    return st;
}

static const char *
store_script_text(int i)
{
    switch (i) {
    case SCRIPT_CLAIM:
        return store_claim_lua;
    case SCRIPT_BEGIN:
        return store_begin_lua;
    case SCRIPT_BURN:
        return store_burn_lua;
    case SCRIPT_LIMITS:
        return store_limits_lua;
    case SCRIPT_REJECT:
        return store_reject_lua;
    default:
        return store_receipt_lua;
    }
}

static void
store_loaded(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;

    (void)ac;
    (void)priv;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_err("store: SCRIPT LOAD refused: %s", reply->str);
}

void
store_load_scripts(struct store *st)
{
    for (int i = 0; i < NSCRIPTS; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", store_script_text(i)};
        rconn_command(st->w, store_loaded, NULL, NARGS(argv), argv, NULL);
    }
}

/* A NOSCRIPT reply: someone flushed the script cache; load again, then retry. */
static void
store_check_noscript(struct store *st, const char *err)
{
    if (err && strncmp(err, "NOSCRIPT", 8) == 0)
        store_load_scripts(st);
}

void
store_free(struct store *st)
{
    free(st);
}

static void
store_exec_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct store_op *op = priv;
    redisReply *reply = r;
    const char *err = NULL;
    int ok = 0;

    (void)ac;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
        err = rconn_reply_error(reply);
    else if (reply->type != REDIS_REPLY_ARRAY)
        err = "transaction aborted";
    else
        for (size_t i = 0; i < reply->elements && !err; i++)
            if (reply->element[i]->type == REDIS_REPLY_ERROR)
                err = reply->element[i]->str;
    if (err && strncmp(err, "EXECABORT", 9) == 0 && op->st->queue_err[0])
        err = op->st->queue_err;
    store_check_noscript(op->st, err);
    if (!err && op->begin && reply != NULL && reply->elements > 0 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER && reply->element[0]->integer == 0)
        ok = 1;
    op->cb(op->arg, err ? -1 : ok, err);
    op->st->queue_err[0] = '\0';
    free(op);
}

/*
 * Inside MULTI each command is answered QUEUED or with the reason it was
 * refused (OOM, READONLY, ...); EXEC then only says EXECABORT.  Keep the
 * first reason so the log names the real cause.
 */
static void
store_queued_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct store *st = priv;
    redisReply *reply = r;

    (void)ac;
    if (reply && reply->type == REDIS_REPLY_ERROR && st->queue_err[0] == '\0')
        snprintf(st->queue_err, sizeof(st->queue_err), "%s", reply->str);
}

static int
store_cmd(struct store *st, int argc, const char **argv)
{
    return rconn_command(st->w, store_queued_reply, st, argc, argv, NULL);
}

static void
key_otp(char *buf, size_t len, const struct config *cfg, const struct job *job)
{
    snprintf(buf, len, "%sotp:%s:%s", cfg->prefix, job->purpose, job->to);
}

static void
key_job(char *buf, size_t len, const struct config *cfg, const struct job *job)
{
    snprintf(buf, len, "%sjob:%s", cfg->prefix, job->id);
}

static void
store_event(struct store *st, const struct job *job, const char *status, const char *provider,
            const char *error_code, const char *now)
{
    const char *argv[] = {"XADD",       st->events, "MAXLEN", "~",    st->maxlen, "*",
                          "id",         job->id,    "status", status, "provider", provider,
                          "error_code", error_code, "ts_ms",  now};
    store_cmd(st, NARGS(argv), argv);
}

static int
store_finish(struct store *st, store_done_cb *cb, void *arg, int begin)
{
    struct store_op *op = malloc(sizeof(*op));
    const char *exec[] = {"EXEC"};

    if (op == NULL)
        return -1;
    op->st = st;
    op->cb = cb;
    op->arg = arg;
    op->begin = begin;
    if (rconn_command(st->w, store_exec_reply, op, 1, exec, NULL) < 0) {
        free(op);
        return -1;
    }
    return 0;
}

static void
store_expire(struct store *st, const char *key)
{
    char ttl[16];

    snprintf(ttl, sizeof(ttl), "%d", st->cfg->status_ttl);
    const char *argv[] = {"EXPIRE", key, ttl};
    store_cmd(st, NARGS(argv), argv);
}

/* Global counters in {p}stats: by outcome, and by provider and outcome. */
static void
store_count(struct store *st, enum job_status status, const char *provider)
{
    char field[64];
    const char *name = status == JOB_RETRYING ? "retries" : job_status_name(status);

    if (status == JOB_SENDING || status == JOB_QUEUED)
        return;
    snprintf(field, sizeof(field), "jobs:%s", name);
    const char *total[] = {"HINCRBY", st->stats, field, "1"};
    store_cmd(st, NARGS(total), total);
    if (provider && *provider) {
        snprintf(field, sizeof(field), "provider:%s:%s", provider, name);
        const char *per[] = {"HINCRBY", st->stats, field, "1"};
        store_cmd(st, NARGS(per), per);
    }
}

int
store_begin(struct store *st, const struct job *job, const char *mac, store_done_cb *cb, void *arg)
{
    char otpkey[160], jobkey[160], now[24], created[24], maxatt[8], ttl[24], expires[24];
    char masked[LOG_MASK_MAX], cc[4];
    int64_t t = otpd_now_ms();
    int64_t left = job->expires_ms - t;

    if (!rconn_is_up(st->w))
        return -1;
    key_otp(otpkey, sizeof(otpkey), st->cfg, job);
    key_job(jobkey, sizeof(jobkey), st->cfg, job);
    snprintf(now, sizeof(now), "%lld", (long long)t);
    snprintf(created, sizeof(created), "%lld", (long long)job->created_ms);
    snprintf(expires, sizeof(expires), "%lld", (long long)job->expires_ms);
    snprintf(maxatt, sizeof(maxatt), "%d", job->max_attempts);
    snprintf(ttl, sizeof(ttl), "%lld", (long long)(left > 1 ? left : 1));
    log_mask_phone(job->to, masked, sizeof(masked));

    const char *multi[] = {"MULTI"};
    store_cmd(st, NARGS(multi), multi);
    const char *eval[] = {
        "EVALSHA", st->sha[SCRIPT_BEGIN], "1", otpkey, mac, job->id, created, maxatt, ttl};
    store_cmd(st, NARGS(eval), eval);
    /* The calling code lets receipts measure delivery latency by country. */
    if (route_country_code(job->to, cc, sizeof(cc)) < 0)
        cc[0] = '\0';
    const char *hset[] = {"HSET",       jobkey,       "status",     "sending", "to",         masked,
                          "purpose",    job->purpose, "created_ms", created,   "updated_ms", now,
                          "expires_ms", expires,      "attempts",   "0",       "cc",         cc};
    store_cmd(st, NARGS(hset), hset);
    store_expire(st, jobkey);
    store_event(st, job, "sending", "", "", now);
    return store_finish(st, cb, arg, 1);
}

int
store_status(struct store *st, const struct job *job, const struct status_update *u,
             store_done_cb *cb, void *arg)
{
    char otpkey[160], jobkey[160], now[24], attempts[12], sent[24], created[24], expires[24];
    char retry_at[24];
    char masked[LOG_MASK_MAX];
    const char *status = job_status_name(u->status);
    const char *argv[32];
    int argc = 0;

    if (!rconn_is_up(st->w))
        return -1;
    if (job->id[0] == '\0')
        return -1; /* nothing to name the record by */
    key_otp(otpkey, sizeof(otpkey), st->cfg, job);
    key_job(jobkey, sizeof(jobkey), st->cfg, job);
    snprintf(now, sizeof(now), "%lld", (long long)otpd_now_ms());
    snprintf(attempts, sizeof(attempts), "%d", u->attempts);

    const char *multi[] = {"MULTI"};
    store_cmd(st, NARGS(multi), multi);
    argv[argc++] = "HSET";
    argv[argc++] = jobkey;
    argv[argc++] = "status";
    argv[argc++] = status;
    argv[argc++] = "updated_ms";
    argv[argc++] = now;
    argv[argc++] = "attempts";
    argv[argc++] = attempts;
    argv[argc++] = "provider";
    argv[argc++] = u->provider ? u->provider : "";
    argv[argc++] = "provider_ref";
    argv[argc++] = u->provider_ref ? u->provider_ref : "";
    argv[argc++] = "provider_status";
    argv[argc++] = u->provider_status ? u->provider_status : "";
    argv[argc++] = "error_code";
    argv[argc++] = u->error_code ? u->error_code : "";
    argv[argc++] = "error";
    argv[argc++] = u->error ? u->error : "";
    if (u->sent_ms) {
        snprintf(sent, sizeof(sent), "%lld", (long long)u->sent_ms);
        argv[argc++] = "sent_ms";
        argv[argc++] = sent;
    }
    /* A job rejected or expired before store_begin has no record yet. */
    if (job->to[0]) {
        log_mask_phone(job->to, masked, sizeof(masked));
        argv[argc++] = "to";
        argv[argc++] = masked;
        argv[argc++] = "purpose";
        argv[argc++] = job->purpose;
    }
    if (job->created_ms) {
        snprintf(created, sizeof(created), "%lld", (long long)job->created_ms);
        snprintf(expires, sizeof(expires), "%lld", (long long)job->expires_ms);
        argv[argc++] = "created_ms";
        argv[argc++] = created;
        argv[argc++] = "expires_ms";
        argv[argc++] = expires;
    }
    store_cmd(st, argc, argv);
    store_expire(st, jobkey);
    if (u->status == JOB_SENT && u->provider_ref && *u->provider_ref && u->provider) {
        /* Receipts name the provider's message; this finds the job again. */
        char refkey[192], ttl[16];
        snprintf(refkey, sizeof(refkey), "%sref:%s:%s", st->cfg->prefix, u->provider,
                 u->provider_ref);
        snprintf(ttl, sizeof(ttl), "%d", st->cfg->status_ttl);
        const char *ref[] = {"SET", refkey, job->id, "EX", ttl};
        store_cmd(st, NARGS(ref), ref);
    }
    if (u->retry_at_ms) {
        snprintf(retry_at, sizeof(retry_at), "%lld", (long long)u->retry_at_ms);
        const char *ra[] = {"HSET", jobkey, "retry_at_ms", retry_at};
        store_cmd(st, NARGS(ra), ra);
    }
    if (u->opted_out && job->to[0]) {
        /* STOP: remembered until an operator removes it (otpctl optout remove). */
        char optkey[160];
        snprintf(optkey, sizeof(optkey), "%soptout", st->cfg->prefix);
        const char *opt[] = {"HSET", optkey, job->to, now};
        store_cmd(st, NARGS(opt), opt);
    }
    if (u->delete_otp) {
        const char *burn[] = {"EVALSHA", st->sha[SCRIPT_BURN], "1", otpkey, job->id};
        store_cmd(st, NARGS(burn), burn);
    }
    store_event(st, job, status, u->provider ? u->provider : "", u->error_code ? u->error_code : "",
                now);
    store_count(st, u->status, u->provider);
    return store_finish(st, cb, arg, 0);
}

/*
 * A rejected job: its status record (when the id is free or its own, see
 * store_reject_lua), an event and the counter.  The record lives at most an
 * hour: a burst of bad jobs must not fill Redis for a day.
 */
int
store_reject(struct store *st, const struct job *job, const char *stream_id, const char *reason,
             store_done_cb *cb, void *arg)
{
    char jobkey[160], now[24], ttl[16];
    int keep = st->cfg->status_ttl < 3600 ? st->cfg->status_ttl : 3600;

    if (!rconn_is_up(st->w))
        return -1;
    key_job(jobkey, sizeof(jobkey), st->cfg, job);
    snprintf(now, sizeof(now), "%lld", (long long)otpd_now_ms());
    snprintf(ttl, sizeof(ttl), "%d", keep);
    const char *multi[] = {"MULTI"};
    store_cmd(st, NARGS(multi), multi);
    const char *eval[] = {"EVALSHA", st->sha[SCRIPT_REJECT], "1", jobkey, stream_id, reason, now,
                          ttl};
    store_cmd(st, NARGS(eval), eval);
    store_event(st, job, "rejected", "", "rejected", now);
    store_count(st, JOB_REJECTED, NULL);
    return store_finish(st, cb, arg, 0);
}

struct store_claim_op {
    struct store *st;
    store_claim_cb *cb;
    void *arg;
};

static void
store_claim_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct store_claim_op *op = priv;
    redisReply *reply = r;

    (void)ac;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER &&
        reply->element[1]->type == REDIS_REPLY_STRING)
        op->cb(op->arg, (int)reply->element[0]->integer, reply->element[1]->str, NULL);
    else {
        store_check_noscript(op->st, rconn_reply_error(reply));
        op->cb(op->arg, -1, "", rconn_reply_error(reply));
    }
    free(op);
}

int
store_claim(struct store *st, const struct job *job, const char *stream_id, store_claim_cb *cb,
            void *arg)
{
    struct store_claim_op *op;
    char jobkey[160], ttl[16];

    if (!rconn_is_up(st->w) || (op = malloc(sizeof(*op))) == NULL)
        return -1;
    op->st = st;
    op->cb = cb;
    op->arg = arg;
    key_job(jobkey, sizeof(jobkey), st->cfg, job);
    snprintf(ttl, sizeof(ttl), "%d", st->cfg->status_ttl);
    const char *argv[] = {"EVALSHA", st->sha[SCRIPT_CLAIM], "1", jobkey, stream_id, ttl};
    if (rconn_command(st->w, store_claim_reply, op, NARGS(argv), argv, NULL) < 0) {
        free(op);
        return -1;
    }
    return 0;
}

int
store_duplicate(struct store *st, const struct job *job, store_done_cb *cb, void *arg)
{
    char now[24];

    if (!rconn_is_up(st->w))
        return -1;
    snprintf(now, sizeof(now), "%lld", (long long)otpd_now_ms());
    const char *multi[] = {"MULTI"};
    store_cmd(st, NARGS(multi), multi);
    store_event(st, job, "duplicate", "", "", now);
    store_count(st, JOB_DUPLICATE, NULL);
    return store_finish(st, cb, arg, 0);
}

struct store_limit_op {
    struct store *st;
    store_limit_cb *cb;
    void *arg;
};

static void
store_limit_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct store_limit_op *op = priv;
    redisReply *reply = r;

    (void)ac;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER) {
        if (reply->element[0]->integer == 0)
            op->cb(op->arg, 0, "", 0, NULL);
        else if (reply->elements == 3 && reply->element[1]->type == REDIS_REPLY_STRING &&
                 reply->element[2]->type == REDIS_REPLY_INTEGER)
            op->cb(op->arg, 1, reply->element[1]->str, reply->element[2]->integer, NULL);
        else
            op->cb(op->arg, -1, "", 0, "unexpected reply from the limits script");
    } else {
        store_check_noscript(op->st, rconn_reply_error(reply));
        op->cb(op->arg, -1, "", 0, rconn_reply_error(reply));
    }
    free(op);
}

/* This daemon's limits as the script's ARGV 6-11; a budget of "" is none. */
static void
store_limit_values(const struct config *c, const char *cc, char lim[6][24])
{
    long budget = -1;

    for (int i = 0; i < c->budgets.n; i++)
        if (strcmp(c->budgets.cc[i], cc) == 0)
            budget = c->budgets.value[i];
    snprintf(lim[0], sizeof(lim[0]), "%lld", (long long)c->limit_interval_s * 1000);
    snprintf(lim[1], sizeof(lim[1]), "%d", c->limit_per_hour);
    snprintf(lim[2], sizeof(lim[2]), "%d", c->limit_per_day);
    snprintf(lim[3], sizeof(lim[3]), "%d", c->limit_global_per_hour);
    if (budget >= 0)
        snprintf(lim[4], sizeof(lim[4]), "%ld", budget);
    else
        lim[4][0] = '\0';
    if (c->budgets.deflt >= 0)
        snprintf(lim[5], sizeof(lim[5]), "%ld", c->budgets.deflt);
    else
        lim[5][0] = '\0';
}

int
store_limit(struct store *st, const struct job *job, const char *cc, store_limit_cb *cb, void *arg)
{
    struct store_limit_op *op;
    char k[7][192], now[24], lim[6][24];
    const char *p = st->cfg->prefix;

    if (!rconn_is_up(st->w) || (op = malloc(sizeof(*op))) == NULL)
        return -1;
    op->st = st;
    op->cb = cb;
    op->arg = arg;
    snprintf(k[0], sizeof(k[0]), "%slimits", p);
    snprintf(k[1], sizeof(k[1]), "%srl:last:%s:%s", p, job->purpose, job->to);
    snprintf(k[2], sizeof(k[2]), "%srl:num:%s", p, job->to);
    snprintf(k[3], sizeof(k[3]), "%srl:global", p);
    snprintf(k[4], sizeof(k[4]), "%srl:cc:%s", p, cc);
    snprintf(k[5], sizeof(k[5]), "%soptout", p);
    snprintf(k[6], sizeof(k[6]), "%salert:country_budget:%s", p, cc);
    snprintf(now, sizeof(now), "%lld", (long long)otpd_now_ms());
    store_limit_values(st->cfg, cc, lim);
    const char *argv[] = {"EVALSHA", st->sha[SCRIPT_LIMITS],
                          "7",       k[0],
                          k[1],      k[2],
                          k[3],      k[4],
                          k[5],      k[6],
                          "take",    now,
                          job->id,   job->to,
                          cc,        lim[0],
                          lim[1],    lim[2],
                          lim[3],    lim[4],
                          lim[5]};
    if (rconn_command(st->w, store_limit_reply, op, NARGS(argv), argv, NULL) < 0) {
        free(op);
        return -1;
    }
    return 0;
}

/*
 * The limits the script applies, for the daemon and the web app alike.
 * Every instance publishes on connect and reload; run them all with the
 * same configuration.
 */
void
store_publish_limits(struct store *st)
{
    const struct config *c = st->cfg;
    char key[160], v[4][24], fields[ROUTE_MAX + 1][40], vals[ROUTE_MAX + 1][24];
    const char *argv[10 + 2 * (ROUTE_MAX + 1)];
    int argc = 0, n = 0;

    if (!rconn_is_up(st->w))
        return;
    snprintf(key, sizeof(key), "%slimits", c->prefix);
    snprintf(v[0], sizeof(v[0]), "%lld", (long long)c->limit_interval_s * 1000);
    snprintf(v[1], sizeof(v[1]), "%d", c->limit_per_hour);
    snprintf(v[2], sizeof(v[2]), "%d", c->limit_per_day);
    snprintf(v[3], sizeof(v[3]), "%d", c->limit_global_per_hour);
    argv[argc++] = "HSET";
    argv[argc++] = key;
    argv[argc++] = "interval_ms";
    argv[argc++] = v[0];
    argv[argc++] = "per_hour";
    argv[argc++] = v[1];
    argv[argc++] = "per_day";
    argv[argc++] = v[2];
    argv[argc++] = "global_per_hour";
    argv[argc++] = v[3];
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
    const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"}, *del[] = {"DEL", key};
    rconn_command(st->w, NULL, NULL, NARGS(multi), multi, NULL);
    rconn_command(st->w, NULL, NULL, NARGS(del), del, NULL);
    rconn_command(st->w, NULL, NULL, argc, argv, NULL);
    rconn_command(st->w, NULL, NULL, NARGS(exec), exec, NULL);
}

struct store_receipt_op {
    struct store *st;
    store_receipt_cb *cb;
    void *arg;
};

static void
store_receipt_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct store_receipt_op *op = priv;
    redisReply *reply = r;
    const char *id = "", *sent = "", *to = "";
    int verdict = -1;

    (void)ac;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER) {
        verdict = (int)reply->element[0]->integer;
        if (reply->elements >= 2 && reply->element[1]->type == REDIS_REPLY_STRING)
            id = reply->element[1]->str;
        if (reply->elements >= 4 && reply->element[2]->type == REDIS_REPLY_STRING &&
            reply->element[3]->type == REDIS_REPLY_STRING) {
            sent = reply->element[2]->str;
            to = reply->element[3]->str;
        }
    }
    if (verdict < 0)
        store_check_noscript(op->st, rconn_reply_error(reply));
    op->cb(op->arg, verdict, id, atoll(sent), to, verdict < 0 ? rconn_reply_error(reply) : NULL);
    free(op);
}

int
store_receipt(struct store *st, const char *provider, const char *ref, enum job_status status,
              const char *provider_status, const char *error_code, const char *error,
              store_receipt_cb *cb, void *arg)
{
    struct store_receipt_op *op;
    char refkey[192], now[24];

    if (!rconn_is_up(st->w) || (op = malloc(sizeof(*op))) == NULL)
        return -1;
    op->st = st;
    op->cb = cb;
    op->arg = arg;
    snprintf(refkey, sizeof(refkey), "%sref:%s:%s", st->cfg->prefix, provider, ref);
    snprintf(now, sizeof(now), "%lld", (long long)otpd_now_ms());
    const char *argv[] = {"EVALSHA",
                          st->sha[SCRIPT_RECEIPT],
                          "3",
                          refkey,
                          st->events,
                          st->stats,
                          st->cfg->prefix,
                          job_status_name(status),
                          provider_status,
                          error_code,
                          error,
                          now,
                          provider,
                          st->maxlen};
    if (rconn_command(st->w, store_receipt_reply, op, NARGS(argv), argv, NULL) < 0) {
        free(op);
        return -1;
    }
    return 0;
}
