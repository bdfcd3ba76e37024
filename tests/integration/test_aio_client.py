"""otpd.aio.AsyncOTPClient against a real redis-server and the real daemon,
Redis Sentinel included, and the example site's async views through Django's
test clients.

No pytest-asyncio: each test runs its coroutine with asyncio.run(), so each
makes its client inside the loop that uses it, as the client requires.
"""
import asyncio
import io
import json
import os
import sys
import threading
import time
import types

import pytest
import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel
import redis.sentinel

from conftest import HASH_KEY, ROOT, free_port, wait_for
from sentinels import SentinelCluster
from test_client import daemon_writes_otp

from otpd import FINAL, OptedOut, OTPClient, RateLimited, SendRefused, VerifyResult
from otpd.aio import AsyncOTPClient, MasterNotFoundError, redis_from_settings
from otpd.connection import SENTINEL_RECHECK

TO = "+14155552671"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:django")


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def url(redis_server):
    return redis_server.url


def aclient(url, **kw):
    """Only inside a coroutine: the client belongs to the loop that first uses it."""
    return AsyncOTPClient(url=url, hash_key=HASH_KEY, **kw)


def code_for(otpd, to=TO, n=1):
    """The n-th code the console provider printed for `to` (the user's phone)."""
    return wait_for(lambda: len(otpd.codes(to)) >= n and otpd.codes(to)[n - 1], 10,
                    what="code #%d for %s" % (n, to))


# --- with the daemon --------------------------------------------------------

def test_send_wait_verify_with_the_daemon(otpd_factory, url, r):
    otpd = otpd_factory()

    async def main():
        async with aclient(url) as c:
            job = await c.send(TO, "password_reset")
            assert (await c.status(job))["status"] in ("queued", "sending", "sent")
            st = await c.wait(job, timeout=10)
            assert st["status"] == "sent" and st["provider"] == "console"
            assert st["to"] == "+1415*****71" and st["purpose"] == "password_reset"
            code = code_for(otpd)
            wrong = "%06d" % ((int(code) + 1) % 1000000)
            assert await c.verify(TO, wrong, "password_reset") == VerifyResult("mismatch", 4, job)
            assert await c.verify(TO, code) == VerifyResult("expired", 0, None)  # other purpose
            res = await c.verify(TO, " %s\n" % code, "password_reset")
            assert res and res == VerifyResult("ok", 4, job)
            assert await c.verify(TO, code, "password_reset") == VerifyResult("expired", 0, None)
            assert await c.status("nope") == {}
    run(main())


def test_locked_after_max_attempts(otpd_factory, url):
    otpd = otpd_factory()

    async def main():
        async with aclient(url) as c:
            job = await c.send(TO, max_attempts=2)
            assert (await c.wait(job))["status"] == "sent"
            code = code_for(otpd)
            wrong = "%06d" % ((int(code) + 1) % 1000000)
            assert await c.verify(TO, wrong) == VerifyResult("mismatch", 1, job)
            assert await c.verify(TO, wrong) == VerifyResult("locked", 0, job)
            assert (await c.verify(TO, code)).status == "locked"  # the right code too
            # A new code unlocks: send() while locked gets a fresh one.
            job2 = await c.send(TO)
            assert (await c.wait(job2))["code_source"] == "new"
            assert await c.verify(TO, code_for(otpd, n=2)) == VerifyResult("ok", 5, job2)
    run(main())


def test_resend_keeps_the_code_and_fresh_replaces_it(otpd_factory, url):
    otpd = otpd_factory()

    async def main():
        async with aclient(url) as c:
            first = await c.wait(await c.send(TO))
            second = await c.wait(await c.send(TO))
            assert (first["code_source"], second["code_source"]) == ("new", "resent")
            assert code_for(otpd, n=2) == code_for(otpd, n=1)
            await c.wait(await c.send(TO, fresh=True))
            assert (await c.verify(TO, code_for(otpd, n=3))).ok
    run(main())


def test_verify_expired_after_ttl(url, r):
    async def main():
        async with aclient(url) as c:
            daemon_writes_otp(r, "123456", ttl_ms=50)
            await asyncio.sleep(0.15)
            assert await c.verify(TO, "123456") == VerifyResult("expired", 0, None)
    run(main())


