/*
 * provider_msg91.c: MSG91's Flow API (v5), the only file that knows its
 * wire format.  MSG91 sends a DLT-approved template, so the code travels
 * as a template variable (MSG91_CODE_VAR) rather than as free text, and
 * the number goes without its "+".  MSG91 often answers HTTP 200 with
 * {"type":"error"}: success is a 2xx *and* type "success".
 *
 * MSG91 offers no way to look a message up, so an ambiguous attempt is
 * followed by a resend of the same code: at worst the user gets the same
 * code twice, never two different valid codes.  For the same reason its
 * delivery reports come only to the webhook.  MSG91 does not sign them:
 * the endpoint is /webhooks/msg91/<MSG91_WEBHOOK_TOKEN>, the token
 * compared in constant time.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <sodium.h>

#include "http.h"
#include "httpd.h"
#include "provider.h"
#include "provider_impl.h"

struct msg91 {
    struct provider base;
    const struct config *cfg;
    struct http *http;
    char flow_url[512];
    provider_closed_cb *closed_cb;
    void *closed_arg;
};

struct provider_call {
    struct msg91 *m;
    struct http_call *http;
    provider_done_cb *cb;
    void *arg;
};

/* --- response parsing (pure) ------------------------------------------ */

static int
contains(const char *hay, const char *needle)
{
    return strcasestr(hay, needle) != NULL;
}

static void
msg91_classify_error(const char *text, const char *code, struct send_result *res)
{
    if (strcmp(code, "311") == 0 || contains(text, "duplicate") || contains(text, "discarded")) {
        /* MSG91 discarded an identical request within 10 s: the first one went out. */
        res->outcome = SEND_OK;
        snprintf(res->provider_status, sizeof(res->provider_status), "duplicate_discarded");
    } else if (contains(text, "auth") || strcmp(code, "201") == 0 || strcmp(code, "207") == 0 ||
               strcmp(code, "401") == 0) {
        res->outcome = SEND_FAIL_PROVIDER;
        snprintf(res->error, sizeof(res->error),
                 "authentication failed: check MSG91_AUTH_KEY in the MSG91 dashboard (API "
                 "section); regenerate it if needed (MSG91: %.60s)",
                 text);
    } else if (strcmp(code, "418") == 0 || contains(text, "whitelist")) {
        res->outcome = SEND_FAIL_PROVIDER;
        snprintf(res->error, sizeof(res->error),
                 "this server's IP is not on the auth key's allow-list in MSG91 (MSG91: %.60s)",
                 text);
    } else if (contains(text, "balance")) {
        res->outcome = SEND_FAIL_PROVIDER;
        snprintf(res->error, sizeof(res->error),
                 "insufficient MSG91 balance: recharge the account (MSG91: %.60s)", text);
    } else if (contains(text, "template") || contains(text, "sender") || contains(text, "flow")) {
        res->outcome = SEND_FAIL_PROVIDER;
        snprintf(res->error, sizeof(res->error),
                 "template or sender not approved: check MSG91_TEMPLATE_ID and MSG91_SENDER_ID "
                 "(DLT approval takes 24-48 h) (MSG91: %.60s)",
                 text);
    } else if (contains(text, "mobile") || contains(text, "number") || strcmp(code, "202") == 0) {
        res->outcome = SEND_FAIL_JOB;
        snprintf(res->error, sizeof(res->error),
                 "MSG91 rejected the number: ask the user to re-enter it (MSG91: %.60s)", text);
    } else {
        res->outcome = SEND_FAIL_JOB;
        snprintf(res->error, sizeof(res->error), "MSG91 error: %.200s", text);
    }
}

