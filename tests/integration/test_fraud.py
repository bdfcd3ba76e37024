"""SMS pumping and what codes cost (issue 19): the attack played against the
daemon, the legitimate spike it must leave alone, the operator's override,
two daemons deciding alike, segments and prices checked against values
computed by hand, and the money budgets.  docs/fraud.md is the model."""
import json
import random
import time
import urllib.request

import pytest

from conftest import HASH_KEY, free_port, wait_for
from test_providers import sends, twilio_env

from otpd import OTPClient

ATTACKED = "447624"  # the prefix the attack texts (6 digits, the default length)
NORMAL = ["14155", "447946", "336123", "491512", "919876", "551199", "614123", "819012"]

# Small windows so that a test sees in seconds what a site sees in an hour.
FAST = {
    "OTPD_FRAUD_WINDOW_S": "60",
    "OTPD_FRAUD_SETTLE_S": "2",
    "OTPD_FRAUD_MIN_CODES": "20",
    "OTPD_FRAUD_SPIKE_FACTOR": "3",
    "OTPD_FRAUD_MIN_CONVERSION": "25",
}


def number(prefix, rng):
    """A number in the prefix: 12 digits in all, as most mobile numbers are."""
    return "+" + prefix + "".join(rng.choice("0123456789") for _ in range(12 - len(prefix)))


@pytest.fixture
def site(redis_server):
    """The site's client, without its own number checks: the daemon's model is tested."""
    return OTPClient(url=redis_server.url, hash_key=HASH_KEY, number_check=None)


def final(site, ids, timeout=30):
    """The final status records of the jobs, in order."""
    out = {}
    deadline = time.monotonic() + timeout
    for i in ids:
        out[i] = site.wait(i, timeout=max(deadline - time.monotonic(), 0.1))
    return [out[i] for i in ids]


def verify_from_phone(otpd, site, to):
    code = otpd.codes(to)[-1]
    res = site.verify(to, code)
    assert res.ok, (to, res)


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as resp:
        return resp.read().decode()


def metric(page, name, labels=""):
    for line in page.splitlines():
        if line.startswith(name + labels + " ") or (not labels and line.startswith(name + " ")):
            return float(line.split()[-1])
    return None


def play(site, otpd, rounds, attack_per_round, normal_per_round, rng, verify_share=0.8,
         pause_s=0.25):
    """Interleaved traffic: each round some attack codes (never verified) and
    some normal ones, of which verify_share are typed in once sent.  Returns
    (attack job ids, normal job ids, normal jobs verified)."""
    attack, normal, verified = [], [], 0
    for _ in range(rounds):
        batch = []
        for _ in range(attack_per_round):
            attack.append(site.send(number(ATTACKED, rng)))
        for _ in range(normal_per_round):
            to = number(rng.choice(NORMAL), rng)
            j = site.send(to)
            normal.append(j)
            batch.append((j, to))
        for j, to in batch:
            st = site.wait(j, timeout=15)
            if st["status"] == "sent" and rng.random() < verify_share:
                verify_from_phone(otpd, site, to)
                verified += 1
        time.sleep(pause_s)
    return attack, normal, verified


def sent_before_pause(records):
    """Attack jobs sent before the first one refused as suspected_pumping."""
    order = sorted(records, key=lambda st: int(st.get("updated_ms", 0)))
    n = 0
    for st in order:
        if st.get("error_code") == "suspected_pumping":
            return n
        n += st["status"] == "sent"
    return None


