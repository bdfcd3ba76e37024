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
 *
 * Delivery receipts come as status callbacks when TWILIO_STATUS_CALLBACK
 * is set, else by fetching the Message.  Twilio signs each callback:
 * base64(HMAC-SHA1(auth token, the URL it called + every POST parameter
 * name and value, sorted by name)).  That URL is the public one we sent as
 * StatusCallback, not whatever address the reverse proxy used to reach us;
 * Twilio is known to sign with or without an explicit :443/:80, so both
 * are tried.  A bad signature gets 403 and changes nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include "http.h"
#include "httpd.h"
#include "log.h"
#include "provider.h"
#include "provider_impl.h"
#include "route.h"
#include "twilio_errors.h"

#define TWILIO_MAX_PARAMS 64 /* of a status callback; more are not signed over */

struct twilio {
    struct provider base;
    const struct config *cfg;
    struct http *http;
    int voice; /* this instance places calls (twilio_voice), not messages */
    char messages_url[512];
    char calls_url[512];
    char form_fixed[1024]; /* the sender and callback fields, escaped once per (re)load */
    provider_closed_cb *closed_cb;
    void *closed_arg;
};

struct provider_call {
    struct twilio *tw;
    struct http_call *http;
    provider_done_cb *cb;
    provider_poll_cb *poll_cb; /* a status lookup rather than a send */
    void *arg;
    char ref[72];            /* the message a status lookup is about */
    struct send_request req; /* req.body and req.job stay valid until done */
    unsigned char body_hash[32];
};

static int twilio_post(struct provider_call *c);

/* --- response parsing (pure) ------------------------------------------ */

/*
 * Twilio's error codes with their class and the guide's hint come from one
 * table, python/otpd/data/twilio_errors.tsv, compiled in (twilio_errors.h)
 * and read by otpctl too.
 */
static enum send_outcome
twilio_class_outcome(enum twilio_error_class c)
{
    switch (c) {
    case TWILIO_ERR_PROVIDER:
        return SEND_FAIL_PROVIDER;
    case TWILIO_ERR_RETRY:
        return SEND_RETRY;
    case TWILIO_ERR_JOB:
    case TWILIO_ERR_CARRIER:
        break;
    }
    return SEND_FAIL_JOB;
}

/* A message sid (SM, MM) or, with call set, a call sid (CA): two letters and 32 hex digits. */
static int
twilio_sid_valid(const char *s, int call)
{
    if (strlen(s) != 34 ||
        (call ? strncmp(s, "CA", 2) != 0 : strncmp(s, "SM", 2) != 0 && strncmp(s, "MM", 2) != 0))
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
    for (size_t i = 0; i < twilio_errors_count; i++) {
        const struct twilio_error *e = &twilio_errors[i];
        if (e->code != c || e->cls == TWILIO_ERR_CARRIER)
            continue;
        if (http_status < 500 && http_status != 429)
            res->outcome = twilio_class_outcome(e->cls);
        snprintf(res->error, sizeof(res->error), "%s (Twilio: %.80s)", e->hint, text);
        return;
    }
    snprintf(res->error, sizeof(res->error), "Twilio HTTP %ld: %.200s", http_status,
             *text ? text : "no message");
}

static void twilio_parse_created(long http_status, const char *body, size_t len, int call,
                                 struct send_result *res);

void
twilio_parse_create(long http_status, const char *body, size_t len, struct send_result *res)
{
    twilio_parse_created(http_status, body, len, 0, res);
}

/* The answer to a call's create: the same as a message's, with a call sid (CA). */
void
twilio_parse_call_create(long http_status, const char *body, size_t len, struct send_result *res)
{
    twilio_parse_created(http_status, body, len, 1, res);
}

static void
twilio_parse_created(long http_status, const char *body, size_t len, int call,
                     struct send_result *res)
{
    cJSON *root = cJSON_ParseWithLength(body, len);

