"""Never lose a job: fault tests that kill real processes.

Each test states the guarantee it proves (docs/reliability.md points here).
Providers are the HTTPS mock from test_providers; Redis is a real
redis-server that the tests stop, kill and restart.
"""
import json
import signal
import time

from conftest import HASH_KEY, wait_for, RedisServer
from otpd.client import mac
from test_providers import (NUMBER, SID, code_in, msg91_env, sends,  # noqa: F401
                            twilio_env)

FINAL = {"sent", "delivered", "undelivered", "failed", "expired", "rejected", "duplicate"}


def enqueue(r, n, prefix="j", ttl=300, number=lambda i: "+1415560%04d" % i):
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd("otpd:jobs", {"job": json.dumps(
            {"id": "%s-%d" % (prefix, i), "to": number(i), "ttl": ttl})})
    pipe.execute()
    return ["%s-%d" % (prefix, i) for i in range(n)]


def statuses(r, ids):
    pipe = r.pipeline(transaction=False)
    for i in ids:
        pipe.hget("otpd:job:" + i, "status")
    return pipe.execute()


def all_final(r, ids):
    return all(s in FINAL for s in statuses(r, ids))


def test_duplicate_id_is_not_sent_twice(otpd, client, r):
    """Idempotency: a second job with the same id is `duplicate`, and only one SMS goes out."""
    job = client.send(NUMBER, id="signup-42")
    assert client.wait(job)["status"] == "sent"
    r.xadd("otpd:jobs", {"job": json.dumps({"id": "signup-42", "to": NUMBER})})
    wait_for(lambda: any(f["status"] == "duplicate" for _i, f in r.xrange("otpd:events")), 10)
    assert client.status("signup-42")["status"] == "sent"  # the first job's record stands
    assert len(otpd.codes(NUMBER)) == 1
    assert r.hget("otpd:stats", "jobs:duplicate") == "1"
    assert r.xlen("otpd:jobs") == 0


def test_duplicate_while_first_in_flight(otpd_factory, mock, client, r):
    mock.rule(to=NUMBER, provider="twilio", behaviour="slow", delay_ms=1500)
    otpd_factory(twilio_env(mock))
    r.xadd("otpd:jobs", {"job": json.dumps({"id": "dup-1", "to": NUMBER})})
    wait_for(lambda: sends(mock), 5)
    r.xadd("otpd:jobs", {"job": json.dumps({"id": "dup-1", "to": NUMBER})})
    assert client.wait("dup-1", timeout=10)["status"] == "sent"
    wait_for(lambda: r.hget("otpd:stats", "jobs:duplicate") == "1", 5)
    assert len(sends(mock)) == 1


def ghost_claim(r, n=1):
    """Entries read by a consumer that then 'died' (never acks)."""
    return r.xreadgroup("otpd", "ghost:1", {"otpd:jobs": ">"}, count=n)


def test_dead_consumers_jobs_are_taken_over_with_a_fresh_code(otpd_factory, client, r):
    """Crash recovery: a dead consumer's pending entries are reclaimed and sent."""
    r.xgroup_create("otpd:jobs", "otpd", id="0", mkstream=True)
    job = client.send(NUMBER)
    ghost_claim(r)
    assert r.xpending("otpd:jobs", "otpd")["pending"] == 1
    otpd = otpd_factory({"OTPD_CLAIM_IDLE_MS": "1000"})
    st = client.wait(job, timeout=10)
    assert st["status"] == "sent"
    assert "reclaimed 1 job" in otpd.stderr
    assert r.xpending("otpd:jobs", "otpd")["pending"] == 0
    assert client.verify(NUMBER, otpd.codes(NUMBER)[-1]).ok


