"""Redis high availability from the daemon's side, on loopback: Sentinel,
failover with jobs in flight, WAIT for replicas, READONLY, dead sentinels.

The servers are real redis-server and redis-sentinel processes
(sentinels.SentinelCluster); the provider is the HTTPS Twilio mock with a
delay, so jobs are in flight when Redis changes under them.  The multi-host
versions of these faults (kill, partition, netem) are test_ha_netns.py.
"""
import os
import shutil
import subprocess
import time
import urllib.request

import pytest

from conftest import HASH_KEY, RedisServer, free_port, otpd_binary, wait_for
from otpd import OTPClient
from test_providers import code_in, sends, twilio_env
from test_reliability import enqueue, statuses

pytestmark = pytest.mark.skipif(shutil.which("redis-sentinel") is None,
                                reason="redis-sentinel is not installed")

FINAL = {"sent", "delivered", "undelivered", "failed", "expired", "rejected", "rate_limited"}


@pytest.fixture(params=[1])
def cluster(tmp_path, request):
    """A primary with request.param replicas and three sentinels."""
    from sentinels import SentinelCluster
    d = tmp_path / "ha"
    d.mkdir()
    c = SentinelCluster(d, replicas=request.param)
    yield c
    c.stop()


def ha_env(mock, cluster, **extra):
    env = dict(OTPD_REDIS_SENTINELS=cluster.sentinels, OTPD_LOG_LEVEL="info",
               OTPD_CLAIM_IDLE_MS="3000", OTPD_TWILIO_MAX_INFLIGHT="500",
               OTPD_HTTP_MAX_CONNS="200", REDIS_URL="redis://127.0.0.1:1/0")
    env.update(extra)
    return twilio_env(mock, **env)


