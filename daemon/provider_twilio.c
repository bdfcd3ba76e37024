/*
 * provider_twilio.c: Twilio's Create Message API (2010-04-01), and the
 * only file that knows its wire format.
 *
 * A send whose outcome is unknown (timeout after the request went out, a
 * 5xx) may have been accepted: Twilio documents Create Message as not
 * idempotent.  The next attempt therefore reconciles first: it lists the
 * messages sent to the number since the first attempt and, if one carries
 * exactly our text (which holds the code), takes it as sent instead of
 * sending a second SMS.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "http.h"
#include "log.h"
#include "provider.h"

struct twilio {
    struct provider base;
    const struct config *cfg;
    struct http *http;
    char messages_url[512];
    provider_closed_cb *closed_cb;
    void *closed_arg;
};

struct provider_call {
    struct twilio *tw;
    struct http_call *http;
    provider_done_cb *cb;
    provider_poll_cb *poll_cb; /* a status lookup rather than a send */
    void *arg;
    struct send_request req; /* req.body and req.job stay valid until done */
    unsigned char body_hash[32];
};

static int twilio_post(struct provider_call *c);

/* --- response parsing (pure) ------------------------------------------ */

struct twilio_hint {
    int code;
    enum send_outcome outcome;
    const char *hint;
};

/* The troubleshooting list of the site's SMS guide, as answers. */
static const struct twilio_hint twilio_hints[] = {
    {20003, SEND_FAIL_PROVIDER,
     "authentication failed: check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (no extra "
     "spaces) against the Twilio console"},
    {20005, SEND_FAIL_PROVIDER,
     "the Twilio account is not active (suspended or closed): see the console's billing page"},
    {20429, SEND_RETRY, "too many concurrent requests to Twilio; retried with backoff"},
    {21211, SEND_FAIL_JOB,
     "invalid 'To' number: ask the user to re-enter it in international format "
     "(e.g. +14155552671)"},
    {21408, SEND_FAIL_JOB,
     "SMS to this country is not enabled: enable it in the Twilio console under Messaging > "
     "Settings > Geo permissions"},
    {21606, SEND_FAIL_PROVIDER,
     "the 'From' number cannot send SMS: check TWILIO_PHONE_NUMBER (E.164, SMS-capable, "
     "owned by this account)"},
    {21608, SEND_FAIL_JOB,
     "trial account: verify this number in the Twilio console (Phone Numbers > Verified "
     "Caller IDs) or upgrade the account"},
    {21610, SEND_FAIL_JOB,
     "the recipient replied STOP to this sender: they must text START to receive codes again"},
    {21612, SEND_FAIL_JOB,
     "Twilio cannot route from this sender to this number: try another sender or a "
     "Messaging Service"},
    {21614, SEND_FAIL_JOB,
     "'To' is not a mobile number (a landline?): ask the user for a mobile number"},
    {21659, SEND_FAIL_PROVIDER,
     "the 'From' number is not a Twilio number of this account: check TWILIO_PHONE_NUMBER"},
};

static int
twilio_sid_valid(const char *s)
{
    if (strlen(s) != 34 || (strncmp(s, "SM", 2) != 0 && strncmp(s, "MM", 2) != 0))
        return 0;
    for (int i = 2; i < 34; i++)
        if (!strchr("0123456789abcdefABCDEF", s[i]))
            return 0;
    return 1;
}

