"""`otpctl fraud` and the SMS-pumping block of `otpctl status`, against a real Redis.

No daemon: the tests write the keys otpd's scripts would have written
(python/otpd/lua/fraud.lua, spend.lua) and run otpctl as an operator would.
`fraud list` runs python/otpd/lua/fraud_stats.lua for real.
"""
import json
import time

from test_otpctl import base_env, run

PAUSE_DETAIL = "40 codes in the last 60 min, baseline 1.2, 2% of 38 verified"


def redis_ms(r):
    sec, usec = r.time()
    return int(sec) * 1000 + int(usec) // 1000


def utc(now, fmt):
    return time.strftime(fmt, time.gmtime(now / 1000))


def plant(r, p="otpd:"):
    """A pause, a block, a lapsed allow, the pause's alert, some spend, the limits."""
    now = redis_ms(r)
    r.hset(p + "fraud:rules", mapping={
        "447624": "paused|%d|%d|%s" % (now - 60000, now + 3600000, PAUSE_DETAIL),
        "88213": "block|%d|0|by otpctl: satellite, asked by +14155552671" % (now - 100000),
        "3361": "allow|%d|%d|by otpctl: old test" % (now - 900000, now - 1000),
    })
    r.set(p + "alert:pumping:447624", PAUSE_DETAIL, px=3600000)
    for i in range(1, 31):
        r.zadd(p + "fraud:codes:447624", {"job-%d" % i: now - i * 10000})
    r.zadd(p + "fraud:ok:447624", {"job-9": now - 90000})
    r.zadd(p + "fraud:active", {"447624": now})
    r.hset(p + "spend:day:" + utc(now, "%Y-%m-%d"),
           mapping={"*": 12345000, "44": 10000000, "1": 2345000})
    r.hset(p + "spend:hour:" + utc(now, "%Y-%m-%dT%H"), mapping={"*": 1200000, "44": 1200000})
    r.hset(p + "limits", mapping={"fraud_prefix_digits": 6, "fraud_window_ms": 3600000,
                                  "fraud_settle_ms": 60000, "fraud_baseline_ms": 604800000,
                                  "price_currency": "USD", "spend_budget_micro": 50000000})
    return now


def rule_fields(value):
    kind, since, till, detail = value.split("|", 3)
    return kind, int(since), int(till), detail


def test_list_shows_the_pause_and_hides_lapsed_rules(redis_server, r):
    plant(r)
    env = base_env(redis_server)
    for args in (("fraud",), ("fraud", "list")):
        rc, out, err = run(*args, env=env)
        assert rc == 0, out + err
        pause = next(line for line in out.splitlines() if "+447624" in line and "paused" in line)
        assert PAUSE_DETAIL in pause
        assert "+88213" in out and "block" in out
        assert "+3361" not in out and "1 lapsed not shown" in out
        # Numbers are masked, prefixes are not.
        assert "14155552671" not in out and "+1415*****71" in out
        assert "USD" in out and "12.345" in out and "50.00" in out
    rc, out, err = run("fraud", "list", "--all", env=env)
    assert rc == 0, err
    lapsed = next(line for line in out.splitlines() if "+3361" in line and "allow" in line)
    assert "lapsed" in lapsed and "old test" in lapsed


