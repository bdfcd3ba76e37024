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
CALLS_PATH = "/2010-04-01/Accounts/%s/Calls.json" % SID
OTP_TWIML = ('<?xml version="1.0" encoding="UTF-8"?><Response>'
             '<Say voice="Polly.Joanna" language="en-US">Your verification code is</Say>'
             '<Pause length="1"/>'
             '<Say voice="Polly.Joanna" language="en-US" loop="2">1, 2, 3, 4, 5, 6.</Say>'
             '</Response>')


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


def twilio_call(mock, to="+14155550100", twiml=OTP_TWIML, auth=None, extra=None,
                pairs=None, timeout=10):
    """Create a call; returns (status, headers, parsed JSON or raw bytes)."""
    form = [("To", to), ("From", "+15005550006")]
    if twiml is not None:
        form.append(("Twiml", twiml))
    form += list((extra or {}).items()) + list(pairs or [])
    st, hdrs, b = request(mock, "POST", CALLS_PATH, body=urllib.parse.urlencode(form),
                          headers={"Authorization": auth or basic(),
                                   "Content-Type": "application/x-www-form-urlencoded"},
                          timeout=timeout)
    try:
        return st, hdrs, json.loads(b)
    except ValueError:
        return st, hdrs, b


def call_get(mock, path_tail=""):
    st, _, b = request(mock, "GET", CALLS_PATH[:-5] + path_tail,
                       headers={"Authorization": basic()})
    return st, json.loads(b)


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
        def do_GET(self):
            self.do_POST()

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            got.append({"method": self.command, "path": self.path,
                        "headers": dict(self.headers), "body": self.rfile.read(n).decode()})
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


# --------------------------------------------------------------------------
# Twilio Programmable Voice (Calls)
# --------------------------------------------------------------------------
def test_twilio_call_create_fetch_list(mock):
    st, hdrs, c = twilio_call(mock, extra={"StatusCallback": "https://otpd.example/cb",
                                           "Timeout": "30"})
    assert st == 201, c
    assert hdrs["Content-Type"].startswith("application/json")
    assert re.fullmatch(r"CA[0-9a-f]{32}", c["sid"])
    assert c["account_sid"] == SID and c["to"] == "+14155550100" and c["from"] == "+15005550006"
    assert c["to_formatted"] == "(415) 555-0100" and c["from_formatted"] == "(500) 555-0006"
    assert c["status"] == "queued" and c["direction"] == "outbound-api"
    assert c["api_version"] == "2010-04-01" and c["queue_time"] == "0"
    for k in ("start_time", "end_time", "duration", "price", "answered_by", "caller_name",
              "parent_call_sid", "group_sid", "trunk_sid"):
        assert c[k] is None, k
    assert c["price_unit"] == "USD" and re.fullmatch(r"PN[0-9a-f]{32}", c["phone_number_sid"])
    assert email.utils.parsedate_to_datetime(c["date_created"]).year >= 2024
    assert c["uri"] == "/2010-04-01/Accounts/%s/Calls/%s.json" % (SID, c["sid"])
    assert c["subresource_uris"]["recordings"].endswith("/Calls/%s/Recordings.json" % c["sid"])
    assert not any(k.startswith("_") for k in c)
    assert twilio_call(mock, to="+14155550199")[0] == 201

    # fetch: twilio_call_status (default completed) with duration and times
    st, f = call_get(mock, "/%s.json" % c["sid"])
    assert st == 200 and f["sid"] == c["sid"] and f["status"] == "completed"
    assert int(f["duration"]) > 0 and f["start_time"] and f["end_time"]
    assert f["price"] is None and f["answered_by"] is None
    assert call_get(mock, "/CA%s.json" % ("0" * 32))[1]["code"] == 20404

    # list by To, with a date filter and paging fields
    today = time.strftime("%Y-%m-%d", time.gmtime())
    st, lst = call_get(mock, ".json?To=%2B14155550100&StartTime%3E=" + today + "&PageSize=5")
    assert st == 200 and [x["sid"] for x in lst["calls"]] == [c["sid"]]
    assert lst["page"] == 0 and lst["page_size"] == 5 and lst["next_page_uri"] is None
    assert lst["uri"].startswith("/2010-04-01/Accounts/%s/Calls.json?" % SID)
    st, lst = call_get(mock, ".json?PageSize=1")
    assert len(lst["calls"]) == 1 and lst["calls"][0]["to"] == "+14155550199"  # newest first
    assert "Page=1" in lst["next_page_uri"]
    assert call_get(mock, ".json?StartTime%3C=2001-01-01")[1]["calls"] == []
    assert len(call_get(mock, ".json?Status=completed")[1]["calls"]) == 2

    # config: polling view, price per started minute
    ctl(mock, "config", {"twilio_call_status": "ringing",
                         "twilio_call_price_per_minute": "0.013"})
    f = call_get(mock, "/%s.json" % c["sid"])[1]
    assert f["status"] == "ringing" and f["start_time"] and f["duration"] is None
    assert f["end_time"] is None and f["price"] is None
    # control: set one call's status, duration and answered_by
    v = ctl(mock, "twilio/calls/" + c["sid"], {"status": "completed", "duration": 75,
                                               "answered_by": "machine_start"})
    assert v["status"] == "completed" and v["duration"] == "75"
    f = call_get(mock, "/%s.json" % c["sid"])[1]
    assert f["duration"] == "75" and f["price"] == "-0.02600" and f["price_unit"] == "USD"
    assert f["answered_by"] == "machine_start"
    assert (email.utils.parsedate_to_datetime(f["end_time"])
            - email.utils.parsedate_to_datetime(f["start_time"])).total_seconds() == 75
    f = ctl(mock, "twilio/calls/" + c["sid"], {"status": "busy"})
    assert f["status"] == "busy" and f["duration"] == "0" and f["price"] is None
    st, _, b = request(mock, "POST", "/_mock/twilio/calls/CAnope", body=b'{"status":"busy"}')
    assert st == 404
    assert ctl(mock, "stats")["twilio_calls"] == 2