def test_rate_limited(otpd_factory, url):
    otpd_factory({"OTPD_LIMIT_INTERVAL_S": "30"})

    async def main():
        async with aclient(url) as c:
            assert (await c.wait(await c.send(TO)))["status"] == "sent"
            with pytest.raises(RateLimited) as e:
                await c.send(TO)
            assert isinstance(e.value, SendRefused) and e.value.reason == "interval"
            assert 25 < e.value.retry_after <= 30
            # Another purpose is not held back.
            assert (await c.wait(await c.send(TO, "verify_phone")))["status"] == "sent"
    run(main())


def test_opted_out(url, r):
    r.hset("otpd:optout", TO, "1")

    async def main():
        async with aclient(url) as c:
            with pytest.raises(OptedOut) as e:
                await c.send(TO)
            assert e.value.reason == "opted_out"
            assert await c.send("+14155552672")
    run(main())
    assert r.xlen("otpd:jobs") == 1  # nothing queued for the opted-out number


@pytest.mark.parametrize("kwargs, msg", [
    ({"to": "14155552671"}, "E.164"),
    ({"to": "+14155552671\n"}, "E.164"),
    ({"purpose": "Password-Reset"}, "purpose"),
    ({"ttl": 29}, "ttl"),
    ({"ttl": True}, "ttl"),
    ({"digits": 11}, "digits"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"message": "Your code is ready"}, r"\{code\}"),
    ({"message": "{code}" + "x" * 475}, "480"),
    ({"id": "has space"}, "id"),
    ({"provider": "sns"}, "provider"),
    ({"fresh": 1}, "fresh"),
    ({"channel": "email", "to": "not-an-address"}, "e-mail"),
    ({"channel": "fax"}, "channel"),
])
def test_send_rejects_bad_input_locally(url, r, kwargs, msg):
    async def main():
        async with aclient(url) as c:
            with pytest.raises(ValueError, match=msg):
                await c.send(**{"to": TO, **kwargs})
    run(main())
    assert r.xlen("otpd:jobs") == 0 and not r.keys("otpd:job:*")


@pytest.mark.parametrize("code", ["", "12a456", "123", "12345678901", "12 3456",
                                  "\u0661\u0662\u0663\u0664\u0665\u0666"])
def test_verify_invalid_input_spends_no_attempt(url, r, code):
    key = daemon_writes_otp(r, "123456")

    async def main():
        async with aclient(url) as c:
            res = await c.verify(TO, code)
            assert res == VerifyResult("invalid", 0, None) and not res
            with pytest.raises(ValueError, match="E.164"):
                await c.verify("4155552671", "123456")
            with pytest.raises(ValueError, match="purpose"):
                await c.verify(TO, "123456", purpose="Login")
            with pytest.raises(TypeError):
                await c.verify(TO, 123456)
    run(main())
    assert r.hget(key, "attempts") == "0"


def test_same_job_fields_as_the_sync_client(url, r):
    """One code path builds the job: both clients queue the same entry and record."""
    kw = dict(id="same-1", ttl=600, digits=8, max_attempts=3, provider="console",
              message="Code {code}, valid {minutes} min", fresh=True, channel="voice",
              locale="zh_hant", app_hash="FA+9qCX9VSu", fallback=["email", "sms"],
              fallback_email="Alice@Example.com")
    OTPClient(redis=r, hash_key=HASH_KEY).send(TO, "password_reset", **kw)

    async def main():
        async with aclient(url) as c:
            return await c.send(TO, "password_reset", **dict(kw, id="same-2"))
    assert run(main()) == "same-2"
    (_, a), (_, b) = r.xrange("otpd:jobs")
    a, b = json.loads(a["job"]), json.loads(b["job"])
    assert list(a) == list(b)  # the same fields in the same order
    assert (b["channel"], b["locale"], b["fallback"], b["fallback_email"]) == \
        ("voice", "zh-Hant", ["email", "sms"], "alice@example.com")
    assert {k: v for k, v in a.items() if k not in ("id", "created_ms")} == \
        {k: v for k, v in b.items() if k not in ("id", "created_ms")}
    sa, sb = r.hgetall("otpd:job:same-1"), r.hgetall("otpd:job:same-2")
    assert set(sa) == set(sb) and sa["to"] == sb["to"] == "+1415*****71"
    assert 86300 < r.ttl("otpd:job:same-2") <= 86400