    memset(res, 0, sizeof(*res));
    if (http_status >= 200 && http_status < 300) {
        const cJSON *sid = cJSON_GetObjectItemCaseSensitive(root, "sid");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "status");
        if (cJSON_IsString(sid) && twilio_sid_valid(sid->valuestring, call)) {
            res->outcome = SEND_OK;
            snprintf(res->ref, sizeof(res->ref), "%s", sid->valuestring);
            if (cJSON_IsString(st))
                snprintf(res->provider_status, sizeof(res->provider_status), "%s", st->valuestring);
        } else {
            /* Accepted, probably, but we cannot tell which message it was. */
            res->outcome = SEND_AMBIGUOUS;
            snprintf(res->error_code, sizeof(res->error_code), "malformed_response");
            snprintf(res->error, sizeof(res->error),
                     "Twilio answered HTTP %ld without a valid %s sid", http_status,
                     call ? "call" : "message");
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

/* --- delivery receipts (pure) ----------------------------------------- */

const char *
twilio_carrier_hint(const char *code)
{
    char buf[16];

    for (size_t i = 0; i < twilio_errors_count; i++) {
        if (twilio_errors[i].cls != TWILIO_ERR_CARRIER)
            continue;
        snprintf(buf, sizeof(buf), "%d", twilio_errors[i].code);
        if (strcmp(code, buf) == 0)
            return twilio_errors[i].hint;
    }
    return NULL;
}

/* Twilio's word for a message; queued, accepted, sending, ... record nothing. */
static enum job_status
twilio_status(const char *s)
{
    if (strcmp(s, "delivered") == 0 || strcmp(s, "read") == 0)
        return JOB_DELIVERED;
    if (strcmp(s, "undelivered") == 0)
        return JOB_UNDELIVERED;
    if (strcmp(s, "failed") == 0 || strcmp(s, "canceled") == 0)
        return JOB_FAILED;
    if (strcmp(s, "sent") == 0)
        return JOB_SENT;
    return RECEIPT_PENDING;
}

/*
 * Twilio's word for a call.  completed: answered and read out (the TwiML
 * ran to its end); busy and no-answer: nobody heard it; failed, canceled:
 * not placed.  queued, ringing, in-progress record nothing yet.
 */
static enum job_status
twilio_call_status(const char *s)
{
    if (strcmp(s, "completed") == 0)
        return JOB_DELIVERED;
    if (strcmp(s, "busy") == 0 || strcmp(s, "no-answer") == 0)
        return JOB_UNDELIVERED;
    if (strcmp(s, "failed") == 0 || strcmp(s, "canceled") == 0)
        return JOB_FAILED;
    return RECEIPT_PENDING;
}

/* Why a call was not heard, for the status record. */
static void
twilio_call_error(struct receipt *r)
{
    if (strcmp(r->provider_status, "busy") == 0)
        snprintf(r->error, sizeof(r->error), "the line was busy; the code was not read out");
    else if (strcmp(r->provider_status, "no-answer") == 0)
        snprintf(r->error, sizeof(r->error), "nobody answered the call; the code was not read out");
    else if (r->status == JOB_FAILED)
        snprintf(r->error, sizeof(r->error), "Twilio could not place the call (%s)",
                 r->provider_status);
    if (r->status == JOB_UNDELIVERED && r->error_code[0] == '\0')
        snprintf(r->error_code, sizeof(r->error_code), "%s", r->provider_status);
}

/* What Twilio charged for a message or a call, once it says ("-0.00790", "USD"). */
static void
twilio_parse_price(const cJSON *root, struct receipt *r)
{
    const cJSON *price = cJSON_GetObjectItemCaseSensitive(root, "price");
    const cJSON *unit = cJSON_GetObjectItemCaseSensitive(root, "price_unit");
    long micro;

    if (!cJSON_IsString(price) || !cJSON_IsString(unit) || strlen(unit->valuestring) != 3)
        return;
    micro = route_parse_money(price->valuestring[0] == '-' ? price->valuestring + 1
                                                           : price->valuestring);
    if (micro >= 0) {
        r->priced = 1;
        r->price_micro = micro;
        snprintf(r->price_unit, sizeof(r->price_unit), "%s", unit->valuestring);
    }
}

/* A Call resource (fetch): its status, and its price once it ended. */
void
twilio_parse_call(long http_status, const char *body, size_t len, struct poll_result *res)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "status");
    struct receipt *r = &res->receipt;