def test_pumping_is_paused_and_normal_traffic_is_not_touched(otpd_factory, site, r):
    rng = random.Random(19)
    otpd = otpd_factory(FAST)
    attack, normal, verified = play(site, otpd, rounds=30, attack_per_round=10,
                                    normal_per_round=5, rng=rng)
    a = final(site, attack)
    n = final(site, normal)
    before = sent_before_pause(a)
    refused = sum(st.get("error_code") == "suspected_pumping" for st in a)
    normal_hit = [st for st in n if st["status"] != "sent"]
    print("\n  attack: %d codes to +%s..., %d sent before the pause, %d refused after it"
          % (len(a), ATTACKED, before, refused))
    print("  normal: %d codes to %d prefixes, %d verified (%.0f%%), %d affected"
          % (len(n), len(NORMAL), verified, 100.0 * verified / len(n), len(normal_hit)))
    # Bound: the least codes (20), plus what the attack sends while its codes
    # settle (2 s at about 20 a second), plus a batch in flight.
    assert before is not None and before <= 20 + 2 * 40 + 64, before
    assert refused >= len(a) - before - 64
    assert normal_hit == []
    rule = r.hget("otpd:fraud:rules", ATTACKED)
    assert rule.startswith("paused|"), rule
    assert r.get("otpd:alert:pumping:" + ATTACKED)
    assert "ALERT: suspected SMS pumping" in otpd.stderr
    # The refusal says why and what to do.
    refusal = next(st for st in a if st.get("error_code") == "suspected_pumping")
    assert refusal["status"] == "failed"
    assert "otpctl fraud allow +" + ATTACKED in refusal["error"]
    # No normal prefix is paused, and numbers never reach the log.
    assert r.hkeys("otpd:fraud:rules") == [ATTACKED]
    assert ATTACKED + "0" not in otpd.stderr


def test_a_spike_that_converts_is_never_paused(otpd_factory, site, r):
    """A campaign: 240 codes to one prefix in about 15 s, far over its baseline
    (none) and the least codes, but people type 85% of them in."""
    rng = random.Random(20)
    otpd = otpd_factory(FAST)
    statuses, verified = [], 0
    for _ in range(12):
        batch = []
        for _ in range(20):
            to = number(ATTACKED, rng)
            batch.append((site.send(to), to))
        for j, to in batch:
            st = site.wait(j, timeout=15)
            statuses.append(st["status"])
            if st["status"] == "sent" and rng.random() < 0.85:
                verify_from_phone(otpd, site, to)
                verified += 1
        time.sleep(0.5)
    print("\n  spike: %d codes to +%s..., %d verified, %d not sent"
          % (len(statuses), ATTACKED, verified, sum(s != "sent" for s in statuses)))
    assert statuses == ["sent"] * len(statuses)
    assert r.hget("otpd:fraud:rules", ATTACKED) is None
    # The model saw it: far over the least codes, and converting.
    assert r.zcard("otpd:fraud:codes:" + ATTACKED) == len(statuses)
    assert r.zcard("otpd:fraud:ok:" + ATTACKED) == verified


def test_allow_overrides_a_pause_and_block_stops_a_prefix(otpd_factory, site, r):
    rng = random.Random(21)
    otpd_factory(FAST)
    now = int(time.time() * 1000)
    r.hset("otpd:fraud:rules", ATTACKED, "paused|%d|%d|test" % (now, now + 3600000))
    st = site.wait(site.send(number(ATTACKED, rng)))
    assert st["error_code"] == "suspected_pumping", st
    # An allow on a shorter prefix wins over the pause.
    r.hset("otpd:fraud:rules", "4476", "allow|%d|0|by test" % now)
    st = site.wait(site.send(number(ATTACKED, rng)))
    assert st["status"] == "sent", st
    # A block on a longer prefix beats the shorter allow; other numbers go on.
    r.hset("otpd:fraud:rules", ATTACKED + "9", "block|%d|0|by test" % now)
    st = site.wait(site.send("+" + ATTACKED + "912345"))
    assert (st["status"], st["error_code"]) == ("failed", "blocked_prefix"), st
    assert site.wait(site.send("+" + ATTACKED + "812345"))["status"] == "sent"
    # A lapsed pause is no pause.
    r.hdel("otpd:fraud:rules", "4476")
    r.hset("otpd:fraud:rules", ATTACKED, "paused|%d|%d|old" % (now - 7200000, now - 1))
    assert site.wait(site.send("+" + ATTACKED + "812346"))["status"] == "sent"


def test_configured_block_list(otpd_factory, site, mock):
    otpd_factory(twilio_env(mock, OTPD_BLOCKED_PREFIXES="+88216, +4470"))
    st = site.wait(site.send("+882161234567"))
    assert (st["status"], st["error_code"]) == ("failed", "blocked_prefix"), st
    assert "OTPD_BLOCKED_PREFIXES" in st["error"]
    assert site.wait(site.send("+447012345678"))["error_code"] == "blocked_prefix"
    assert site.wait(site.send("+447912345678"))["status"] == "sent"
    assert len(sends(mock)) == 1


