"""Self-check of the provider mock (run: /usr/bin/python3 -m pytest -q tests/mocks/test_mock_selfcheck.py).

Talks to the mock over real HTTPS with certificate verification ON, using
only the standard library (urllib / http.client / ssl)."""
import base64
import concurrent.futures
import email.utils
import http.client
import http.server
import threading
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
from twilio.request_validator import RequestValidator

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


def test_close_connections(mock):
    """close_connections: every provider answer says Connection: close and the
    mock closes the connection, so each send needs a new TLS connection."""
    ctl(mock, "config", {"close_connections": True})
    conn = http.client.HTTPSConnection("127.0.0.1", mock["port"], context=mock["ctx"],
                                       timeout=10)
    try:
        st, hdrs, _ = twilio_send(mock, conn=conn)
        assert st == 201 and hdrs["Connection"].lower() == "close"
        assert twilio_send(mock, conn=conn)[0] == 201   # http.client reconnects
    finally:
        conn.close()
    # The mock closes even when the client would keep the connection.
    form = urllib.parse.urlencode({"To": "+14155550100", "From": "+15005550006", "Body": "x"})
    raw = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: %s\r\n"
           "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n"
           "Connection: keep-alive\r\n\r\n%s" % (MSG_PATH, basic(), len(form), form))
    with socket.create_connection(("127.0.0.1", mock["port"]), timeout=5) as tcp:
        with mock["ctx"].wrap_socket(tcp, server_hostname="127.0.0.1") as tls:
            tls.sendall(raw.encode())
            got = b""
            while True:
                chunk = tls.recv(65536)   # b"" at the mock's close; a timeout fails
                if not chunk:
                    break
                got += chunk
    assert got.startswith(b"HTTP/1.1 201")
    reqs = ctl(mock, "requests")
    assert len({r["conn_id"] for r in reqs}) == 3
    assert ctl(mock, "stats")["connections"] == 3
    # reset restores keep-alive
    ctl(mock, "reset", {})
    assert ctl(mock, "config")["close_connections"] is False


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