def test_bad_locale_is_refused_before_redis(url, r):
    async def main():
        async with aclient(url) as c:
            with pytest.raises(ValueError, match="locale"):
                await c.send(TO, locale="en_")
            with pytest.raises(ValueError, match="fallback"):
                await c.send(TO, channel="voice", fallback=["voice"])
    run(main())
    assert r.xlen("otpd:jobs") == 0


def test_wait_times_out_with_the_last_status(url, r):
    async def main():
        async with aclient(url) as c:
            job = await c.send(TO)
            with pytest.raises(TimeoutError, match="queued"):
                await c.wait(job, timeout=0.1)
            r.hset("otpd:job:" + job, "status", "sent")
            assert (await c.wait(job, timeout=1))["status"] == "sent"
            with pytest.raises(TimeoutError):
                await c.wait(job, timeout=0.1, final={"delivered", "undelivered"})
    run(main())
    assert "sent" in FINAL


def test_200_concurrent_sends_on_one_client(otpd_factory, url, r):
    otpd = otpd_factory()
    numbers = ["+1415560%04d" % i for i in range(200)]

    async def main():
        async with aclient(url) as c:
            jobs = await asyncio.gather(*(c.send(n, "signup") for n in numbers))
            sts = await asyncio.gather(*(c.wait(j, timeout=30) for j in jobs))
            return jobs, sts, len(c.redis.connection_pool._available_connections)
    jobs, sts, pooled = run(main())
    assert len(set(jobs)) == 200 and 1 < pooled <= 200
    assert [s["status"] for s in sts] == ["sent"] * 200
    assert [s["to"] for s in sts] == ["+1415*****%s" % n[-2:] for n in numbers]
    # Each job reached its own number: the daemon's code record names it.
    assert [r.hget("otpd:otp:signup:" + n, "job") for n in numbers] == jobs
    assert all(len(otpd.codes(n)) == 1 for n in numbers)


# --- the client object ------------------------------------------------------

def test_one_event_loop_per_client(url):
    holder = {}

    async def first():
        holder["c"] = c = aclient(url)
        assert await c.status("x") == {}
        await c.close()

    async def second():
        with pytest.raises(RuntimeError, match="another event loop"):
            await holder["c"].status("x")
    run(first())
    run(second())


def test_closed_client_reconnects_and_bytes_replies_work(redis_server, r):
    async def main():
        raw = aioredis.Redis(port=redis_server.port)  # bytes replies
        c = AsyncOTPClient(redis=raw, hash_key=HASH_KEY)
        daemon_writes_otp(r, "123456", job="b1")
        assert await c.verify(TO, "123456") == VerifyResult("ok", 5, "b1")
        job = await c.send(TO)
        await c.close()
        assert not any(x.is_connected for x in raw.connection_pool._available_connections)
        assert (await c.status(job))["status"] == "queued"
        await c.close()
    run(main())


def test_wrong_redis_flavour_or_key_refused(r, url):
    with pytest.raises(TypeError, match="redis.asyncio"):
        AsyncOTPClient(redis=r, hash_key=HASH_KEY)
    with pytest.raises(ValueError, match="AsyncOTPClient needs a redis client or a url"):
        AsyncOTPClient(hash_key=HASH_KEY)
    with pytest.raises(ValueError, match="OTPD_HASH_KEY"):
        AsyncOTPClient(url=url, hash_key=HASH_KEY[:-2])


def test_cancelled_call_leaves_no_reply_behind(url, r):
    """A call cancelled while Redis holds its reply must not hand that reply
    to the next call on the same pooled connection."""
    r.hset("otpd:job:a", "status", "sent")
    r.hset("otpd:job:b", "status", "failed")

    async def main():
        async with aclient(url) as c:
            assert (await c.status("a"))["status"] == "sent"   # one pooled connection
            r.execute_command("CLIENT", "PAUSE", 300, "ALL")   # Redis holds the replies
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.status("a"), 0.05)
            assert (await c.status("b")) == {"status": "failed"}
    run(main())