    memset(res, 0, sizeof(*res));
    r->status = RECEIPT_PENDING;
    if (http_status != 200 || !cJSON_IsString(st)) {
        snprintf(r->error, sizeof(r->error), "Twilio answered HTTP %ld to a call lookup",
                 http_status);
        cJSON_Delete(root);
        return;
    }
    res->ok = 1;
    r->status = twilio_call_status(st->valuestring);
    snprintf(r->provider_status, sizeof(r->provider_status), "%.23s", st->valuestring);
    twilio_call_error(r);
    twilio_parse_price(root, r);
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
    struct receipt *r = &res->receipt;
    const char *hint;

    memset(res, 0, sizeof(*res));
    r->status = RECEIPT_PENDING;
    if (http_status != 200 || !cJSON_IsString(st)) {
        snprintf(r->error, sizeof(r->error), "Twilio answered HTTP %ld to a status lookup",
                 http_status);
        goto out;
    }
    res->ok = 1;
    r->status = twilio_status(st->valuestring);
    snprintf(r->provider_status, sizeof(r->provider_status), "%.23s", st->valuestring);
    if (cJSON_IsNumber(code))
        snprintf(r->error_code, sizeof(r->error_code), "%d", code->valueint);
    else if (cJSON_IsString(code))
        snprintf(r->error_code, sizeof(r->error_code), "%.23s", code->valuestring);
    /* The carrier hint says what to do; Twilio's own text is the fallback. */
    hint = r->error_code[0] ? twilio_carrier_hint(r->error_code) : NULL;
    if (r->status != JOB_DELIVERED && hint)
        snprintf(r->error, sizeof(r->error), "%s", hint);
    else if (r->status != JOB_DELIVERED && cJSON_IsString(msg))
        snprintf(r->error, sizeof(r->error), "%.200s", msg->valuestring);
    twilio_parse_price(root, r);
out:
    cJSON_Delete(root);
}

struct param_ref {
    const char *name, *value;
};

static int
param_cmp(const void *a, const void *b)
{
    const struct param_ref *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    return c ? c : strcmp(x->value, y->value);
}

void
twilio_signature(const char *token, const char *url, const char *const *names,
                 const char *const *values, int nparams, char *out, size_t outlen)
{
    struct param_ref sorted[TWILIO_MAX_PARAMS] = {{NULL, NULL}};
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t len = strlen(url);
    char *data;
    int n = nparams < TWILIO_MAX_PARAMS ? nparams : TWILIO_MAX_PARAMS;

    for (int i = 0; i < n; i++) {
        sorted[i].name = names[i];
        sorted[i].value = values[i];
        len += strlen(names[i]) + strlen(values[i]);
    }
    qsort(sorted, (size_t)n, sizeof(sorted[0]), param_cmp);
    out[0] = '\0';
    if ((data = malloc(len + 1)) == NULL)
        return;
    strcpy(data, url);
    for (int i = 0; i < n; i++) {
        strcat(data, sorted[i].name);
        strcat(data, sorted[i].value);
    }
    HMAC(EVP_sha1(), token, (int)strlen(token), (const unsigned char *)data, len, mac, &maclen);
    sodium_bin2base64(out, outlen, mac, maclen, sodium_base64_VARIANT_ORIGINAL);
    free(data);
}