def test_twilio_call_twiml_spoken(mock):
    ssml = ('<Response><Gather numDigits="1" action="https://otpd.example/g">'
            '<Say language="fr-FR">Votre code est <say-as interpret-as="digits">987654'
            '</say-as></Say></Gather><Pause length="2"/><Hangup/></Response>')
    c1 = twilio_call(mock)[2]
    c2 = twilio_call(mock, to="+33612345678", twiml=ssml)[2]
    calls = {c["sid"]: c for c in ctl(mock, "twilio/calls")}
    one = calls[c1["sid"]]
    assert one["twiml"] == OTP_TWIML and one["twiml_used"] and one["twiml_error"] is None
    assert one["spoken"] == [
        {"verb": "Say", "text": "Your verification code is", "language": "en-US",
         "voice": "Polly.Joanna", "loop": 1, "digits": ""},
        {"verb": "Pause", "length": 1},
        {"verb": "Say", "text": "1, 2, 3, 4, 5, 6.", "language": "en-US",
         "voice": "Polly.Joanna", "loop": 2, "digits": "123456"}]
    assert one["spoken_text"] == "Your verification code is 1, 2, 3, 4, 5, 6."
    assert one["spoken_digits"] == "123456"
    assert one["status_callback"] is None and one["timeout"] == 60
    assert one["form"]["From"] == "+15005550006"
    two = calls[c2["sid"]]
    assert [i["verb"] for i in two["spoken"]] == ["Gather", "Say", "Pause", "Hangup"]
    assert two["spoken"][1]["parent"] == "Gather" and two["spoken"][1]["language"] == "fr-FR"
    assert two["spoken_text"] == "Votre code est 987654" and two["spoken_digits"] == "987654"
    assert two["to_formatted"] == "+33612345678"
    assert [c["sid"] for c in ctl(mock, "twilio/calls?to=%2B33612345678")] == [c2["sid"]]
    # the recorded request carries the same
    recs = [r for r in ctl(mock, "requests") if r["op"] == "call"]
    assert [r["call_sid"] for r in recs] == [c1["sid"], c2["sid"]]
    assert recs[0]["spoken"] == one["spoken"] and recs[0]["twiml"] == OTP_TWIML
    assert recs[0]["spoken_text"] == one["spoken_text"] and recs[0]["form"]["Twiml"] == OTP_TWIML
    # Url + Twiml: Twilio runs the Url (warning 32019), so nothing known is spoken
    st, _, c3 = twilio_call(mock, extra={"Url": "https://otpd.example/twiml"})
    assert st == 201
    three = ctl(mock, "twilio/calls/" + c3["sid"])
    assert three["url"] == "https://otpd.example/twiml" and not three["twiml_used"]
    assert three["spoken"] is None and three["spoken_text"] is None


