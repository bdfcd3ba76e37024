/*
 * redis_server.c: the private redis-server of the unit tests (see
 * redis_server.h).
 */
#include <setjmp.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "redis_server.h"

static const char *redis_bin;
static char tmpdir[64];

static const char *
find_redis_server(void)
{
    static char path[PATH_MAX];
    const char *env = getenv("PATH");
    const char *p = env ? env : "/usr/bin:/bin";

    while (*p) {
        size_t n = strcspn(p, ":");
        snprintf(path, sizeof(path), "%.*s/redis-server", (int)n, p);
        if (access(path, X_OK) == 0)
            return path;
        p += n;
        if (*p == ':')
            p++;
    }
    return NULL;
}

const char *
test_redis_setup(const char *name)
{
    const char *tmp = getenv("TMPDIR");

    /* Short: a unix socket's path must fit in sun_path. */
    if (tmp == NULL || tmp[0] == '\0' || strlen(tmp) > 32)
        tmp = "/tmp";
    snprintf(tmpdir, sizeof(tmpdir), "%s/otpd-%s.XXXXXX", tmp, name);
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
    redis_bin = find_redis_server();
    return redis_bin;
}

void
test_redis_cleanup(void)
{
    char path[128];

    if (tmpdir[0] == '\0')
        return;
    snprintf(path, sizeof(path), "%s/redis.log", tmpdir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/redis.sock", tmpdir);
    unlink(path);
    rmdir(tmpdir);
}

void
test_redis_init(struct test_redis *r, int port)
{
    memset(r, 0, sizeof(*r));
    r->port = port;
    snprintf(r->sock, sizeof(r->sock), "%s/redis.sock", tmpdir);
}

int
test_free_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

void
test_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Any answer to PING (even NOAUTH) means the server is serving. */
static int
test_redis_ready(const struct test_redis *r)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectUnixWithTimeout(r->sock, tv);
    redisReply *reply = NULL;

    if (c != NULL && c->err == 0)
        reply = redisCommand(c, "PING");
    if (reply != NULL)
        freeReplyObject(reply);
    if (c != NULL)
        redisFree(c);
    return reply != NULL;
}

void
test_redis_start(struct test_redis *r)
{
    char port[16], logfile[128];
    const char *argv[40];
    int argc = 0;

    snprintf(port, sizeof(port), "%d", r->port);
    snprintf(logfile, sizeof(logfile), "%s/redis.log", tmpdir);
    argv[argc++] = redis_bin;
    argv[argc++] = "--port";
    argv[argc++] = port;
    if (r->port != 0) {
        argv[argc++] = "--bind";
        argv[argc++] = "127.0.0.1";
    }
    argv[argc++] = "--unixsocket";
    argv[argc++] = r->sock;
    argv[argc++] = "--save";
    argv[argc++] = "";
    argv[argc++] = "--appendonly";
    argv[argc++] = "no";
    argv[argc++] = "--dir";
    argv[argc++] = tmpdir;
    argv[argc++] = "--logfile";
    argv[argc++] = logfile;
    for (int i = 0; r->args && r->args[i] && argc < 38; i++)
        argv[argc++] = r->args[i];
    argv[argc] = NULL;

    r->pid = fork();
    assert_true(r->pid >= 0);
    if (r->pid == 0) {
        /* A test that dies must not leave a server behind. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execv(redis_bin, (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        int status;
        if (test_redis_ready(r))
            return;
        if (waitpid(r->pid, &status, WNOHANG) == r->pid) {
            r->pid = 0;
            fail_msg("redis-server exited at startup (status %d); see %s", status, logfile);
        }
        test_sleep_ms(10);
    }
    fail_msg("redis-server not ready after 5 s; see %s", logfile);
}

void
test_redis_kill(struct test_redis *r)
{
    if (r->pid <= 0)
        return;
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    r->pid = 0;
}
