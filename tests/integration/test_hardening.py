"""What an operator gets by default, and what an attacker gets (issue 12).

Each test here failed on d7a84a1: they use the defaults an operator gets
(no tuning knobs unless the test is about one), a provider that takes its
time, and bad or hostile input.  Real redis-server, real otpd, the HTTPS
mock of tests/mocks.
"""
import json
import os
import re
import resource
import subprocess
import time
import urllib.request

import pytest

from conftest import DOC_KEY, HASH_KEY, free_port, otpd_binary, wait_for
from test_providers import AUTHKEY, FROM, NUMBER, SID, TOKEN, sends


def guide_env(mock, **extra):
    """The site guide's three .env lines, plus where the mock is: nothing else."""
    env = {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_PHONE_NUMBER": FROM,
           "TWILIO_API_BASE": mock.base, "OTPD_CA_FILE": mock.ca["ca_cert"],
           "OTPD_DLR_POLL_HORIZON_S": "0"}
    env.update(extra)
    return env


def xadd(r, job):
    return r.xadd("otpd:jobs", {"job": json.dumps(job)})


def statuses(r, ids):
    return {i: r.hget("otpd:job:" + i, "status") for i in ids}


def wait_final(r, ids, timeout, final=("sent", "failed", "expired", "rate_limited", "rejected")):
    wait_for(lambda: all(s in final for s in statuses(r, ids).values()), timeout,
             what="jobs to reach a final status")
    return statuses(r, ids)


def check_config(env):
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("OTPD_", "TWILIO_", "MSG91_", "REDIS_"))}
    full.update(env)
    return subprocess.run([otpd_binary(), "--check-config"], env=full, capture_output=True,
                          text=True, timeout=30)


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as f:
        return f.read().decode()


def metric(text, name):
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


# --- 1. provider selection ----------------------------------------------------

def test_guide_env_sends_through_twilio_not_console(otpd_factory, mock, client, tmp_path):
    """The site's .env with the guide's TWILIO_* lines, no OTPD_PROVIDER: Twilio, no code printed."""
    env = tmp_path / "site.env"
    env.write_text("# the site's .env, as the SMS guide has it (section 4.1)\n"
                   "DEBUG=False\nSECRET_KEY='django-insecure-x'\n"
                   "TWILIO_ACCOUNT_SID=%s\nTWILIO_AUTH_TOKEN=%s\nTWILIO_PHONE_NUMBER=%s\n"
                   "# only the tests: where the Twilio mock is and the CA it was signed by\n"
                   "TWILIO_API_BASE=%s\nOTPD_CA_FILE=%s\n"
                   % (SID, TOKEN, FROM, mock.base, mock.ca["ca_cert"]))
    d = otpd_factory(args=["-c", str(env)])
    job = client.send(NUMBER)
    st = client.wait(job, timeout=15)
    assert st["status"] == "sent" and st["provider"] == "twilio", st
    bodies = [q["form"]["Body"] for q in sends(mock)]
    assert len(bodies) == 1
    code = re.search(r"\d{6}", bodies[0]).group(0)
    out, err = d.stdout, d.stderr
    assert "console delivery" not in out
    assert code not in out and code not in err
    assert NUMBER not in out and NUMBER not in err
    assert "console provider is in use" not in err


def test_console_provider_says_so_loudly(otpd_factory):
    d = otpd_factory()
    assert "WARNING: the console provider is in use" in d.stderr
    assert "NO SMS is sent" in d.stderr
    p = check_config({"OTPD_HASH_KEY": HASH_KEY})
    assert p.returncode == 0, p.stderr
    assert "# default provider: console" in p.stdout
    assert "# WARNING: the console provider is in use" in p.stdout


def test_half_configured_provider_refused_not_console():
    """The guide's MSG91 lines have no DLT template: refuse rather than print codes."""
    p = check_config({"OTPD_HASH_KEY": HASH_KEY, "MSG91_AUTH_KEY": AUTHKEY,
                      "MSG91_SENDER_ID": "SMLCSE"})
    assert p.returncode != 0 and "MSG91_TEMPLATE_ID" in p.stderr, p.stderr
    p = check_config({"OTPD_HASH_KEY": HASH_KEY, "TWILIO_AUTH_TOKEN": TOKEN})
    assert p.returncode != 0 and "TWILIO_ACCOUNT_SID" in p.stderr, p.stderr


# --- 2. connections follow the request cap ------------------------------------