def test_twilio_call_validation(mock):
    def code(**kw):
        st, _, b = twilio_call(mock, **kw)
        assert st == 400, b
        return b["code"]

    st, hdrs, b = twilio_call(mock, auth=basic(pw="wrong"))
    assert st == 401 and b["code"] == 20003 and "WWW-Authenticate" in hdrs
    assert code(to="") == 21201
    assert code(extra={"From": ""}) == 21213
    assert code(twiml=None) == 21205
    assert code(twiml=None, extra={"Url": "not a url"}) == 21205
    assert code(to="14155550100") == 21211
    assert code(twiml="<Response><Say>" + "x" * 4000 + "</Say></Response>") == 32018
    assert code(twiml="<Response><Say>1 & 2</Say></Response>") == 21200   # unescaped &
    assert code(twiml="<Say>no Response root</Say>") == 21200
    assert code(pairs=[("StatusCallbackEvent", "initiated,completed")]) == 21200
    assert code(extra={"StatusCallbackMethod": "PUT"}) == 21200
    ctl(mock, "config", {"twilio_call_from_numbers": ["+15005550001"]})
    assert code() == 21210
    ctl(mock, "config", {"twilio_call_from_numbers": ["+15005550006"]})
    assert twilio_call(mock)[0] == 201
    assert twilio_call(mock, twiml=None, extra={"Url": "https://x.example/t"})[0] == 201
    reqs = ctl(mock, "requests")
    assert [r["behaviour"] for r in reqs].count("validation") == 11
    assert reqs[0]["behaviour"] == "bad_credentials"
    assert ctl(mock, "stats")["twilio_calls"] == 2
    # fail_call: a bad TwiML is accepted (201), then the call is failed
    ctl(mock, "config", {"twilio_call_bad_twiml": "fail_call"})
    st, _, c = twilio_call(mock, twiml="<Response><Say>oops</Response>")
    assert st == 201 and c["status"] == "queued"
    v = ctl(mock, "twilio/calls/" + c["sid"])
    assert v["status"] == "failed" and v["duration"] == "0"
    assert v["twiml_error"].startswith("Invalid Twiml") and v["spoken"] is None
    # repeated and space-separated StatusCallbackEvent both work
    st, _, c = twilio_call(mock, extra={"Timeout": "900"}, pairs=[
        ("StatusCallbackEvent", "initiated ringing"), ("StatusCallbackEvent", "completed")])
    v = ctl(mock, "twilio/calls/" + c["sid"])
    assert v["status_callback_event"] == ["initiated", "ringing", "completed"]
    assert v["timeout"] == 600


