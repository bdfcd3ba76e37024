"""Self-check of the provider mock (run: /usr/bin/python3 -m pytest -q tests/mocks/test_mock_selfcheck.py).

Talks to the mock over real HTTPS with certificate verification ON, using
only the standard library (urllib / http.client / ssl)."""
import base64
import concurrent.futures
import email.utils
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import testca  # noqa: E402

PY = "/usr/bin/python3"
SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "test-auth-token-0123456789abcdef"
AUTHKEY = "test-msg91-authkey"
MSG_PATH = "/2010-04-01/Accounts/%s/Messages.json" % SID


@pytest.fixture(scope="module")
def mock(tmp_path_factory):
    d = tmp_path_factory.mktemp("mockca")
    ca = testca.make_ca(d)
    ready = str(d / "ready.json")
    proc = subprocess.Popen(
        [PY, os.path.join(HERE, "provider_mock.py"), "--port", "0",
         "--cert", ca["server_cert"], "--key", ca["server_key"], "--ready-file", ready],
        stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(ready):
            assert proc.poll() is None, "mock exited early"
            assert time.monotonic() < deadline, "mock did not become ready"
            time.sleep(0.02)
        with open(ready) as f:
            port = json.load(f)["port"]
        yield {"port": port, "ca": ca,
               "ctx": ssl.create_default_context(cafile=ca["ca_cert"])}
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def request(mock, method, path, body=None, headers=None, conn=None, timeout=10,
            host="127.0.0.1"):
    """One request; returns (status, headers, body bytes). Uses `conn` if given."""
    own = conn is None
    if own:
        conn = http.client.HTTPSConnection(host, mock["port"], context=mock["ctx"],
                                           timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        if own:
            conn.close()


def ctl(mock, path, obj=None):
    st, _, body = request(mock, "POST" if obj is not None else "GET", "/_mock/" + path,
                          body=json.dumps(obj).encode() if obj is not None else None,
                          headers={"Content-Type": "application/json"})
    assert st == 200, body
    return json.loads(body)


def basic(user=SID, pw=TOKEN):
    return "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()


def twilio_send(mock, to="+14155550100", body="Your code is 123456", auth=None, conn=None,
                extra=None, timeout=10):
    form = {"To": to, "From": "+15005550006", "Body": body}
    form.update(extra or {})
    return request(mock, "POST", MSG_PATH, body=urllib.parse.urlencode(form),
                   headers={"Authorization": auth or basic(),
                            "Content-Type": "application/x-www-form-urlencoded"},
                   conn=conn, timeout=timeout)


def msg91_send(mock, mobiles="919812345678", key=AUTHKEY, path="/api/v5/flow/"):
    body = {"template_id": "64f0c0ffee", "short_url": "0",
            "recipients": [{"mobiles": mobiles, "otp": "123456"}]}
    st, _, b = request(mock, "POST", path, body=json.dumps(body),
                       headers={"authkey": key, "Content-Type": "application/json"})
    return st, json.loads(b)


@pytest.fixture(autouse=True)
def reset(mock):
    ctl(mock, "reset", {})


def test_twilio_ok_shape_fetch_and_list(mock):
    st, hdrs, b = twilio_send(mock)
    assert st == 201
    assert hdrs["Content-Type"].startswith("application/json")
    m = json.loads(b)
    assert re.fullmatch(r"SM[0-9a-f]{32}", m["sid"])
    assert m["account_sid"] == SID and m["to"] == "+14155550100"
    assert m["from"] == "+15005550006" and m["body"] == "Your code is 123456"
    assert m["status"] == "queued" and m["num_segments"] == "1"
    assert m["direction"] == "outbound-api" and m["api_version"] == "2010-04-01"
    assert m["price"] is None and m["error_code"] is None
    assert m["messaging_service_sid"] is None
    assert email.utils.parsedate_to_datetime(m["date_created"]).year >= 2024
    assert m["uri"] == "/2010-04-01/Accounts/%s/Messages/%s.json" % (SID, m["sid"])
    assert "media" in m["subresource_uris"]

    st, _, b = twilio_send(mock, to="+14155550111",
                          extra={"From": "", "MessagingServiceSid": "MG" + "1" * 32})
    assert st == 201 and json.loads(b)["status"] == "accepted"

    st, _, b = request(mock, "GET", "/2010-04-01/Accounts/%s/Messages/%s.json" % (SID, m["sid"]),
                       headers={"Authorization": basic()})
    assert st == 200 and json.loads(b)["sid"] == m["sid"]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    st, _, b = request(mock, "GET", MSG_PATH + "?To=%2B14155550100&DateSent%3E=" + today,
                       headers={"Authorization": basic()})
    lst = json.loads(b)
    assert st == 200 and lst["page"] == 0
    assert [x["sid"] for x in lst["messages"]] == [m["sid"]]

    st, _, b = request(mock, "GET", "/2010-04-01/Accounts/%s.json" % SID,
                       headers={"Authorization": basic()})
    assert st == 200 and json.loads(b)["status"] == "active"


def test_twilio_wrong_auth_and_validation(mock):
    st, hdrs, b = twilio_send(mock, auth=basic(pw="wrong"))
    assert st == 401
    assert json.loads(b) == {"code": 20003, "message": "Authenticate",
                             "more_info": "https://www.twilio.com/docs/errors/20003",
                             "status": 401}
    st, _, b = twilio_send(mock, to="")
    assert st == 400 and json.loads(b)["code"] == 21604
    # unencoded '+' arrives as a space -> not E.164 -> 21211
    st, _, b = request(mock, "POST", MSG_PATH, body="To=+14155550100&From=%2B15005550006&Body=x",
                       headers={"Authorization": basic(),
                                "Content-Type": "application/x-www-form-urlencoded"})
    assert st == 400 and json.loads(b)["code"] == 21211


def test_rule_times_then_success(mock):
    ctl(mock, "rules", {"to": "+14155550123", "provider": "twilio",
                        "behaviour": "server_error", "times": 1})
    st, _, _ = twilio_send(mock, to="+14155550199")   # other number unaffected
    assert st == 201
    st, _, b = twilio_send(mock, to="+14155550123")
    assert st == 500 and json.loads(b)["code"] == 20500
    st, _, _ = twilio_send(mock, to="+14155550123")
    assert st == 201
    reqs = ctl(mock, "requests")
    assert [r["behaviour"] for r in reqs] == ["ok", "server_error", "ok"]
    assert [r["status"] for r in reqs] == [201, 500, 201]


def test_rate_limited_retry_after(mock):
    ctl(mock, "rules", {"to": "*", "behaviour": "rate_limited", "retry_after": 7})
    st, hdrs, b = twilio_send(mock)
    assert st == 429 and hdrs["Retry-After"] == "7"
    assert json.loads(b)["code"] == 20429


def test_msg91(mock):
    st, j = msg91_send(mock)
    assert st == 200 and j["type"] == "success"
    assert re.fullmatch(r"[0-9a-f]{24}", j["message"])
    st, j = msg91_send(mock, key="nope", path="/api/v5/flow")
    assert st == 200 and j == {"type": "error", "message": "AuthenticationFailure", "code": "201"}
    st, j = msg91_send(mock, mobiles="+919812345678")
    assert st == 200 and j["type"] == "error"
    ctl(mock, "rules", {"to": "+919812345678", "provider": "msg91",
                        "behaviour": "insufficient_balance"})
    st, j = msg91_send(mock)
    assert st == 200 and j["type"] == "error" and j["code"] == "301"
    rec = ctl(mock, "requests")[-1]
    assert rec["headers_lc"]["authkey"] == AUTHKEY
    assert rec["json"]["recipients"][0]["mobiles"] == "919812345678"


def test_drop_and_broken_responses(mock):
    ctl(mock, "rules", [{"to": "+14155550101", "behaviour": "drop"},
                        {"to": "+14155550102", "behaviour": "drop_mid_response"},
                        {"to": "+14155550103", "behaviour": "not_json"},
                        {"to": "+14155550104", "behaviour": "timeout", "delay_ms": 5000}])
    with pytest.raises((ConnectionError, http.client.HTTPException, ssl.SSLError)):
        twilio_send(mock, to="+14155550101")
    with pytest.raises(http.client.IncompleteRead):
        twilio_send(mock, to="+14155550102")
    st, hdrs, b = twilio_send(mock, to="+14155550103")
    assert st == 502 and hdrs["Content-Type"].startswith("text/html")
    t0 = time.monotonic()
    with pytest.raises(socket.timeout):
        twilio_send(mock, to="+14155550104", timeout=0.5)
    assert time.monotonic() - t0 < 2
    reqs = ctl(mock, "requests")
    assert [(r["behaviour"], r["status"]) for r in reqs] == [
        ("drop", None), ("drop_mid_response", 201), ("not_json", 502), ("timeout", None)]


def test_wrong_ca_fails_verification(mock):
    ctx = ssl.create_default_context(cafile=mock["ca"]["wrong_ca_cert"])
    with pytest.raises(urllib.error.URLError) as ei:
        urllib.request.urlopen("https://127.0.0.1:%d/_mock/health" % mock["port"],
                               context=ctx, timeout=5)
    assert isinstance(ei.value.reason, ssl.SSLCertVerificationError)
    # right CA, hostname "localhost" also verifies
    with urllib.request.urlopen("https://localhost:%d/_mock/health" % mock["port"],
                                context=mock["ctx"], timeout=5) as r:
        assert r.status == 200


def test_recording_and_keepalive(mock):
    conn = http.client.HTTPSConnection("127.0.0.1", mock["port"], context=mock["ctx"],
                                       timeout=10)
    try:
        assert twilio_send(mock, conn=conn)[0] == 201
        assert twilio_send(mock, conn=conn)[0] == 201
    finally:
        conn.close()
    assert twilio_send(mock)[0] == 201
    reqs = ctl(mock, "requests")
    assert len(reqs) == 3
    assert reqs[0]["conn_id"] == reqs[1]["conn_id"] != reqs[2]["conn_id"]
    assert reqs[0]["headers"]["Authorization"] == basic()
    assert reqs[0]["form"]["To"] == "+14155550100"
    assert reqs[0]["method"] == "POST" and reqs[0]["path"] == MSG_PATH
    assert reqs[0]["seq"] < reqs[1]["seq"] and reqs[0]["time"] <= reqs[1]["time"]
    stats = ctl(mock, "stats")
    assert stats["connections"] == 2 and stats["requests"] == 3


def test_concurrent_slow(mock):
    ctl(mock, "rules", {"to": "*", "behaviour": "slow", "delay_ms": 500})
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(50) as ex:
        results = list(ex.map(lambda i: twilio_send(mock, to="+1415555%04d" % i)[0],
                              range(50)))
    elapsed = time.monotonic() - t0
    assert results == [201] * 50
    assert elapsed < 3.0, elapsed
    stats = ctl(mock, "stats")
    assert stats["requests"] == 50 and stats["max_concurrent"] >= 25
