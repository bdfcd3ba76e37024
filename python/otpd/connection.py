"""The redis-py client for otpd's settings, directly or through Redis Sentinel.

The settings are the daemon's: REDIS_URL, and for Sentinel
OTPD_REDIS_SENTINELS ("host:port,host:port"; empty means none),
OTPD_REDIS_MASTER_NAME (default "mymaster") and OTPD_REDIS_SENTINEL_PASSWORD.
With sentinels, REDIS_URL still gives the username, password and db; its
host and port are ignored, the sentinels name the master.

What a failover does to this client (redis-py 4.3, pinned by
tests/integration/test_sentinel_client.py):

* redis-py alone looks the master up only when it opens a connection.  After
  a failover the old master keeps taking writes until the sentinels demote
  it, some 10 s later, and pooled connections keep writing there; those
  writes are lost when it resyncs.  So the pool here also asks the sentinels
  before it reuses a connection (at most every SENTINEL_RECHECK seconds),
  and the first call after that reaches the new master, with no error.
* A call that meets a demoted master (a READONLY reply) fails with
  redis.exceptions.ConnectionError("The previous master is now a slave"),
  without having written anything (MULTI/EXEC is aborted); redis-py drops
  that connection and the next call asks the sentinels again.
* While the master is down and not yet replaced, calls fail with
  redis.exceptions.ConnectionError (redis.sentinel.MasterNotFoundError, a
  subclass, once the sentinels see it down); a call in flight when it dies
  fails the same way, and whether its writes happened is unknown.

Nothing is retried (retry_on_timeout and retry_on_error stay off): a retried
XADD could queue the same job twice.
"""
import ipaddress
import re
import time

import redis
from redis.connection import parse_url
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

DEFAULT_MASTER_NAME = "mymaster"  # Debian's /etc/redis/sentinel.conf
# Per sentinel asked: an unreachable one must not hold up a web request long.
SENTINEL_TIMEOUT = 0.5
# After no sentinel answered, reuse connections without asking for this long.
SENTINEL_BACKOFF = 1.0
# A pooled connection is reused without asking the sentinels again for this
# long: at most this much of a web app's writes can reach an old master after
# a switch, at one SENTINEL MASTERS per this interval instead of per command.
SENTINEL_RECHECK = 0.5
SENTINEL_PORT = 26379  # as the daemon: a sentinel without a port is on Sentinel's own

_ENTRY = re.compile(r"(?:\[([^\]]*)\]|([A-Za-z0-9._-]+))(?::([0-9]{1,5}))?")


