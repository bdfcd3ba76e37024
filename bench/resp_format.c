/*
 * resp_format.c: does rconn's hand-written RESP formatter earn its keep?
 *
 * Times rconn_format_command() against hiredis 0.14's two formatters on
 * the commands otpd really sends, both given the very same vectors (the
 * EVALSHA change is held fixed: nobody formats a script's text here):
 *
 *   - an EVALSHA of 15 short arguments, the shape of store.c's scripts
 *     (sha, key count, keys like otpd:job:login-8fcb4246f3f2c269, numbers);
 *   - an XADD of 14 arguments carrying a 200-byte job payload, the shape of
 *     queue.c's dead letters.
 *
 * redisFormatCommandArgv() mallocs the exact size and sprintf()s each
 * length; redisFormatSdsCommandArgv() is what redisAsyncCommandArgv(), the
 * call rconn would make without its own formatter, uses (sdscatfmt per
 * argument).  Each call here includes the free() its caller would do; the
 * hand-written one reuses one buffer, as rconn does.  The two shapes count
 * half each.  Times are the best of several rounds; on a shared machine
 * only their ratio means much, so --callgrind also counts instructions
 * per command under valgrind, which are stable.
 *
 * One line on stdout, for bench/bench.py:
 *   resp: hand-written 61 ns/cmd, redisFormatCommandArgv 297 ns/cmd, ratio 0.21, ...
 *
 *   build/bench_resp_format [--callgrind] [--iters N]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <hiredis/sds.h>

#include "rconn.h"

#define NVEC      64 /* distinct job ids, so no run formats one vector over and over */
#define EVAL_ARGS 15
#define XADD_ARGS 14
#define ROUNDS    7

enum fmt { FMT_HAND, FMT_ARGV, FMT_SDS, NFMT };
static const char *const fmt_name[NFMT] = {"hand", "argv", "sds"};

struct vec {
    const char *argv[EVAL_ARGS];
    size_t argvlen[EVAL_ARGS];
    int argc;
};

static struct vec evalsha[NVEC], xadd[NVEC];
static char strings[NVEC][8][64];
static char payload[NVEC][256];
static char *hand_buf;
static size_t hand_cap;
static volatile size_t sink; /* keeps the output alive for the optimizer */

static void
set_lens(struct vec *v)
{
    for (int i = 0; i < v->argc; i++)
        v->argvlen[i] = strlen(v->argv[i]);
}

/* What store.c and queue.c send, with a different job in each vector. */
static void
build_vectors(void)
{
    static const char *sha = "8fcb4246f3f2c2691b1ad54e0c6a0d2b3e7f4a91";

    for (int n = 0; n < NVEC; n++) {
        char(*s)[64] = strings[n];
        struct vec *e = &evalsha[n], *x = &xadd[n];
        unsigned id = 0x8fcb4246u + (unsigned)n * 7919u;

        snprintf(s[0], 64, "otpd:job:login-%08x%08x", id, id ^ 0xf3f2c269u);
        snprintf(s[1], 64, "otpd:otp:login:+1415555%04d", 1000 + n);
        snprintf(s[2], 64, "login-%08x%08x", id, id ^ 0xf3f2c269u);
        snprintf(s[3], 64, "%lld", 1764500000000LL + 37LL * n);
        snprintf(s[4], 64, "1764500%06d-%d", n * 13, n % 3);
        snprintf(s[5], 64, "+1415555%04d", 1000 + n);
        snprintf(s[6], 64, "%d", 100 + n);
        e->argc = 0;
        e->argv[e->argc++] = "EVALSHA";
        e->argv[e->argc++] = sha;
        e->argv[e->argc++] = "3";
        e->argv[e->argc++] = s[0];
        e->argv[e->argc++] = s[1];
        e->argv[e->argc++] = "otpd:events";
        e->argv[e->argc++] = "otpd:";
        e->argv[e->argc++] = "sent";
        e->argv[e->argc++] = s[2];
        e->argv[e->argc++] = s[3];
        e->argv[e->argc++] = "300";
        e->argv[e->argc++] = "5";
        e->argv[e->argc++] = s[5];
        e->argv[e->argc++] = "twilio";
        e->argv[e->argc++] = "100000";
        set_lens(e);

        snprintf(payload[n], sizeof(payload[n]),
                 "{\"id\":\"%s\",\"to\":\"%s\",\"purpose\":\"login\",\"locale\":\"en\","
                 "\"created_ms\":%s,\"channel\":\"sms\",\"template\":\"Your code is {code}\","
                 "\"ttl\":300,\"attempts\":5,\"meta\":{\"ip\":\"203.0.113.7\"}}",
                 s[2], s[5], s[3]);
        x->argc = 0;
        x->argv[x->argc++] = "XADD";
        x->argv[x->argc++] = "otpd:dead";
        x->argv[x->argc++] = "MAXLEN";
        x->argv[x->argc++] = "~";
        x->argv[x->argc++] = "10000";
        x->argv[x->argc++] = "*";
        x->argv[x->argc++] = "job";
        x->argv[x->argc++] = payload[n];
        x->argv[x->argc++] = "reason";
        x->argv[x->argc++] = "missing field: to";
        x->argv[x->argc++] = "stream_id";
        x->argv[x->argc++] = s[4];
        x->argv[x->argc++] = "at_ms";
        x->argv[x->argc++] = s[3];
        set_lens(x);
    }
}