static void
twilio_parse_error(long http_status, const cJSON *root, struct send_result *res)
{
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(root, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");
    const char *text = cJSON_IsString(msg) ? msg->valuestring : "";
    int c = cJSON_IsNumber(code) ? code->valueint : 0;

    res->opted_out = c == 21610;

    if (c > 0)
        snprintf(res->error_code, sizeof(res->error_code), "%d", c);
    else
        snprintf(res->error_code, sizeof(res->error_code), "http_%ld", http_status);
    /*
     * Retry decisions follow the HTTP status, as Twilio advises; codes add
     * hints.  A 429 from the REST API is the account's concurrency limit
     * (20429), never processed: the cap in otpd comes down instead.
     */
    res->congested = http_status == 429;
    if (http_status == 429)
        res->outcome = SEND_RETRY;
    else if (http_status >= 500)
        res->outcome = SEND_AMBIGUOUS;
    else if (http_status == 401 || http_status == 403)
        res->outcome = SEND_FAIL_PROVIDER;
    else
        res->outcome = SEND_FAIL_JOB;
    for (size_t i = 0; i < sizeof(twilio_hints) / sizeof(twilio_hints[0]); i++) {
        if (twilio_hints[i].code == c) {
            if (http_status < 500 && http_status != 429)
                res->outcome = twilio_hints[i].outcome;
            snprintf(res->error, sizeof(res->error), "%s (Twilio: %.80s)", twilio_hints[i].hint,
                     text);
            return;
        }
    }
    snprintf(res->error, sizeof(res->error), "Twilio HTTP %ld: %.200s", http_status,
             *text ? text : "no message");
}

void
twilio_parse_create(long http_status, const char *body, size_t len, struct send_result *res)
{
    cJSON *root = cJSON_ParseWithLength(body, len);

    memset(res, 0, sizeof(*res));
    if (http_status >= 200 && http_status < 300) {
        const cJSON *sid = cJSON_GetObjectItemCaseSensitive(root, "sid");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "status");
        if (cJSON_IsString(sid) && twilio_sid_valid(sid->valuestring)) {
            res->outcome = SEND_OK;
            snprintf(res->ref, sizeof(res->ref), "%s", sid->valuestring);
            if (cJSON_IsString(st))
                snprintf(res->provider_status, sizeof(res->provider_status), "%s", st->valuestring);
        } else {
            /* Accepted, probably, but we cannot tell which message it was. */
            res->outcome = SEND_AMBIGUOUS;
            snprintf(res->error_code, sizeof(res->error_code), "malformed_response");
            snprintf(res->error, sizeof(res->error),
                     "Twilio answered HTTP %ld without a valid message sid", http_status);
        }
    } else if (cJSON_IsObject(root)) {
        twilio_parse_error(http_status, root, res);
    } else {
        res->congested = http_status == 429;
        res->outcome = http_status == 429                         ? SEND_RETRY
                       : http_status >= 500 || http_status < 200  ? SEND_AMBIGUOUS
                       : http_status == 401 || http_status == 403 ? SEND_FAIL_PROVIDER
                                                                  : SEND_FAIL_JOB;
        snprintf(res->error_code, sizeof(res->error_code), "http_%ld", http_status);
        snprintf(res->error, sizeof(res->error),
                 "Twilio answered HTTP %ld with a body that is "
                 "not JSON",
                 http_status);
    }
    cJSON_Delete(root);
}

/* A Message resource (fetch): its status and, on failure, the carrier's code. */
void
twilio_parse_message(long http_status, const char *body, size_t len, struct poll_result *res)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "status");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(root, "error_code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "error_message");

    memset(res, 0, sizeof(*res));
    if (http_status == 200 && cJSON_IsString(st)) {
        res->ok = 1;
        snprintf(res->status, sizeof(res->status), "%.23s", st->valuestring);
        if (cJSON_IsNumber(code))
            snprintf(res->error_code, sizeof(res->error_code), "%d", code->valueint);
        else if (cJSON_IsString(code))
            snprintf(res->error_code, sizeof(res->error_code), "%.23s", code->valuestring);
        if (cJSON_IsString(msg))
            snprintf(res->error, sizeof(res->error), "%.200s", msg->valuestring);
    } else {
        snprintf(res->error, sizeof(res->error), "Twilio answered HTTP %ld to a status lookup",
                 http_status);
    }
    cJSON_Delete(root);
}

/* --- requests ---------------------------------------------------------- */

static void
twilio_build_urls(struct twilio *tw)
{
    char *sid = curl_easy_escape(NULL, tw->cfg->twilio_account_sid, 0);

    snprintf(tw->messages_url, sizeof(tw->messages_url), "%s/2010-04-01/Accounts/%s/Messages.json",
             tw->cfg->twilio_api_base, sid ? sid : "");
    curl_free(sid);
}

static void
twilio_reload(struct provider *p)
{
    struct twilio *tw = (struct twilio *)p;

    twilio_build_urls(tw);
    http_set_request_cap(tw->http, tw->cfg->twilio_max_inflight);
}

static struct provider *
twilio_open(uv_loop_t *loop, const struct config *cfg, char *err, size_t errlen)
{
    struct twilio *tw = calloc(1, sizeof(*tw));

    if (tw == NULL ||
        (tw->http = http_new(loop, cfg, "twilio", cfg->twilio_max_inflight)) == NULL) {
        free(tw);
        snprintf(err, errlen, "twilio: out of memory");
        return NULL;
    }
    tw->base.ops = &provider_twilio_ops;
    tw->cfg = cfg;
    twilio_build_urls(tw);
    return &tw->base;
}

static long
twilio_timeout(const struct twilio *tw, const struct send_request *req)
{
    long left = (long)(req->deadline_ms - otpd_now_ms());
    long t = tw->cfg->http_timeout_ms;

    return left < t ? (left > 100 ? left : 100) : t;
}