def test_list_json(redis_server, r):
    now = plant(r)
    env = base_env(redis_server)
    rc, out, err = run("fraud", "--json", env=env)
    assert rc == 0 and err == ""
    rep = json.loads(out)
    for key in ("prefix", "now_ms", "day", "hour", "window_ms", "settle_ms", "baseline_ms",
                "prefix_digits", "currency", "budget_micro", "rules", "lapsed_hidden",
                "prefixes", "conversion", "spend"):
        assert key in rep, key
    assert rep["window_ms"] == 3600000 and rep["settle_ms"] == 60000
    assert rep["currency"] == "USD" and rep["budget_micro"] == 50000000
    assert rep["day"] == utc(rep["now_ms"], "%Y-%m-%d")
    assert rep["hour"] == utc(rep["now_ms"], "%Y-%m-%dT%H")
    by_px = {x["prefix"]: x for x in rep["rules"]}
    assert set(by_px) == {"447624", "88213"} and rep["lapsed_hidden"] == 1
    pause = by_px["447624"]
    assert pause["kind"] == "paused" and pause["detail"] == PAUSE_DETAIL and pause["live"]
    assert pause["since_ms"] == now - 60000 and pause["until_ms"] == now + 3600000
    assert "14155552671" not in out
    row = rep["prefixes"][0]
    assert row["prefix"] == "447624" and row["codes"] == 30 and row["verified"] == 1
    assert row["rule"]["kind"] == "paused"
    assert rep["spend"]["day"] == {"*": 12345000, "1": 2345000, "44": 10000000}
    assert rep["spend"]["hour"]["*"] == 1200000
    assert rep["conversion"] == []
    rc, out, err = run("fraud", "list", "--all", "--json", env=env)
    rep = json.loads(out)
    assert {x["prefix"] for x in rep["rules"]} == {"447624", "88213", "3361"}
    assert [x["live"] for x in rep["rules"] if x["prefix"] == "3361"] == [False]


def test_allow_overrides_a_pause_and_removes_its_alerts(redis_server, r):
    # Glob characters in the key prefix must not widen the SCAN.
    p = "t[1]:"
    plant(r, p)
    for px in ("4476241", "44762", "447625"):
        r.set(p + "alert:pumping:" + px, "x")
    r.set("t1:alert:pumping:4476249", "another prefix's")
    env = base_env(redis_server, OTPD_PREFIX=p)
    rc, out, err = run("fraud", "allow", "+447624", "--note", "launch in UK, ok'd by +14155552671",
                       env=env)
    assert rc == 0, out + err
    kind, since, till, detail = rule_fields(r.hget(p + "fraud:rules", "447624"))
    assert kind == "allow" and till == 0 and abs(since - redis_ms(r)) < 10000
    assert detail.startswith("by otpctl: launch in UK") and "14155552671" not in detail
    assert "replaced: paused" in out and "14155552671" not in out
    # The prefix's alert and the longer prefix's go; a shorter or sibling prefix's stay.
    assert not r.exists(p + "alert:pumping:447624", p + "alert:pumping:4476241")
    assert r.exists(p + "alert:pumping:44762", p + "alert:pumping:447625",
                    "t1:alert:pumping:4476249") == 3
    rc, out, err = run("fraud", "list", env=env)
    line = next(line for line in out.splitlines() if "+447624" in line and "by otpctl" in line)
    assert line.split()[0] == "allow" and "until cleared" in line
    # Again, --json, with a duration: the field is overwritten.
    rc, out, err = run("fraud", "allow", "447624", "--for", "1d", "--json", env=env)
    assert rc == 0, err
    res = json.loads(out)
    assert res["kind"] == "allow" and res["prefix"] == "+447624"
    assert res["until_ms"] - res["since_ms"] == 86400000
    assert res["replaced"]["kind"] == "allow" and res["alerts_removed"] == []
    assert rule_fields(r.hget(p + "fraud:rules", "447624"))[2] == res["until_ms"]
    # An allow on a shorter prefix beats a pause on a longer one: list says so.
    r.hset(p + "fraud:rules", "447625", "paused|%d|%d|%s" % (since, since + 600000, PAUSE_DETAIL))
    assert run("fraud", "allow", "+4476", env=env)[0] == 0
    rc, out, err = run("fraud", "list", env=env)
    line = next(line for line in out.splitlines() if "+447625" in line and "paused" in line)
    assert "[overridden by allow +4476]" in line
    assert not r.exists(p + "alert:pumping:447625")


