/*
 * provider_smtp.c: the e-mail channel over SMTP, with libcurl's SMTP and
 * MIME support on the same multi and loop as the SMS providers (no other
 * library).  Django's settings name the server (EMAIL_HOST, EMAIL_PORT,
 * EMAIL_HOST_USER, EMAIL_HOST_PASSWORD, EMAIL_USE_TLS, EMAIL_USE_SSL,
 * EMAIL_TIMEOUT, DEFAULT_FROM_EMAIL), so a site's settings carry over.  TLS
 * is required (STARTTLS or implicit) and verified, always.
 *
 * A message: multipart/alternative with a plain-text and an HTML part,
 * quoted-printable UTF-8, an RFC 2047 subject, Date, a Message-ID on the
 * sender's domain (also the job's provider_ref) and Auto-Submitted.
 *
 * What the server answers decides the outcome like an SMS provider's:
 * 5xx to the recipient fails the job, 4xx and network trouble are retried,
 * 535 (authentication) and an untrusted certificate stop the channel.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <sodium.h>

#include "http.h"
#include "otp.h"
#include "log.h"
#include "provider.h"
#include "provider_impl.h"
#include "templates.h"

#define SMTP_SUBJECT_MAX 1024
#define SMTP_BODY_MAX    16384

struct smtp {
    struct provider base;
    const struct config *cfg;
    struct http *http;
    provider_closed_cb *closed_cb;
    void *closed_arg;
};

struct provider_call {
    struct smtp *s;
    struct http_call *http;
    provider_done_cb *cb;
    void *arg;
    char message_id[160];
};

/* What one message holds until its transfer ends (the engine releases it). */
struct smtp_message {
    curl_mime *mime;
    struct curl_slist *headers, *rcpt;
    char *text, *html; /* hold the code: wiped */
};

static int
smtp_configured(const struct config *cfg)
{
    return *cfg->email_host != '\0';
}

static void
smtp_caps(const struct config *cfg, int *rate, int *max_inflight)
{
    *rate = 0;
    *max_inflight = cfg->email_max_inflight;
}

/* The address inside DEFAULT_FROM_EMAIL ("Name <a@b>" or "a@b"). */
static void
smtp_from_address(const char *from, char *out, size_t len)
{
    const char *lt = strrchr(from, '<'), *gt;

    if (lt != NULL && (gt = strchr(lt, '>')) != NULL)
        snprintf(out, len, "%.*s", (int)(gt - lt - 1), lt + 1);
    else
        snprintf(out, len, "%s", from);
}

/*
 * "Subject: " and the text, as RFC 2047 encoded words when it is not plain
 * ASCII: base64 of at most 45 bytes each, never cut inside a character.
 */
static void
smtp_subject_header(const char *subject, char *out, size_t len)
{
    size_t n = strlen(subject), w, i = 0;
    int ascii = 1;

    for (size_t k = 0; k < n; k++)
        if ((unsigned char)subject[k] >= 0x80 || subject[k] == '=' || subject[k] == '?')
            ascii = 0;
    if (ascii) {
        snprintf(out, len, "Subject: %s", subject);
        return;
    }
    w = (size_t)snprintf(out, len, "Subject:");
    while (i < n && w < len) {
        size_t chunk = n - i < 45 ? n - i : 45;
        char b64[sodium_base64_ENCODED_LEN(45, sodium_base64_VARIANT_ORIGINAL)];
        while (i + chunk < n && ((unsigned char)subject[i + chunk] & 0xc0) == 0x80)
            chunk--; /* not inside a UTF-8 character */
        sodium_bin2base64(b64, sizeof(b64), (const unsigned char *)subject + i, chunk,
                          sodium_base64_VARIANT_ORIGINAL);
        w += (size_t)snprintf(out + w, len - w, " =?UTF-8?B?%s?=", b64);
        i += chunk;
    }
}

static void
smtp_message_free(void *ctx)
{
    struct smtp_message *m = ctx;

    if (m == NULL)
        return;
    curl_mime_free(m->mime);
    curl_slist_free_all(m->headers);
    curl_slist_free_all(m->rcpt);
    if (m->text)
        sodium_memzero(m->text, strlen(m->text));
    if (m->html)
        sodium_memzero(m->html, strlen(m->html));
    free(m->text);
    free(m->html);
    free(m);
}