def test_from_env(monkeypatch, url, r):
    for k in ("OTPD_REDIS_SENTINELS", "OTPD_STATUS_TTL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("OTPD_HASH_KEY", HASH_KEY)
    monkeypatch.setenv("OTPD_PREFIX", "{app}:")

    async def main():
        async with AsyncOTPClient.from_env() as c:
            assert isinstance(c.redis, aioredis.Redis)
            job = await c.send(TO)
            assert (await c.status(job))["status"] == "queued"
            daemon_writes_otp(r, "123456", prefix="{app}:")
            assert (await c.verify(TO, "123456")).ok
    run(main())
    assert r.xlen("{app}:jobs") == 1
    monkeypatch.delenv("OTPD_HASH_KEY")
    with pytest.raises(ValueError, match="OTPD_HASH_KEY"):
        AsyncOTPClient.from_env()


# --- Redis Sentinel ---------------------------------------------------------

SENTINEL_DB = 3
SENTINEL_URL = "redis://127.0.0.1:1/%d" % SENTINEL_DB  # host and port unused under Sentinel


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    c = SentinelCluster(tmp_path_factory.mktemp("aio-sentinels"), master_name="otpd-aio",
                        sentinel_password="sentinel-secret")
    yield c
    c.stop()


def sentinel_env(monkeypatch, c, **extra):
    env = {"REDIS_URL": SENTINEL_URL, "OTPD_HASH_KEY": HASH_KEY,
           "OTPD_REDIS_SENTINELS": c.sentinels, "OTPD_REDIS_MASTER_NAME": c.master_name,
           "OTPD_REDIS_SENTINEL_PASSWORD": c.sentinel_password or ""}
    env.update(extra)
    for k in ("OTPD_PREFIX", "OTPD_STATUS_TTL"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_settings_under_sentinel():
    r = redis_from_settings("redis://otp:p%40ss@ignored:1/5", "127.0.0.1:26379",
                            master_name="", sentinel_password="sp")
    pool = r.connection_pool
    assert isinstance(r, aioredis.Redis)
    kw = pool.connection_kwargs
    assert (kw["username"], kw["password"], kw["db"]) == ("otp", "p@ss", 5)
    assert pool.service_name == "mymaster"
    s = pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
    assert (s["host"], s["port"], s["password"], s["socket_timeout"]) == ("127.0.0.1", 26379,
                                                                           "sp", 0.5)
    assert type(redis_from_settings("redis://h:7/2", "").connection_pool) is \
        aioredis.ConnectionPool
    with pytest.raises(ValueError, match="OTPD_REDIS_SENTINELS"):
        redis_from_settings(SENTINEL_URL, "h:1,no/pe")
    with pytest.raises(ValueError, match="REDIS_URL must be redis://"):
        redis_from_settings("rediss://h:1/0", "127.0.0.1:26379")


def test_send_and_verify_through_sentinels(shared_cluster, monkeypatch):
    sentinel_env(monkeypatch, shared_cluster)
    with shared_cluster.master_client(db=SENTINEL_DB) as m:
        m.flushdb()

    async def main():
        async with AsyncOTPClient.from_env() as c:
            job = await c.send(TO)
            with shared_cluster.master_client(db=SENTINEL_DB) as m:
                assert m.hget("otpd:job:" + job, "status") == "queued"
                daemon_writes_otp(m, "123456", job=job)
            assert (await c.status(job))["status"] == "queued"
            assert (await c.verify(TO, "654321")).status == "mismatch"
            assert await c.verify(TO, "123456") == VerifyResult("ok", 4, job)
            return c
    c = run(main())
    # close() closed the connections to the master and to the sentinels.
    pools = [c.redis.connection_pool] + [s.connection_pool for s in
                                         c.redis.connection_pool.sentinel_manager.sentinels]
    assert not any(x.is_connected for p in pools for x in p._available_connections)


@pytest.mark.parametrize("bad, answer", [
    ({"OTPD_REDIS_SENTINEL_PASSWORD": "wrong"}, "WRONGPASS invalid username-password pair"),
    ({"OTPD_REDIS_MASTER_NAME": "nosuch"}, "does not know it"),
])
def test_sentinels_refusing_us_is_a_clear_error(shared_cluster, monkeypatch, bad, answer):
    sentinel_env(monkeypatch, shared_cluster, **bad)

    async def main():
        async with AsyncOTPClient.from_env() as c:
            with pytest.raises(MasterNotFoundError) as e:
                await c.send(TO)
            return e.value
    err = run(main())
    # Either flavour of redis-py's MasterNotFoundError catches it.
    assert isinstance(err, redis.asyncio.sentinel.MasterNotFoundError)
    assert isinstance(err, redis.sentinel.MasterNotFoundError)
    msg = str(err)
    for p in shared_cluster.sentinel_ports:
        assert "127.0.0.1:%d: " % p in msg
    assert msg.count(answer) == 3, msg
    assert msg.endswith("; check OTPD_REDIS_SENTINELS, OTPD_REDIS_MASTER_NAME and "
                        "OTPD_REDIS_SENTINEL_PASSWORD")


def test_all_sentinels_unreachable(monkeypatch):
    monkeypatch.setenv("REDIS_URL", SENTINEL_URL)
    monkeypatch.setenv("OTPD_HASH_KEY", HASH_KEY)
    monkeypatch.setenv("OTPD_REDIS_SENTINELS", "127.0.0.1:%d,[::1]:%d" % (free_port(),
                                                                          free_port()))
    monkeypatch.delenv("OTPD_REDIS_MASTER_NAME", raising=False)

    async def main():
        async with AsyncOTPClient.from_env() as c:
            t0 = time.monotonic()
            with pytest.raises(redis.ConnectionError) as e:
                await c.send(TO)
            return e.value, time.monotonic() - t0
    err, took = run(main())
    assert type(err) is MasterNotFoundError and took < 5
    assert str(err).startswith("no sentinel gave the address of master 'mymaster' (127.0.0.1:")


def test_failover_next_call_reaches_the_new_master(tmp_path, monkeypatch):
    """As test_sentinel_client's: after SENTINEL FAILOVER no call fails and the
    first one after SENTINEL_RECHECK goes to the new master."""
    cluster = SentinelCluster(tmp_path)
    try:
        sentinel_env(monkeypatch, cluster)

        async def main():
            async with AsyncOTPClient.from_env() as c:
                await c.send(TO, id="before")  # a pooled connection to the old master now
                old = cluster.master_addr()
                new = await asyncio.get_running_loop().run_in_executor(None, cluster.failover)
                await asyncio.sleep(SENTINEL_RECHECK)
                assert await asyncio.gather(*(c.send(TO, id="after-%d" % i)
                                              for i in range(20)))
                return old, new
        old, new = run(main())
        with redis.Redis(host=new[0], port=new[1], db=SENTINEL_DB, decode_responses=True) as n, \
                redis.Redis(host=old[0], port=old[1], db=SENTINEL_DB,
                            decode_responses=True) as o:
            for i in range(20):
                assert n.hget("otpd:job:after-%d" % i, "status") == "queued"
                assert not o.exists("otpd:job:after-%d" % i)
            assert n.exists("otpd:job:before")  # replicated before the switch
    finally:
        cluster.stop()


# --- the example site's async views -----------------------------------------

# Django is set up once per process, as test_django_site.py does it.
from test_django_site import PHONE, STRANGER, django_site  # noqa: E402,F401


@pytest.fixture
def daemon_env():
    return {}


@pytest.fixture
def site(django_site, redis_server, r, otpd_factory, daemon_env):
    from django.core.management import call_command
    from django.test import Client, override_settings
    from django.urls import include, path
    from accounts import async_views
    # The test URLs: the site's, and resend, which the site does not wire.
    urls = types.ModuleType("aio_test_urls")
    urls.urlpatterns = [path("async/resend/", async_views.resend, name="async_resend"),
                        path("", include("accounts.urls"))]
    sys.modules[urls.__name__] = urls
    with override_settings(OTPD_REDIS_URL=redis_server.url, ROOT_URLCONF=urls.__name__,
                           PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        otpd = otpd_factory(daemon_env)
        call_command("createdemo", "--password", "old-Passw0rd-for-demo", stdout=io.StringIO())
        try:
            yield types.SimpleNamespace(browser=Client(), otpd=otpd, r=r, views=async_views)
        finally:
            call_command("flush", interactive=False, verbosity=0)
            del sys.modules[urls.__name__]


def ask_code(browser, phone=PHONE):
    resp = browser.post("/forgot-password/", {"method": "sms", "phone": phone})
    assert resp.status_code == 302, resp.content.decode()
    return resp["Location"].split("/")[-2]


def sent_then(site, job, status):
    """Once the daemon has sent the job, put its record back to `status`: a
    job the daemon is still working on, for as long as the test likes."""
    wait_for(lambda: site.r.hget("otpd:job:" + job, "status") == "sent", 10,
             what="job %s to be sent" % job)
    site.r.hset("otpd:job:" + job, "status", status)


def later(seconds, fn):
    t = threading.Timer(seconds, fn)
    t.start()
    return t


def test_async_status_json_long_polls_and_matches_the_sync_view(site):
    b = site.browser
    job = ask_code(b)
    sent_then(site, job, "sending")
    before = len(site.r.client_list())
    t0 = time.monotonic()
    st = b.get("/async/status/%s.json" % job, {"wait": "0.3"}).json()  # times out
    assert time.monotonic() - t0 >= 0.3
    assert st["status"] == "sending" and not st["final"] and st["label"] == "Sending…"
    assert b.get("/forgot-password/status/%s.json" % job).json() == st

    later(0.4, lambda: site.r.hset("otpd:job:" + job, "status", "sent"))
    t0 = time.monotonic()
    resp = b.get("/async/status/%s.json" % job, {"wait": "10"})  # answers once final
    assert 0.3 < time.monotonic() - t0 < 5
    assert resp.status_code == 200 and resp["Content-Type"] == "application/json"
    assert "no-cache" in resp["Cache-Control"]
    st = resp.json()
    assert st == {"id": job, "status": "sent", "final": True, "error": "", "error_code": "",
                  "to": "+1415*****71", "attempts": 1, "retry_after": None,
                  "label": "Sent. Check your phone."}
    assert b.get("/forgot-password/status/%s.json" % job).json() == st
    assert b.get("/async/status/%s.json" % job).json() == st  # no wait: one read
    # Each request ran in its own loop (WSGI: async_to_sync) and its client
    # was closed with it: nothing cached, no connection left open.
    assert site.views._clients == {}
    wait_for(lambda: len(site.r.client_list()) <= before, 5, what="the async client to close")

    # Only the session that asked may watch.
    from django.test import Client
    other = Client()
    resp = other.get("/async/status/%s.json" % job, {"wait": "5"})
    assert resp.status_code == 404 and resp.json()["status"] == "unknown"
    assert resp.json() == other.get("/forgot-password/status/%s.json" % job).json()
    assert b.post("/async/status/%s.json" % job).status_code == 405
    for bad in ("soon", "nan", "-1", "inf"):
        assert b.get("/async/status/%s.json" % job, {"wait": bad}).status_code == 400


def test_async_status_of_failures_matches_the_sync_view(site):
    """The answer is code_status's own: labels and fields of a failure or a
    rate_limited job, and an expired record, are the same on both URLs."""
    b = site.browser
    job = ask_code(b)
    key = "otpd:job:" + job
    sent_then(site, job, "failed")
    site.r.hset(key, mapping={"error": "Unverified number (trial account)",
                              "error_code": "21608"})
    limited = {"status": "rate_limited", "retry_at_ms": int(time.time() * 1000) + 42000}
    for fields in (None, limited):
        if fields:
            site.r.hset(key, mapping=fields)
        st = b.get("/async/status/%s.json" % job, {"wait": "5"}).json()
        assert st["final"] and st == b.get("/forgot-password/status/%s.json" % job).json()
    site.r.delete(key)
    st = b.get("/async/status/%s.json" % job, {"wait": "5"}).json()
    assert st["status"] == "unknown" and st["final"]
    assert st == b.get("/forgot-password/status/%s.json" % job).json()


def test_async_status_when_redis_is_unreachable(site):
    from django.test import override_settings
    b = site.browser
    job = ask_code(b)
    with override_settings(OTPD_REDIS_URL="redis://127.0.0.1:%d/0" % free_port()):
        resp = b.get("/async/status/%s.json" % job, {"wait": "1"})
        assert resp.status_code == 503
        st = resp.json()
        assert st["status"] == "unavailable" and not st["final"]
        sync = b.get("/forgot-password/status/%s.json" % job)
        assert sync.status_code == 503 and sync.json() == st


def test_async_status_simulated_for_a_number_without_account(site):
    b = site.browser
    job = ask_code(b, STRANGER)
    t0 = time.monotonic()
    st = b.get("/async/status/%s.json" % job, {"wait": "5"}).json()
    assert time.monotonic() - t0 < 2  # the decoy's second, not the whole wait
    assert st == {"id": job, "status": "sent", "final": True, "error": "", "error_code": "",
                  "to": "+1415*****23", "attempts": 1, "retry_after": None,
                  "label": "Sent. Check your phone."}
    assert st == b.get("/forgot-password/status/%s.json" % job).json()
    assert site.r.keys("otpd:job:*") == [] and site.r.xlen("otpd:jobs") == 0


def test_async_client_reused_within_one_loop(site):
    """Under ASGI (here AsyncClient) every request runs in the same loop and
    shares its client, which is closed when the loop ends."""
    from django.test import AsyncClient, override_settings
    from otpd.django import conf
    b = site.browser
    job = ask_code(b)
    sent_then(site, job, "sending")
    views = site.views

    async def main():
        c = AsyncClient()
        c.cookies = b.cookies  # the session that asked for the code
        loop = asyncio.get_running_loop()
        # (Django 3.2's AsyncClient drops a data dict's query string: it goes in the path.)
        first = await c.get("/async/status/%s.json?wait=0.2" % job)
        assert first.status_code == 200 and first.json()["status"] == "sending"
        client = views._clients[loop][1]
        # Two long polls at once on the loop's one client; the job ends meanwhile.
        loop.call_later(0.3, site.r.hset, "otpd:job:" + job, "status", "sent")
        answers = await asyncio.gather(*(c.get("/async/status/%s.json?wait=10" % job)
                                         for _ in range(2)))
        assert [a.json()["status"] for a in answers] == ["sent", "sent"]
        assert views._clients[loop][1] is client
        # A changed setting gets a new client, and the old one is closed.
        with override_settings(OTPD_PREFIX="other:"):
            assert conf.prefix() == "other:"
            other = await views.otp_client()
            assert other is not client and other.prefix == "other:"
        assert not any(x.is_connected for x in client.redis.connection_pool._available_connections)
        return loop
    loop = run(main())
    assert loop not in views._clients


def test_resend(site):
    b = site.browser
    job = ask_code(b)
    assert b.get("/async/status/%s.json" % job, {"wait": "10"}).json()["status"] == "sent"
    assert b.get("/async/resend/").status_code == 405
    resp = b.post("/async/resend/")
    assert resp.status_code == 200, resp.content
    body = resp.json()
    job2 = body["job"]
    assert job2 != job and body["to"] == "+1415*****71"
    assert body["status_url"] == "/async/status/%s.json" % job2
    st = b.get(body["status_url"], {"wait": "10"}).json()
    assert st["status"] == "sent" and st["final"]
    assert site.r.hget("otpd:job:" + job2, "code_source") == "resent"
    codes = site.otpd.codes(PHONE)
    assert len(codes) == 2 and codes[0] == codes[1]  # the same code, texted again
    assert b.get("/async/status/%s.json" % job).status_code == 404  # the session moved on
    # The code still works through the sync pages.
    assert b.post("/forgot-password/verify/", {"code": codes[1]})["Location"] == \
        "/forgot-password/new-password/"
    # Without a pending code there is nothing to resend.
    from django.test import Client
    assert Client().post("/async/resend/").status_code == 409


def test_resend_for_a_number_without_account(site):
    b = site.browser
    job = ask_code(b, STRANGER)
    body = b.post("/async/resend/").json()
    assert body["job"] != job and body["job"].startswith("password_reset-")
    assert body["to"] == "+1415*****23"
    assert b.get(body["status_url"], {"wait": "5"}).json()["status"] == "sent"
    assert site.r.keys("otpd:job:*") == [] and site.r.xlen("otpd:jobs") == 0


@pytest.mark.parametrize("daemon_env", [{"OTPD_LIMIT_INTERVAL_S": "30"}])
def test_resend_rate_limited(site):
    b = site.browser
    job = ask_code(b)
    assert b.get("/async/status/%s.json" % job, {"wait": "10"}).json()["status"] == "sent"
    resp = b.post("/async/resend/")
    assert resp.status_code == 429
    wait = int(resp["Retry-After"])
    assert 25 < wait <= 30 and resp.json()["kind"] == "rate_limited"
    assert "Try again in %d seconds." % wait in resp.json()["error"]
    assert b.get("/async/status/%s.json" % job).status_code == 200  # still the pending job