def test_block_with_a_duration(redis_server, r):
    env = base_env(redis_server)
    rc, out, err = run("fraud", "block", "+4470", "--for", "2h", "--note", "premium range", env=env)
    assert rc == 0, out + err
    kind, since, till, detail = rule_fields(r.hget("otpd:fraud:rules", "4470"))
    assert kind == "block" and till - since == 7200000 and detail == "by otpctl: premium range"
    assert "+4470" in out and "blocked until" in out
    rc, out, err = run("fraud", "block", "+88213", env=env)
    assert rc == 0
    assert rule_fields(r.hget("otpd:fraud:rules", "88213"))[::2] == ("block", 0)
    assert r.hget("otpd:fraud:rules", "88213").endswith("|by otpctl")


def test_clear(redis_server, r):
    plant(r)
    r.hset("otpd:fraud:base", "447624", "1.5|%d" % redis_ms(r))
    env = base_env(redis_server)
    rc, out, err = run("fraud", "clear", "+447624", env=env)
    assert rc == 0, out + err
    assert "paused" in out and PAUSE_DETAIL in out and "30 code(s), 1 verified" in out
    assert not r.hexists("otpd:fraud:rules", "447624")
    assert not r.exists("otpd:fraud:codes:447624", "otpd:fraud:ok:447624",
                        "otpd:alert:pumping:447624")
    assert r.hexists("otpd:fraud:rules", "88213")  # the others stay
    rc, out, err = run("fraud", "clear", "+447624", env=env)
    assert rc == 1 and "nothing to clear" in err
    rc, out, err = run("fraud", "clear", "+447624", "--json", env=env)
    assert rc == 1 and json.loads(out)["ok"] is False
    # A block at exactly the prefix, --json.
    rc, out, err = run("fraud", "clear", "88213", "--json", env=env)
    assert rc == 0, err
    res = json.loads(out)
    assert res["rule"]["kind"] == "block" and res["codes_removed"] == 0
    assert "14155552671" not in out
    assert r.hkeys("otpd:fraud:rules") == ["3361"]


def test_bad_prefixes_exit_2(redis_server, r):
    env = base_env(redis_server)
    for bad in ("0447", "+", "+44a", "44 76", "1234567890123456", "+०४४", "++44"):
        for cmd in ("allow", "block", "clear"):
            rc, out, err = run("fraud", cmd, bad, env=env)
            assert rc == 2, (cmd, bad, out, err)
            assert "Traceback" not in err
    for args in (("allow", "+44", "--for", "0s"), ("block", "+44", "--for", "2x"),
                 ("list", "--top", "-1"), ("allow",), ("frobnicate",)):
        rc, out, err = run("fraud", *args, env=env)
        assert rc == 2, (args, out, err)
    rc, out, err = run("fraud", "block", "0447", "--json", env=env)
    assert rc == 2 and json.loads(out)["ok"] is False
    assert not r.exists("otpd:fraud:rules")


def test_status_shows_the_pause_and_the_spend(redis_server, r):
    now = plant(r)
    env = base_env(redis_server)
    rc, out, err = run("status", env=env)
    assert rc == 1 and "no otpd instance is alive" in err  # no daemon: still printed
    block = out[out.index("SMS pumping"):]
    assert "1 paused, 1 blocked, 0 allowed" in block
    pause = next(line for line in block.splitlines() if "+447624" in line)
    assert "PAUSED" in pause and utc(now + 3600000, "%Y-%m-%d %H:%M:%S") in pause
    assert "12.345 USD" in block and "50.00 USD" in block and "24.7%" in block
    assert "suspected SMS pumping, paused: +447624" in out
    assert "14155552671" not in out
    rc, out, err = run("status", "--json", env=env)
    st = json.loads(out)
    assert "backlog" in st and "alerts" in st and "delivery" in st  # the old shape stays
    assert "pumping:447624" in st["alerts"]
    f = st["fraud"]
    assert f["rules"] == {"paused": 1, "block": 1, "allow": 0}
    assert [x["prefix"] for x in f["pauses"]] == ["447624"]
    assert f["pauses"][0]["until_ms"] == now + 3600000 and f["blocks"] == ["+88213"]
    assert f["spend_today"]["total_micro"] == 12345000
    assert f["spend_today"]["budget_micro"] == 50000000 and f["spend_today"]["currency"] == "USD"