def test_reclaimed_job_already_sent_is_only_acked(otpd_factory, client, r):
    """A job whose status shows the provider accepted it is not sent again."""
    r.xgroup_create("otpd:jobs", "otpd", id="0", mkstream=True)
    sid = r.xadd("otpd:jobs", {"job": json.dumps({"id": "done-1", "to": NUMBER})})
    ghost_claim(r)
    # The dead instance wrote "sent" and died before its XACK.
    r.hset("otpd:job:done-1", mapping={"status": "sent", "stream_id": sid})
    otpd = otpd_factory({"OTPD_CLAIM_IDLE_MS": "1000"})
    wait_for(lambda: r.xpending("otpd:jobs", "otpd")["pending"] == 0, 10)
    assert otpd.codes() == []
    assert "already sent" in otpd.stderr
    assert r.xlen("otpd:jobs") == 0


def test_live_instance_keeps_its_jobs(otpd_factory, mock, client, r):
    """Jobs waiting in backoff are refreshed, so a second instance never steals them."""
    mock.rule(to=NUMBER, provider="twilio", behaviour="unavailable", times=6)
    env = twilio_env(mock, OTPD_CLAIM_IDLE_MS="900", OTPD_RETRY_BASE_MS="700",
                     OTPD_RETRY_MAX_MS="1000")
    a = otpd_factory(env)
    job = client.send(NUMBER)
    wait_for(lambda: client.status(job).get("status") == "retrying", 5)
    b = otpd_factory(env)
    st = client.wait(job, timeout=20)
    assert st["status"] == "sent"
    assert "reclaimed" not in a.stderr + b.stderr
    assert len(sends(mock)) == 7  # one instance, one sequence of attempts


def test_kill_9_with_jobs_in_flight(otpd_factory, mock, client, r):
    """kill -9 with ~500 requests in flight at a slow provider, then a restart: every job
    sent, no number gets two different codes, every stored MAC matches the code on the
    phone, and numbers texted twice are at most the requests unanswered at the kill."""
    mock.ctl("config", {"default_delay_ms": 2000})
    env = twilio_env(mock, OTPD_CLAIM_IDLE_MS="1500", OTPD_HTTP_MAX_CONNS="500",
                     OTPD_TWILIO_MAX_INFLIGHT="2000", OTPD_MAX_INFLIGHT="2000", OTPD_BATCH="500",
                     OTPD_LOG_LEVEL="notice", OTPD_HTTP_TIMEOUT_MS="10000")
    ids = enqueue(r, 1000, prefix="k")
    first = otpd_factory(env)
    wait_for(lambda: len(sends(mock)) >= 500, 40, what="500 requests at the mock")
    first.kill()
    in_flight = len(sends(mock))
    # The mock notices the dropped connections: those requests were never answered.
    time.sleep(0.5)
    unanswered = sum(1 for q in sends(mock) if q["client_disconnected"])
    mock.ctl("config", {"default_delay_ms": 0})
    second = otpd_factory(env)
    wait_for(lambda: all_final(r, ids), 60, interval=0.2, what="every job final")
    sts = statuses(r, ids)
    lost = sum(1 for s in sts if s != "sent")
    texts = {}
    for q in sends(mock):
        if q["status"] == 201:
            texts.setdefault(q["form"]["To"], []).append(code_in(q["form"]["Body"]))
    twice = sum(1 for c in texts.values() if len(c) > 1)
    different = sum(1 for c in texts.values() if len(set(c)) > 1)
    bad_mac = sum(1 for to, c in texts.items()
                  if r.hget("otpd:otp:login:" + to, "mac") != mac("login", to, c[0], HASH_KEY))
    print("\nkill -9: %d requests in flight at the kill, %d of them unanswered; after the "
          "restart %d numbers texted twice, %d with different codes, %d MACs not matching the "
          "phone, %d lost; %d reclaimed jobs found at Twilio and not texted again"
          % (in_flight, unanswered, twice, different, bad_mac, lost,
             second.stderr.count("did reach Twilio")))
    assert lost == 0 and len(texts) == 1000
    assert different == 0
    assert bad_mac == 0
    assert twice <= unanswered
    assert r.xlen("otpd:jobs") == 0 and r.xpending("otpd:jobs", "otpd")["pending"] == 0