def test_twilio_call_rules(mock):
    ctl(mock, "rules", [
        {"to": "+14155550101", "behaviour": "invalid_number", "op": "call"},
        {"to": "+14155550102", "behaviour": "geo_permission", "op": "call"},
        {"to": "+14155550103", "behaviour": "rate_limited", "op": "call", "retry_after": 3,
         "times": 1},
        {"to": "+14155550104", "behaviour": "busy", "op": "call"},
        {"to": "+14155550105", "behaviour": "drop", "op": "call"},
        {"to": "+14155550106", "behaviour": "server_error", "op": "call", "store": True},
        {"to": "+14155550107", "behaviour": "server_error"},          # op send only
        {"to": "+14155550108", "behaviour": "unverified_trial", "op": "call"},
    ])
    st, _, b = twilio_call(mock, to="+14155550101")
    assert st == 400 and b["code"] == 21211 and "+14155550101" in b["message"]
    st, _, b = twilio_call(mock, to="+14155550102")
    assert st == 400 and b["code"] == 21215
    assert b["message"].startswith("Account not authorized to call +14155550102. "
                                   "Perhaps you need to enable some international permissions")
    st, hdrs, b = twilio_call(mock, to="+14155550103")
    assert st == 429 and b["code"] == 20429 and hdrs["Retry-After"] == "3"
    assert twilio_call(mock, to="+14155550103")[0] == 201            # times: 1
    st, _, c = twilio_call(mock, to="+14155550104")
    assert st == 201 and c["status"] == "queued"
    f = call_get(mock, "/%s.json" % c["sid"])[1]
    assert f["status"] == "busy" and f["duration"] == "0"
    with pytest.raises((ConnectionError, http.client.HTTPException, ssl.SSLError)):
        twilio_call(mock, to="+14155550105")
    st, _, b = twilio_call(mock, to="+14155550106")
    assert st == 500 and b["code"] == 20500
    assert [c["to"] for c in ctl(mock, "twilio/calls")][-1] == "+14155550106"  # store: true
    assert twilio_call(mock, to="+14155550107")[0] == 201     # send rule: calls unaffected
    assert twilio_send(mock, to="+14155550107")[0] == 500
    assert twilio_send(mock, to="+14155550101")[0] == 201     # call rule: SMS unaffected
    st, _, b = twilio_call(mock, to="+14155550108")
    assert st == 400 and b["code"] == 21219
    reqs = [r for r in ctl(mock, "requests") if r["op"] == "call"]
    assert [r["behaviour"] for r in reqs] == [
        "invalid_number", "geo_permission", "rate_limited", "ok", "busy", "drop",
        "server_error", "ok", "unverified_trial"]
    # reads of calls: their own ops
    ctl(mock, "rules", {"to": "*", "behaviour": "server_error", "op": "call_list", "times": 1})
    assert call_get(mock, ".json")[0] == 500
    assert call_get(mock, ".json")[0] == 200
    # behaviours that do not fit the op are refused
    for bad in ({"behaviour": "opted_out", "op": "call"}, {"behaviour": "busy"},
                {"behaviour": "invalid_number", "op": "call_fetch"}):
        st, _, b = request(mock, "POST", "/_mock/rules", body=json.dumps(bad))
        assert st == 400, (bad, b)