def test_status_on_an_empty_redis_has_an_empty_fraud_block(redis_server):
    rc, out, err = run("status", "--json", env=base_env(redis_server))
    f = json.loads(out)["fraud"]
    assert f["rules"] == {"paused": 0, "block": 0, "allow": 0} and f["pauses"] == []
    assert f["spend_today"]["total_micro"] == 0 and f["spend_today"]["budget_micro"] is None
    rc, out, err = run("status", env=base_env(redis_server))
    assert "0 paused, 0 blocked, 0 allowed" in out and "daily budget: none" in out


def test_report_counts_come_from_fraud_stats_lua(redis_server, r):
    """Two prefixes of different volumes, {p}limits absent (otpd's defaults:
    window 1 h, settle 60 s): codes, verified and judged as fraud_stats.lua
    counts them, through `otpctl fraud list --json`."""
    now = redis_ms(r)
    old = [now - 120000 - i * 60000 for i in range(20)]   # past the settle time
    young = [now - 1000 - i * 3000 for i in range(10)]    # not judged yet
    big = {"b%d" % i: t for i, t in enumerate(old + young)}
    big["stale"] = now - 4000000                          # before the window
    r.zadd("otpd:fraud:codes:447700", big)
    # Verified: 3 old, 2 young (and one before the window, not counted).
    r.zadd("otpd:fraud:ok:447700", {"b0": old[0], "b1": old[1], "b2": old[2],
                                    "b20": young[0], "b21": young[1], "stale": now - 4000000})
    small = {"s%d" % i: now - 300000 - i * 1000 for i in range(4)}
    r.zadd("otpd:fraud:codes:447911", small)
    r.zadd("otpd:fraud:ok:447911", {"s0": small["s0"]})
    r.hset("otpd:fraud:base", "447700", "2.5|%d" % now)
    r.zadd("otpd:fraud:active", {"447700": now - 1000, "447911": now - 300000})
    bucket = now // 300000
    r.hset("otpd:fraud:counts:%d" % bucket, mapping={"c|sms|44": 34, "s|sms|44": 35,
                                                     "v|sms|44": 6, "c|email|": 2})
    env = base_env(redis_server)
    rc, out, err = run("fraud", "list", "--json", env=env)
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["window_ms"] == 3600000 and rep["settle_ms"] == 60000
    rows = {x["prefix"]: x for x in rep["prefixes"]}
    assert [x["prefix"] for x in rep["prefixes"]] == ["447700", "447911"]  # busiest first
    # judged = verified + codes older than the settle time and not verified
    assert (rows["447700"]["codes"], rows["447700"]["verified"], rows["447700"]["judged"]) == (
        30, 5, 5 + (20 - 3))
    assert (rows["447911"]["codes"], rows["447911"]["verified"], rows["447911"]["judged"]) == (
        4, 1, 4)
    assert abs(rows["447700"]["baseline"] - 2.5) < 0.01 and rows["447911"]["baseline"] == 0
    assert rows["447700"]["rule"] is None
    conv = {(c["channel"], c["cc"]): c for c in rep["conversion"]}
    assert conv[("sms", "44")]["codes"] == 34 and conv[("sms", "44")]["verified"] == 6
    assert conv[("email", "")]["codes"] == 2
    # --top 1: the busier only; the text shows the same figures.
    rep = json.loads(run("fraud", "list", "--top", "1", "--json", env=env)[1])
    assert [x["prefix"] for x in rep["prefixes"]] == ["447700"]
    rc, out, err = run("fraud", env=env)
    line = next(line for line in out.splitlines() if line.strip().startswith("+447700"))
    assert line.split()[1:5] == ["30", "5", "22", "22.7%"]