/* One command, formatted as each candidate's caller would, then let go. */
static inline size_t
format_one(enum fmt f, struct vec *v)
{
    char *cmd;
    sds s;
    size_t len = 0;
    int n;

    switch (f) {
    case FMT_HAND:
        if (rconn_format_command(&hand_buf, &hand_cap, &len, v->argc, v->argv, v->argvlen) < 0)
            abort();
        return len + (unsigned char)hand_buf[len - 3];
    case FMT_ARGV:
        if ((n = redisFormatCommandArgv(&cmd, v->argc, v->argv, v->argvlen)) < 0)
            abort();
        len = (size_t)n + (unsigned char)cmd[n - 3];
        free(cmd);
        return len;
    default:
        if ((n = redisFormatSdsCommandArgv(&s, v->argc, v->argv, v->argvlen)) < 0)
            abort();
        len = (size_t)n + (unsigned char)s[n - 3];
        sdsfree(s);
        return len;
    }
}

/*
 * One function per formatter, never inlined, so that callgrind can count
 * exactly what runs inside it (--toggle-collect=run_hand and so on).
 */
static __attribute__((noinline)) size_t
run_hand(struct vec *set, long iters)
{
    size_t acc = 0;

    for (long i = 0; i < iters; i++)
        acc += format_one(FMT_HAND, &set[i % NVEC]);
    return acc;
}

static __attribute__((noinline)) size_t
run_argv(struct vec *set, long iters)
{
    size_t acc = 0;

    for (long i = 0; i < iters; i++)
        acc += format_one(FMT_ARGV, &set[i % NVEC]);
    return acc;
}

static __attribute__((noinline)) size_t
run_sds(struct vec *set, long iters)
{
    size_t acc = 0;

    for (long i = 0; i < iters; i++)
        acc += format_one(FMT_SDS, &set[i % NVEC]);
    return acc;
}

static size_t
run(enum fmt f, struct vec *set, long iters)
{
    switch (f) {
    case FMT_HAND:
        return run_hand(set, iters);
    case FMT_ARGV:
        return run_argv(set, iters);
    default:
        return run_sds(set, iters);
    }
}

static double
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Best of ROUNDS, the formatters taking turns so that drift hits all alike. */
static void
time_all(long iters, double ns[NFMT][2])
{
    struct vec *sets[2] = {evalsha, xadd};

    for (int f = 0; f < NFMT; f++)
        for (int k = 0; k < 2; k++)
            ns[f][k] = 1e30;
    for (int r = 0; r < ROUNDS; r++) {
        for (int k = 0; k < 2; k++) {
            for (int f = 0; f < NFMT; f++) {
                double t0 = now_ns(), t;
                sink += run((enum fmt)f, sets[k], iters);
                t = (now_ns() - t0) / (double)iters;
                if (t < ns[f][k])
                    ns[f][k] = t;
            }
        }
    }
}

/*
 * Instructions per command of one formatter: this program again under
 * callgrind, collecting only inside run_<name>.  -1 if valgrind fails.
 */