def test_http11_provider_gets_a_connection_per_request(otpd_factory, mock, r):
    """A 300 ms HTTP/1.1 provider, defaults only: far more than 20 requests open at once."""
    mock.ctl("config", {"default_delay_ms": 300})
    otpd_factory(guide_env(mock))
    ids = ["c%d" % i for i in range(150)]
    t0 = time.monotonic()
    for i, jid in enumerate(ids):
        xadd(r, {"id": jid, "to": "+1415555%04d" % i})
    st = wait_final(r, ids, 60)
    took = time.monotonic() - t0
    assert set(st.values()) == {"sent"}, st
    peak = mock.ctl("stats")["max_concurrent_by_provider"]["twilio"]
    print("150 jobs against a 300 ms HTTP/1.1 mock: %.2f s, peak %d requests open" % (took, peak))
    assert peak >= 60, peak  # d7a84a1: never more than 20


def test_twilio_concurrency_limit_lowers_the_cap(otpd_factory, mock, r):
    """Twilio's 20429 lowers otpd's cap; jobs wait and are sent, no circuit opens."""
    mock.ctl("config", {"twilio_concurrency_limit": 10, "default_delay_ms": 200})
    port = free_port()
    d = otpd_factory(guide_env(mock, OTPD_RETRY_BASE_MS="100", OTPD_RETRY_MAX_MS="1000",
                               OTPD_METRICS_ADDR="127.0.0.1:%d" % port))
    ids = ["q%d" % i for i in range(100)]
    for i, jid in enumerate(ids):
        xadd(r, {"id": jid, "to": "+1415556%04d" % i})
    st = wait_final(r, ids, 60)
    assert set(st.values()) == {"sent"}, st
    refused = [q for q in sends(mock) if q["status"] == 429]
    print("100 jobs, provider limit 10: %d requests refused with 20429" % len(refused))
    assert "over its concurrency limit" in d.stderr
    assert "circuit open" not in d.stderr  # d7a84a1: five 429s in a row opened it
    assert len(refused) < 130  # the first wave (90) and a few probes upward
    cap = metric(scrape(port), 'otpd_provider_inflight_cap{provider="twilio"}')
    print("cap after the run: %s" % cap)
    assert cap is not None and 1 <= cap < 100


# --- 3. local trouble is not the provider's -----------------------------------

def test_out_of_descriptors_is_local_not_provider(otpd_factory, mock, r):
    """EMFILE while connecting (curl_77, CA file) is retried as local, never opens the circuit."""
    mock.ctl("config", {"default_delay_ms": 200})
    d = otpd_factory(guide_env(mock, OTPD_RETRY_BASE_MS="50", OTPD_RETRY_MAX_MS="300"),
                     start=False)
    lim = 48
    d.preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (lim, lim))
    d.start()
    ids = ["f%d" % i for i in range(80)]
    for i, jid in enumerate(ids):
        xadd(r, {"id": jid, "to": "+1415557%04d" % i})
    st = wait_final(r, ids, 60)
    assert set(st.values()) == {"sent"}, st
    assert "circuit open" not in d.stderr
    assert "local failure" in d.stderr


# --- 4. limits, breaker, dead letters, logs, clocks, masking, ids -------------

def test_limits_hold_when_the_limits_hash_is_deleted(otpd_factory, r):
    # Thirty codes to one number: resends of one code are capped too (5 by default).
    otpd_factory({"OTPD_LIMIT_PER_HOUR": "10", "OTPD_MAX_SENDS_PER_CODE": "50"})
    wait_for(lambda: r.exists("otpd:limits"), 5, what="limits published")
    r.delete("otpd:limits")  # FLUSHDB by another app, or eviction
    ids = ["l%d" % i for i in range(30)]
    for jid in ids:
        xadd(r, {"id": jid, "to": "+14155550123"})
    st = wait_final(r, ids, 20)
    counts = {s: list(st.values()).count(s) for s in set(st.values())}
    assert counts == {"sent": 10, "rate_limited": 20}, counts  # d7a84a1: 30 sent
    # The published copy (for the web app's early check) heals by itself.
    wait_for(lambda: r.hget("otpd:limits", "per_hour") == "10", 15, what="limits republished")


def clear_rules(mock):
    import http.client
    c = http.client.HTTPSConnection("127.0.0.1", mock.port, context=mock.ctx, timeout=10)
    c.request("DELETE", "/_mock/rules")
    assert c.getresponse().status == 200
    c.close()


