"""Routing, failover, provider rate caps, send limits and SMS-pumping defence (issue 8)."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import ROOT, HASH_KEY, otpd_binary, wait_for
from test_providers import (IN_NUMBER, NUMBER, msg91_env,  # noqa: F401
                            sends, twilio_env)

from otpd import OptedOut, RateLimited, country_code


def both_env(mock, **extra):
    env = twilio_env(mock)
    env.update({k: v for k, v in msg91_env(mock).items() if k.startswith("MSG91_")})
    env.update(extra)
    return env


def test_client_runs_the_daemons_script():
    """Both read python/otpd/lua/limits.lua: the daemon compiled in, the client from its package."""
    p = subprocess.run([otpd_binary(), "--print-limits-script"], capture_output=True, text=True)
    from otpd.client import LIMITS_LUA
    assert p.returncode == 0 and p.stdout == LIMITS_LUA


def test_country_codes():
    assert country_code("+14155552671") == "1"
    assert country_code("+79161234567") == "7"
    assert country_code("+919812345678") == "91"
    assert country_code("+447911123456") == "44"
    assert country_code("+353871234567") == "353"
    assert country_code("+2348012345678") == "234"


def test_routing_per_country(otpd_factory, mock, client):
    otpd_factory(both_env(mock, OTPD_ROUTES="91=msg91,twilio;*=twilio,msg91"))
    a = client.wait(client.send(IN_NUMBER), timeout=10)
    b = client.wait(client.send(NUMBER), timeout=10)
    c = client.wait(client.send("+447911123456", provider="msg91"), timeout=10)
    assert (a["provider"], b["provider"], c["provider"]) == ("msg91", "twilio", "msg91")


def test_retryable_failure_moves_to_the_next_provider(otpd_factory, mock, client):
    mock.rule(to=NUMBER, provider="twilio", behaviour="rate_limited", times=1)
    otpd_factory(both_env(mock, OTPD_ROUTES="*=twilio,msg91"))
    st = client.wait(client.send(NUMBER), timeout=10)
    assert st["status"] == "sent" and st["provider"] == "msg91" and st["attempts"] == "2"


def test_outage_opens_the_circuit_then_a_probe_closes_it(otpd_factory, mock, client, r):
    """Timeline: failures -> circuit open -> traffic to msg91 -> probe -> twilio again."""
    mock.ctl("config", {"default": {"twilio": "unavailable", "msg91": "ok"}})
    otpd = otpd_factory(both_env(mock, OTPD_ROUTES="*=twilio,msg91", OTPD_CIRCUIT_FAILURES="3",
                                 OTPD_CIRCUIT_COOLOFF_MS="1500"))
    t0 = time.monotonic()
    first = [client.send("+1415565%04d" % i) for i in range(6)]
    for j in first:
        assert client.wait(j, timeout=10)["provider"] == "msg91"
    wait_for(lambda: "provider twilio: circuit open" in otpd.stderr, 5)
    opened = time.monotonic() - t0
    # While open, nothing goes to twilio: new jobs go straight to msg91.
    n_twilio = len(sends(mock, "twilio"))
    during = [client.send("+1415566%04d" % i) for i in range(5)]
    for j in during:
        assert client.wait(j, timeout=10)["provider"] == "msg91"
    assert len(sends(mock, "twilio")) == n_twilio
    # Twilio recovers; after the cool-off one probe succeeds and traffic returns.
    mock.ctl("config", {"default": "ok"})
    wait_for(lambda: time.monotonic() - t0 > opened + 1.6, 5)
    after = [client.send("+1415567%04d" % i) for i in range(5)]
    for j in after:
        client.wait(j, timeout=10)
    assert client.status(after[-1])["provider"] == "twilio"
    closed = time.monotonic() - t0
    assert "provider twilio: working again" in otpd.stderr
    print("\nfailover timeline: circuit open at %.2fs, %d jobs served by msg91 meanwhile, "
          "closed by a probe at %.2fs" % (opened, len(first) + len(during), closed))
    assert r.hgetall(next(iter(r.scan_iter("otpd:instance:*"))))["providers"]


def test_rate_cap_is_respected(otpd_factory, mock, client, r):
    otpd_factory(twilio_env(mock, OTPD_TWILIO_RATE="20", OTPD_LOG_LEVEL="notice"))
    pipe = r.pipeline(transaction=False)
    for i in range(100):
        pipe.xadd("otpd:jobs", {"job": json.dumps({"id": "rc-%d" % i, "to": "+1415568%04d" % i})})
    pipe.execute()
    for i in range(100):
        assert client.wait("rc-%d" % i, timeout=15)["status"] == "sent"
    times = sorted(q["time"] for q in sends(mock))
    # A burst of one second's worth, then the steady rate.
    rate = (len(times) - 21) / (times[-1] - times[20])
    print("\nrequest rate against a cap of 20/s: %.1f/s over %d requests" % (rate, len(times)))
    assert rate <= 20 * 1.1
    for k in range(20, len(times) - 20):
        assert times[k + 20] - times[k] >= 0.9  # never 21 in a second after the burst


def test_concurrency_cap_is_respected(otpd_factory, mock, client, r):
    mock.ctl("config", {"default_delay_ms": 300})
    otpd_factory(twilio_env(mock, OTPD_TWILIO_MAX_INFLIGHT="5", OTPD_HTTP_MAX_CONNS="50"))
    jobs = [client.send("+1415569%04d" % i) for i in range(30)]
    for j in jobs:
        assert client.wait(j, timeout=15)["status"] == "sent"
    assert mock.ctl("stats")["max_concurrent"] <= 5


def test_429_pauses_the_provider(otpd_factory, mock, client):
    mock.rule(to="+14155700000", provider="twilio", behaviour="rate_limited", retry_after=2,
              times=1)
    otpd_factory(twilio_env(mock))
    first = client.send("+14155700000")
    wait_for(lambda: sends(mock), 5)
    time.sleep(0.2)
    others = [client.send("+1415570%04d" % i) for i in range(1, 6)]
    for j in [first] + others:
        assert client.wait(j, timeout=10)["status"] == "sent"
    t429 = sends(mock)[0]["time"]
    assert all(q["time"] - t429 >= 1.9 for q in sends(mock)[1:])


LIMITS = {"OTPD_LIMIT_INTERVAL_S": "30", "OTPD_LIMIT_PER_HOUR": "3", "OTPD_LIMIT_PER_DAY": "4"}


def test_minimum_interval(otpd_factory, client, r):
    otpd_factory(LIMITS)
    assert client.wait(client.send(NUMBER))["status"] == "sent"
    with pytest.raises(RateLimited) as e:
        client.send(NUMBER)
    assert e.value.reason == "interval" and 25 < e.value.retry_after <= 30
    # Another purpose, or another number, is not held back.
    assert client.wait(client.send(NUMBER, purpose="verify_phone"))["status"] == "sent"
    # A job that bypasses the client (raw XADD) is refused by the daemon.
    r.xadd("otpd:jobs", {"job": json.dumps({"id": "raw-1", "to": NUMBER})})
    st = client.wait("raw-1")
    assert st["status"] == "rate_limited" and st["error_code"] == "interval"
    assert int(st["retry_at_ms"]) > time.time() * 1000 + 20000


def test_hourly_and_daily_limits(otpd_factory, client, r):
    otpd_factory(dict(LIMITS, OTPD_LIMIT_INTERVAL_S="0"))
    for i in range(3):
        assert client.wait(client.send(NUMBER, purpose="p%d" % i))["status"] == "sent"
    with pytest.raises(RateLimited) as e:
        client.send(NUMBER, purpose="p9")
    assert e.value.reason == "per_hour" and 3500 < e.value.retry_after <= 3600
    # Age the sends past the hour: the daily cap (4) still holds after one more.
    key = "otpd:rl:num:" + NUMBER
    for member, score in r.zrange(key, 0, -1, withscores=True):
        r.zadd(key, {member: score - 3700 * 1000})
    assert client.wait(client.send(NUMBER, purpose="p3"))["status"] == "sent"
    with pytest.raises(RateLimited) as e:
        client.send(NUMBER, purpose="p4")
    assert e.value.reason == "per_day"


def test_global_hourly_ceiling(otpd_factory, client):
    otpd_factory({"OTPD_LIMIT_GLOBAL_PER_HOUR": "5"})
    for i in range(5):
        assert client.wait(client.send("+1415571%04d" % i))["status"] == "sent"
    with pytest.raises(RateLimited) as e:
        client.send("+14155719999")
    assert e.value.reason == "global_per_hour"


def test_country_allow_list(otpd_factory, client, r):
    otpd_factory({"OTPD_ALLOWED_COUNTRIES": "1,44"})
    assert client.wait(client.send(NUMBER))["status"] == "sent"
    st = client.wait(client.send("+2348031234567"))
    assert st["status"] == "failed" and st["error_code"] == "country_not_allowed"
    assert not r.exists("otpd:otp:login:+2348031234567")


def test_country_budget_trips_and_alerts(otpd_factory, client, r):
    from conftest import free_port
    port = free_port()
    otpd = otpd_factory({"OTPD_COUNTRY_HOURLY_BUDGET": "234=3;*=100",
                         "OTPD_METRICS_ADDR": "127.0.0.1:%d" % port})
    for i in range(3):
        assert client.wait(client.send("+234803123%04d" % i))["status"] == "sent"
    with pytest.raises(RateLimited) as e:
        client.send("+2348031239999")
    assert e.value.reason == "country_budget"
    r.xadd("otpd:jobs", {"job": json.dumps({"id": "pump-1", "to": "+2348012348888"})})
    st = client.wait("pump-1")
    assert st["status"] == "rate_limited" and st["error_code"] == "country_budget"
    # The status is written by the script; the daemon logs the alert on its reply.
    wait_for(lambda: "ALERT: hourly budget for country +234 exceeded" in otpd.stderr, 5,
             what="the budget alert in the log")
    assert r.exists("otpd:alert:country_budget:234")
    # Other countries go on.
    assert client.wait(client.send(NUMBER))["status"] == "sent"
    import urllib.request
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port).read().decode()
    assert "otpd_country_budget_exceeded_total 1" in text


def test_stop_is_remembered(otpd_factory, mock, client, r):
    mock.rule(to=NUMBER, provider="twilio", behaviour="opted_out", times=1)
    otpd_factory(twilio_env(mock))
    st = client.wait(client.send(NUMBER), timeout=10)
    assert st["status"] == "failed" and st["error_code"] == "21610"
    assert r.hexists("otpd:optout", NUMBER)
    env0 = dict(os.environ, REDIS_URL="redis://127.0.0.1:%d/0"
                % r.connection_pool.connection_kwargs["port"], OTPD_HASH_KEY=HASH_KEY)
    p = subprocess.run([os.path.join(ROOT, "python", "otpctl"), "optout", "list", "--json"],
                       env=env0, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert [o["to"] for o in json.loads(p.stdout)] == ["+1415*****71"]
    with pytest.raises(OptedOut):
        client.send(NUMBER)
    r.xadd("otpd:jobs", {"job": json.dumps({"id": "stop-2", "to": NUMBER})})
    assert client.wait("stop-2")["error_code"] == "opted_out"
    assert len(sends(mock)) == 1  # skipped, not sent
    # The operator removes it after the user texted START.
    env = dict(os.environ, REDIS_URL="redis://127.0.0.1:%d/0" % r.connection_pool.connection_kwargs["port"],
               OTPD_HASH_KEY=HASH_KEY)
    p = subprocess.run([os.path.join(ROOT, "python", "otpctl"), "optout", "remove", NUMBER],
                       env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert client.wait(client.send(NUMBER), timeout=10)["status"] == "sent"


def test_limits_hold_across_instances(otpd_factory, client, r, redis_server):
    env = {"OTPD_LIMIT_INTERVAL_S": "0", "OTPD_LIMIT_PER_HOUR": "5", "OTPD_LIMIT_PER_DAY": "0"}
    for _ in range(3):
        otpd_factory(env)
    pipe = r.pipeline(transaction=False)
    for i in range(40):
        pipe.xadd("otpd:jobs", {"job": json.dumps({"id": "multi-%d" % i, "to": NUMBER,
                                                    "purpose": "p%d" % i})})
    pipe.execute()
    sts = [client.wait("multi-%d" % i, timeout=15)["status"] for i in range(40)]
    assert sts.count("sent") == 5 and sts.count("rate_limited") == 35
    consumers = r.xinfo_consumers("otpd:jobs", "otpd")
    assert len([c for c in consumers]) == 3


def test_sighup_changes_the_limits_at_once(tmp_path, otpd_factory, r):
    """A reload's limits apply to the next job, and the published copy follows."""
    conf = tmp_path / "otpd.env"
    conf.write_text("OTPD_LIMIT_PER_HOUR=1\n")
    otpd = otpd_factory(args=["-c", str(conf)], start=False)
    del otpd.env["OTPD_LIMIT_PER_HOUR"]  # the file decides, as on a real host
    otpd.start()

    def send(jid):
        r.xadd("otpd:jobs", {"job": json.dumps({"id": jid, "to": "+14155550188"})})
        wait_for(lambda: r.hget("otpd:job:" + jid, "status") in ("sent", "rate_limited"), 10)
        return r.hget("otpd:job:" + jid, "status")

    assert send("h1") == "sent"
    assert send("h2") == "rate_limited"
    conf.write_text("OTPD_LIMIT_PER_HOUR=3\n")
    otpd.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload: OTPD_LIMIT_PER_HOUR updated" in otpd.stderr, 5)
    assert send("h3") == "sent"
    assert r.hget("otpd:limits", "per_hour") == "3"
