"""The Python client, otpctl and the Django helpers under Redis Sentinel.

Real redis-server and redis-sentinel processes on loopback (sentinels.py),
no daemon: where the daemon's half is needed (the OTP record) it is written
as test_client.py writes it.  The failover tests pin what otpd.connection's
docstring promises a web app.
"""
import json
import os
import subprocess
import time

import pytest
import redis
from redis.sentinel import MasterNotFoundError, Sentinel

from conftest import HASH_KEY, ROOT, free_port
from sentinels import SentinelCluster
from test_client import daemon_writes_otp
from test_otpctl import run

from otpd import OTPClient
from otpd.connection import SENTINEL_RECHECK, parse_sentinels, redis_from_settings

TO = "+14155552671"
DB = 3  # REDIS_URL's db, which the client keeps under Sentinel
# Under Sentinel REDIS_URL's host and port are not used: nothing listens on port 1.
URL = "redis://127.0.0.1:1/%d" % DB
SHARED_NAME = "otpd-test"
SHARED_PASSWORD = "sentinel-secret"


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    """One cluster for the tests that do not fail it over: a master name
    other than the default and sentinels with a password."""
    c = SentinelCluster(tmp_path_factory.mktemp("sentinels"), master_name=SHARED_NAME,
                        sentinel_password=SHARED_PASSWORD)
    yield c
    c.stop()


@pytest.fixture
def shared(shared_cluster):
    with shared_cluster.master_client() as m:
        m.flushall()
    return shared_cluster


@pytest.fixture
def cluster(tmp_path):
    """A cluster of its own, to fail over: the default master name, no password."""
    c = SentinelCluster(tmp_path)
    yield c
    c.stop()


def sentinel_env(c, **extra):
    env = {"REDIS_URL": URL, "OTPD_HASH_KEY": HASH_KEY, "OTPD_REDIS_SENTINELS": c.sentinels}
    if c.master_name != "mymaster":
        env["OTPD_REDIS_MASTER_NAME"] = c.master_name
    if c.sentinel_password:
        env["OTPD_REDIS_SENTINEL_PASSWORD"] = c.sentinel_password
    env.update(extra)
    return env


