"""Delivery receipts (issue 9): Twilio status callbacks, MSG91 reports, polling.

The mock plays Twilio and MSG91 sending webhooks to otpd's HTTP endpoint;
signatures are made by twilio-python's RequestValidator, i.e. exactly as
Twilio makes them.
"""
import json
import time
import urllib.request

import pytest

from conftest import free_port
from test_providers import (IN_NUMBER, NUMBER, msg91_env,  # noqa: F401
                            sends, twilio_env)

PUBLIC = "https://example.test/otpd/webhooks/twilio"


@pytest.fixture
def port():
    return free_port()


def receipts_env(mock, port, **extra):
    env = twilio_env(mock, OTPD_METRICS_ADDR="127.0.0.1:%d" % port,
                     TWILIO_STATUS_CALLBACK=PUBLIC)
    env.update(extra)
    return env


def callback(mock, port, sid, status, **kw):
    body = {"sid": sid, "status": status, "target": "http://127.0.0.1:%d/webhooks/twilio" % port}
    body.update(kw)
    return mock.ctl("twilio/callback", body)


def test_signed_callback_moves_to_delivered(otpd_factory, mock, client, r, port):
    otpd_factory(receipts_env(mock, port))
    job = client.send(NUMBER)
    st = client.wait(job, timeout=10)
    assert sends(mock)[0]["form"]["StatusCallback"] == PUBLIC
    res = callback(mock, port, st["provider_ref"], "delivered")
    assert res["status"] == 200, res
    st = client.wait(job, final={"delivered"}, timeout=5)
    assert int(st["delivered_ms"]) >= int(st["sent_ms"])
    ev = [f for _i, f in r.xrange("otpd:events") if f["id"] == job]
    assert [e["status"] for e in ev] == ["sending", "sent", "delivered"]
    assert int(ev[-1]["latency_ms"]) >= 0 and ev[-1]["cc"] == "1"
    assert r.hget("otpd:stats", "provider:twilio:delivered") == "1"
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port).read().decode()
    assert 'otpd_delivery_latency_seconds_count{provider="twilio",country="1"} 1' in text
    print("\n" + "\n".join(l for l in text.splitlines()
                            if l.startswith("otpd_delivery_latency_seconds_")
                            and ('le="0.1"' in l or "_sum" in l or "_count" in l)))


@pytest.mark.parametrize("tamper", ["signature", "param", "none"])
def test_forged_callbacks_are_refused(otpd_factory, mock, client, port, tamper):
    otpd = otpd_factory(receipts_env(mock, port))
    job = client.send(NUMBER)
    st = client.wait(job, timeout=10)
    res = callback(mock, port, st["provider_ref"], "undelivered", error_code=30003, tamper=tamper)
    assert res["status"] == 403
    time.sleep(0.2)
    assert client.status(job)["status"] == "sent"
    assert "signature refused" in otpd.stderr


def test_out_of_order_and_repeated_callbacks(otpd_factory, mock, client, r, port):
    otpd_factory(receipts_env(mock, port))
    job = client.send(NUMBER)
    st = client.wait(job, timeout=10)
    sid = st["provider_ref"]
    assert callback(mock, port, sid, "delivered")["status"] == 200
    assert callback(mock, port, sid, "delivered")["status"] == 200  # Twilio retried it
    assert callback(mock, port, sid, "sent")["status"] == 200       # a late one
    assert callback(mock, port, sid, "undelivered", error_code=30003)["status"] == 200
    time.sleep(0.2)
    assert client.status(job)["status"] == "delivered"
    statuses = [f["status"] for _i, f in r.xrange("otpd:events") if f["id"] == job]
    assert statuses.count("delivered") == 1 and "undelivered" not in statuses


def test_undelivered_with_carrier_hint(otpd_factory, mock, client, port):
    otpd_factory(receipts_env(mock, port))
    job = client.send(NUMBER)
    sid = client.wait(job, timeout=10)["provider_ref"]
    callback(mock, port, sid, "undelivered", error_code=30006)
    st = client.wait(job, final={"undelivered"}, timeout=5)
    assert st["error_code"] == "30006" and "landline" in st["error"]
    # Counted by provider, country and status, which the delivery-rate alert needs.
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as f:
        page = f.read().decode()
    assert 'otpd_receipts_total{provider="twilio",country="1",status="undelivered"} 1\n' in page


def test_signature_with_or_without_the_port(otpd_factory, mock, client, port):
    otpd_factory(receipts_env(mock, port,
                              TWILIO_STATUS_CALLBACK="https://example.test:443/otpd/webhooks/twilio"))
    job = client.send(NUMBER)
    sid = client.wait(job, timeout=10)["provider_ref"]
    res = callback(mock, port, sid, "delivered", url=PUBLIC)  # Twilio signed without :443
    assert res["status"] == 200
    assert client.wait(job, final={"delivered"}, timeout=5)["status"] == "delivered"


def test_unknown_message_is_accepted_and_ignored(otpd_factory, mock, port):
    otpd_factory(receipts_env(mock, port))
    res = callback(mock, port, "SM" + "f" * 32, "delivered", url=PUBLIC)
    assert res["status"] == 200