# --------------------------------------------------------------------------
# Outgoing webhooks: a small local receiver stands in for otpd.
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def receiver():
    got = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            got.append({"path": self.path, "headers": dict(self.headers),
                        "body": self.rfile.read(n).decode()})
            out = b"accepted"
            self.send_response(202 if self.path.endswith("/202") else 200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield {"url": "http://127.0.0.1:%d" % srv.server_address[1], "got": got}
    finally:
        srv.shutdown()
        srv.server_close()


def fetch(mock, sid):
    st, _, b = request(mock, "GET", "/2010-04-01/Accounts/%s/Messages/%s.json" % (SID, sid),
                       headers={"Authorization": basic()})
    assert st == 200, b
    return json.loads(b)


def test_twilio_status_callback_signatures(mock, receiver):
    public = "https://otpd.example.com/webhooks/twilio/status?x=1"
    st, _, b = twilio_send(mock, extra={"StatusCallback": public})
    assert st == 201
    sid = json.loads(b)["sid"]
    target = receiver["url"] + "/hook"
    v = RequestValidator(TOKEN)

    def cb(**kw):
        del receiver["got"][:]
        r = ctl(mock, "twilio/callback", dict({"sid": sid, "target": target}, **kw))
        assert len(receiver["got"]) == 1
        g = receiver["got"][0]
        params = dict(urllib.parse.parse_qsl(g["body"], keep_blank_values=True))
        assert g["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
        assert r["status"] == 200 and r["body"] == "accepted" and r["params"] == params
        return r, g, params

    # honest, default url = StatusCallback
    r, g, params = cb(status="sent")
    assert g["path"] == "/hook"
    assert params == {"MessageSid": sid, "SmsSid": sid, "MessageStatus": "sent",
                      "SmsStatus": "sent", "AccountSid": SID, "From": "+15005550006",
                      "To": "+14155550100", "ApiVersion": "2010-04-01"}
    assert g["headers"]["X-Twilio-Signature"] == r["signature"]
    assert v.validate(public, params, g["headers"]["X-Twilio-Signature"])
    tok = g["headers"]["I-Twilio-Idempotency-Token"]
    assert tok and tok == r["idempotency_token"]
    assert fetch(mock, sid)["status"] == "sent"

    # failure with ErrorCode; fixed idempotency token; fetch agrees
    r, g, params = cb(status="undelivered", error_code=30003, idempotency_token="idem-1")
    assert params["ErrorCode"] == "30003" and params["MessageStatus"] == "undelivered"
    assert g["headers"]["I-Twilio-Idempotency-Token"] == "idem-1" != tok
    assert v.validate(public, params, g["headers"]["X-Twilio-Signature"])
    f = fetch(mock, sid)
    assert f["status"] == "undelivered" and f["error_code"] == 30003
    assert f["error_message"] == "Unreachable destination handset"

    # tampered signature
    r, g, params = cb(status="delivered", tamper="signature")
    assert not v.validate(public, params, g["headers"]["X-Twilio-Signature"])
    # replay with changed params: signature was made over the honest params
    r, g, params = cb(status="delivered", tamper="param")
    assert params["MessageStatus"] != "delivered"
    assert not v.validate(public, params, g["headers"]["X-Twilio-Signature"])
    assert v.validate(public, r["signed_params"], g["headers"]["X-Twilio-Signature"])
    # no header at all
    r, g, params = cb(status="delivered", tamper="none")
    assert "X-Twilio-Signature" not in g["headers"] and r["signature"] is None
    assert fetch(mock, sid)["status"] == "delivered"

    # explicit url + token
    r, g, params = cb(status="failed", url="https://other.example/cb", token="tok2")
    assert RequestValidator("tok2").validate("https://other.example/cb", params,
                                             g["headers"]["X-Twilio-Signature"])
    assert not v.validate("https://other.example/cb", params,
                          g["headers"]["X-Twilio-Signature"])

    # target status passes through; no url anywhere -> 400
    r = ctl(mock, "twilio/callback", {"sid": sid, "status": "sent",
                                      "target": receiver["url"] + "/202"})
    assert r["status"] == 202
    st, _, _ = twilio_send(mock, to="+14155550177")
    sid2 = ctl(mock, "messages")["twilio"][-1]["sid"]
    st, _, b = request(mock, "POST", "/_mock/twilio/callback",
                       body=json.dumps({"sid": sid2, "status": "sent", "target": target}))
    assert st == 400, b
    # existing override endpoint: error_code is an int in fetch
    ctl(mock, "twilio/messages/" + sid2, {"status": "failed", "error_code": "30006"})
    f = fetch(mock, sid2)
    assert f["status"] == "failed" and f["error_code"] == 30006 and f["error_message"]


def test_msg91_dlr_formats(mock, receiver):
    target = receiver["url"] + "/msg91"
    rid = "3365646f" + "0" * 16

    def dlr(fmt, status, **kw):
        del receiver["got"][:]
        r = ctl(mock, "msg91/dlr", dict({"format": fmt, "request_id": rid,
                                         "number": "919812345678", "status": status,
                                         "target": target}, **kw))
        assert r["status"] == 200 and r["body"] == "accepted"
        assert len(receiver["got"]) == 1
        return receiver["got"][0]

    g = dlr("v2", 1)
    assert g["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    form = urllib.parse.parse_qs(g["body"])
    assert list(form) == ["data"]
    data = json.loads(form["data"][0])
    assert isinstance(data, list) and data[0]["requestId"] == rid
    assert {"senderId", "userId", "campaignName", "report"} <= set(data[0])
    rep = data[0]["report"][0]
    assert rep["number"] == "919812345678" and rep["status"] == "1"
    assert rep["desc"] == "DELIVERED" and "date" in rep and rep["failedReason"] == ""

    g = dlr("v3", 17, desc="Blocked number")
    assert g["headers"]["Content-Type"] == "application/json"
    j = json.loads(g["body"])
    assert isinstance(j, dict) and j["requestId"] == rid and j["number"] == "919812345678"
    assert j["status"] == "17" and j["desc"] == "Blocked number"
    assert {"date", "senderId"} <= set(j)

    g = dlr("new", 2)
    assert g["headers"]["Content-Type"] == "application/json"
    j = json.loads(g["body"])
    assert j["requestId"] == rid and j["telNum"] == "919812345678" and j["status"] == "2"
    assert j["failureReason"] and "deliveryTime" in j
    assert [c["kind"] for c in ctl(mock, "callbacks")] == ["msg91"] * 3

    st, _, b = request(mock, "POST", "/_mock/msg91/dlr",
                       body=json.dumps({"format": "v9", "request_id": rid,
                                        "number": "1", "target": target}))
    assert st == 400
