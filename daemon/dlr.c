/*
 * dlr.c: delivery receipts.
 *
 * Twilio signs each status callback: base64(HMAC-SHA1(auth token, the URL
 * it called + every POST parameter name and value, sorted by name)).  The
 * URL is the public one we sent as StatusCallback (TWILIO_STATUS_CALLBACK),
 * not whatever address the reverse proxy used to reach us; Twilio is known
 * to sign with or without an explicit :443/:80, so both are tried.  A bad
 * signature gets 403 and changes nothing.
 *
 * MSG91 does not sign its reports; its endpoint is /webhooks/msg91/<token>
 * with MSG91_WEBHOOK_TOKEN, compared in constant time.
 *
 * Without a callback URL, sent Twilio messages are polled on a backoff
 * schedule until a final status or OTPD_DLR_POLL_HORIZON_S, and only when
 * the provider's gate has spare capacity, so polling never delays a send.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include "dlr.h"
#include "gate.h"
#include "log.h"
#include "metrics.h"

#define DLR_MAX_PARAMS 64
#define DLR_POLL_MAX   10000
#define DLR_POLL_CAP   60000
#define DLR_TICK_MS    500

struct dlr_poll {
    struct dlr_poll *next;
    struct dlr *r;
    struct provider *p;
    struct provider_call *call;
    char ref[72];
    uint64_t next_at, until, backoff;
    int done;
};

struct dlr {
    uv_loop_t *loop;
    const struct config *cfg;
    struct store *store;
    struct provider_set *providers;
    uv_timer_t tick;
    struct dlr_poll *polls;
    int npolls;
    void (*closed_cb)(void *arg);
    void *closed_arg;
};

/* --- pure parts ---------------------------------------------------------- */

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
dlr_twilio_signature(const char *token, const char *url, const char *const *names,
                     const char *const *values, int nparams, char *out, size_t outlen)
{
    struct param_ref sorted[DLR_MAX_PARAMS] = {{NULL, NULL}};
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t len = strlen(url);
    char *data;
    int n = nparams < DLR_MAX_PARAMS ? nparams : DLR_MAX_PARAMS;

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

static const struct {
    const char *code, *hint;
} twilio_carrier_hints[] = {
    {"30003", "unreachable handset (switched off or no signal): the user can ask for a new code "
              "once the phone is reachable"},
    {"30004", "message blocked by the recipient or their carrier"},
    {"30005", "unknown or inactive number: ask the user to check the number"},
    {"30006", "landline or unreachable carrier: ask the user for a mobile number"},
    {"30007", "filtered by the carrier as spam: review the message text and sender registration"},
    {"30008", "unknown carrier error: the user can ask for a new code later"},
};

const char *
dlr_twilio_hint(const char *code)
{
    for (size_t i = 0; i < sizeof(twilio_carrier_hints) / sizeof(twilio_carrier_hints[0]); i++)
        if (strcmp(code, twilio_carrier_hints[i].code) == 0)
            return twilio_carrier_hints[i].hint;
    return NULL;
}

/* Twilio's word for a message -> our status; -1 for one that changes nothing. */
static int
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
    return -1;
}

/* --- applying a receipt -------------------------------------------------- */

struct receipt_ctx {
    struct dlr *r;
    char provider[16];
    enum job_status status;
    char ref[72], provider_status[24], code[24], error[REASON_MAX];
    int retried;
};

static int dlr_submit(struct receipt_ctx *c);

