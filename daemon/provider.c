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
#include "gate.h"
#include "http.h"
#include "provider.h"

/* Rate and concurrency caps from the configuration (0: unlimited). */
static void
provider_configure_gate(struct provider *p, const struct config *cfg)
{
    if (strcmp(p->ops->name, "twilio") == 0)
        gate_configure(p->gate, cfg->twilio_rate, cfg->twilio_max_inflight);
    else if (strcmp(p->ops->name, "msg91") == 0)
        gate_configure(p->gate, cfg->msg91_rate, cfg->msg91_max_inflight);
}

/* Descriptors the providers' connections may take, for the start-up fd budget. */
int
provider_conns_needed(const struct config *cfg)
{
    int tw = http_conns_cap(cfg, cfg->twilio_max_inflight);
    int m = http_conns_cap(cfg, cfg->msg91_max_inflight);

    /* No cap: at most one connection per job in flight. */
    return (tw > 0 ? tw : cfg->max_inflight) + (m > 0 ? m : cfg->max_inflight);
}

static const struct provider_ops *const provider_registry[] = {
    &provider_twilio_ops,
    &provider_msg91_ops,
    &provider_console_ops,
};

#define PROVIDER_NREG (sizeof(provider_registry) / sizeof(provider_registry[0]))

struct provider_set {
    struct provider *open[PROVIDER_NREG];
    struct provider *deflt;
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
    case SEND_LOCAL:
        return "local";
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
    if (strcmp(ops->name, cfg->provider_default) == 0)
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
        if ((set->open[i]->gate = gate_new(loop, 0, 0)) == NULL) {
            snprintf(err, errlen, "out of memory");
            provider_set_close(set, NULL, NULL);
            return NULL;
        }
        provider_configure_gate(set->open[i], cfg);
        if (strcmp(ops->name, cfg->provider_default) == 0)
            set->deflt = set->open[i];
        log_info("provider %s: enabled%s", ops->name,
                 set->deflt == set->open[i] ? " (default)" : "");
    }
    if (set->deflt == NULL) {
        snprintf(err, errlen, "OTPD_PROVIDER: provider \"%s\" is not built in",
                 cfg->provider_default);
        provider_set_close(set, NULL, NULL);
        return NULL;
    }
    return set;
}

static struct provider *
provider_set_find(struct provider_set *set, const char *name)
{
    for (size_t i = 0; i < PROVIDER_NREG; i++)
        if (set->open[i] && strcmp(set->open[i]->ops->name, name) == 0)
            return set->open[i];
    return NULL;
}

static int
route_add(struct provider **out, int n, struct provider *p)
{
    for (int i = 0; i < n; i++)
        if (out[i] == p)
            return n;
    if (n < ROUTE_PROVIDERS_MAX)
        out[n++] = p;
    return n;
}

int
provider_set_route(struct provider_set *set, const struct config *cfg, const struct job *job,
                   struct provider **out, char *err, size_t errlen)
{
    const struct route *r;
    int n = 0;

    if (job->provider[0] != '\0') {
        if ((out[0] = provider_set_find(set, job->provider)) == NULL) {
            snprintf(err, errlen, "provider %s is not configured on this daemon", job->provider);
            return 0;
        }
        return 1;
    }
    if ((r = route_lookup(&cfg->routes, job->to)) != NULL)
        for (int i = 0; i < r->n; i++) {
            struct provider *p = provider_set_find(set, r->providers[i]);
            if (p != NULL)
                n = route_add(out, n, p);
        }
    if (n > 0)
        return n;
    /* Console never stands in for a real provider. */
    n = route_add(out, n, set->deflt);
    for (size_t i = 0; i < PROVIDER_NREG; i++)
        if (set->open[i] && strcmp(set->open[i]->ops->name, "console") != 0)
            n = route_add(out, n, set->open[i]);
    return n;
}

static void
provider_set_one_closed(void *arg)
{
    struct provider_set *set = arg;

    for (size_t i = 0; i < PROVIDER_NREG; i++) {
        struct provider *p = set->open[i];
        if (p == NULL)
            continue;
        if (p->gate != NULL) {
            struct gate *g = p->gate;
            p->gate = NULL;
            gate_close(g, provider_set_one_closed, set);
            return;
        }
        set->open[i] = NULL;
        p->ops->close(p, provider_set_one_closed, set);
        return;
    }
    if (set->closed_cb)
        set->closed_cb(set->closed_arg);
    free(set);
}

/* Providers close one after another; the set goes when the last is done. */
void
provider_set_close(struct provider_set *set, provider_closed_cb *cb, void *arg)
{
    set->closed_cb = cb;
    set->closed_arg = arg;
    provider_set_one_closed(set);
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

int
provider_set_caps(struct provider_set *set, const char **names, int *caps, int max)
{
    int n = 0;

    for (size_t i = 0; i < PROVIDER_NREG && n < max; i++) {
        if (set->open[i] == NULL || set->open[i]->gate == NULL)
            continue;
        names[n] = set->open[i]->ops->name;
        caps[n++] = gate_limit(set->open[i]->gate);
    }
    return n;
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
        provider_configure_gate(p, cfg);
        /* New credentials deserve a try now, not at the next recheck. */
        p->recheck_at = 0;
    }
}