def client_from_env(monkeypatch, env):
    for k in ("REDIS_URL", "OTPD_REDIS_SENTINELS", "OTPD_REDIS_MASTER_NAME",
              "OTPD_REDIS_SENTINEL_PASSWORD", "OTPD_PREFIX", "OTPD_STATUS_TTL"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return OTPClient.from_env()


def on(addr, db=DB):
    """A plain client of one server."""
    return redis.Redis(host=addr[0], port=addr[1], db=db, decode_responses=True)


def queued(r, job_id):
    return r.hget("otpd:job:" + job_id, "status") == "queued"


# --- the settings, without servers ----------------------------------------

@pytest.mark.parametrize("value, want", [
    ("", []),
    (None, []),
    ("127.0.0.1:26379", [("127.0.0.1", 26379)]),
    ("sentinel1,[::1]", [("sentinel1", 26379), ("::1", 26379)]),  # Sentinel's port, as the daemon
    ("s1.example:26379, s2.example:26380 ,10.0.0.3:1",
     [("s1.example", 26379), ("s2.example", 26380), ("10.0.0.3", 1)]),
    ("[::1]:26379,[2001:db8::7]:65535", [("::1", 26379), ("2001:db8::7", 65535)]),
    (["h1:26379", ("h2", 26380), ("::1", 3), ("[::1]", 4)],
     [("h1", 26379), ("h2", 26380), ("::1", 3), ("::1", 4)]),
])
def test_sentinel_list_parsed(value, want):
    assert parse_sentinels(value) == want


@pytest.mark.parametrize("value", [
    "h:", ":26379", "h:0", "h:65536", "h:123456", "h:1,", ",h:1", "h:1,,h:2",
    " ", "::1:26379", "[::zz]:1", "[h]:1", "h:1:2", "user@h:1", "h:1/0", "h :1",
    "h:+1", ["h:1", ("h", "2")], [("h", True)], [("h", 1, 2)], 26379, {"h": 1},
])
def test_bad_sentinel_list_refused(value):
    with pytest.raises(ValueError, match="OTPD_REDIS_SENTINELS"):
        redis_from_settings(URL, value)


def test_url_gives_user_password_and_db_under_sentinel():
    r = redis_from_settings("redis://otp:p%40ss@ignored:1/5", "127.0.0.1:26379",
                            master_name="", sentinel_password="sp")
    kw = r.connection_pool.connection_kwargs
    assert (kw["username"], kw["password"], kw["db"]) == ("otp", "p@ss", 5)
    assert r.connection_pool.service_name == "mymaster"  # "" is the default, as unset
    s = r.connection_pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
    assert (s["host"], s["port"], s["password"], s["socket_timeout"]) == ("127.0.0.1", 26379,
                                                                           "sp", 0.5)
    plain = redis_from_settings("redis://h:7/2", "")
    assert type(plain.connection_pool) is redis.ConnectionPool
    assert (plain.connection_pool.connection_kwargs["host"],
            plain.connection_pool.connection_kwargs["db"]) == ("h", 2)


@pytest.mark.parametrize("url", ["unix:///run/redis.sock?db=1", "rediss://h:1/0"])
def test_sentinels_want_a_redis_url(url):
    with pytest.raises(ValueError, match="REDIS_URL must be redis://"):
        redis_from_settings(url, "127.0.0.1:26379")


# --- the client through the sentinels -------------------------------------

def test_send_and_verify_through_sentinels(shared, monkeypatch):
    client = client_from_env(monkeypatch, sentinel_env(shared))
    job_id = client.send(TO)
    with shared.master_client(db=DB) as m:
        [(_, fields)] = m.xrange("otpd:jobs")
        assert json.loads(fields["job"])["id"] == job_id and queued(m, job_id)
        daemon_writes_otp(m, "123456", job=job_id)
    assert client.status(job_id)["status"] == "queued"
    assert client.verify(TO, "654321").status == "mismatch"
    res = client.verify(TO, "123456")
    assert res.ok and res.job_id == job_id


@pytest.mark.parametrize("bad, answer", [
    ({"OTPD_REDIS_SENTINEL_PASSWORD": "wrong"}, "WRONGPASS invalid username-password pair"),
    ({"OTPD_REDIS_SENTINEL_PASSWORD": ""}, "Authentication required"),
    ({"OTPD_REDIS_MASTER_NAME": "nosuch"}, "does not know it"),
])
def test_sentinels_refusing_us_is_a_clear_error(shared, monkeypatch, bad, answer):
    client = client_from_env(monkeypatch, sentinel_env(shared, **bad))
    with pytest.raises(MasterNotFoundError) as e:
        client.send(TO)
    msg = str(e.value)
    for p in shared.sentinel_ports:  # every sentinel was asked, and what it said is shown
        assert "127.0.0.1:%d: " % p in msg
    assert msg.count(answer) == 3, msg
    assert msg.endswith("; check OTPD_REDIS_SENTINELS, OTPD_REDIS_MASTER_NAME and "
                        "OTPD_REDIS_SENTINEL_PASSWORD")


def test_all_sentinels_unreachable(monkeypatch):
    dead = "127.0.0.1:%d,127.0.0.1:%d" % (free_port(), free_port())
    client = client_from_env(monkeypatch, {"REDIS_URL": URL, "OTPD_HASH_KEY": HASH_KEY,
                                           "OTPD_REDIS_SENTINELS": dead})
    t0 = time.monotonic()
    with pytest.raises(redis.ConnectionError) as e:
        client.send(TO)
    assert type(e.value) is MasterNotFoundError and time.monotonic() - t0 < 5
    msg = str(e.value)
    assert msg.startswith("no sentinel gave the address of master 'mymaster' (127.0.0.1:")
    assert msg.count("Connection refused") == 2 and "OTPD_REDIS_SENTINELS" in msg


def test_failover_next_call_reaches_the_new_master(cluster, monkeypatch):
    """After SENTINEL FAILOVER no call fails and the first one goes to the
    new master.  redis-py's own pool, for contrast, keeps writing to the old
    master (lost when it is demoted), then fails one call with
    ConnectionError("The previous master is now a slave")."""
    client = client_from_env(monkeypatch, sentinel_env(cluster))
    sentinel = Sentinel([("127.0.0.1", p) for p in cluster.sentinel_ports])
    plain = OTPClient(redis=sentinel.master_for("mymaster", db=DB, decode_responses=True),
                      hash_key=HASH_KEY)
    client.send(TO, id="before-1")  # both hold a connection to the old master now
    plain.send(TO, id="before-2")
    old = cluster.master_addr()
    new = cluster.failover()
    time.sleep(SENTINEL_RECHECK)  # the pool asks the sentinels at most this often

    with on(old) as o, on(new) as n:
        assert client.send(TO, id="after") == "after"
        assert queued(n, "after") and not o.exists("otpd:job:after")
        daemon_writes_otp(n, "123456", job="after")
        assert client.verify(TO, "123456").ok
        # The old master still takes writes until the sentinels demote it:
        assert o.execute_command("ROLE")[0] == "master"
        plain.send(TO, id="lost")
        assert queued(o, "lost") and not n.exists("otpd:job:lost")

        # Demoted under an open connection (Sentinel adds CLIENT KILL; a
        # replica of nothing keeps this deterministic): one call fails, having
        # written nothing, and the next reaches the new master.
        o.replicaof("127.0.0.1", 1)
        with pytest.raises(redis.ConnectionError) as e:
            plain.send(TO, id="refused")
        assert type(e.value) is redis.ConnectionError
        assert str(e.value) == "The previous master is now a slave"
        assert plain.send(TO, id="next") == "next"
        assert queued(n, "next") and not n.exists("otpd:job:refused")
        assert n.xlen("otpd:jobs") == 4  # before-1, before-2 (replicated), after, next


def test_master_killed(cluster, monkeypatch):
    """While the master is down calls fail with ConnectionError; the first
    call once the sentinels have promoted the replica succeeds."""
    client = client_from_env(monkeypatch, sentinel_env(cluster))
    client.send(TO, id="before")
    with cluster.master_client() as m:
        assert m.execute_command("WAIT", 1, 2000) == 1  # on the replica too
    old = cluster.kill_master(wait=False)
    with pytest.raises(redis.ConnectionError):
        client.send(TO, id="during")
    new = cluster.wait_promoted(old)

    assert client.send(TO, id="after") == "after"
    with on(new) as n:
        assert queued(n, "before") and queued(n, "after") and not n.exists("otpd:job:during")
        daemon_writes_otp(n, "123456", job="after")
    assert client.verify(TO, "123456").ok

    cluster.restart(old)  # back as a replica of the new master, synced
    with on(old) as o:
        assert o.execute_command("ROLE")[0] == "slave" and queued(o, "after")


# --- otpctl ------------------------------------------------------------------

def heartbeat(c, db=DB):
    now = int(time.time() * 1000)
    with c.master_client(db=db) as m:
        m.hset("otpd:instance:web1:1", mapping={"consumer": "web1:1", "started_ms": now,
                                                "updated_ms": now})
        m.pexpire("otpd:instance:web1:1", 15000)


def test_otpctl_through_sentinels(shared, monkeypatch, tmp_path):
    client = client_from_env(monkeypatch, sentinel_env(shared))
    client.send(TO)
    heartbeat(shared)
    env = sentinel_env(shared)
    rc, out, err = run("status", "--json", env=env)
    assert rc == 0, out + err
    st = json.loads(out)
    assert st["backlog"] == 1 and st["alive"]
    assert st["redis"] == "master '%s' via sentinels %s" % (SHARED_NAME, shared.sentinels)
    assert SHARED_PASSWORD not in out + err
    # The same settings from a .env file.
    envfile = tmp_path / "otpd.env"
    envfile.write_text("".join("%s=%s\n" % kv for kv in env.items()))
    rc, out, err = run("-c", str(envfile), "status", env={})
    assert rc == 0, out + err
    assert "backlog" in out and SHARED_NAME in out


def test_otpctl_bad_sentinel_list_exits_2():
    env = {"REDIS_URL": URL, "OTPD_REDIS_SENTINELS": "127.0.0.1:26379,sentinel/2"}
    rc, out, err = run("status", env=env)
    assert rc == 2 and out == ""
    assert err == "otpctl: OTPD_REDIS_SENTINELS: 'sentinel/2' is not host:port (IPv6 as " \
                  "[addr]:port)\n"
    rc, out, err = run("status", "--json", env=env)
    assert rc == 2 and "OTPD_REDIS_SENTINELS" in json.loads(out)["error"]


def test_otpctl_sentinels_unreachable():
    dead = "127.0.0.1:%d,[::1]:%d" % (free_port(), free_port())
    rc, out, err = run("status", env={"REDIS_URL": URL, "OTPD_REDIS_SENTINELS": dead})
    assert rc == 1 and "Traceback" not in err
    assert err.startswith("otpctl: Redis at master 'mymaster' via sentinels %s: no sentinel "
                          "gave the address of master 'mymaster' (127.0.0.1:" % dead)
    assert err.count("Connection refused") == 2 and len(err.splitlines()) == 1


# --- the Django helpers ---------------------------------------------------------

DJANGO_SCRIPT = """
import json, sys
import django
from django.conf import settings
settings.configure(OTPD_REDIS_URL=sys.argv[1], OTPD_REDIS_SENTINELS=json.loads(sys.argv[2]),
                   OTPD_REDIS_MASTER_NAME=sys.argv[3], OTPD_REDIS_SENTINEL_PASSWORD=sys.argv[4],
                   OTPD_HASH_KEY=sys.argv[5], INSTALLED_APPS=["otpd.django"])
django.setup()
from django.test.utils import override_settings
from otpd.django import OTPServiceUnavailable, send_otp
job = send_otp("+14155552671")
with override_settings(OTPD_REDIS_SENTINELS="h:1,no/pe"):
    try:
        send_otp("+14155552671")
        bad = None
    except OTPServiceUnavailable as e:  # the user sees "unavailable"; the site's log, why
        bad = e.detail
print(json.dumps({"job": job, "bad": bad}))
"""


def test_django_helpers_through_sentinels(shared):
    # A list of a "host:port" string and (host, port) pairs, as a settings.py may have it.
    ports = shared.sentinel_ports
    sentinels = ["127.0.0.1:%d" % ports[0]] + [["127.0.0.1", p] for p in ports[1:]]
    p = subprocess.run(["/usr/bin/python3", "-c", DJANGO_SCRIPT, URL, json.dumps(sentinels),
                        SHARED_NAME, SHARED_PASSWORD, HASH_KEY],
                       env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python")),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    with shared.master_client(db=DB) as m:
        assert queued(m, res["job"])
    assert res["bad"] == ("ImproperlyConfigured: OTPD_REDIS_SENTINELS: 'no/pe' is not host:port "
                          "(IPv6 as [addr]:port)")
