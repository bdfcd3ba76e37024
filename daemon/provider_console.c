/*
 * provider_console.c: the development providers.  They "deliver" by
 * printing the SMS, or the e-mail's subject and text (console_email, the
 * e-mail channel without EMAIL_HOST), to standard output, clearly marked,
 * and never to the log (the log must never hold a code).  Completion is deferred to the next loop
 * turn so callers see the same asynchronous contract as a real provider.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "otp.h"
#include "provider.h"
#include "provider_impl.h"
#include "templates.h"

struct provider_call {
    struct provider_call *next;
    provider_done_cb *cb;
    void *arg;
    struct send_result res;
};

struct console {
    struct provider base;
    const struct config *cfg;
    uv_timer_t flush;
    struct provider_call *head, **tail;
    provider_closed_cb *closed_cb;
    void *closed_arg;
};

static void
console_flush(uv_timer_t *t)
{
    struct console *c = t->data;
    struct provider_call *call;

    /* Detach the list first: a done callback may send again. */
    call = c->head;
    c->head = NULL;
    c->tail = &c->head;
    while (call != NULL) {
        struct provider_call *next = call->next;
        call->cb(call->arg, &call->res);
        free(call);
        call = next;
    }
}

static struct provider *
console_open(uv_loop_t *loop, const struct config *cfg, char *err, size_t errlen)
{
    struct console *c = calloc(1, sizeof(*c));

    if (c == NULL) {
        snprintf(err, errlen, "console: out of memory");
        return NULL;
    }
    c->base.ops = &provider_console_ops;
    c->cfg = cfg;
    c->tail = &c->head;
    uv_timer_init(loop, &c->flush);
    c->flush.data = c;
    return &c->base;
}

/*
 * The e-mail as SMTP would carry it, in the job's language: subject, then
 * the text part (the HTML is not printed).
 */
static void
console_print_email(const struct config *cfg, const struct send_request *req, const char *ref)
{
    const char *loc = req->job->locale;
    char subject[1024] = "", text[16384];

    if (otp_render_email(subject, sizeof(subject),
                         templates_pick(cfg->templates, loc, TEMPLATE_EMAIL_SUBJECT, NULL),
                         req->code, req->minutes) < 0 ||
        otp_render_email(text, sizeof(text),
                         templates_pick(cfg->templates, loc, TEMPLATE_EMAIL_TEXT, NULL), req->code,
                         req->minutes) < 0)
        snprintf(text, sizeof(text), "(the e-mail templates do not fit)");
    printf("----- otpd console e-mail (development only: no e-mail was sent) -----\n"
           "To: %s\nRef: %s\nFrom: %s\nSubject: %s\n\n%s\n"
           "----------------------------------------------------------------------\n",
           req->job->to, ref, cfg->default_from_email, subject, text);
    sodium_memzero(text, sizeof(text));
    sodium_memzero(subject, sizeof(subject));
}

static struct provider_call *
console_send(struct provider *p, const struct send_request *req, provider_done_cb *cb, void *arg)
{
    struct console *c = (struct console *)p;
    struct provider_call *call = calloc(1, sizeof(*call));
    unsigned char rnd[16];

    if (call == NULL)
        return NULL;
    call->cb = cb;
    call->arg = arg;
    call->res.outcome = SEND_OK;
    randombytes_buf(rnd, sizeof(rnd));
    char hex[2 * sizeof(rnd) + 1];
    sodium_bin2hex(hex, sizeof(hex), rnd, sizeof(rnd));
    snprintf(call->res.ref, sizeof(call->res.ref), "CON%s", hex);
    strcpy(call->res.provider_status, "printed");
    if (p->ops->channel == JOB_CHANNEL_VOICE)
        printf("----- otpd console call (development only: no call was placed) -----\n"
               "To: %s\nRef: %s\nSays: %s\n"
               "----------------------------------------------------------------------\n",
               req->job->to, call->res.ref, req->body);
    else if (p->ops->channel == JOB_CHANNEL_EMAIL)
        console_print_email(c->cfg, req, call->res.ref);
    else
        printf("----- otpd console delivery (development only: no SMS was sent) -----\n"
               "To: %s\nRef: %s\n%s\n"
               "----------------------------------------------------------------------\n",
               req->job->to, call->res.ref, req->body);
    fflush(stdout);
    *c->tail = call;
    c->tail = &call->next;
    uv_timer_start(&c->flush, console_flush, 0, 0);
    return call;
}

static void
console_cancel(struct provider *p, struct provider_call *call)
{
    struct console *c = (struct console *)p;
    struct provider_call **pp;

    for (pp = &c->head; *pp; pp = &(*pp)->next) {
        if (*pp == call) {
            *pp = call->next;
            if (c->tail == &call->next)
                c->tail = pp;
            free(call);
            return;
        }
    }
}

static void
console_closed(uv_handle_t *h)
{
    struct console *c = h->data;

    if (c->closed_cb)
        c->closed_cb(c->closed_arg);
    free(c);
}

static void
console_close(struct provider *p, provider_closed_cb *cb, void *arg)
{
    struct console *c = (struct console *)p;

    while (c->head) {
        struct provider_call *call = c->head;
        c->head = call->next;
        free(call);
    }
    c->closed_cb = cb;
    c->closed_arg = arg;
    uv_close((uv_handle_t *)&c->flush, console_closed);
}

const struct provider_ops provider_console_ops = {
    .name = "console",
    .open = console_open,
    .send = console_send,
    .cancel = console_cancel,
    .close = console_close,
};

/* Without EMAIL_HOST, e-mail jobs are printed: ./dev run shows both channels. */
static int
console_email_configured(const struct config *cfg)
{
    return *cfg->email_host == '\0';
}

static struct provider *
console_email_open(uv_loop_t *loop, const struct config *cfg, char *err, size_t errlen)
{
    struct provider *p = console_open(loop, cfg, err, errlen);

    if (p != NULL)
        p->ops = &provider_console_email_ops;
    return p;
}

const struct provider_ops provider_console_email_ops = {
    .name = "console_email",
    .channel = JOB_CHANNEL_EMAIL,
    .configured = console_email_configured,
    .open = console_email_open,
    .send = console_send,
    .cancel = console_cancel,
    .close = console_close,
};

/* Without Twilio, voice jobs are printed: what the call would say. */
static int
console_voice_configured(const struct config *cfg)
{
    return !config_twilio_voice_configured(cfg);
}

static struct provider *
console_voice_open(uv_loop_t *loop, const struct config *cfg, char *err, size_t errlen)
{
    struct provider *p = console_open(loop, cfg, err, errlen);

    if (p != NULL)
        p->ops = &provider_console_voice_ops;
    return p;
}

const struct provider_ops provider_console_voice_ops = {
    .name = "console_voice",
    .channel = JOB_CHANNEL_VOICE,
    .configured = console_voice_configured,
    .open = console_voice_open,
    .send = console_send,
    .cancel = console_cancel,
    .close = console_close,
};
