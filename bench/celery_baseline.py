"""The baseline otpd is compared with: what a Django site does without otpd.

A Celery worker (Debian's python3-celery, Redis broker) whose task does the
same work as one otpd job, with the usual libraries:

  1. draw the code with `secrets`, store HMAC-SHA-256 of it as the OTP record
     in one MULTI (DEL, HSET mac/job/attempts/max_attempts/created_ms, PEXPIRE),
     like otpd (docs/protocol.md section 2);
  2. write status=sending to otpd:job:{id};
  3. send the SMS with twilio-python (Debian's python3-twilio), pointed at the
     same nginx mock of Twilio and trusting the same throwaway CA;
  4. write status=sent (provider, provider_ref, sent_ms, ...) with EXPIRE, add
     the event to otpd:events (MAXLEN ~) and HINCRBY otpd:stats jobs:sent, in
     one MULTI, as otpd does.

Configured only through the environment (bench/bench.py sets it):
  BENCH_BROKER     redis URL of the broker (a separate db of the bench Redis)
  BENCH_REDIS      redis URL of the data (db 0, same keys as otpd)
  BENCH_TWILIO     base URL of the mock (https://127.0.0.1:PORT)
  BENCH_CA         CA file the mock's certificate chains to
  BENCH_POOL       connections kept per process (gevent needs ~ concurrency)
  BENCH_HASH_KEY   64 hex characters, the key otpd gets as OTPD_HASH_KEY
"""
import hashlib
import hmac
import os
import secrets
import time

import redis
from celery import Celery
from requests.adapters import HTTPAdapter
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "bench-auth-token-0123456789abcdef"
FROM = "+15005550006"
# bench.py passes its per-run random key (otpd refuses the documentation's test key)
HASH_KEY = bytes.fromhex(os.environ.get("BENCH_HASH_KEY") or secrets.token_hex(32))
TEMPLATE = "Your verification code is {code}. It expires in {minutes} minutes."

app = Celery("otp_baseline", broker=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/1"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,      # the status hash is the result, as with otpd
    worker_prefetch_multiplier=4,  # Celery's default, stated
    task_acks_late=False,          # Celery's default
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_state = {}


def _clients():
    """One Redis pool and one Twilio client per worker process (after fork)."""
    pid = os.getpid()
    if _state.get("pid") != pid:
        pool = int(os.environ.get("BENCH_POOL", "10"))
        http = TwilioHttpClient()
        http.session.verify = os.environ["BENCH_CA"]
        http.session.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=pool))
        tw = Client(SID, TOKEN, http_client=http)
        tw.api.base_url = os.environ["BENCH_TWILIO"]
        r = redis.Redis.from_url(os.environ["BENCH_REDIS"], max_connections=max(pool, 10) + 10)
        _state.update(pid=pid, tw=tw, r=r)
    return _state["tw"], _state["r"]


def _now_ms():
    return int(time.time() * 1000)


@app.task(name="send_otp")
def send_otp(job_id, to, purpose="login", ttl=300, digits=6, max_attempts=5):
    tw, r = _clients()
    code = "".join(str(secrets.randbelow(10)) for _ in range(digits))
    mac = hmac.new(HASH_KEY, ("%s\n%s\n%s" % (purpose, to, code)).encode(), hashlib.sha256).hexdigest()
    now = _now_ms()
    okey = "otpd:otp:%s:%s" % (purpose, to)
    skey = "otpd:job:" + job_id
    masked = to[:5] + "*" * (len(to) - 7) + to[-2:]
    p = r.pipeline(transaction=True)
    p.delete(okey)
    p.hset(okey, mapping={"mac": mac, "job": job_id, "attempts": 0,
                          "max_attempts": max_attempts, "created_ms": now})
    p.pexpire(okey, ttl * 1000)
    p.hset(skey, mapping={"status": "sending", "provider": "twilio", "to": masked,
                          "purpose": purpose, "attempts": 1, "updated_ms": now,
                          "expires_ms": now + ttl * 1000})
    p.expire(skey, 86400)
    p.execute()
    body = TEMPLATE.replace("{code}", code).replace("{minutes}", str((ttl + 59) // 60))
    msg = tw.messages.create(to=to, from_=FROM, body=body, validity_period=ttl)
    now = _now_ms()
    p = r.pipeline(transaction=True)
    p.hset(skey, mapping={"status": "sent", "provider_ref": msg.sid,
                          "provider_status": msg.status or "", "sent_ms": now, "updated_ms": now})
    p.expire(skey, 86400)
    p.xadd("otpd:events", {"id": job_id, "status": "sent", "provider": "twilio",
                           "error_code": "", "ts_ms": now}, maxlen=100000, approximate=True)
    p.hincrby("otpd:stats", "jobs:sent", 1)
    p.hincrby("otpd:stats", "jobs:sent:twilio", 1)
    p.execute()