def parse_sentinels(value):
    """[(host, port), ...] from OTPD_REDIS_SENTINELS; [] for empty or None.

    `value` is the "host:port,host:port" string (an IPv6 address in
    brackets, "[::1]:26379"; a missing port is 26379; blanks around an
    entry are ignored), as the daemon reads it (daemon/config.c), or, from
    Django settings, a list of such strings or of (host, port) pairs.
    Anything else is a ValueError naming the setting: a typo must not
    quietly mean "no Sentinel".
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [_parse_entry(e) for e in value.split(",")] if value else []
    if isinstance(value, (list, tuple)):
        return [_parse_entry(e) for e in value]
    raise ValueError("OTPD_REDIS_SENTINELS must be a string or a list, got %r" % (value,))


def _parse_entry(entry):
    if isinstance(entry, (list, tuple)) and len(entry) == 2:
        host, port = entry
        if isinstance(host, str) and type(port) is int:
            v6 = host.startswith("[") and host.endswith("]")
            return _checked(host[1:-1] if v6 else host, port, v6 or ":" in host, entry)
    elif isinstance(entry, str):
        m = _ENTRY.fullmatch(entry.strip(" \t"))
        if m:
            v6 = m.group(2) is None
            port = int(m.group(3)) if m.group(3) else SENTINEL_PORT
            return _checked(m.group(1) if v6 else m.group(2), port, v6, entry)
    raise ValueError("OTPD_REDIS_SENTINELS: %r is not host:port (IPv6 as [addr]:port)"
                     % (entry,))


def _checked(host, port, v6, entry):
    if not 1 <= port <= 65535:
        raise ValueError("OTPD_REDIS_SENTINELS: the port of %r is not in 1..65535" % (entry,))
    if v6:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("OTPD_REDIS_SENTINELS: %r is not an IPv6 address" % (entry,)) from None
    elif not re.fullmatch(r"[A-Za-z0-9._-]+", host):
        raise ValueError("OTPD_REDIS_SENTINELS: %r is not host:port" % (entry,))
    return host, port


def redis_from_settings(url, sentinels="", master_name=DEFAULT_MASTER_NAME, sentinel_password="",
                        decode_responses=True, socket_timeout=None, socket_connect_timeout=None):
    """A redis.Redis for the settings: from `url` alone when `sentinels` is
    empty, else for the master the sentinels name `master_name`.

    `sentinels` is what parse_sentinels() takes (its result too).  The
    timeouts apply to the connections to Redis (None: redis-py's default,
    none); each sentinel gets SENTINEL_TIMEOUT.  Raises ValueError for a bad
    setting; nothing connects until the first command.
    """
    return build(redis.Redis, _Sentinel, _CheckedMasterPool, url, sentinels, master_name,
                 sentinel_password, decode_responses, socket_timeout, socket_connect_timeout)


def build(redis_class, sentinel_class, pool_class, url, sentinels, master_name,
          sentinel_password, decode_responses, socket_timeout, socket_connect_timeout):
    """redis_from_settings() for either flavour of redis-py: the classes of
    the plain client, the Sentinel and the checked pool (otpd.aio passes
    redis.asyncio's)."""
    nodes = parse_sentinels(sentinels)
    timeouts = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_connect_timeout}
    if not nodes:
        return redis_class.from_url(url, decode_responses=decode_responses, **timeouts)
    if not url.startswith("redis://"):  # as the daemon: no unix socket (nor TLS) here
        raise ValueError("with OTPD_REDIS_SENTINELS set, REDIS_URL must be "
                         "redis://[[user]:password@]any-host/db (its host and port are not used)")
    u = parse_url(url)
    skw = {"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT}
    if sentinel_password:
        skw["password"] = sentinel_password
    return sentinel_class(nodes, sentinel_kwargs=skw).master_for(
        master_name or DEFAULT_MASTER_NAME, connection_pool_class=pool_class,
        username=u.get("username"), password=u.get("password"), db=u.get("db", 0),
        decode_responses=decode_responses, **timeouts)


def discover(sentinels, service_name, check_master_state, not_found=MasterNotFoundError):
    """discover_master()'s loop with the I/O left to the caller, so the sync
    and asyncio Sentinels share it: a generator that yields each sentinel in
    turn and is sent what its SENTINEL MASTERS answered (a dict, or the
    redis.RedisError it raised); it returns (ip, port) and moves the sentinel
    that answered to the front, or raises `not_found` saying what each one
    answered and which settings to check.  A sentinel refusing us (a wrong
    password is a ResponseError, which ends redis-py's own loop) is skipped
    like one that is down."""
    why = []
    for i, sentinel in enumerate(sentinels):
        kw = sentinel.connection_pool.connection_kwargs
        where = ("[%s]:%d" if ":" in kw["host"] else "%s:%d") % (kw["host"], kw["port"])
        answer = yield sentinel
        if isinstance(answer, redis.RedisError):
            why.append("%s: %s" % (where, answer))
            continue
        state = answer.get(service_name)
        if state and check_master_state(state, service_name):
            sentinels[0], sentinels[i] = sentinel, sentinels[0]
            return state["ip"], state["port"]
        why.append("%s: %s" % (where, "sees it down" if state else "does not know it"))
    raise not_found(
        "no sentinel gave the address of master %r (%s); check OTPD_REDIS_SENTINELS, "
        "OTPD_REDIS_MASTER_NAME and OTPD_REDIS_SENTINEL_PASSWORD"
        % (service_name, "; ".join(why)))


class _Sentinel(Sentinel):
    """redis-py's Sentinel, its discover_master() being discover()."""

    def discover_master(self, service_name):
        steps = discover(self.sentinels, service_name, self.check_master_state)
        answer = None
        try:
            while True:
                sentinel = steps.send(answer)
                try:
                    answer = sentinel.sentinel_masters()
                except redis.RedisError as e:
                    answer = e
        except StopIteration as done:
            return done.value


class _CheckedMasterPool(SentinelConnectionPool):
    """redis-py's master pool, asking the sentinels for the master's address
    before reusing a connection, not only before opening one.

    When the address has changed, redis-py closes the idle connections and
    drops busy ones as they come back, so calls stop going to the old master
    while it still accepts writes.  The sentinels are asked at most once per
    SENTINEL_RECHECK seconds (one SENTINEL MASTERS), so a busy web app pays
    for it once per interval, not per command.  If no sentinel answers, open
    connections are used as they are (the sentinels are not asked again for
    SENTINEL_BACKOFF seconds): a Sentinel outage alone does not stop a
    working master.
    """

    def reset(self):
        super().reset()
        self._ask_after = 0.0

    def get_connection(self, command_name, *keys, **options):
        self._checkpid()
        now = time.monotonic()
        if self._available_connections and now >= self._ask_after:
            try:
                self.get_master_address()
                self._ask_after = now + SENTINEL_RECHECK
            except redis.RedisError:
                self._ask_after = now + SENTINEL_BACKOFF
        return super().get_connection(command_name, *keys, **options)