def test_twilio_call_callback_signature(mock, receiver):
    public = "https://otpd.example.com/webhooks/twilio/voice?x=1"
    st, _, c = twilio_call(mock, extra={"StatusCallback": public}, pairs=[
        ("StatusCallbackEvent", "ringing answered completed")])
    assert st == 201
    sid = c["sid"]
    target = receiver["url"] + "/voice"
    v = RequestValidator(TOKEN)

    def cb(**kw):
        del receiver["got"][:]
        r = ctl(mock, "twilio/call_callback", dict({"sid": sid, "target": target}, **kw))
        assert len(receiver["got"]) == 1 and r["status"] == 200 and r["body"] == "accepted"
        g = receiver["got"][0]
        if g["method"] == "POST":
            assert g["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
            params = dict(urllib.parse.parse_qsl(g["body"], keep_blank_values=True))
        else:
            params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(g["path"]).query))
        assert r["params"] == params
        return r, g, params

    r, g, params = cb(status="ringing")
    assert g["path"] == "/voice" and r["event"] == "ringing" and r["subscribed"]
    ts = params.pop("Timestamp")
    assert email.utils.parsedate_to_datetime(ts).year >= 2024
    assert params == {"CallSid": sid, "AccountSid": SID, "From": "+15005550006",
                      "To": "+14155550100", "Called": "+14155550100",
                      "Caller": "+15005550006", "CallStatus": "ringing",
                      "Direction": "outbound-api", "ApiVersion": "2010-04-01",
                      "SequenceNumber": "0", "CallbackSource": "call-progress-events"}
    # same check as the message callbacks: twilio-python's validator
    assert v.validate(public, r["params"], g["headers"]["X-Twilio-Signature"])
    assert g["headers"]["I-Twilio-Idempotency-Token"] == r["idempotency_token"]
    assert ctl(mock, "twilio/calls/" + sid)["status"] == "ringing"

    r, g, params = cb(status="completed", duration=42)
    assert params["CallStatus"] == "completed" and params["CallDuration"] == "42"
    assert params["SequenceNumber"] == "1"
    assert v.validate(public, params, g["headers"]["X-Twilio-Signature"])
    f = call_get(mock, "/%s.json" % sid)[1]
    assert f["status"] == "completed" and f["duration"] == "42"

    r, g, params = cb(status="completed", tamper="signature")
    assert not v.validate(public, params, g["headers"]["X-Twilio-Signature"])
    r, g, params = cb(status="completed", tamper="param")
    assert params["CallStatus"] == "failed"
    assert not v.validate(public, params, g["headers"]["X-Twilio-Signature"])
    assert v.validate(public, r["signed_params"], g["headers"]["X-Twilio-Signature"])
    r, g, params = cb(status="completed", tamper="none")
    assert "X-Twilio-Signature" not in g["headers"]

    # StatusCallbackMethod=GET: params in the query, signature over the full URL
    st, _, c2 = twilio_call(mock, to="+14155550111", extra={
        "StatusCallback": public, "StatusCallbackMethod": "GET"})
    sid = c2["sid"]
    r, g, params = cb(status="no-answer")
    assert g["method"] == "GET" and r["method"] == "GET" and g["body"] == ""
    assert params["CallStatus"] == "no-answer" and params["CallDuration"] == "0"
    assert r["event"] == "completed" and r["subscribed"]   # default events: completed
    assert r["url"].startswith(public + "&")
    assert v.validate(r["url"], {}, g["headers"]["X-Twilio-Signature"])
    assert call_get(mock, "/%s.json" % sid)[1]["status"] == "no-answer"

    # no target: sent to the StatusCallback itself (here the local receiver)
    st, _, c3 = twilio_call(mock, to="+14155550112",
                            extra={"StatusCallback": receiver["url"] + "/direct"})
    del receiver["got"][:]
    r = ctl(mock, "twilio/call_callback", {"sid": c3["sid"], "status": "in-progress"})
    assert r["status"] == 200 and receiver["got"][0]["path"] == "/direct"
    assert r["event"] == "answered" and not r["subscribed"]
    assert v.validate(receiver["url"] + "/direct", r["params"], r["signature"])
    # url override; no url anywhere -> 400
    r = ctl(mock, "twilio/call_callback", {"sid": c3["sid"], "status": "completed",
                                           "url": "https://other.example/cb",
                                           "target": target})
    assert v.validate("https://other.example/cb", r["params"], r["signature"])
    st, _, c4 = twilio_call(mock, to="+14155550113")
    st, _, b = request(mock, "POST", "/_mock/twilio/call_callback",
                       body=json.dumps({"sid": c4["sid"], "status": "completed",
                                        "target": target}))
    assert st == 400, b
    kinds = [x["kind"] for x in ctl(mock, "callbacks")]
    assert kinds == ["twilio_call"] * len(kinds) and len(kinds) == 8


def test_reset_clears_calls(mock):
    st, _, c = twilio_call(mock)
    assert st == 201 and len(ctl(mock, "twilio/calls")) == 1
    ctl(mock, "config", {"twilio_call_status": "queued"})
    ctl(mock, "reset", {})
    assert ctl(mock, "twilio/calls") == []
    assert ctl(mock, "stats")["twilio_calls"] == 0
    assert call_get(mock, "/%s.json" % c["sid"])[0] == 404
    assert ctl(mock, "config")["twilio_call_status"] == "completed"
