"""otpd's client for asyncio: AsyncOTPClient, OTPClient on redis.asyncio.

    from otpd.aio import AsyncOTPClient
    otp = AsyncOTPClient.from_env()           # or AsyncOTPClient(redis=..., hash_key=...)
    job_id = await otp.send("+14155552671", "password_reset")
    await otp.wait(job_id)
    res = await otp.verify("+14155552671", code, "password_reset")

The methods, arguments, return values and exceptions are OTPClient's
(otpd.client): both run the same functions for everything but the Redis round
trips, which here are awaited.  What this module adds:

* close() (and `async with`): closes the connections to Redis and to the
  sentinels; the next call opens new ones.
* A client belongs to the event loop it first ran in: redis.asyncio binds
  each connection to its loop, so a call from another loop raises
  RuntimeError at once instead of failing somewhere in redis-py.  Make one
  client per loop, and close it before its loop ends (see
  examples/django_site/accounts/async_views.py for Django, whose async views
  under WSGI get a new loop per request).
* redis_from_settings(): otpd.connection.redis_from_settings() for
  redis.asyncio, which from_env() uses.

A call cancelled while it waits for Redis (asyncio.timeout, a task's
cancel()) leaves no reply behind on a pooled connection: redis-py 4.3 closes
a connection whose read or write is interrupted.  Whether Redis ran the
command is then unknown, as after a ConnectionError: a cancelled send() may
have queued its job, a cancelled verify() may have spent an attempt.

Under Sentinel (OTPD_REDIS_SENTINELS), redis_from_settings() gives this
client what otpd.connection gives OTPClient, built on redis.asyncio.sentinel
(present in redis-py 4.3.4): the master is asked of the sentinels before a
pooled connection is reused (at most every SENTINEL_RECHECK seconds), a
sentinel that refuses us is skipped like one that is down, and "no master"
says what each sentinel answered.  otpd.connection's account of failovers
holds: redis-py 4.3.4's asyncio SentinelManagedConnection also turns a
READONLY reply into ConnectionError("The previous master is now a slave")
and drops the connection (its code is the sync one's, awaited; the tests
here cover the failover itself, not that case nor a killed master).  The
differences:

* "No master" raises this module's MasterNotFoundError, which is both
  redis.asyncio.sentinel.MasterNotFoundError and redis.sentinel's (the two
  are unrelated classes in redis-py); both are redis.exceptions.ConnectionError.
* Calls that arrive while another task asks the sentinels wait for its
  answer instead of asking too (a burst costs one SENTINEL MASTERS per
  interval, not one per call) and instead of reusing a connection that the
  answer may show to lead to the old master.
* Only master_for() is used; the asyncio Sentinel's replica side
  (slave_for(), rotate_slaves()) is not, and not tested here.
"""
import asyncio
import time

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel

from . import protocol
from .client import (FINAL, NumberRefused, OptedOut, RateLimited, SendRefused, VerifyResult,
                     _ClientBase, _job, _limits_request, _limits_verdict, _now_ms, _stage_job,
                     _status_record, _verify_request, _verify_result, _wait_over)
from .connection import (DEFAULT_MASTER_NAME, SENTINEL_BACKOFF, SENTINEL_RECHECK,
                         build, discover)

__all__ = ["AsyncOTPClient", "FINAL", "MasterNotFoundError", "NumberRefused", "OptedOut",
           "RateLimited", "SendRefused", "VerifyResult", "redis_from_settings"]


_SyncRedis = redis.Redis  # the parameter `redis` hides the module in __init__