void
msg91_parse_flow(long http_status, const char *body, size_t len, struct send_result *res)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(root, "code");
    const char *text = cJSON_IsString(msg) ? msg->valuestring : "";
    char codebuf[24] = "";

    memset(res, 0, sizeof(*res));
    if (cJSON_IsString(code))
        snprintf(codebuf, sizeof(codebuf), "%.20s", code->valuestring);
    else if (cJSON_IsNumber(code))
        snprintf(codebuf, sizeof(codebuf), "%d", code->valueint);
    if (http_status == 429) {
        res->outcome = SEND_RETRY;
        snprintf(res->error_code, sizeof(res->error_code), "http_429");
        snprintf(res->error, sizeof(res->error), "MSG91 rate limit; retried with backoff");
    } else if (http_status >= 500) {
        res->outcome = SEND_AMBIGUOUS;
        snprintf(res->error_code, sizeof(res->error_code), "http_%d", (int)http_status);
        snprintf(res->error, sizeof(res->error), "MSG91 HTTP %ld", http_status);
    } else if (!cJSON_IsObject(root) || !cJSON_IsString(type)) {
        res->outcome = http_status >= 200 && http_status < 300    ? SEND_AMBIGUOUS
                       : http_status == 401 || http_status == 403 ? SEND_FAIL_PROVIDER
                                                                  : SEND_FAIL_JOB;
        snprintf(res->error_code, sizeof(res->error_code), "malformed_response");
        snprintf(res->error, sizeof(res->error), "MSG91 answered HTTP %ld with an unexpected body",
                 http_status);
    } else if (http_status >= 200 && http_status < 300 &&
               strcmp(type->valuestring, "success") == 0) {
        const cJSON *rid = cJSON_GetObjectItemCaseSensitive(root, "request_id");
        res->outcome = SEND_OK;
        snprintf(res->ref, sizeof(res->ref), "%.70s",
                 cJSON_IsString(rid) ? rid->valuestring : text);
        snprintf(res->provider_status, sizeof(res->provider_status), "accepted");
    } else {
        msg91_classify_error(text, codebuf, res);
        snprintf(res->error_code, sizeof(res->error_code), "%s",
                 *codebuf ? codebuf : (http_status == 200 ? "error" : "http_error"));
        /* 401/403 is the credentials whatever the text says (never "duplicate": OK). */
        if ((http_status == 401 || http_status == 403) && res->outcome != SEND_FAIL_PROVIDER) {
            res->outcome = SEND_FAIL_PROVIDER;
            res->provider_status[0] = '\0';
            snprintf(res->error, sizeof(res->error),
                     "MSG91 refused the request (HTTP %ld): check MSG91_AUTH_KEY and its IP "
                     "allow-list in the MSG91 dashboard (MSG91: %.60s)",
                     http_status, text);
        }
    }
    cJSON_Delete(root);
}

/* --- delivery reports (pure) ------------------------------------------ */

/* MSG91 report codes: 1 delivered, 2 failed, 9 NDNC, 16/25 rejected, 17 blocked. */
static enum job_status
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
        return RECEIPT_PENDING;
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

/* One report {requestId?, status, desc?, ...} -> a receipt; 0 if it records nothing. */
static int
msg91_receipt(const cJSON *rep, const char *rid, struct receipt *r)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(rep, "status");
    const char *why, *desc;

    memset(r, 0, sizeof(*r));
    if (rid == NULL)
        rid = json_str(rep, "requestId", "request_id");
    if (rid == NULL || (r->status = msg91_status(s, &why)) == RECEIPT_PENDING)
        return 0;
    snprintf(r->ref, sizeof(r->ref), "%s", rid);
    if (cJSON_IsNumber(s))
        snprintf(r->error_code, sizeof(r->error_code), "dlr_%d", s->valueint);
    else
        snprintf(r->error_code, sizeof(r->error_code), "dlr_%.16s", s->valuestring);
    snprintf(r->provider_status, sizeof(r->provider_status), "%s", r->error_code + 4);
    if (r->status == JOB_DELIVERED)
        return 1;
    desc = json_str(rep, "desc", "failureReason");
    if (desc && *desc)
        snprintf(r->error, sizeof(r->error), "%s (MSG91: %.100s)", why, desc);
    else
        snprintf(r->error, sizeof(r->error), "%s", why);
    return 1;
}

/* One report to cb; rid is the outer requestId (v2).  -1 if cb refused it. */
static int
msg91_report(const cJSON *rep, const char *rid, provider_receipt_cb *cb, void *arg)
{
    struct receipt r;

    if (!msg91_receipt(rep, rid, &r))
        return 0;
    return cb(arg, &r) < 0 ? -1 : 0;
}