def test_two_daemons_agree(otpd_factory, site, r):
    rng = random.Random(22)
    ports = [free_port(), free_port()]
    daemons = [otpd_factory(dict(FAST, OTPD_METRICS_ADDR="127.0.0.1:%d" % p,
                                 OTPD_MAX_INFLIGHT="8")) for p in ports]
    attack = []
    for _ in range(20):
        attack += [site.send(number(ATTACKED, rng)) for _ in range(10)]
        time.sleep(0.25)
    a = final(site, attack)
    before = sent_before_pause(a)
    refused = [st for st in a if st.get("error_code") == "suspected_pumping"]
    by_daemon = [metric(metrics(p), "otpd_fraud_refused_total", '{reason="suspected_pumping"}')
                 for p in ports]
    print("\n  two daemons: %d sent before the pause, refused after it: %s"
          % (before, by_daemon))
    assert refused and all(n and n > 0 for n in by_daemon), by_daemon
    # After the pause, nothing of the prefix went out from either daemon.
    first = min(int(st["updated_ms"]) for st in refused)
    late = [st for st in a if st["status"] == "sent" and int(st["updated_ms"]) > first + 1000]
    assert late == []
    assert sum(1 for k in r.hkeys("otpd:fraud:rules")) == 1


# --- segments, prices, budgets --------------------------------------------

PRICES = {"OTPD_SMS_PRICES": "44=0.0400;91=0.0827;*=0.0100", "OTPD_PRICE_CURRENCY": "USD"}

# (text, encoding, units, segments), each worked out by hand:
TEXTS = [
    # 13 + 6 digits = 19 septets: one GSM-7 segment.
    ("Your code: {code}", "gsm7", 1),
    # "{code} " is 7 septets and each euro sign 2 (escape + sign): 7 + 80 * 2
    # = 167 > 160, so 153-septet segments: 7 + 73 euros = 153, then 7 euros.
    ("{code} " + "\u20ac" * 80, "gsm7", 2),
    # Devanagari is not GSM-7: UCS-2.  "आपका कोड {code} है" is 4 + 1 + 3 + 1
    # + 6 + 1 + 2 = 18 code units: one 70-unit segment.
    ("\u0906\u092a\u0915\u093e \u0915\u094b\u0921 {code} \u0939\u0948", "ucs2", 1),
    # "{code} " (7) and six times "आपका कोड है" (4 + 1 + 3 + 1 + 2 = 11)
    # joined by 5 spaces: 7 + 66 + 5 = 78 units > 70: two 67-unit segments.
    ("{code} " + " ".join(["\u0906\u092a\u0915\u093e \u0915\u094b\u0921 \u0939\u0948"] * 6),
     "ucs2", 2),
    # An emoji is two UTF-16 units: 66 c-cedillas (UCS-2) + emoji = 68 > 67
    # would split the pair, so segment 1 holds 66 and segment 2 the emoji,
    # a space and the code: 66 + 9 = 75 units, 2 segments.
    ("\u00e7" * 66 + "\U0001F600 {code}", "ucs2", 2),
]


@pytest.mark.parametrize("text,encoding,segments", TEXTS,
                         ids=["gsm7", "gsm7-extended", "hindi", "hindi-long", "emoji"])
def test_segments_and_price_are_recorded(otpd_factory, mock, site, r, text, encoding, segments):
    otpd_factory(twilio_env(mock, **PRICES))
    to = "+447912345678"
    st = site.wait(site.send(to, message=text))
    assert st["status"] == "sent", st
    assert (st["encoding"], int(st["segments"])) == (encoding, segments), st
    assert int(st["price_micro"]) == segments * 40000 and st["price_source"] == "table"
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert int(r.hget("otpd:spend:day:" + day, "44")) == segments * 40000
    assert int(r.hget("otpd:spend:day:" + day, "*")) == segments * 40000