class AsyncOTPClient(_ClientBase):
    """OTPClient for asyncio: the same methods, awaited.

    Give it a redis.asyncio client (bytes or decoded replies both work) or a
    URL.  Use it from one event loop only (the first one it runs in).
    """

    @staticmethod
    def _redis_from_url(url):
        return aioredis.Redis.from_url(url, decode_responses=True)

    @staticmethod
    def _redis_from_settings(*args, **kwargs):
        return redis_from_settings(*args, **kwargs)

    def __init__(self, redis=None, url=None, hash_key=None, prefix="otpd:", status_ttl=86400,
                 number_check="auto"):
        if isinstance(redis, _SyncRedis):
            raise TypeError("AsyncOTPClient needs a redis.asyncio client, not a redis.Redis "
                            "(that one goes with otpd.OTPClient)")
        super().__init__(redis, url, hash_key, prefix, status_ttl, number_check)
        self._loop = None

    def _check_loop(self):
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("this AsyncOTPClient belongs to another event loop (the first "
                               "it ran in); redis.asyncio connections cannot change loops, so "
                               "make one client per event loop")

    async def send(self, to, purpose="login", *, id=None, ttl=None, digits=None,
                   max_attempts=None, message=None, provider=None, fresh=False, channel="sms",
                   locale=None, app_hash=None, fallback=None, fallback_email=None):
        """Queue a code for `to` and return the job id: OTPClient.send().

        As there, a ConnectionError or TimeoutError (and here also a
        cancellation) may come after the job was queued: do not retry blindly.
        """
        job = _job(to, purpose, id, ttl, digits, max_attempts, message, provider, fresh, channel,
                   locale, app_hash, fallback, fallback_email)
        self._check_number(job)
        self._check_loop()
        now = _now_ms()
        await self._check_limits(job["to"], purpose, job["id"], now)
        pipe = self.redis.pipeline(transaction=True)
        _stage_job(pipe, self.prefix, job, now, self.status_ttl)
        await pipe.execute()
        return job["id"]

    async def _check_limits(self, to, purpose, job_id, now):
        """Raise RateLimited or OptedOut if the daemon would refuse this send."""
        _limits_verdict(await self._limits(**_limits_request(self.prefix, to, purpose, job_id,
                                                             now)))

    async def status(self, job_id):
        """The job's status record as a dict of str, or {} if unknown or expired."""
        self._check_loop()
        return _status_record(await self.redis.hgetall(protocol.job_key(self.prefix, job_id)))

    async def wait(self, job_id, timeout=10.0, poll=0.05, final=FINAL):
        """Poll until the job's status is in `final` and return the record:
        OTPClient.wait(), sleeping with asyncio.sleep().  Raises TimeoutError
        (the builtin, as OTPClient) with the last status seen."""
        deadline = time.monotonic() + timeout
        while True:
            st = await self.status(job_id)
            if _wait_over(job_id, st, final, deadline, timeout):
                return st
            await asyncio.sleep(poll)

    async def verify(self, to, code, purpose="login", channel="sms"):
        """Check a code the user typed, spending one attempt if it is wrong:
        OTPClient.verify(), returning a VerifyResult."""
        request = _verify_request(self._key, self.prefix, to, code, purpose, channel)
        if request is None:
            return VerifyResult("invalid")
        self._check_loop()
        return _verify_result(await self._verify(**request))

    async def close(self):
        """Close the connections of self.redis's pool, and under Sentinel those
        to the sentinels.  The client stays usable: a later call reconnects."""
        await self.redis.close(close_connection_pool=True)
        manager = getattr(self.redis.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.close(close_connection_pool=True)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()



# --- Sentinel -----------------------------------------------------------------

def redis_from_settings(url, sentinels="", master_name=DEFAULT_MASTER_NAME, sentinel_password="",
                        decode_responses=True, socket_timeout=None, socket_connect_timeout=None):
    """otpd.connection.redis_from_settings() for asyncio: a redis.asyncio.Redis
    from `url` alone when `sentinels` is empty, else for the master the
    sentinels name `master_name`.  The same arguments, checks and errors;
    nothing connects until the first command."""
    return build(aioredis.Redis, _Sentinel, _CheckedMasterPool, url, sentinels, master_name,
                 sentinel_password, decode_responses, socket_timeout, socket_connect_timeout)


class MasterNotFoundError(aiosentinel.MasterNotFoundError, redis.sentinel.MasterNotFoundError):
    """No sentinel gave the master's address: redis-py's MasterNotFoundError
    of either flavour (and so a redis.exceptions.ConnectionError)."""


class _Sentinel(aiosentinel.Sentinel):
    """otpd.connection._Sentinel on redis.asyncio: the same discover() loop,
    each sentinel asked with await."""

    async def discover_master(self, service_name):
        steps = discover(self.sentinels, service_name, self.check_master_state,
                         MasterNotFoundError)
        answer = None
        try:
            while True:
                sentinel = steps.send(answer)
                try:
                    answer = await sentinel.sentinel_masters()
                except redis.RedisError as e:
                    answer = e
        except StopIteration as done:
            return done.value


class _CheckedMasterPool(aiosentinel.SentinelConnectionPool):
    """otpd.connection._CheckedMasterPool on redis.asyncio: the sentinels are
    asked for the master before a pooled connection is reused, at most once
    per SENTINEL_RECHECK seconds (SENTINEL_BACKOFF after none answered), so
    that calls stop going to an old master that still takes writes.

    The calls that come while one asks wait for its answer: they neither ask
    too nor reuse a connection the answer may be about to close.
    """

    def reset(self):
        super().reset()
        self._ask_after = 0.0
        self._asking = asyncio.Lock()

    async def get_connection(self, command_name, *keys, **options):
        self._checkpid()
        if self._available_connections and time.monotonic() >= self._ask_after:
            async with self._asking:
                now = time.monotonic()
                if now >= self._ask_after:  # else the call we waited for asked
                    try:
                        await self.get_master_address()
                        self._ask_after = now + SENTINEL_RECHECK
                    except redis.RedisError:
                        self._ask_after = now + SENTINEL_BACKOFF
        return await super().get_connection(command_name, *keys, **options)