/* v2: an array of {requestId, report:[...]}; v3, "new": JSON object(s).  -1: cb refused one. */
static int
msg91_reports(const cJSON *root, provider_receipt_cb *cb, void *arg)
{
    const cJSON *report, *item;
    const char *rid;
    int rc = 0;

    if (!cJSON_IsObject(root)) {
        cJSON_ArrayForEach(item, root)
        {
            if (msg91_reports(item, cb, arg) < 0)
                rc = -1;
        }
        return rc;
    }
    report = cJSON_GetObjectItemCaseSensitive(root, "report");
    if (!cJSON_IsArray(report))
        return msg91_report(root, NULL, cb, arg);
    rid = json_str(root, "requestId", "request_id");
    cJSON_ArrayForEach(item, report)
    {
        if (msg91_report(item, rid, cb, arg) < 0)
            rc = -1;
    }
    return rc;
}

int
msg91_parse_reports(const char *content_type, const char *body, size_t len, provider_receipt_cb *cb,
                    void *arg)
{
    cJSON *root = NULL;
    struct httpd_form form;
    const char *data;
    int rc;

    if (body == NULL)
        return 400;
    if (content_type && strncasecmp(content_type, "application/x-www-form-urlencoded", 33) == 0) {
        if (httpd_form_parse(&form, body, len) < 0)
            return 400;
        if ((data = httpd_form_get(&form, "data")) != NULL)
            root = cJSON_Parse(data);
        httpd_form_free(&form);
    } else {
        root = cJSON_ParseWithLength(body, len);
    }
    if (root == NULL)
        return 400;
    rc = msg91_reports(root, cb, arg) < 0 ? 503 : 200;
    cJSON_Delete(root);
    return rc;
}

/* --- requests ---------------------------------------------------------- */

static void
msg91_reload(struct provider *p)
{
    struct msg91 *m = (struct msg91 *)p;

    snprintf(m->flow_url, sizeof(m->flow_url), "%s/api/v5/flow/", m->cfg->msg91_api_base);
    http_set_request_cap(m->http, m->cfg->msg91_max_inflight);
}

static struct provider *
msg91_open(uv_loop_t *loop, const struct config *cfg, char *err, size_t errlen)
{
    struct msg91 *m = calloc(1, sizeof(*m));

    if (m == NULL || (m->http = http_new(loop, cfg, "msg91", cfg->msg91_max_inflight)) == NULL) {
        free(m);
        snprintf(err, errlen, "msg91: out of memory");
        return NULL;
    }
    m->base.ops = &provider_msg91_ops;
    m->cfg = cfg;
    snprintf(m->flow_url, sizeof(m->flow_url), "%s/api/v5/flow/", cfg->msg91_api_base);
    return &m->base;
}

static void
msg91_done(void *arg, const struct http_response *r)
{
    struct provider_call *c = arg;
    struct send_result res;

    c->http = NULL;
    http_send_result(r, "MSG91", msg91_parse_flow, &res);
    c->cb(c->arg, &res);
    free(c);
}

/* The code as the template variable: the digits of the rendered body's code. */
static char *
msg91_body(const struct config *cfg, const struct send_request *req)
{
    cJSON *root = cJSON_CreateObject(), *recips, *r;
    char minutes[16];
    char *out = NULL;

    if (root == NULL)
        return NULL;
    snprintf(minutes, sizeof(minutes), "%d", (req->job->ttl + 59) / 60);
    cJSON_AddStringToObject(root, "template_id", cfg->msg91_template_id);
    if (*cfg->msg91_sender_id)
        cJSON_AddStringToObject(root, "sender", cfg->msg91_sender_id);
    cJSON_AddStringToObject(root, "short_url", "0");
    cJSON_AddStringToObject(root, "realTimeResponse", "1");
    recips = cJSON_AddArrayToObject(root, "recipients");
    r = cJSON_CreateObject();
    if (recips && r) {
        cJSON_AddItemToArray(recips, r);
        cJSON_AddStringToObject(r, "mobiles", req->job->to + 1); /* no "+" */
        cJSON_AddStringToObject(r, cfg->msg91_code_var, req->code);
        cJSON_AddStringToObject(r, "minutes", minutes);
        out = cJSON_PrintUnformatted(root);
    } else {
        cJSON_Delete(r);
    }
    cJSON_Delete(root);
    return out;
}