static int
smtp_add_header(struct curl_slist **list, const char *line)
{
    struct curl_slist *l = curl_slist_append(*list, line);

    if (l == NULL)
        return -1;
    *list = l;
    return 0;
}

/* The message's headers; the Message-ID, on the sender's domain, goes to id. */
static int
smtp_headers(struct smtp_message *m, const struct config *cfg, const char *to, const char *subject,
             char *id, size_t idlen)
{
    char line[SMTP_SUBJECT_MAX * 2], from[256], date[64], rnd_hex[33];
    unsigned char rnd[16];
    const char *domain;
    time_t now = time(NULL);
    struct tm tm;

    smtp_from_address(cfg->default_from_email, from, sizeof(from));
    domain = strchr(from, '@') ? strchr(from, '@') + 1 : "localhost";
    randombytes_buf(rnd, sizeof(rnd));
    sodium_bin2hex(rnd_hex, sizeof(rnd_hex), rnd, sizeof(rnd));
    snprintf(id, idlen, "<%s.otpd@%s>", rnd_hex, domain);
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "Date: %a, %d %b %Y %H:%M:%S +0000", &tm);
    if (smtp_add_header(&m->headers, date) < 0)
        return -1;
    snprintf(line, sizeof(line), "From: %s", cfg->default_from_email);
    if (smtp_add_header(&m->headers, line) < 0)
        return -1;
    snprintf(line, sizeof(line), "To: <%s>", to);
    if (smtp_add_header(&m->headers, line) < 0)
        return -1;
    smtp_subject_header(subject, line, sizeof(line));
    if (smtp_add_header(&m->headers, line) < 0)
        return -1;
    snprintf(line, sizeof(line), "Message-ID: %s", id);
    if (smtp_add_header(&m->headers, line) < 0 ||
        smtp_add_header(&m->headers, "Auto-Submitted: auto-generated") < 0)
        return -1;
    return 0;
}

/* multipart/alternative: text, then HTML (the last part is the preferred one). */
static int
smtp_body(struct smtp_message *m, CURL *e)
{
    curl_mime *alt;
    curl_mimepart *part;
    struct curl_slist *inline_hdr = NULL;

    if ((m->mime = curl_mime_init(e)) == NULL || (alt = curl_mime_init(e)) == NULL)
        return -1;
    part = curl_mime_addpart(alt);
    if (part == NULL || curl_mime_data(part, m->text, CURL_ZERO_TERMINATED) != CURLE_OK ||
        curl_mime_type(part, "text/plain; charset=utf-8") != CURLE_OK ||
        curl_mime_encoder(part, "quoted-printable") != CURLE_OK)
        goto fail;
    part = curl_mime_addpart(alt);
    if (part == NULL || curl_mime_data(part, m->html, CURL_ZERO_TERMINATED) != CURLE_OK ||
        curl_mime_type(part, "text/html; charset=utf-8") != CURLE_OK ||
        curl_mime_encoder(part, "quoted-printable") != CURLE_OK)
        goto fail;
    part = curl_mime_addpart(m->mime);
    if (part == NULL || curl_mime_subparts(part, alt) != CURLE_OK)
        goto fail;
    alt = NULL; /* the part owns it now */
    if (curl_mime_type(part, "multipart/alternative") != CURLE_OK ||
        (inline_hdr = curl_slist_append(NULL, "Content-Disposition: inline")) == NULL ||
        curl_mime_headers(part, inline_hdr, 1) != CURLE_OK) {
        curl_slist_free_all(inline_hdr);
        return -1;
    }
    return 0;
fail:
    curl_mime_free(alt);
    return -1;
}