static double
callgrind_count(enum fmt f, long iters)
{
    char out[64], toggle[64], iterstr[32], line[256], self[4096];
    double ir = -1;
    ssize_t n;
    pid_t pid;
    int status;
    FILE *fp;

    /* valgrind must be given this binary's path: its own /proc/self is valgrind. */
    if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) <= 0)
        return -1;
    self[n] = '\0';
    snprintf(out, sizeof(out), "/tmp/bench_resp_format.%ld.cg", (long)getpid());
    snprintf(toggle, sizeof(toggle), "--toggle-collect=run_%s", fmt_name[f]);
    snprintf(iterstr, sizeof(iterstr), "%ld", iters);
    fflush(stdout); /* or the child's freopen() prints our half line again */
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        char outarg[96];
        snprintf(outarg, sizeof(outarg), "--callgrind-out-file=%s", out);
        if (freopen("/dev/null", "w", stdout) == NULL || freopen("/dev/null", "w", stderr) == NULL)
            _exit(126);
        execlp("valgrind", "valgrind", "--tool=callgrind", outarg, toggle, self, "--only",
               fmt_name[f], "--iters", iterstr, (char *)NULL);
        _exit(127);
    }
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        goto out;
    if ((fp = fopen(out, "r")) == NULL)
        goto out;
    while (fgets(line, sizeof(line), fp) != NULL)
        if (strncmp(line, "totals:", 7) == 0 || (ir < 0 && strncmp(line, "summary:", 8) == 0))
            ir = strtod(line + (line[0] == 't' ? 7 : 8), NULL);
    fclose(fp);
    /* Both shapes ran iters times each. */
    if (ir >= 0)
        ir /= 2.0 * (double)iters;
out:
    unlink(out);
    return ir;
}

static int
usage(void)
{
    fprintf(stderr, "usage: bench_resp_format [--callgrind] [--iters N]\n");
    return 2;
}

int
main(int argc, char **argv)
{
    double ns[NFMT][2], mix[NFMT], ir[NFMT];
    long iters = 20000;
    int callgrind = 0, only = -1;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--callgrind") == 0)
            callgrind = 1;
        else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
            iters = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            const char *name = argv[++i];
            for (int f = 0; f < NFMT; f++)
                if (strcmp(name, fmt_name[f]) == 0)
                    only = f;
            if (only < 0)
                return usage();
        } else
            return usage();
    }
    if (iters <= 0)
        return usage();
    build_vectors();

    /* Under callgrind: one formatter, each shape once, nothing printed. */
    if (only >= 0) {
        sink += run((enum fmt)only, evalsha, iters);
        sink += run((enum fmt)only, xadd, iters);
        free(hand_buf);
        return 0;
    }

    time_all(iters, ns);
    for (int f = 0; f < NFMT; f++)
        mix[f] = (ns[f][0] + ns[f][1]) / 2;
    printf("resp: hand-written %.0f ns/cmd, redisFormatCommandArgv %.0f ns/cmd, ratio %.2f; "
           "redisFormatSdsCommandArgv %.0f ns/cmd, ratio %.2f; "
           "evalsha15 %.0f/%.0f/%.0f ns, xadd200 %.0f/%.0f/%.0f ns",
           mix[FMT_HAND], mix[FMT_ARGV], mix[FMT_HAND] / mix[FMT_ARGV], mix[FMT_SDS],
           mix[FMT_HAND] / mix[FMT_SDS], ns[FMT_HAND][0], ns[FMT_ARGV][0], ns[FMT_SDS][0],
           ns[FMT_HAND][1], ns[FMT_ARGV][1], ns[FMT_SDS][1]);
    if (callgrind) {
        long cg_iters = iters < 5000 ? iters : 5000;
        for (int f = 0; f < NFMT; f++)
            ir[f] = callgrind_count((enum fmt)f, cg_iters);
        if (ir[FMT_HAND] > 0 && ir[FMT_ARGV] > 0 && ir[FMT_SDS] > 0)
            printf("; instr hand-written %.0f/cmd, redisFormatCommandArgv %.0f/cmd, ratio %.2f, "
                   "redisFormatSdsCommandArgv %.0f/cmd, ratio %.2f",
                   ir[FMT_HAND], ir[FMT_ARGV], ir[FMT_HAND] / ir[FMT_ARGV], ir[FMT_SDS],
                   ir[FMT_HAND] / ir[FMT_SDS]);
        else
            printf("; instr unavailable (valgrind --tool=callgrind failed or is not installed)");
    }
    printf("\n");
    free(hand_buf);
    return 0;
}