static int
form_add(char *buf, size_t len, size_t *off, const char *name, const char *value)
{
    char *v = curl_easy_escape(NULL, value, 0);
    int n;

    if (v == NULL)
        return -1;
    n = snprintf(buf + *off, len - *off, "%s%s=%s", *off ? "&" : "", name, v);
    curl_free(v);
    if (n < 0 || (size_t)n >= len - *off)
        return -1;
    *off += (size_t)n;
    return 0;
}

static void
twilio_done(void *arg, const struct http_response *r)
{
    struct provider_call *c = arg;
    struct send_result res;

    c->http = NULL;
    http_send_result(r, "Twilio", twilio_parse_create, &res);
    c->cb(c->arg, &res);
    free(c);
}

/* Starts the POST; -1 (and no callback) if it could not be started. */
static int
twilio_post(struct provider_call *c)
{
    const struct config *cfg = c->tw->cfg;
    const struct send_request *req = &c->req;
    char form[4096], validity[16], idem[128];
    size_t off = 0;
    int bad = 0;
    long left_s = (long)((req->deadline_ms - otpd_now_ms()) / 1000);

    /* Twilio must not deliver a code after it expired: bound its queue time. */
    snprintf(validity, sizeof(validity), "%ld", left_s < 1 ? 1 : left_s > 36000 ? 36000 : left_s);
    bad |= form_add(form, sizeof(form), &off, "To", req->job->to);
    if (*cfg->twilio_messaging_service_sid)
        bad |= form_add(form, sizeof(form), &off, "MessagingServiceSid",
                        cfg->twilio_messaging_service_sid);
    else
        bad |= form_add(form, sizeof(form), &off, "From", cfg->twilio_phone_number);
    bad |= form_add(form, sizeof(form), &off, "Body", req->body);
    bad |= form_add(form, sizeof(form), &off, "ValidityPeriod", validity);
    if (*cfg->twilio_status_callback)
        bad |= form_add(form, sizeof(form), &off, "StatusCallback", cfg->twilio_status_callback);
    /* Not documented as honoured by Twilio for creates; harmless, and useful if it is. */
    snprintf(idem, sizeof(idem), "I-Twilio-Idempotency-Token: otpd-%s", req->job->id);
    const char *headers[] = {"Accept: application/json", idem, NULL};
    struct http_request hr = {
        .url = c->tw->messages_url,
        .method = "POST",
        .content_type = "application/x-www-form-urlencoded",
        .body = form,
        .body_len = off,
        .username = cfg->twilio_account_sid,
        .password = cfg->twilio_auth_token,
        .headers = headers,
        .timeout_ms = twilio_timeout(c->tw, req),
    };
    if (!bad)
        c->http = http_start(c->tw->http, &hr, twilio_done, c);
    sodium_memzero(form, sizeof(form));
    return c->http ? 0 : -1;
}

/* A read of the REST API (list or fetch a Message), with the account's credentials. */
static struct http_call *
twilio_get(struct twilio *tw, const char *url, long timeout_ms, http_done_cb *cb, void *arg)
{
    const char *headers[] = {"Accept: application/json", NULL};
    struct http_request hr = {
        .url = url,
        .method = "GET",
        .username = tw->cfg->twilio_account_sid,
        .password = tw->cfg->twilio_auth_token,
        .headers = headers,
        .timeout_ms = timeout_ms,
    };

    return http_start(tw->http, &hr, cb, arg);
}

/* Reconciliation: did an earlier, unanswered attempt go out after all? */
static int
twilio_find_ours(struct provider_call *c, const char *body, size_t len, struct send_result *res)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    const cJSON *m;
    int found = 0;

    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(m, "body");
        const cJSON *sid = cJSON_GetObjectItemCaseSensitive(m, "sid");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(m, "status");
        unsigned char h[32];
        if (!cJSON_IsString(b) || !cJSON_IsString(sid) || !twilio_sid_valid(sid->valuestring))
            continue;
        crypto_generichash(h, sizeof(h), (const unsigned char *)b->valuestring,
                           strlen(b->valuestring), NULL, 0);
        if (sodium_memcmp(h, c->body_hash, sizeof(h)) == 0) {
            memset(res, 0, sizeof(*res));
            res->outcome = SEND_OK;
            snprintf(res->ref, sizeof(res->ref), "%s", sid->valuestring);
            snprintf(res->provider_status, sizeof(res->provider_status), "%s",
                     cJSON_IsString(st) ? st->valuestring : "reconciled");
            found = 1;
            break;
        }
    }
    cJSON_Delete(root);
    return found;
}