/* The three templates of the job's locale rendered for this code; -1 if one does not fit. */
static int
smtp_compose(struct smtp_message *m, const struct config *cfg, const struct send_request *req,
             char *subject, size_t sublen)
{
    const struct templates *t = cfg->templates;
    const char *loc = req->job->locale;

    if ((m->text = malloc(SMTP_BODY_MAX)) == NULL || (m->html = malloc(SMTP_BODY_MAX)) == NULL)
        return -1;
    if (otp_render_email(subject, sublen, templates_pick(t, loc, TEMPLATE_EMAIL_SUBJECT, NULL),
                         req->code, req->minutes) < 0 ||
        otp_render_email(m->text, SMTP_BODY_MAX, templates_pick(t, loc, TEMPLATE_EMAIL_TEXT, NULL),
                         req->code, req->minutes) < 0 ||
        otp_render_email(m->html, SMTP_BODY_MAX, templates_pick(t, loc, TEMPLATE_EMAIL_HTML, NULL),
                         req->code, req->minutes) < 0)
        return -1;
    return 0;
}

static long
smtp_timeout_ms(const struct config *cfg, const struct send_request *req)
{
    long left = (long)(req->deadline_ms - otpd_now_ms());
    long t = (long)cfg->email_timeout * 1000;

    return left < t ? (left > 100 ? left : 100) : t;
}

/* The transfer's options: server, TLS, AUTH, envelope, message. */
static int
smtp_setup(CURL *e, const struct config *cfg, struct smtp_message *m, const char *to, long timeout)
{
    char url[300], from[256], rcpt[JOB_TO_MAX + 3];
    int bad = 0;

    snprintf(url, sizeof(url), "%s://%s:%d", cfg->email_use_ssl ? "smtps" : "smtp", cfg->email_host,
             cfg->email_port);
    smtp_from_address(cfg->default_from_email, from, sizeof(from));
    snprintf(rcpt, sizeof(rcpt), "<%s>", to);
    if ((m->rcpt = curl_slist_append(NULL, rcpt)) == NULL)
        return -1;
    bad |= curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps") != CURLE_OK;
    /* STARTTLS is required, never optional; smtps is TLS from the start. */
    bad |= curl_easy_setopt(e, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
    if (cfg->ca_file && *cfg->ca_file)
        bad |= curl_easy_setopt(e, CURLOPT_CAINFO, cfg->ca_file) != CURLE_OK;
    if (*cfg->email_host_user) {
        bad |= curl_easy_setopt(e, CURLOPT_USERNAME, cfg->email_host_user) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_PASSWORD, cfg->email_host_password) != CURLE_OK;
    }
    bad |= curl_easy_setopt(e, CURLOPT_MAIL_FROM, from) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_MAIL_RCPT, m->rcpt) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, m->headers) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_MIMEPOST, m->mime) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->http_connect_timeout_ms) !=
           CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout) != CURLE_OK;
    return bad ? -1 : 0;
}

/*
 * The server's answer in otpd's words.  Pure: code is the last SMTP reply
 * code (0 if none), rc curl's result.
 */
void
smtp_classify(int curl_result, long code, int request_sent, int os_errno, struct send_result *res)
{
    CURLcode rc = (CURLcode)curl_result;

    if (rc == CURLE_OK) {
        res->outcome = SEND_OK;
        snprintf(res->provider_status, sizeof(res->provider_status), "accepted");
        return;
    }
    if (code)
        snprintf(res->error_code, sizeof(res->error_code), "smtp_%ld", code);
    else
        snprintf(res->error_code, sizeof(res->error_code), "curl_%d", (int)rc);
    if (rc == CURLE_LOGIN_DENIED || code == 535 || code == 534 || code == 530) {
        res->outcome = SEND_FAIL_PROVIDER;
        snprintf(res->error, sizeof(res->error),
                 "the mail server refused the login (%ld): check EMAIL_HOST_USER and "
                 "EMAIL_HOST_PASSWORD",
                 code ? code : 535);
    } else if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE) {
        res->outcome = SEND_FAIL_PROVIDER;
        snprintf(res->error, sizeof(res->error),
                 "the mail server's TLS certificate is not trusted (check EMAIL_HOST, and "
                 "OTPD_CA_FILE for a private CA); nothing was sent");
    } else if (rc == CURLE_USE_SSL_FAILED) {
        res->outcome = SEND_FAIL_PROVIDER;
        snprintf(res->error, sizeof(res->error),
                 "the mail server does not offer STARTTLS: use EMAIL_USE_SSL with its TLS port, "
                 "or a server that supports TLS");
    } else if (code >= 500 && code < 600) {
        res->outcome = SEND_FAIL_JOB;
        snprintf(res->error, sizeof(res->error), "the mail server refused the message (%ld): %s",
                 code,
                 code == 550 || code == 551 || code == 553
                     ? "the address does not exist or is not accepted; check it"
                     : "permanent failure for this message");
    } else if (code >= 400 && code < 500) {
        res->outcome = SEND_RETRY;
        snprintf(res->error, sizeof(res->error),
                 "the mail server deferred the message (%ld, e.g. greylisting); retrying", code);
    } else {
        res->outcome = http_classify_transport(rc, request_sent, os_errno);
        snprintf(res->error, sizeof(res->error), "SMTP: %s", curl_easy_strerror(rc));
    }
}