/* The configured URL, and the same with the default port added or removed. */
static int
url_variants(const char *url, char out[2][1024])
{
    CURLU *u = curl_url();
    char *s = NULL, *port = NULL, *scheme = NULL;
    int n = 0;

    snprintf(out[n++], 1024, "%s", url);
    if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
        goto done;
    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK) {
        curl_url_set(u, CURLUPART_PORT, NULL, 0); /* drop an explicit port */
    } else if (scheme) {
        curl_url_set(u, CURLUPART_PORT, strcmp(scheme, "https") == 0 ? "443" : "80", 0);
    }
    if (curl_url_get(u, CURLUPART_URL, &s, 0) == CURLUE_OK && strcmp(s, url) != 0)
        snprintf(out[n++], 1024, "%s", s);
done:
    curl_free(s);
    curl_free(port);
    curl_free(scheme);
    curl_url_cleanup(u);
    return n;
}

static int
twilio_signature_ok(const char *token, const char *url, const char *sig,
                    const struct httpd_form *form)
{
    char urls[2][1024], want[64];
    int nurls = url_variants(url, urls), ok = 0;

    for (int i = 0; i < nurls && !ok; i++) {
        twilio_signature(token, urls[i], (const char *const *)form->names,
                         (const char *const *)form->values, form->n, want, sizeof(want));
        ok = strlen(sig) == strlen(want) && sodium_memcmp(sig, want, strlen(want)) == 0;
    }
    return ok;
}

/* The signed parameters of a callback -> its receipt; 400 without sid or status. */
static int
twilio_callback_receipt(const struct httpd_form *form, struct receipt *r)
{
    const char *sid = httpd_form_get(form, "MessageSid");
    const char *status = httpd_form_get(form, "MessageStatus");
    const char *code = httpd_form_get(form, "ErrorCode");
    const char *hint;

    /* A call's status callback (TWILIO_VOICE_STATUS_CALLBACK). */
    if (sid == NULL && (sid = httpd_form_get(form, "CallSid")) != NULL &&
        (status = httpd_form_get(form, "CallStatus")) != NULL) {
        r->status = twilio_call_status(status);
        snprintf(r->ref, sizeof(r->ref), "%s", sid);
        snprintf(r->provider_status, sizeof(r->provider_status), "%.23s", status);
        twilio_call_error(r);
        return 200;
    }
    if (sid == NULL || status == NULL)
        return 400;
    r->status = twilio_status(status);
    snprintf(r->ref, sizeof(r->ref), "%s", sid);
    snprintf(r->provider_status, sizeof(r->provider_status), "%s", status);
    if (code && *code) {
        snprintf(r->error_code, sizeof(r->error_code), "%s", code);
        hint = twilio_carrier_hint(code);
        snprintf(r->error, sizeof(r->error), "%s",
                 hint ? hint : "carrier error; see Twilio's error docs");
    }
    return 200;
}

int
twilio_parse_callback(const char *token, const char *url, const char *signature, const char *body,
                      size_t len, struct receipt *r)
{
    struct httpd_form form;
    int rc;

    memset(r, 0, sizeof(*r));
    r->status = RECEIPT_PENDING;
    if (httpd_form_parse(&form, body, len) < 0)
        return 503;
    if (signature == NULL || !twilio_signature_ok(token, url, signature, &form))
        rc = 403;
    else
        rc = twilio_callback_receipt(&form, r);
    httpd_form_free(&form);
    return rc;
}