@pytest.mark.parametrize("fmt", ["v2", "v3", "new"])
def test_msg91_reports(otpd_factory, mock, client, port, fmt):
    otpd_factory(msg91_env(mock, OTPD_METRICS_ADDR="127.0.0.1:%d" % port,
                           MSG91_WEBHOOK_TOKEN="s3cret-path-token-0123456789abcdef"))
    ok = client.send(IN_NUMBER)
    bad = client.send("+919812345679", purpose="p2")
    rid_ok = client.wait(ok, timeout=10)["provider_ref"]
    rid_bad = client.wait(bad, timeout=10)["provider_ref"]
    target = "http://127.0.0.1:%d/webhooks/msg91/s3cret-path-token-0123456789abcdef" % port
    r1 = mock.ctl("msg91/dlr", {"format": fmt, "request_id": rid_ok, "number": IN_NUMBER[1:],
                                "status": 1, "target": target})
    r2 = mock.ctl("msg91/dlr", {"format": fmt, "request_id": rid_bad,
                                "number": "919812345679", "status": 9, "target": target})
    assert r1["status"] == 200 and r2["status"] == 200, (r1, r2)
    assert client.wait(ok, final={"delivered"}, timeout=5)["status"] == "delivered"
    st = client.wait(bad, final={"undelivered"}, timeout=5)
    assert "DND" in st["error"]


def test_msg91_wrong_token_changes_nothing(otpd_factory, mock, client, port):
    otpd_factory(msg91_env(mock, OTPD_METRICS_ADDR="127.0.0.1:%d" % port,
                           MSG91_WEBHOOK_TOKEN="s3cret-path-token-0123456789abcdef"))
    job = client.send(IN_NUMBER)
    rid = client.wait(job, timeout=10)["provider_ref"]
    res = mock.ctl("msg91/dlr", {"format": "v3", "request_id": rid, "number": IN_NUMBER[1:],
                                 "status": 1,
                                 "target": "http://127.0.0.1:%d/webhooks/msg91/guess" % port})
    assert res["status"] == 404
    time.sleep(0.2)
    assert client.status(job)["status"] == "sent"


@pytest.mark.parametrize("final,code", [("delivered", None), ("undelivered", 30005)])
def test_polling_without_a_callback_url(otpd_factory, mock, client, final, code):
    otpd = otpd_factory(twilio_env(mock, OTPD_DLR_POLL_FIRST_MS="300", OTPD_DLR_POLL_HORIZON_S="600"))
    mock.ctl("config", {"twilio_message_status": "sent"})
    job = client.send(NUMBER)
    sid = client.wait(job, timeout=10)["provider_ref"]
    time.sleep(0.8)  # a poll or two see "sent"
    assert client.status(job)["status"] == "sent"
    upd = {"status": final}
    if code:
        upd["error_code"] = code
    mock.ctl("twilio/messages/" + sid, upd)
    st = client.wait(job, final={final}, timeout=10)
    if code:
        assert st["error_code"] == str(code) and "unknown or inactive" in st["error"]
    fetches = [q for q in mock.requests("twilio") if q["method"] == "GET" and sid in q["path"]]
    assert len(fetches) >= 2
    # Once final, polling stops.
    n = len(fetches)
    time.sleep(1.0)
    assert len([q for q in mock.requests("twilio")
                if q["method"] == "GET" and sid in q["path"]]) == n
    otpd.assert_alive()


def test_otpctl_status_shows_delivery(otpd_factory, mock, client, r, port, redis_server):
    import os
    import subprocess
    from conftest import HASH_KEY, ROOT
    otpd_factory(receipts_env(mock, port))
    a = client.send(NUMBER)
    b = client.send("+14155550177")
    sa = client.wait(a, timeout=10)["provider_ref"]
    sb = client.wait(b, timeout=10)["provider_ref"]
    callback(mock, port, sa, "delivered")
    callback(mock, port, sb, "undelivered", error_code=30003)
    client.wait(b, final={"undelivered"}, timeout=5)
    env = dict(os.environ, REDIS_URL=redis_server.url, OTPD_HASH_KEY=HASH_KEY)
    p = subprocess.run([os.path.join(ROOT, "python", "otpctl"), "status", "--json"], env=env,
                       capture_output=True, text=True)
    d = json.loads(p.stdout)["delivery"]
    tw = d["by_provider"]["twilio"]
    assert (tw["sent"], tw["delivered"], tw["undelivered"], tw["delivery_rate"]) == (2, 1, 1, 0.5)
    assert d["top_undelivered"][0]["error_code"] == "30003"
    text = subprocess.run([os.path.join(ROOT, "python", "otpctl"), "status"], env=env,
                          capture_output=True, text=True).stdout
    assert "delivery, last hour" in text and "unreachable handset" in text


def test_polling_survives_a_restart(otpd_factory, mock, client, r):
    """The polling schedule is in Redis: a message sent before a restart is still polled
    by the next instance (or another one) until its receipt is final."""
    env = twilio_env(mock, OTPD_DLR_POLL_FIRST_MS="1500", OTPD_DLR_POLL_HORIZON_S="600")
    mock.ctl("config", {"twilio_message_status": "sent"})
    first = otpd_factory(env)
    job = client.send(NUMBER)
    sid = client.wait(job, timeout=10)["provider_ref"]
    [member] = r.zrange("otpd:polls", 0, -1)
    assert member.startswith("twilio|%s|" % sid)
    assert first.stop() == 0  # before its first poll
    assert not [q for q in mock.requests("twilio") if q["method"] == "GET" and sid in q["path"]]
    mock.ctl("twilio/messages/" + sid, {"status": "delivered"})
    otpd_factory(env)
    st = client.wait(job, final={"delivered"}, timeout=15)
    assert st["status"] == "delivered"
    assert r.zcard("otpd:polls") == 0  # final: no longer scheduled
