/*
 * provider.c: the provider registry.  It opens the providers a
 * configuration enables and picks one per job; routing tables and
 * failover build on provider_set_pick().
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "provider.h"

static const struct provider_ops *const provider_registry[] = {
    &provider_twilio_ops,
    &provider_msg91_ops,
    &provider_console_ops,
};

#define PROVIDER_NREG (sizeof(provider_registry) / sizeof(provider_registry[0]))

struct provider_set {
    struct provider *open[PROVIDER_NREG];
    struct provider *deflt;
    int closing;
    provider_closed_cb *closed_cb;
    void *closed_arg;
};

const char *
provider_outcome_name(enum send_outcome o)
{
    switch (o) {
    case SEND_OK:
        return "ok";
    case SEND_FAIL_JOB:
        return "failed";
    case SEND_FAIL_PROVIDER:
        return "provider_failed";
    case SEND_RETRY:
        return "retry";
    case SEND_AMBIGUOUS:
        return "ambiguous";
    }
    return "unknown";
}

const char *
provider_name(const struct provider *p)
{
    return p->ops->name;
}

/* Console is for development: only the explicit default enables it. */
static int
provider_enabled(const struct provider_ops *ops, const struct config *cfg)
{
    if (strcmp(ops->name, cfg->provider) == 0)
        return 1;
    if (strcmp(ops->name, "twilio") == 0)
        return *cfg->twilio_account_sid && *cfg->twilio_auth_token;
    if (strcmp(ops->name, "msg91") == 0)
        return *cfg->msg91_auth_key && *cfg->msg91_template_id;
    return 0;
}

struct provider_set *
provider_set_open(uv_loop_t *loop, const struct config *cfg, char *err, size_t errlen)
{
    struct provider_set *set = calloc(1, sizeof(*set));

    if (set == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < PROVIDER_NREG; i++) {
        const struct provider_ops *ops = provider_registry[i];
        if (!provider_enabled(ops, cfg))
            continue;
        if ((set->open[i] = ops->open(loop, cfg, err, errlen)) == NULL) {
            provider_set_close(set, NULL, NULL);
            return NULL;
        }
        if (strcmp(ops->name, cfg->provider) == 0)
            set->deflt = set->open[i];
        log_info("provider %s: enabled%s", ops->name,
                 set->deflt == set->open[i] ? " (default)" : "");
    }
    if (set->deflt == NULL) {
        snprintf(err, errlen, "OTPD_PROVIDER: provider \"%s\" is not built in", cfg->provider);
        provider_set_close(set, NULL, NULL);
        return NULL;
    }
    return set;
}

struct provider *
provider_set_pick(struct provider_set *set, const struct job *job, char *err, size_t errlen)
{
    if (job->provider[0] == '\0')
        return set->deflt;
    for (size_t i = 0; i < PROVIDER_NREG; i++)
        if (set->open[i] && strcmp(set->open[i]->ops->name, job->provider) == 0)
            return set->open[i];
    snprintf(err, errlen, "provider %s is not configured on this daemon", job->provider);
    return NULL;
}

static void
provider_set_one_closed(void *arg)
{
    struct provider_set *set = arg;

    for (size_t i = 0; i < PROVIDER_NREG; i++) {
        if (set->open[i] != NULL) {
            struct provider *p = set->open[i];
            set->open[i] = NULL;
            p->ops->close(p, provider_set_one_closed, set);
            return;
        }
    }
    if (set->closed_cb)
        set->closed_cb(set->closed_arg);
    free(set);
}

/* Providers close one after another; the set goes when the last is done. */
void
provider_set_close(struct provider_set *set, provider_closed_cb *cb, void *arg)
{
    set->closing = 1;
    set->closed_cb = cb;
    set->closed_arg = arg;
    provider_set_one_closed(set);
}

static int
provider_usable(const struct provider *p, uint64_t now)
{
    return !p->down || now >= p->recheck_at;
}

struct provider *
provider_set_alternative(struct provider_set *set, const struct job *job,
                         const struct provider *current, uint64_t now)
{
    /* A pinned job stays with its provider; console never stands in for a real one. */
    if (job->provider[0] != '\0')
        return NULL;
    for (size_t i = 0; i < PROVIDER_NREG; i++) {
        struct provider *p = set->open[i];
        if (p && p != current && provider_usable(p, now) &&
            (strcmp(p->ops->name, "console") != 0 || p == set->deflt))
            return p;
    }
    return NULL;
}

void
provider_set_describe(struct provider_set *set, uint64_t now, char *buf, size_t len)
{
    size_t off = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < PROVIDER_NREG && off < len; i++) {
        const struct provider *p = set->open[i];
        if (p == NULL)
            continue;
        off += (size_t)snprintf(buf + off, len - off, "%s%s=%s", off ? "," : "", p->ops->name,
                                !p->down               ? "up"
                                : now >= p->recheck_at ? "probing"
                                                       : "down");
    }
}

void
provider_set_reload(struct provider_set *set, const struct config *cfg)
{
    for (size_t i = 0; i < PROVIDER_NREG; i++) {
        struct provider *p = set->open[i];
        if (p == NULL) {
            if (provider_enabled(provider_registry[i], cfg))
                log_warnx("reload: provider %s is now configured; it starts at the next "
                          "restart",
                          provider_registry[i]->name);
            continue;
        }
        if (p->ops->reload)
            p->ops->reload(p);
        /* New credentials deserve a try now, not at the next recheck. */
        p->recheck_at = 0;
    }
}