static struct provider_call *
msg91_send(struct provider *p, const struct send_request *req, provider_done_cb *cb, void *arg)
{
    struct msg91 *m = (struct msg91 *)p;
    struct provider_call *c = calloc(1, sizeof(*c));
    char auth[200], *body;
    long left = (long)(req->deadline_ms - otpd_now_ms());

    if (c == NULL || (body = msg91_body(m->cfg, req)) == NULL) {
        free(c);
        return NULL;
    }
    c->m = m;
    c->cb = cb;
    c->arg = arg;
    /* The key goes in a header, never in a URL that could be logged. */
    snprintf(auth, sizeof(auth), "authkey: %s", m->cfg->msg91_auth_key);
    const char *headers[] = {auth, "Accept: application/json", NULL};
    struct http_request hr = {
        .url = m->flow_url,
        .method = "POST",
        .content_type = "application/json",
        .body = body,
        .body_len = strlen(body),
        .headers = headers,
        .timeout_ms =
            left < m->cfg->http_timeout_ms ? (left > 100 ? left : 100) : m->cfg->http_timeout_ms,
    };
    c->http = http_start(m->http, &hr, msg91_done, c);
    sodium_memzero(auth, sizeof(auth));
    sodium_memzero(body, strlen(body));
    free(body);
    if (c->http == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

static void
msg91_webhook(struct provider *p, const char *rest, const struct httpd_request *req,
              struct httpd_response *resp, provider_receipt_cb *cb, void *arg)
{
    const char *want = ((struct msg91 *)p)->cfg->msg91_webhook_token;
    const char *token = rest + (*rest == '/');
    int status;

    /* A wrong token looks like no endpoint at all. */
    if (*want == '\0' || *rest != '/' || strlen(token) != strlen(want) ||
        sodium_memcmp(token, want, strlen(want)) != 0) {
        httpd_respond(resp, 404, "not found");
        return;
    }
    if (strcmp(req->method, "POST") != 0) {
        httpd_respond(resp, 405, "POST only");
        return;
    }
    status =
        msg91_parse_reports(httpd_header(req, "Content-Type"), req->body, req->body_len, cb, arg);
    switch (status) {
    case 400:
        httpd_respond(resp, 400, "expected an MSG91 delivery report (JSON, or form field data)");
        break;
    case 503: /* a report could not be recorded: MSG91 retries on errors */
        httpd_respond(resp, 503, "Redis unavailable; retry");
        break;
    default:
        httpd_respond(resp, 200, "ok");
    }
}

static void
msg91_cancel(struct provider *p, struct provider_call *c)
{
    if (c->http)
        http_cancel(((struct msg91 *)p)->http, c->http);
    free(c);
}

static void
msg91_http_closed(void *arg)
{
    struct msg91 *m = arg;

    if (m->closed_cb)
        m->closed_cb(m->closed_arg);
    free(m);
}

static void
msg91_close(struct provider *p, provider_closed_cb *cb, void *arg)
{
    struct msg91 *m = (struct msg91 *)p;

    m->closed_cb = cb;
    m->closed_arg = arg;
    http_close(m->http, msg91_http_closed, m);
}

static void
msg91_caps(const struct config *cfg, int *rate, int *max_inflight)
{
    *rate = cfg->msg91_rate;
    *max_inflight = cfg->msg91_max_inflight;
}

const struct provider_ops provider_msg91_ops = {
    .name = "msg91",
    .configured = config_msg91_configured,
    .caps = msg91_caps,
    .open = msg91_open,
    .send = msg91_send,
    .cancel = msg91_cancel,
    .close = msg91_close,
    .reload = msg91_reload,
    .webhook = msg91_webhook,
};