def test_breaker_backoff_grows_per_probe_not_per_request(otpd_factory, mock, r):
    """40 concurrent 401s, the provider recovers after 300 ms: one probe, every job sent."""
    mock.ctl("config", {"default_delay_ms": 100})
    mock.rule(to="*", provider="twilio", behaviour="auth")
    d = otpd_factory(guide_env(mock, OTPD_PROVIDER_RECHECK_MS="1000"))
    ids = ["b%d" % i for i in range(40)]
    t0 = time.monotonic()
    for i, jid in enumerate(ids):
        xadd(r, {"id": jid, "to": "+1415558%04d" % i, "ttl": 30})
    wait_for(lambda: "circuit open" in d.stderr, 10, what="the circuit to open")
    time.sleep(0.3)
    clear_rules(mock)  # the credentials are fixed
    st = wait_final(r, ids, 30)
    took = time.monotonic() - t0
    assert set(st.values()) == {"sent"}, st  # d7a84a1: 34 of 40 expired
    print("40 jobs through a 401 storm: all sent in %.1f s" % took)
    assert took < 10
    assert d.stderr.count("circuit open") == 1
    assert "probe failed" not in d.stderr


def test_dead_letters_capped_and_rejections_not_flooding_the_log(otpd_factory, r):
    port = free_port()
    d = otpd_factory({"OTPD_DEAD_MAXLEN": "100", "OTPD_LOG_LEVEL": "info",
                      "OTPD_METRICS_ADDR": "127.0.0.1:%d" % port})
    pipe = r.pipeline(transaction=False)
    for i in range(1000):
        pipe.xadd("otpd:jobs", {"job": '{"to": "not a number", "n": %d}' % i})
    pipe.execute()
    wait_for(lambda: r.xlen("otpd:jobs") == 0, 60, what="every bad job handled")
    n = r.xlen("otpd:dead")
    print("1000 bad jobs: dead-letter stream holds %d" % n)
    assert 100 <= n <= 300, n  # d7a84a1: 1000
    lines = [l for l in d.stderr.splitlines() if ": rejected (entry" in l]
    assert len(lines) < 50, len(lines)
    assert "were rejected and not logged" in d.stderr or len(lines) < 1000
    text = scrape(port)
    assert metric(text, "otpd_dead_letters_written_total") == 1000
    assert metric(text, "otpd_dead_letters_max") == 100
    some = r.xrange("otpd:dead", count=1)[0][1]["stream_id"]
    assert 0 < r.ttl("otpd:job:" + some) <= 3600


# Adds an entry even when Redis refuses writes for memory: what a web app's
# XADD looks like to otpd when it landed just before the limit was hit.
XADD_ALLOW_OOM = "#!lua flags=allow-oom\nreturn redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])"


def test_redis_oom_warnings_deduplicated(otpd_factory, r):
    """Redis refusing writes (OOM) for seconds: a warning per cause, not one per retry."""
    d = otpd_factory({"OTPD_LOG_LEVEL": "info"})
    ids = ["m%d" % i for i in range(40)]
    r.config_set("maxmemory", "1")
    try:
        for i, jid in enumerate(ids):
            job = {"id": jid, "to": "+1415559%04d" % i} if i % 4 else {"id": jid, "to": "bad"}
            r.eval(XADD_ALLOW_OOM, 1, "otpd:jobs", json.dumps(job))
        time.sleep(4)  # claims, rejections and dead letters all refused, retried 4 times a second
    finally:
        r.config_set("maxmemory", "0")
    st = wait_final(r, ids, 20)
    assert sorted(set(st.values())) == ["rejected", "sent"], st
    waits = [l for l in d.stderr.splitlines() if "jobs wait for Redis to accept writes" in l]
    print("Redis OOM for 4 s with 40 jobs: %d warning lines" % len(waits))
    assert 1 <= len(waits) <= 4, waits  # d7a84a1: one per alternation, hundreds


def test_created_ms_far_ahead_rejected(otpd_factory, r, client):
    otpd_factory()
    now = int(time.time() * 1000)
    xadd(r, {"id": "future", "to": NUMBER, "created_ms": now + 600000})
    xadd(r, {"id": "forever", "to": NUMBER, "created_ms": 10 ** 15})
    st = wait_final(r, ["future", "forever"], 10)
    assert st == {"future": "rejected", "forever": "rejected"}
    assert "ahead of this host's clock" in r.hget("otpd:job:future", "error")
    # The number is not blocked: a normal code still goes out and verifies.
    job = client.send(NUMBER)
    assert client.wait(job)["status"] == "sent"
    # Skew within the tolerance: the lifetime counts from now, not from the future.
    xadd(r, {"id": "skewed", "to": "+14155550111", "created_ms": now + 30000, "ttl": 60})
    assert wait_final(r, ["skewed"], 10)["skewed"] == "sent"
    assert 0 < r.pttl("otpd:otp:login:+14155550111") <= 60000