def test_twilio_price_replaces_the_table(otpd_factory, mock, site, r):
    mock.ctl("config", {"twilio_message_status": "delivered", "twilio_price_per_segment": "0.0079"})
    otpd_factory(twilio_env(mock, OTPD_DLR_POLL_FIRST_MS="200", OTPD_DLR_POLL_HORIZON_S="600",
                            **PRICES))
    to = "+919812345678"
    j = site.send(to, message="{code} " + "\u20ac" * 80)  # 2 segments
    try:
        wait_for(lambda: site.status(j).get("price_source") == "provider", 20,
                 what="the polled price")
    except AssertionError:
        print(site.status(j), mock.requests("twilio")[-1])
        raise
    st = site.status(j)
    assert int(st["price_micro"]) == 2 * 7900 and st["price_unit"] == "USD", st
    day = time.strftime("%Y-%m-%d", time.gmtime())
    # The table's 2 x 0.0827 was replaced by Twilio's 2 x 0.0079.
    assert int(r.hget("otpd:spend:day:" + day, "91")) == 15800
    assert int(r.hget("otpd:spend:day:" + day, "*")) == 15800


def test_daily_budget_stops_at_the_right_count(otpd_factory, mock, site, r):
    otpd = otpd_factory(twilio_env(mock, OTPD_SMS_PRICES="*=0.05",
                                   OTPD_DAILY_SPEND_BUDGET="0.50"))
    rng = random.Random(23)
    out = [site.wait(site.send(number("447946", rng))) for _ in range(12)]
    words = [(st["status"], st.get("error_code", "")) for st in out]
    assert words[:10] == [("sent", "")] * 10, words
    assert words[10:] == [("rate_limited", "spend_budget")] * 2, words
    assert int(out[10]["retry_at_ms"]) > time.time() * 1000
    assert len(sends(mock)) == 10
    assert r.exists("otpd:alert:spend_budget:*")
    assert "ALERT: today's SMS spend reached OTPD_DAILY_SPEND_BUDGET" in otpd.stderr


def test_country_budget_and_refund_of_unsent(otpd_factory, mock, site, r):
    otpd_factory(twilio_env(mock, OTPD_SMS_PRICES="*=0.05",
                            OTPD_COUNTRY_DAILY_SPEND_BUDGET="44=0.20"))
    rng = random.Random(24)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    # A send Twilio refuses costs nothing: its charge is given back.
    mock.rule(provider="twilio", behaviour="invalid_number", times=1)
    st = site.wait(site.send(number("447946", rng)))
    assert st["status"] == "failed", st
    assert int(r.hget("otpd:spend:day:" + day, "44") or 0) == 0
    uk = [site.wait(site.send(number("447946", rng))) for _ in range(5)]
    assert [s["status"] for s in uk] == ["sent"] * 4 + ["rate_limited"], uk
    assert uk[4]["error_code"] == "country_spend_budget"
    assert site.wait(site.send(number("14155", rng)))["status"] == "sent"
    assert int(r.hget("otpd:spend:day:" + day, "44")) == 200000
    assert int(r.hget("otpd:spend:day:" + day, "*")) == 250000


def test_budget_needs_a_price_table(otpd_factory):
    import subprocess
    from conftest import otpd_binary
    p = subprocess.run([otpd_binary(), "--check-config"], capture_output=True, text=True,
                       env={"OTPD_HASH_KEY": HASH_KEY, "OTPD_DAILY_SPEND_BUDGET": "10"})
    assert p.returncode != 0 and "OTPD_SMS_PRICES" in p.stderr


def test_verify_counts_conversion(otpd_factory, site, r):
    otpd = otpd_factory(FAST)
    to = "+447946123456"
    j = site.send(to)
    assert site.wait(j)["status"] == "sent"
    assert r.zscore("otpd:fraud:codes:447946", j) is not None
    verify_from_phone(otpd, site, to)
    assert r.zscore("otpd:fraud:ok:447946", j) is not None
    bucket = "otpd:fraud:counts:%d" % (int(time.time() * 1000) // 300000)
    counts = r.hgetall(bucket)
    assert counts.get("c|sms|44") == "1" and counts.get("v|sms|44") == "1", counts