def test_kill_9_msg91_resends_the_same_code(otpd_factory, mock, client, r):
    """MSG91 cannot be asked whether a message went out: after a crash the reclaimed job
    texts again, but the same code, so either SMS works."""
    mock.ctl("config", {"default_delay_ms": 1500})
    env = msg91_env(mock, OTPD_CLAIM_IDLE_MS="1000", OTPD_LOG_LEVEL="notice",
                    OTPD_HTTP_TIMEOUT_MS="10000")
    ids = enqueue(r, 100, prefix="m", number=lambda i: "+9198100%05d" % i)
    first = otpd_factory(env)
    wait_for(lambda: len(sends(mock, "msg91")) >= 50, 15)
    first.kill()
    mock.ctl("config", {"default_delay_ms": 0})
    otpd_factory(env)
    wait_for(lambda: all_final(r, ids), 30, interval=0.2, what="every job final")
    assert set(statuses(r, ids)) == {"sent"}
    codes = {}
    for q in sends(mock, "msg91"):
        for rcpt in q["json"]["recipients"]:
            codes.setdefault(rcpt["mobiles"], []).append(rcpt["otp"])
    twice = [c for c in codes.values() if len(c) > 1]
    print("\nkill -9, MSG91: %d numbers texted twice, all with their first code" % len(twice))
    assert len(codes) == 100 and twice
    assert all(len(set(c)) == 1 for c in codes.values())
    for m, c in codes.items():
        assert client.verify("+" + m, c[0]).ok


def test_redis_restart_with_aof_loses_nothing(tmp_path, otpd_factory, mock, client):
    """A redis-server restart (AOF on) mid-run: reconnect, hold writes, lose no job."""
    srv = RedisServer(str(tmp_path), appendonly=True)
    srv.start()
    try:
        r = srv.client()
        mock.ctl("config", {"default_delay_ms": 700})
        otpd = otpd_factory(twilio_env(mock, OTPD_HTTP_MAX_CONNS="200",
                                               OTPD_TWILIO_MAX_INFLIGHT="300"), redis=srv)
        ids = enqueue(r, 300, prefix="aof")
        wait_for(lambda: len(mock.requests("twilio")) >= 50, 10)
        srv.stop()  # SIGTERM: Redis flushes its AOF
        time.sleep(1.0)
        otpd.assert_alive()
        srv.start()
        r = srv.client()
        wait_for(lambda: all_final(r, ids), 40, interval=0.2, what="every job final")
        assert set(statuses(r, ids)) == {"sent"}
        assert r.xlen("otpd:jobs") == 0
        log = otpd.stderr
        assert "reconnecting" in log
        print("\nredis restart: 300 jobs, %d sent, 0 lost" % len(ids))
    finally:
        srv.stop()


def test_redis_refusing_writes_holds_jobs(otpd_factory, mock, client, r):
    """OOM (maxmemory, noeviction) refuses writes: a clear log line, results held, then written."""
    mock.ctl("config", {"default_delay_ms": 1000})
    otpd = otpd_factory(twilio_env(mock))
    jobs = [client.send("+1415561%04d" % i) for i in range(5)]
    wait_for(lambda: len(sends(mock)) == 5, 5)
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", "1")
    time.sleep(2.0)  # the sends finish now, their results cannot be written
    try:
        assert [client.status(j)["status"] for j in jobs] == ["sending"] * 5
        assert "jobs wait for Redis to accept writes: OOM" in otpd.stderr
        otpd.assert_alive()
    finally:
        r.config_set("maxmemory", "0")
    for j in jobs:
        assert client.wait(j, timeout=10)["status"] == "sent"
    assert "Redis accepts writes again" in otpd.stderr
    assert len(sends(mock)) == 5  # held, not resent


