/*
 * provider_msg91.c: MSG91's Flow API (v5), the only file that knows its
 * wire format.  MSG91 sends a DLT-approved template, so the code travels
 * as a template variable (MSG91_CODE_VAR) rather than as free text, and
 * the number goes without its "+".  MSG91 often answers HTTP 200 with
 * {"type":"error"}: success is a 2xx *and* type "success".
 *
 * MSG91 offers no way to look a message up, so an ambiguous attempt is
 * followed by a resend of the same code: at worst the user gets the same
 * code twice, never two different valid codes.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "http.h"
#include "provider.h"

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

const struct provider_ops provider_msg91_ops = {
    .name = "msg91",
    .open = msg91_open,
    .send = msg91_send,
    .cancel = msg91_cancel,
    .close = msg91_close,
    .reload = msg91_reload,
};
