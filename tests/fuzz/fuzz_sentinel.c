/*
 * fuzz_sentinel.c: what otpd reads about Redis Sentinel: the sentinel list
 * (config_parse_sentinels(), an operator's OTPD_REDIS_SENTINELS), a
 * sentinel's answers to SENTINEL get-master-addr-by-name as hiredis's
 * reader parses them off the wire (sentinel_parse_master()), and a
 * +switch-master message (sentinel_parse_switch()).
 *
 * Invariants: every sentinel parsed has a non-empty host without blanks or
 * commas and a port in 1..65535; an address taken from an answer or a
 * message is a bare host (letters, digits, ".:-_") with a port in range; a
 * message for another master's name, or with more or fewer than five
 * words, is never taken.
 */
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "config.h"
#include "fuzz_common.h"
#include "sentinel.h"

static void
check_host(const char *host, int port)
{
    size_t n = strlen(host);

    CHECK(n > 0 &&
          strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:-_") == n);
    CHECK(port >= 1 && port <= 65535);
}

static void
check_list(const char *spec)
{
    struct sentinel_addr sa[SENTINELS_MAX];
    char err[256] = "";
    int n = config_parse_sentinels(spec, sa, SENTINELS_MAX, err, sizeof(err));

    CHECK(n >= -1 && n <= SENTINELS_MAX);
    if (n < 0)
        CHECK(err[0] != '\0');
    for (int i = 0; i < n; i++) {
        CHECK(NUL_IN(sa[i].host) && sa[i].host[0] != '\0');
        CHECK(strpbrk(sa[i].host, " \t,") == NULL);
        CHECK(sa[i].port >= 1 && sa[i].port <= 65535);
    }
}

static void
check_switch(const char *text)
{
    char host[256];
    int port, words = 0;

    if (sentinel_parse_switch(text, "mymaster", host, sizeof(host), &port) < 0)
        return;
    check_host(host, port);
    CHECK(strncmp(text + strspn(text, " \t\n\r\v\f"), "mymaster", 8) == 0);
    for (const char *p = text; *p;) {
        p += strspn(p, " \t\n\r\v\f");
        if (*p == '\0')
            break;
        words++;
        p += strcspn(p, " \t\n\r\v\f");
    }
    CHECK(words == 5);
}

/* The bytes as a sentinel's replies: each one read as the answer about the master. */
static void
check_answers(const unsigned char *data, size_t size)
{
    redisReader *rd = redisReaderCreate();
    void *reply;
    char host[256], why[256];
    int port;

    if (rd == NULL)
        abort();
    if (redisReaderFeed(rd, (const char *)data, size) == REDIS_OK) {
        while (redisReaderGetReply(rd, &reply) == REDIS_OK && reply != NULL) {
            why[0] = '\0';
            if (sentinel_parse_master(reply, "mymaster", host, sizeof(host), &port, why,
                                      sizeof(why)) == 0)
                check_host(host, port);
            else
                CHECK(why[0] != '\0');
            freeReplyObject(reply);
        }
    }
    redisReaderFree(rd);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_strndup(data, size);

    check_list(s);
    check_switch(s);
    check_answers(data, size);
    free(s);
    return 0;
}