/* --- requests ---------------------------------------------------------- */

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
twilio_build_urls(struct twilio *tw)
{
    char *sid = curl_easy_escape(NULL, tw->cfg->twilio_account_sid, 0);

    const struct config *cfg = tw->cfg;
    size_t off = 0;

    snprintf(tw->messages_url, sizeof(tw->messages_url), "%s/2010-04-01/Accounts/%s/Messages.json",
             cfg->twilio_api_base, sid ? sid : "");
    snprintf(tw->calls_url, sizeof(tw->calls_url), "%s/2010-04-01/Accounts/%s/Calls.json",
             cfg->twilio_api_base, sid ? sid : "");
    curl_free(sid);
    /* The same for every message: escaped here, not once per send. */
    tw->form_fixed[0] = '\0';
    if (tw->voice) {
        /* A call comes from a number: a Messaging Service cannot place calls. */
        form_add(tw->form_fixed, sizeof(tw->form_fixed), &off, "From", cfg->twilio_phone_number);
        if (*cfg->twilio_voice_status_callback)
            form_add(tw->form_fixed, sizeof(tw->form_fixed), &off, "StatusCallback",
                     cfg->twilio_voice_status_callback);
        return;
    }
    if (*cfg->twilio_messaging_service_sid)
        form_add(tw->form_fixed, sizeof(tw->form_fixed), &off, "MessagingServiceSid",
                 cfg->twilio_messaging_service_sid);
    else
        form_add(tw->form_fixed, sizeof(tw->form_fixed), &off, "From", cfg->twilio_phone_number);
    if (*cfg->twilio_status_callback)
        form_add(tw->form_fixed, sizeof(tw->form_fixed), &off, "StatusCallback",
                 cfg->twilio_status_callback);
}

static void
twilio_reload(struct provider *p)
{
    struct twilio *tw = (struct twilio *)p;

    twilio_build_urls(tw);
    http_set_request_cap(tw->http, tw->cfg->twilio_max_inflight);
}

static struct provider *
twilio_open_as(uv_loop_t *loop, const struct config *cfg, int voice, char *err, size_t errlen)
{
    struct twilio *tw = calloc(1, sizeof(*tw));

    if (tw == NULL || (tw->http = http_new(loop, cfg, voice ? "twilio_voice" : "twilio",
                                           cfg->twilio_max_inflight)) == NULL) {
        free(tw);
        snprintf(err, errlen, "twilio: out of memory");
        return NULL;
    }
    tw->base.ops = voice ? &provider_twilio_voice_ops : &provider_twilio_ops;
    tw->cfg = cfg;
    tw->voice = voice;
    twilio_build_urls(tw);
    return &tw->base;
}

static struct provider *
twilio_open(uv_loop_t *loop, const struct config *cfg, char *err, size_t errlen)
{
    return twilio_open_as(loop, cfg, 0, err, errlen);
}

static long
twilio_timeout(const struct twilio *tw, const struct send_request *req)
{
    long left = (long)(req->deadline_ms - otpd_now_ms());
    long t = tw->cfg->http_timeout_ms;

    return left < t ? (left > 100 ? left : 100) : t;
}

static void
twilio_done(void *arg, const struct http_response *r)
{
    struct provider_call *c = arg;
    struct send_result res;

    c->http = NULL;
    http_send_result(r, "Twilio", c->tw->voice ? twilio_parse_call_create : twilio_parse_create,
                     &res);
    c->cb(c->arg, &res);
    free(c);
}

/*
 * A create (a message or a call) with the account's credentials: the form
 * as written, and an idempotency token Twilio does not document as honoured
 * for creates (harmless, and useful if it is).
 */
static void
twilio_post_form(struct provider_call *c, const char *url, const char *form, size_t len)
{
    const struct config *cfg = c->tw->cfg;
    char idem[128];

    snprintf(idem, sizeof(idem), "I-Twilio-Idempotency-Token: otpd-%s", c->req.job->id);
    const char *headers[] = {"Accept: application/json", idem, NULL};
    struct http_request hr = {
        .url = url,
        .method = "POST",
        .content_type = "application/x-www-form-urlencoded",
        .body = form,
        .body_len = len,
        .username = cfg->twilio_account_sid,
        .password = cfg->twilio_auth_token,
        .headers = headers,
        .timeout_ms = twilio_timeout(c->tw, &c->req),
    };
    c->http = http_start(c->tw->http, &hr, twilio_done, c);
}