static void
smtp_done(void *arg, const struct http_response *r)
{
    struct provider_call *c = arg;
    struct send_result res;

    c->http = NULL;
    memset(&res, 0, sizeof(res));
    smtp_classify(r->result, r->status, r->request_sent, r->os_errno, &res);
    if (res.outcome == SEND_OK)
        snprintf(res.ref, sizeof(res.ref), "%.70s", c->message_id);
    c->cb(c->arg, &res);
    free(c);
}

static struct provider_call *
smtp_send(struct provider *p, const struct send_request *req, provider_done_cb *cb, void *arg)
{
    struct smtp *s = (struct smtp *)p;
    struct provider_call *c = calloc(1, sizeof(*c));
    struct smtp_message *m = calloc(1, sizeof(*m));
    char subject[SMTP_SUBJECT_MAX];
    CURL *e = curl_easy_init();

    if (c == NULL || m == NULL || e == NULL ||
        smtp_compose(m, s->cfg, req, subject, sizeof(subject)) < 0 ||
        smtp_headers(m, s->cfg, req->job->to, subject, c->message_id, sizeof(c->message_id)) < 0 ||
        smtp_body(m, e) < 0 ||
        smtp_setup(e, s->cfg, m, req->job->to, smtp_timeout_ms(s->cfg, req)) < 0)
        goto fail;
    c->s = s;
    c->cb = cb;
    c->arg = arg;
    if ((c->http = http_start_prepared(s->http, e, smtp_message_free, m, smtp_done, c)) == NULL)
        goto fail;
    sodium_memzero(subject, sizeof(subject));
    return c;
fail:
    sodium_memzero(subject, sizeof(subject));
    smtp_message_free(m);
    curl_easy_cleanup(e);
    free(c);
    return NULL;
}

static void
smtp_cancel(struct provider *p, struct provider_call *c)
{
    struct smtp *s = (struct smtp *)p;

    if (c->http)
        http_cancel(s->http, c->http);
    free(c);
}

static struct provider *
smtp_open(uv_loop_t *loop, const struct config *cfg, char *err, size_t errlen)
{
    struct smtp *s = calloc(1, sizeof(*s));

    if (s == NULL || (s->http = http_new(loop, cfg, "smtp", cfg->email_max_inflight)) == NULL) {
        free(s);
        snprintf(err, errlen, "smtp: out of memory");
        return NULL;
    }
    s->base.ops = &provider_smtp_ops;
    s->cfg = cfg;
    return &s->base;
}

static void
smtp_http_closed(void *arg)
{
    struct smtp *s = arg;

    if (s->closed_cb)
        s->closed_cb(s->closed_arg);
    free(s);
}

static void
smtp_close(struct provider *p, provider_closed_cb *cb, void *arg)
{
    struct smtp *s = (struct smtp *)p;

    s->closed_cb = cb;
    s->closed_arg = arg;
    http_close(s->http, smtp_http_closed, s);
}

static void
smtp_reload(struct provider *p)
{
    struct smtp *s = (struct smtp *)p;

    http_set_request_cap(s->http, s->cfg->email_max_inflight);
}

const struct provider_ops provider_smtp_ops = {
    .name = "smtp",
    .channel = JOB_CHANNEL_EMAIL,
    .configured = smtp_configured,
    .caps = smtp_caps,
    .open = smtp_open,
    .send = smtp_send,
    .cancel = smtp_cancel,
    .close = smtp_close,
    .reload = smtp_reload,
};