static void
dlr_applied(void *arg, int verdict, const char *job_id, long long sent_ms, const char *cc,
            const char *err)
{
    struct receipt_ctx *c = arg;

    if (verdict < 0 && !c->retried) {
        /* The webhook was already answered: try once more (scripts reloaded on NOSCRIPT). */
        c->retried = 1;
        if (dlr_submit(c) == 0)
            return;
    }
    if (verdict < 0)
        log_warnx("receipt: could not record %s for a %s message: %s", job_status_name(c->status),
                  c->provider, err);
    else if (verdict == 0)
        log_debug("receipt: a %s message otpd does not know (expired or not ours)", c->provider);
    else if (verdict == 2) {
        log_info("job %s: %s (%s receipt)", job_id, job_status_name(c->status), c->provider);
        if (c->status == JOB_DELIVERED && sent_ms > 0)
            metrics_observe_delivery(c->provider, cc, (double)(otpd_now_ms() - sent_ms) / 1000.0);
    }
    free(c);
}

static int
dlr_apply(struct dlr *r, const char *provider, const char *ref, enum job_status st,
          const char *provider_status, const char *code, const char *error)
{
    struct receipt_ctx *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return -1;
    c->r = r;
    c->status = st;
    snprintf(c->provider, sizeof(c->provider), "%s", provider);
    snprintf(c->ref, sizeof(c->ref), "%s", ref);
    snprintf(c->provider_status, sizeof(c->provider_status), "%s", provider_status);
    snprintf(c->code, sizeof(c->code), "%s", code);
    snprintf(c->error, sizeof(c->error), "%s", error);
    log_mask_numbers(c->error); /* carriers' texts may quote the number */
    if (dlr_submit(c) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

static int
dlr_submit(struct receipt_ctx *c)
{
    return store_receipt(c->r->store, c->provider, c->ref, c->status, c->provider_status, c->code,
                         c->error, dlr_applied, c);
}

/* --- Twilio webhook -------------------------------------------------------- */

/* application/x-www-form-urlencoded -> names/values (decoded, malloc'd). */
static int
form_parse(const char *body, size_t len, char **names, char **values)
{
    char *copy = strndup(body, len), *save = NULL, *pair;
    int n = 0;

    if (copy == NULL)
        return -1;
    for (pair = strtok_r(copy, "&", &save); pair && n < DLR_MAX_PARAMS;
         pair = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(pair, '=');
        if (eq)
            *eq = '\0';
        for (char *p = pair; *p; p++)
            if (*p == '+')
                *p = ' ';
        if (eq)
            for (char *p = eq + 1; *p; p++)
                if (*p == '+')
                    *p = ' ';
        names[n] = curl_easy_unescape(NULL, pair, 0, NULL);
        values[n] = curl_easy_unescape(NULL, eq ? eq + 1 : "", 0, NULL);
        if (names[n] == NULL || values[n] == NULL) {
            curl_free(names[n]);
            curl_free(values[n]);
            break;
        }
        n++;
    }
    free(copy);
    return n;
}

static const char *
form_get(char **names, char **values, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return values[i];
    return NULL;
}

/* The configured URL, and the same with the default port added or removed. */
static int
url_variants(const char *url, char out[3][1024])
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
twilio_signature_ok(const struct config *cfg, const char *sig, char **names, char **values, int n)
{
    char urls[3][1024], want[64];
    int nurls = url_variants(cfg->twilio_status_callback, urls), ok = 0;

    for (int i = 0; i < nurls && !ok; i++) {
        dlr_twilio_signature(cfg->twilio_auth_token, urls[i], (const char *const *)names,
                             (const char *const *)values, n, want, sizeof(want));
        ok = strlen(sig) == strlen(want) && sodium_memcmp(sig, want, strlen(want)) == 0;
    }
    return ok;
}

static void
respond(struct httpd_response *resp, int status, const char *text)
{
    resp->status = status;
    resp->body = strdup(text);
    resp->len = resp->body ? strlen(resp->body) : 0;
}

static void
dlr_twilio(struct dlr *r, const struct httpd_request *req, struct httpd_response *resp)
{
    const struct config *cfg = r->cfg;
    char *names[DLR_MAX_PARAMS], *values[DLR_MAX_PARAMS], hint[REASON_MAX] = "";
    const char *sig = httpd_header(req, "X-Twilio-Signature"), *sid, *status, *code;
    int n, st;

    if (*cfg->twilio_status_callback == '\0' || *cfg->twilio_auth_token == '\0') {
        respond(resp, 404, "Twilio callbacks are not configured (TWILIO_STATUS_CALLBACK)");
        return;
    }
    if (strcmp(req->method, "POST") != 0) {
        respond(resp, 405, "POST only");
        return;
    }
    if ((n = form_parse(req->body ? req->body : "", req->body_len, names, values)) < 0) {
        respond(resp, 503, "out of memory");
        return;
    }
    if (sig == NULL || !twilio_signature_ok(cfg, sig, names, values, n)) {
        log_warnx("receipt: Twilio callback with %s signature refused (403)",
                  sig ? "a wrong" : "no");
        respond(resp, 403, "invalid signature");
        goto out;
    }
    sid = form_get(names, values, n, "MessageSid");
    status = form_get(names, values, n, "MessageStatus");
    code = form_get(names, values, n, "ErrorCode");
    if (sid == NULL || status == NULL) {
        respond(resp, 400, "MessageSid and MessageStatus are required");
        goto out;
    }
    if ((st = twilio_status(status)) < 0) {
        respond(resp, 200, ""); /* queued, sending, ...: nothing to record */
        goto out;
    }
    if (code && *code) {
        const char *h = dlr_twilio_hint(code);
        snprintf(hint, sizeof(hint), "%s", h ? h : "carrier error; see Twilio's error docs");
    }
    if (dlr_apply(r, "twilio", sid, (enum job_status)st, status, code ? code : "", hint) < 0)
        respond(resp, 503, "Redis unavailable; retry"); /* Twilio retries on errors */
    else
        respond(resp, 200, "");
out:
    for (int i = 0; i < n; i++) {
        curl_free(names[i]);
        curl_free(values[i]);
    }
}

/* --- MSG91 webhook --------------------------------------------------------- */

/* MSG91 report codes: 1 delivered, 2 failed, 9 NDNC, 16/25 rejected, 17 blocked. */
static int
msg91_status(const cJSON *st, const char **why)
{
    int v = -1;

    *why = "";
    if (cJSON_IsNumber(st))
        v = st->valueint;
    else if (cJSON_IsString(st)) {
        if (strcasecmp(st->valuestring, "delivered") == 0 ||
            strcasecmp(st->valuestring, "DELIVRD") == 0)
            return JOB_DELIVERED;
        if (strcasecmp(st->valuestring, "failed") == 0 ||
            strcasecmp(st->valuestring, "undelivered") == 0 ||
            strcasecmp(st->valuestring, "rejected") == 0) {
            *why = "the operator did not deliver the message";
            return JOB_UNDELIVERED;
        }
        v = atoi(st->valuestring);
    }
    switch (v) {
    case 1:
        return JOB_DELIVERED;
    case 2:
        *why = "failed: the handset or operator did not accept the message";
        return JOB_UNDELIVERED;
    case 9:
        *why = "NDNC/DND number: send OTPs through a transactional DLT template";
        return JOB_UNDELIVERED;
    case 16:
    case 25:
        *why = "rejected by the operator: check the DLT template and sender registration";
        return JOB_UNDELIVERED;
    case 17:
        *why = "the number is blocked";
        return JOB_UNDELIVERED;
    default:
        return -1;
    }
}

static const char *
json_str(const cJSON *o, const char *a, const char *b)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, a);

    if (!cJSON_IsString(it) && b)
        it = cJSON_GetObjectItemCaseSensitive(o, b);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* One report: {requestId?, status, desc?, ...}; rid is the outer requestId (v2). */
static int
msg91_report(struct dlr *r, const cJSON *rep, const char *rid)
{
    const char *why, *desc;
    char code[24];
    int st;

    if (rid == NULL)
        rid = json_str(rep, "requestId", "request_id");
    if (rid == NULL)
        return 0;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(rep, "status");
    if ((st = msg91_status(s, &why)) < 0)
        return 0;
    desc = json_str(rep, "desc", "failureReason");
    code[0] = '\0';
    if (cJSON_IsNumber(s))
        snprintf(code, sizeof(code), "dlr_%d", s->valueint);
    else if (cJSON_IsString(s))
        snprintf(code, sizeof(code), "dlr_%.16s", s->valuestring);
    char error[REASON_MAX] = "";
    if (st != JOB_DELIVERED)
        snprintf(error, sizeof(error), "%s%s%.100s", why, desc && *desc ? " (MSG91: " : "",
                 desc && *desc ? desc : "");
    if (desc && *desc && st != JOB_DELIVERED)
        strncat(error, ")", sizeof(error) - strlen(error) - 1);
    return dlr_apply(r, "msg91", rid, (enum job_status)st, code[0] ? code + 4 : "", code, error) < 0
               ? -1
               : 1;
}

/* v2: form data=<JSON array of {requestId, report:[...]}>; v3 and "new": JSON object(s). */
static int
msg91_reports(struct dlr *r, const cJSON *root)
{
    const cJSON *item;
    int rc = 0;

    if (cJSON_IsObject(root)) {
        const cJSON *report = cJSON_GetObjectItemCaseSensitive(root, "report");
        if (cJSON_IsArray(report)) {
            const char *rid = json_str(root, "requestId", "request_id");
            cJSON_ArrayForEach(item, report) if (msg91_report(r, item, rid) < 0) rc = -1;
            return rc;
        }
        return msg91_report(r, root, NULL) < 0 ? -1 : 0;
    }
    cJSON_ArrayForEach(item, root) if (msg91_reports(r, item) < 0) rc = -1;
    return rc;
}

static void
dlr_msg91(struct dlr *r, const struct httpd_request *req, struct httpd_response *resp)
{
    const char *token = req->path + strlen("/webhooks/msg91/");
    const char *want = r->cfg->msg91_webhook_token;
    const char *ct = httpd_header(req, "Content-Type");
    char *names[DLR_MAX_PARAMS], *values[DLR_MAX_PARAMS];
    cJSON *root = NULL;
    int n = 0;

    if (*want == '\0' || strlen(token) != strlen(want) ||
        sodium_memcmp(token, want, strlen(want)) != 0) {
        respond(resp, 404, "not found");
        return;
    }
    if (strcmp(req->method, "POST") != 0) {
        respond(resp, 405, "POST only");
        return;
    }
    if (ct && strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0) {
        n = form_parse(req->body ? req->body : "", req->body_len, names, values);
        const char *data = n > 0 ? form_get(names, values, n, "data") : NULL;
        if (data)
            root = cJSON_Parse(data);
        for (int i = 0; i < n; i++) {
            curl_free(names[i]);
            curl_free(values[i]);
        }
    } else if (req->body) {
        root = cJSON_ParseWithLength(req->body, req->body_len);
    }
    if (root == NULL) {
        respond(resp, 400, "expected an MSG91 delivery report (JSON, or form field data)");
        return;
    }
    if (msg91_reports(r, root) < 0)
        respond(resp, 503, "Redis unavailable; retry");
    else
        respond(resp, 200, "ok");
    cJSON_Delete(root);
}

int
dlr_handle(struct dlr *r, const struct httpd_request *req, struct httpd_response *resp)
{
    if (strcmp(req->path, "/webhooks/twilio") == 0) {
        dlr_twilio(r, req, resp);
        return 1;
    }
    if (strncmp(req->path, "/webhooks/msg91/", 16) == 0) {
        dlr_msg91(r, req, resp);
        return 1;
    }
    return 0;
}

/* --- polling ----------------------------------------------------------------- */

static void
dlr_polled(void *arg, const struct poll_result *res)
{
    struct dlr_poll *e = arg;
    struct dlr *r = e->r;
    uint64_t now = uv_now(r->loop);
    int st;

    e->call = NULL;
    gate_leave(e->p->gate);
    if (res->ok && (st = twilio_status(res->status)) >= 0 && st != JOB_SENT) {
        const char *h = res->error_code[0] ? dlr_twilio_hint(res->error_code) : NULL;
        char why[REASON_MAX];
        snprintf(why, sizeof(why), "%s", h ? h : res->error);
        dlr_apply(r, provider_name(e->p), e->ref, (enum job_status)st, res->status, res->error_code,
                  st == JOB_DELIVERED ? "" : why);
        e->done = 1;
        return;
    }
    e->backoff = e->backoff * 2 > DLR_POLL_CAP ? DLR_POLL_CAP : e->backoff * 2;
    e->next_at = now + e->backoff;
    if (e->next_at > e->until)
        e->done = 1; /* horizon: the status stays "sent" */
}

static void
dlr_tick(uv_timer_t *t)
{
    struct dlr *r = t->data;
    struct dlr_poll **pp = &r->polls, *e;
    uint64_t now = uv_now(r->loop);

    while ((e = *pp) != NULL) {
        if (e->done && e->call == NULL) {
            *pp = e->next;
            r->npolls--;
            free(e);
            continue;
        }
        /* Sending first: poll only on spare capacity. */
        if (!e->done && e->call == NULL && now >= e->next_at && gate_try_enter(e->p->gate)) {
            if ((e->call = e->p->ops->poll(e->p, e->ref, dlr_polled, e)) == NULL) {
                gate_leave(e->p->gate);
                e->next_at = now + e->backoff;
            }
        }
        pp = &e->next;
    }
}

void
dlr_sent(struct dlr *r, struct provider *p, const char *ref)
{
    struct dlr_poll *e;

    /* Poll only where no webhook will come. */
    if (p->ops->poll == NULL || r->cfg->dlr_poll_horizon_s <= 0 ||
        config_twilio_callbacks(r->cfg) || r->npolls >= DLR_POLL_MAX || *ref == '\0')
        return;
    if ((e = calloc(1, sizeof(*e))) == NULL)
        return;
    e->r = r;
    e->p = p;
    snprintf(e->ref, sizeof(e->ref), "%s", ref);
    e->backoff = (uint64_t)r->cfg->dlr_poll_first_ms;
    e->next_at = uv_now(r->loop) + e->backoff;
    e->until = uv_now(r->loop) + (uint64_t)r->cfg->dlr_poll_horizon_s * 1000;
    e->next = r->polls;
    r->polls = e;
    r->npolls++;
}

struct dlr *
dlr_new(uv_loop_t *loop, const struct config *cfg, struct store *st, struct provider_set *providers)
{
    struct dlr *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->loop = loop;
    r->cfg = cfg;
    r->store = st;
    r->providers = providers;
    uv_timer_init(loop, &r->tick);
    r->tick.data = r;
    uv_timer_start(&r->tick, dlr_tick, DLR_TICK_MS, DLR_TICK_MS);
    return r;
}

static void
dlr_closed(uv_handle_t *h)
{
    struct dlr *r = h->data;

    if (r->closed_cb)
        r->closed_cb(r->closed_arg);
    free(r);
}

/* Before the providers close: cancel lookups in flight. */
void
dlr_close(struct dlr *r, void (*cb)(void *arg), void *arg)
{
    while (r->polls) {
        struct dlr_poll *e = r->polls;
        r->polls = e->next;
        if (e->call) {
            e->p->ops->cancel(e->p, e->call);
            gate_leave(e->p->gate);
        }
        free(e);
    }
    r->closed_cb = cb;
    r->closed_arg = arg;
    uv_close((uv_handle_t *)&r->tick, dlr_closed);
}