/* Starts the POST; -1 (and no callback) if it could not be started. */
static int
twilio_post(struct provider_call *c)
{
    const struct send_request *req = &c->req;
    /* 480 UCS-2 characters are 4320 bytes percent-encoded; the WebOTP line adds more. */
    char form[8192], validity[16];
    size_t off = 0;
    int bad = 0;
    long left_s = (long)((req->deadline_ms - otpd_now_ms()) / 1000);

    /* Twilio must not deliver a code after it expired: bound its queue time. */
    snprintf(validity, sizeof(validity), "%ld", left_s < 1 ? 1 : left_s > 36000 ? 36000 : left_s);
    bad |= form_add(form, sizeof(form), &off, "To", req->job->to);
    bad |= form_add(form, sizeof(form), &off, "Body", req->body);
    bad |= form_add(form, sizeof(form), &off, "ValidityPeriod", validity);
    int n = snprintf(form + off, sizeof(form) - off, "&%s", c->tw->form_fixed);
    bad |= n < 0 || (size_t)n >= sizeof(form) - off;
    off += bad ? 0 : (size_t)n;
    if (!bad)
        twilio_post_form(c, c->tw->messages_url, form, off);
    /* The code is in the body: wipe what was written (all of it if a field was cut). */
    sodium_memzero(form, bad ? sizeof(form) : off);
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
        if (!cJSON_IsString(b) || !cJSON_IsString(sid) || !twilio_sid_valid(sid->valuestring, 0))
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
        res.receipt.status = RECEIPT_PENDING;
        snprintf(res.receipt.error, sizeof(res.receipt.error), "status lookup failed: %s",
                 r->error);
    } else if (c->tw->voice) {
        twilio_parse_call(r->status, r->body, r->len, &res);
    } else {
        twilio_parse_message(r->status, r->body, r->len, &res);
    }
    snprintf(res.receipt.ref, sizeof(res.receipt.ref), "%s", c->ref);
    c->poll_cb(c->arg, &res);
    free(c);
}