def test_numbers_masked_in_provider_errors(otpd_factory, mock, client):
    mock.rule(to=NUMBER, provider="twilio", behaviour="invalid_number")
    d = otpd_factory(guide_env(mock))
    job = client.send(NUMBER)
    st = client.wait(job, timeout=10)
    assert st["status"] == "failed" and st["error_code"] == "21211", st
    digits = NUMBER[1:]
    assert digits not in st["error"], st["error"]  # d7a84a1: the whole number
    assert digits not in d.stderr


def test_rejected_job_never_overwrites_another_jobs_record(otpd_factory, r, client):
    otpd_factory()
    client.send(NUMBER, id="victim")
    assert client.wait("victim")["status"] == "sent"
    xadd(r, {"id": "victim", "to": "garbage"})
    wait_for(lambda: r.xlen("otpd:dead") == 1, 10, what="the dead letter")
    assert r.hget("otpd:job:victim", "status") == "sent"  # d7a84a1: rejected
    assert "field to" in r.xrange("otpd:dead")[0][1]["reason"]


def test_weak_keys_and_tokens_refused():
    for key in (DOC_KEY, "00" * 32):
        p = check_config({"OTPD_HASH_KEY": key})
        assert p.returncode != 0 and "OTPD_HASH_KEY" in p.stderr, p.stderr
    p = check_config({"OTPD_HASH_KEY": HASH_KEY, "MSG91_WEBHOOK_TOKEN": "x",
                      "MSG91_AUTH_KEY": AUTHKEY, "MSG91_TEMPLATE_ID": "t"})
    assert p.returncode != 0 and "MSG91_WEBHOOK_TOKEN" in p.stderr, p.stderr


def test_public_metrics_address_warned(otpd_factory):
    d = otpd_factory({"OTPD_METRICS_ADDR": "0.0.0.0:%d" % free_port()})
    assert "OTPD_METRICS_ADDR is not a loopback address" in d.stderr


def test_callback_without_listener_polls_instead(otpd_factory, mock, client):
    d = otpd_factory(guide_env(mock, TWILIO_STATUS_CALLBACK="https://site.example/otpd/twilio",
                               OTPD_DLR_POLL_HORIZON_S="60", OTPD_DLR_POLL_FIRST_MS="200"))
    assert "otpd cannot receive Twilio's callbacks" in d.stderr
    job = client.send(NUMBER)
    st = client.wait(job, final={"delivered"}, timeout=15)
    assert st["status"] == "delivered", st  # d7a84a1: "sent" for ever


def test_refused_redis_setup_said_once(otpd_factory, r, redis_server):
    """A wrong or missing Redis password: one line per connection, not one per retry."""
    r.config_set("requirepass", "s3cret-redis-password")
    try:
        d = otpd_factory(start=False)
        d.start(wait_ready=False)
        time.sleep(3.5)  # retries at 0.1, 0.2, 0.4, 0.8 and 1.6 s
        refused = [l for l in d.stderr.splitlines() if "setup refused" in l]
        dropped = [l for l in d.stderr.splitlines() if "reconnecting" in l]
        print("3.5 s of NOAUTH: %d 'setup refused' lines, %d 'reconnecting' lines"
              % (len(refused), len(dropped)))
        assert 1 <= len(refused) <= 2, refused  # reader and writer
        assert len(dropped) == 0, dropped
    finally:
        import redis as redis_py
        redis_py.Redis(port=redis_server.port, password="s3cret-redis-password").config_set(
            "requirepass", "")


def test_one_jobs_bad_key_does_not_hold_its_batch(otpd_factory, r):
    """Jobs are begun in batches (one script for every job read in a loop turn): a job
    whose status key has the wrong type fails alone, its entry stays pending, the rest of
    its batch is sent; once the key is fixed the job goes out too."""
    ids = ["b%02d" % i for i in range(20)]
    r.set("otpd:job:b07", "not a hash")  # a stray key under the job's name (WRONGTYPE)
    for i, jid in enumerate(ids):  # queued before the daemon starts: one read, one batch
        xadd(r, {"id": jid, "to": "+1415558%04d" % i})
    d = otpd_factory({"OTPD_LOG_LEVEL": "info"})
    others = [i for i in ids if i != "b07"]
    assert set(wait_final(r, others, 20).values()) == {"sent"}
    assert r.xpending("otpd:jobs", "otpd")["pending"] == 1
    assert r.type("otpd:job:b07") == "string"
    wait_for(lambda: "WRONGTYPE" in d.stderr, 10, what="the job's own error in the log")
    r.delete("otpd:job:b07")
    assert wait_final(r, ["b07"], 20)["b07"] == "sent"
    wait_for(lambda: r.xpending("otpd:jobs", "otpd")["pending"] == 0, 10, what="the ack")