static void
twilio_reconciled(void *arg, const struct http_response *r)
{
    struct provider_call *c = arg;
    struct send_result res;

    c->http = NULL;
    if (r->result == CURLE_OK && r->status == 200 && twilio_find_ours(c, r->body, r->len, &res)) {
        log_notice("job %s: an earlier unanswered attempt did reach Twilio (%s); not resending",
                   c->req.job->id, res.ref);
        c->cb(c->arg, &res);
        free(c);
        return;
    }
    if (r->result != CURLE_OK || r->status != 200)
        log_warnx("job %s: could not check Twilio for an earlier attempt (%s); resending the "
                  "same code",
                  c->req.job->id, r->error ? r->error : "HTTP error");
    if (twilio_post(c) < 0) {
        memset(&res, 0, sizeof(res));
        res.outcome = SEND_RETRY;
        snprintf(res.error, sizeof(res.error), "could not start the Twilio request");
        c->cb(c->arg, &res);
        free(c);
    }
}

static int
twilio_reconcile(struct provider_call *c)
{
    char url[1024], date[16], *to;
    time_t since = (time_t)(c->req.since_ms / 1000) - 86400; /* DateSent is a UTC date */
    struct tm tm;

    gmtime_r(&since, &tm);
    strftime(date, sizeof(date), "%Y-%m-%d", &tm);
    to = curl_easy_escape(NULL, c->req.job->to, 0);
    snprintf(url, sizeof(url), "%s?To=%s&DateSent%%3E=%s&PageSize=50", c->tw->messages_url,
             to ? to : "", date);
    curl_free(to);
    c->http = twilio_get(c->tw, url, twilio_timeout(c->tw, &c->req), twilio_reconciled, c);
    if (c->http == NULL)
        return twilio_post(c);
    return 0;
}

static struct provider_call *
twilio_send(struct provider *p, const struct send_request *req, provider_done_cb *cb, void *arg)
{
    struct provider_call *c = calloc(1, sizeof(*c));
    int rc;

    if (c == NULL)
        return NULL;
    c->tw = (struct twilio *)p;
    c->cb = cb;
    c->arg = arg;
    c->req = *req;
    if (req->reconcile) {
        crypto_generichash(c->body_hash, sizeof(c->body_hash), (const unsigned char *)req->body,
                           strlen(req->body), NULL, 0);
        rc = twilio_reconcile(c);
    } else {
        rc = twilio_post(c);
    }
    if (rc < 0) {
        free(c);
        return NULL;
    }
    return c;
}

static void
twilio_polled(void *arg, const struct http_response *r)
{
    struct provider_call *c = arg;
    struct poll_result res;

    c->http = NULL;
    if (r->result != CURLE_OK) {
        memset(&res, 0, sizeof(res));
        snprintf(res.error, sizeof(res.error), "status lookup failed: %s", r->error);
    } else {
        twilio_parse_message(r->status, r->body, r->len, &res);
    }
    c->poll_cb(c->arg, &res);
    free(c);
}

static struct provider_call *
twilio_poll(struct provider *p, const char *ref, provider_poll_cb *cb, void *arg)
{
    struct twilio *tw = (struct twilio *)p;
    struct provider_call *c = calloc(1, sizeof(*c));
    char url[640], *sid = curl_easy_escape(NULL, ref, 0);
    size_t base = strlen(tw->messages_url) - strlen(".json");

    if (c == NULL || sid == NULL) {
        free(c);
        curl_free(sid);
        return NULL;
    }
    /* .../Messages.json -> .../Messages/{sid}.json */
    snprintf(url, sizeof(url), "%.*s/%s.json", (int)base, tw->messages_url, sid);
    curl_free(sid);
    c->tw = tw;
    c->poll_cb = cb;
    c->arg = arg;
    if ((c->http = twilio_get(tw, url, tw->cfg->http_timeout_ms, twilio_polled, c)) == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

static void
twilio_cancel(struct provider *p, struct provider_call *c)
{
    if (c->http)
        http_cancel(((struct twilio *)p)->http, c->http);
    free(c);
}

static void
twilio_http_closed(void *arg)
{
    struct twilio *tw = arg;

    if (tw->closed_cb)
        tw->closed_cb(tw->closed_arg);
    free(tw);
}

static void
twilio_close(struct provider *p, provider_closed_cb *cb, void *arg)
{
    struct twilio *tw = (struct twilio *)p;

    tw->closed_cb = cb;
    tw->closed_arg = arg;
    http_close(tw->http, twilio_http_closed, tw);
}

const struct provider_ops provider_twilio_ops = {
    .name = "twilio",
    .open = twilio_open,
    .send = twilio_send,
    .cancel = twilio_cancel,
    .close = twilio_close,
    .reload = twilio_reload,
    .poll = twilio_poll,
};