def metric(port, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as f:
        for line in f.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    raise AssertionError("no metric %s" % name)


def codes_sent(mock):
    """The last code texted to each number (what the user types)."""
    last = {}
    for q in sends(mock):
        if q["status"] == 201:
            last[q["form"]["To"]] = code_in(q["form"]["Body"])
    return last


def longest_gap(mock):
    times = sorted(q["time"] for q in sends(mock))
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def unverifiable(r, codes):
    c = OTPClient(redis=r, hash_key=HASH_KEY)
    return sum(1 for to, code in codes.items() if not c.verify(to, code))


@pytest.mark.parametrize("cluster", [1, 2], indirect=True, ids=["1-replica", "2-replicas"])
def test_failover_with_jobs_in_flight_loses_nothing(cluster, otpd_factory, mock):
    """SENTINEL FAILOVER while 500 jobs flow through a 200 ms provider: the
    daemon follows +switch-master, every job ends sent, and with WAIT every
    code on a phone verifies on the new master.  With one replica, sending
    pauses until the old master has rejoined as the new one's replica
    (WAIT=1 needs one); with two, the other replica answers at once."""
    mock.ctl("config", {"default_delay_ms": 200})
    port = free_port()
    d = otpd_factory(ha_env(mock, cluster, OTPD_REDIS_WAIT_REPLICAS="1",
                            OTPD_METRICS_ADDR="127.0.0.1:%d" % port))
    assert "connected to the master at 127.0.0.1:%d" % cluster.master_addr()[1] in d.stderr
    r = cluster.master_client()
    ids = enqueue(r, 250, prefix="fa")
    wait_for(lambda: len(sends(mock)) >= 100, 20, what="sends under way")
    started = time.monotonic()
    new = cluster.failover()
    r.close()
    r = cluster.master_client()
    ids += enqueue(r, 250, prefix="fb", number=lambda i: "+1415570%04d" % i)
    wait_for(lambda: all(s in FINAL for s in statuses(r, ids)), 60, interval=0.2,
             what="every job final on the new master %s:%d" % new)
    sts = statuses(r, ids)
    codes = codes_sent(mock)
    bad = unverifiable(r, codes)
    print("\nfailover, %d replica(s): %d jobs, %d sent, %d numbers texted, %d codes "
          "unverifiable, longest gap between sends %.2f s, all final %.2f s after the failover"
          % (len(cluster.servers) - 1, len(ids), sts.count("sent"), len(codes), bad,
             longest_gap(mock), time.monotonic() - started))
    assert sts.count("sent") == len(ids)
    assert len(codes) == len(ids) and bad == 0
    assert "+switch-master: master mymaster moved to 127.0.0.1:%d" % new[1] in d.stderr
    assert metric(port, "otpd_redis_master_switches_total") >= 1
    r.close()


def test_wait_holds_codes_until_a_replica_has_them(cluster, otpd_factory, mock):
    """With OTPD_REDIS_WAIT_REPLICAS=1 and the only replica down, no code is
    texted (its record could be lost in a failover); once the replica is
    back, every job is sent and its code verifies."""
    port = free_port()
    d = otpd_factory(ha_env(mock, cluster, OTPD_REDIS_WAIT_REPLICAS="1",
                            OTPD_REDIS_WAIT_TIMEOUT_MS="200",
                            OTPD_METRICS_ADDR="127.0.0.1:%d" % port))
    master = cluster.master_addr()
    replica = next(p for p, s in cluster.servers.items() if p != master[1])
    cluster.servers[replica].stop()
    r = cluster.master_client()
    ids = enqueue(r, 20, prefix="w")
    wait_for(lambda: metric(port, 'otpd_redis_waits_short_total{step="begin"}') >= 3, 10,
             what="WAITs that no replica answered")
    time.sleep(0.5)
    assert sends(mock) == []
    assert set(statuses(r, ids)) == {"sending"}
    assert "0 of the 1 replicas OTPD_REDIS_WAIT_REPLICAS asks for confirmed" in d.stderr
    cluster.restart(("127.0.0.1", replica))
    wait_for(lambda: set(statuses(r, ids)) == {"sent"}, 30, interval=0.2,
             what="every job sent once the replica is back")
    codes = codes_sent(mock)
    assert len(codes) == 20 and unverifiable(r, codes) == 0
    r.close()


def test_dead_sentinels_change_nothing(cluster, otpd_factory, mock):
    """A sentinel that is down (first in the list, and another killed while
    jobs flow) is skipped: nothing reconnects, every job is sent."""
    dead = "127.0.0.1:%d" % free_port()
    d = otpd_factory(ha_env(mock, cluster, OTPD_REDIS_SENTINELS=dead + "," + cluster.sentinels))
    r = cluster.master_client()
    ids = enqueue(r, 100, prefix="ds")
    cluster._procs[0].kill()
    ids += enqueue(r, 100, prefix="dt", number=lambda i: "+1415571%04d" % i)
    wait_for(lambda: set(statuses(r, ids)) == {"sent"}, 30, interval=0.2, what="every job sent")
    assert "reconnecting" not in d.stderr
    assert d.stderr.count("connected to the master") == 2  # the reader and the writer, once
    r.close()


def test_a_master_turned_replica_is_left_until_it_is_master_again(tmp_path, otpd_factory, mock):
    """Without Sentinel: the server otpd writes to becomes a replica. The
    first write refused READONLY ends the connection; ROLE keeps it from
    coming back while the server is a replica; jobs wait and are sent once
    it is a master again."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = RedisServer(str(tmp_path / "a")), RedisServer(str(tmp_path / "b"))
    a.start()
    b.start()
    try:
        d = otpd_factory(twilio_env(mock, OTPD_HEARTBEAT_MS="200", OTPD_LOG_LEVEL="info"),
                         redis=a)
        ra = a.client()
        ra.replicaof("127.0.0.1", b.port)
        wait_for(lambda: "answered READONLY" in d.stderr, 10, what="a READONLY reply")
        wait_for(lambda: "is not the master (ROLE slave)" in d.stderr, 10, what="ROLE refused")
        ra.replicaof("no", "one")
        ids = enqueue(ra, 10, prefix="ro")
        wait_for(lambda: set(statuses(ra, ids)) == {"sent"}, 20, interval=0.2,
                 what="jobs sent once the server is a master again")
        assert d.stderr.count("is not the master (ROLE slave)") == 1  # said once, not per retry
        ra.close()
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("value,says", [
    ("10.0.0.1:26379,,10.0.0.2", "an empty entry"),
    ("user:pw@10.0.0.1:26379", "OTPD_REDIS_SENTINEL_PASSWORD"),
    ("10.0.0.1:99999", "is not host:port"),
])
def test_bad_sentinel_settings_are_refused_at_start(value, says):
    env = {"PATH": os.environ.get("PATH", ""), "OTPD_HASH_KEY": HASH_KEY,
           "OTPD_REDIS_SENTINELS": value}
    p = subprocess.run([otpd_binary(), "--check-config"], env=env, capture_output=True,
                       text=True, timeout=20)
    assert p.returncode != 0
    assert "OTPD_REDIS_SENTINELS" in p.stderr and says in p.stderr