def test_three_instances_one_killed(otpd_factory, mock, client, r):
    """Several instances share the stream; when one dies the others finish everything."""
    mock.ctl("config", {"default_delay_ms": 300})
    env = twilio_env(mock, OTPD_CLAIM_IDLE_MS="1500", OTPD_BATCH="20", OTPD_LOG_LEVEL="notice")
    inst = [otpd_factory(env) for _ in range(3)]
    ids = enqueue(r, 600, prefix="m")
    wait_for(lambda: len(sends(mock)) >= 100, 15)
    inst[1].kill()
    wait_for(lambda: all_final(r, ids), 60, interval=0.2, what="every job final")
    assert set(statuses(r, ids)) == {"sent"}
    tos = [q["form"]["To"] for q in sends(mock)]
    assert len(set(tos)) == 600
    # Each instance did a share (no coordination beyond the consumer group).
    consumers = {c["name"]: c for c in r.xinfo_consumers("otpd:jobs", "otpd")}
    assert len(consumers) == 3


def test_outage_inside_the_lifetime_is_ridden_out(otpd_factory, mock, client):
    mock.ctl("config", {"default": "unavailable"})
    otpd_factory(twilio_env(mock, OTPD_RETRY_MAX_MS="2000"))
    jobs = [client.send("+1415562%04d" % i) for i in range(20)]
    time.sleep(10)
    assert all(client.status(j)["status"] == "retrying" for j in jobs)
    mock.ctl("config", {"default": "ok"})
    for j in jobs:
        assert client.wait(j, timeout=15)["status"] == "sent"


def test_outage_longer_than_the_lifetime_expires_jobs(otpd_factory, mock, client, r):
    mock.ctl("config", {"default": "unavailable"})
    otpd_factory(twilio_env(mock))
    created = int(time.time() * 1000) - 27_000
    for i in range(5):
        r.xadd("otpd:jobs", {"job": json.dumps(
            {"id": "long-%d" % i, "to": "+1415563%04d" % i, "ttl": 30, "created_ms": created})})
    for i in range(5):
        st = client.wait("long-%d" % i, timeout=15)
        assert st["status"] == "expired"
        assert not r.exists("otpd:otp:login:+1415563%04d" % i)


def test_sighup_rotates_the_token(tmp_path, otpd_factory, mock, client):
    conf = tmp_path / "otpd.env"
    env = twilio_env(mock)
    token = env.pop("TWILIO_AUTH_TOKEN")
    conf.write_text("TWILIO_AUTH_TOKEN=%s\n" % token)
    otpd = otpd_factory(env, args=["-c", str(conf)])
    assert client.wait(client.send(NUMBER))["status"] == "sent"
    new = "rotated-token-9876543210fedcba"
    mock.ctl("config", {"twilio_auth_token": new})
    conf.write_text("TWILIO_AUTH_TOKEN=%s\n" % new)
    otpd.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload: TWILIO_AUTH_TOKEN updated" in otpd.stderr, 5)
    jobs = [client.send("+1415564%04d" % i) for i in range(10)]
    for j in jobs:
        assert client.wait(j, timeout=10)["status"] == "sent"
    import base64
    last = sends(mock)[-1]["headers_lc"]["authorization"]
    assert base64.b64decode(last.split()[1]).decode() == "%s:%s" % (SID, new)
    assert new not in otpd.stderr and token not in otpd.stderr


def test_sighup_with_an_invalid_file_keeps_the_old_config(tmp_path, otpd_factory, client):
    conf = tmp_path / "otpd.env"
    conf.write_text("OTPD_OTP_TTL=300\n")
    otpd = otpd_factory({}, args=["-c", str(conf)])
    conf.write_text("OTPD_OTP_TTL=banana\n")
    otpd.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "keeping the running configuration" in otpd.stderr, 5)
    assert "OTPD_OTP_TTL" in otpd.stderr
    assert client.wait(client.send(NUMBER))["status"] == "sent"


def test_script_cache_flush_is_recovered(otpd, client, r):
    """Scripts run by SHA1; after SCRIPT FLUSH they are loaded again and the job goes on."""
    assert client.wait(client.send(NUMBER))["status"] == "sent"
    r.script_flush()
    job = client.send(NUMBER, purpose="after_flush")
    assert client.wait(job, timeout=10)["status"] == "sent"
    assert "NOSCRIPT" in otpd.stderr