static struct provider_call *
twilio_poll(struct provider *p, const char *ref, provider_poll_cb *cb, void *arg)
{
    struct twilio *tw = (struct twilio *)p;
    struct provider_call *c = calloc(1, sizeof(*c));
    char url[640], *sid = curl_easy_escape(NULL, ref, 0);
    const char *list = tw->voice ? tw->calls_url : tw->messages_url;
    size_t base = strlen(list) - strlen(".json");

    if (c == NULL || sid == NULL) {
        free(c);
        curl_free(sid);
        return NULL;
    }
    /* .../Messages.json -> .../Messages/{sid}.json (and Calls alike) */
    snprintf(url, sizeof(url), "%.*s/%s.json", (int)base, list, sid);
    curl_free(sid);
    c->tw = tw;
    c->poll_cb = cb;
    c->arg = arg;
    snprintf(c->ref, sizeof(c->ref), "%s", ref);
    if ((c->http = twilio_get(tw, url, tw->cfg->http_timeout_ms, twilio_polled, c)) == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

/* With a callback URL, Twilio reports every message (or call) to /webhooks/twilio(_voice). */
static int
twilio_pushes_receipts(const struct provider *p)
{
    const struct twilio *tw = (const struct twilio *)p;

    return tw->voice ? config_twilio_voice_callbacks(tw->cfg) : config_twilio_callbacks(tw->cfg);
}

static void
twilio_webhook(struct provider *p, const char *rest, const struct httpd_request *req,
               struct httpd_response *resp, provider_receipt_cb *cb, void *arg)
{
    const struct twilio *tw = (struct twilio *)p;
    const struct config *cfg = tw->cfg;
    const char *sig = httpd_header(req, "X-Twilio-Signature");
    const char *url = tw->voice ? cfg->twilio_voice_status_callback : cfg->twilio_status_callback;
    struct receipt r;

    if (*rest != '\0') {
        httpd_respond(resp, 404, "not found");
        return;
    }
    if (*url == '\0' || *cfg->twilio_auth_token == '\0') {
        httpd_respond(resp, 404,
                      tw->voice ? "Twilio call callbacks are not configured "
                                  "(TWILIO_VOICE_STATUS_CALLBACK)"
                                : "Twilio callbacks are not configured (TWILIO_STATUS_CALLBACK)");
        return;
    }
    if (strcmp(req->method, "POST") != 0) {
        httpd_respond(resp, 405, "POST only");
        return;
    }
    switch (twilio_parse_callback(cfg->twilio_auth_token, url, sig, req->body ? req->body : "",
                                  req->body_len, &r)) {
    case 503:
        httpd_respond(resp, 503, "out of memory");
        break;
    case 403:
        log_warnx("receipt: Twilio callback with %s signature refused (403)",
                  sig ? "a wrong" : "no");
        httpd_respond(resp, 403, "invalid signature");
        break;
    case 400:
        httpd_respond(resp, 400,
                      "MessageSid and MessageStatus (or CallSid and CallStatus) are "
                      "required");
        break;
    default:
        /* Twilio retries a callback that got an error. */
        if (r.status != RECEIPT_PENDING && cb(arg, &r) < 0)
            httpd_respond(resp, 503, "Redis unavailable; retry");
        else
            httpd_respond(resp, 200, "");
    }
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

static void
twilio_caps(const struct config *cfg, int *rate, int *max_inflight)
{
    *rate = cfg->twilio_rate;
    *max_inflight = cfg->twilio_max_inflight;
}

const struct provider_ops provider_twilio_ops = {
    .name = "twilio",
    .configured = config_twilio_configured,
    .caps = twilio_caps,
    .open = twilio_open,
    .send = twilio_send,
    .cancel = twilio_cancel,
    .close = twilio_close,
    .reload = twilio_reload,
    .poll = twilio_poll,
    .pushes_receipts = twilio_pushes_receipts,
    .webhook = twilio_webhook,
};

/* --- voice: the code read out in a call (Calls API) ----------------------- */

/*
 * <Say language=...> for a job's locale: Twilio's text-to-speech names
 * languages its own way (Arabic "arb", Mandarin "cmn-CN").  The job's tag
 * first, then its language alone, then English.
 */
static const struct {
    const char *tag, *say;
} say_languages[] = {
    {"ar", "arb"},      {"de", "de-DE"}, {"en", "en-US"},    {"en-AU", "en-AU"}, {"en-GB", "en-GB"},
    {"en-IN", "en-IN"}, {"es", "es-ES"}, {"es-MX", "es-MX"}, {"es-US", "es-US"}, {"fr", "fr-FR"},
    {"fr-CA", "fr-CA"}, {"hi", "hi-IN"}, {"pt", "pt-PT"},    {"pt-BR", "pt-BR"}, {"zh", "cmn-CN"},
};

const char *
twilio_say_language(const char *locale)
{
    char lang[8];
    size_t n = strcspn(locale, "-");

    for (size_t i = 0; i < sizeof(say_languages) / sizeof(say_languages[0]); i++)
        if (strcmp(locale, say_languages[i].tag) == 0)
            return say_languages[i].say;
    snprintf(lang, sizeof(lang), "%.*s", (int)(n < 7 ? n : 7), locale);
    for (size_t i = 0; i < sizeof(say_languages) / sizeof(say_languages[0]); i++)
        if (strcmp(lang, say_languages[i].tag) == 0)
            return say_languages[i].say;
    return "en-US";
}

/*
 * The TwiML of a call: the text said `repeat` times with a pause between.
 * The text is escaped for XML by hand: five characters, and libxml2 is not
 * otherwise needed.  -1 if it does not fit (Twilio takes at most 4000).
 */
int
twilio_twiml(char *out, size_t len, const char *text, const char *language, int repeat)
{
    size_t off = 0;
    int n = snprintf(out, len, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>");

    if (n < 0 || (size_t)n >= len)
        return -1;
    off = (size_t)n;
    for (int i = 0; i < repeat; i++) {
        n = snprintf(out + off, len - off, "%s<Say language=\"%s\">",
                     i ? "<Pause length=\"1\"/>" : "", language);
        if (n < 0 || (size_t)n >= len - off)
            return -1;
        off += (size_t)n;
        for (const char *p = text; *p; p++) {
            const char *e = *p == '&'    ? "&amp;"
                            : *p == '<'  ? "&lt;"
                            : *p == '>'  ? "&gt;"
                            : *p == '"'  ? "&quot;"
                            : *p == '\'' ? "&apos;"
                                         : NULL;
            size_t k = e ? strlen(e) : 1;
            if (off + k >= len)
                return -1;
            if (e != NULL)
                memcpy(out + off, e, k);
            else
                out[off] = *p;
            off += k;
            out[off] = '\0';
        }
        n = snprintf(out + off, len - off, "</Say>");
        if (n < 0 || (size_t)n >= len - off)
            return -1;
        off += (size_t)n;
    }
    n = snprintf(out + off, len - off, "</Response>");
    return n < 0 || (size_t)n >= len - off || off + (size_t)n > TWILIO_TWIML_MAX ? -1 : 0;
}

/*
 * Place the call: the text (req->body, the code spoken digit by digit) in
 * TwiML, said OTPD_VOICE_REPEAT times.  Timeout: how long it rings;
 * TimeLimit bounds the call's length, and so its price.
 */
static int
twilio_call_post(struct provider_call *c)
{
    const struct config *cfg = c->tw->cfg;
    const struct send_request *req = &c->req;
    char form[12288], twiml[TWILIO_TWIML_MAX + 1];
    size_t off = 0;
    int bad = twilio_twiml(twiml, sizeof(twiml), req->body,
                           twilio_say_language(req->job->locale[0] ? req->job->locale : "en"),
                           cfg->voice_repeat) < 0;

    bad |= form_add(form, sizeof(form), &off, "To", req->job->to);
    bad |= form_add(form, sizeof(form), &off, "Twiml", twiml);
    bad |= form_add(form, sizeof(form), &off, "Timeout", "30");
    bad |= form_add(form, sizeof(form), &off, "TimeLimit", "90");
    int n = snprintf(form + off, sizeof(form) - off, "&%s", c->tw->form_fixed);
    bad |= n < 0 || (size_t)n >= sizeof(form) - off;
    off += bad ? 0 : (size_t)n;
    if (!bad)
        twilio_post_form(c, c->tw->calls_url, form, off);
    sodium_memzero(twiml, sizeof(twiml));
    sodium_memzero(form, bad ? sizeof(form) : off);
    return c->http ? 0 : -1;
}

static struct provider_call *
twilio_call(struct provider *p, const struct send_request *req, provider_done_cb *cb, void *arg)
{
    struct provider_call *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->tw = (struct twilio *)p;
    c->cb = cb;
    c->arg = arg;
    c->req = *req;
    if (twilio_call_post(c) < 0) {
        free(c);
        return NULL;
    }
    return c;
}

static struct provider *
twilio_voice_open(uv_loop_t *loop, const struct config *cfg, char *err, size_t errlen)
{
    return twilio_open_as(loop, cfg, 1, err, errlen);
}

static void
twilio_voice_caps(const struct config *cfg, int *rate, int *max_inflight)
{
    *rate = cfg->twilio_voice_rate;
    *max_inflight = cfg->twilio_max_inflight;
}

const struct provider_ops provider_twilio_voice_ops = {
    .name = "twilio_voice",
    .channel = JOB_CHANNEL_VOICE,
    .configured = config_twilio_voice_configured,
    .caps = twilio_voice_caps,
    .open = twilio_voice_open,
    .send = twilio_call,
    .cancel = twilio_cancel,
    .close = twilio_close,
    .reload = twilio_reload,
    .poll = twilio_poll,
    .pushes_receipts = twilio_pushes_receipts,
    .webhook = twilio_webhook,
};
