"""The Prometheus alerts (conf/prometheus/) and the Grafana dashboard
(conf/grafana/otpd.json, when present) against the daemon that exists.

- `promtool check rules` and `promtool test rules` pass (skipped, with the
  reason printed, where promtool is not installed: Debian's `prometheus`).
- Every alert has a severity, a `for:`, a summary, a description and a
  runbook_url whose anchor is a heading of docs/runbook.md, and the unit tests
  make every alert fire and then clear.
- Every metric name the rules (and the dashboard) query is one the real daemon
  exports: a real redis-server, the real otpd with OTPD_METRICS_ADDR and the
  console providers, a few jobs so that labelled series exist, a scrape of
  /metrics.  The Sentinel-only families come from a second daemon that finds
  its Redis through a real redis-sentinel.  A family counts as exported when
  its `# TYPE` line is there, even with no sample yet; a histogram is queried
  through its _bucket, _sum or _count series, never by its bare name.  Label
  names used in selectors are checked against the labels of the samples
  where the family has any.
"""
import json
import os
import re
import shutil
import subprocess
import urllib.request

import pytest

from conftest import ROOT, free_port, wait_for

RULES = os.path.join(ROOT, "conf", "prometheus", "otpd-alerts.yml")
RULE_TESTS = os.path.join(ROOT, "conf", "prometheus", "otpd-alerts.test.yml")
DASHBOARD = os.path.join(ROOT, "conf", "grafana", "otpd.json")
RUNBOOK = os.path.join(ROOT, "docs", "runbook.md")

# A metric name in PromQL: not part of a longer identifier or a recording rule (a:b).
METRIC_RE = re.compile(r"(?<![A-Za-z0-9_:])otpd_[a-z0-9_]*[a-z0-9](?![A-Za-z0-9_:])")
# name{matchers}: the label names of a selector.
SELECTOR_RE = re.compile(r"(?<![A-Za-z0-9_:])(otpd_[a-z0-9_]*[a-z0-9])\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
# Labels Prometheus adds at scrape time, and the histogram bucket label.
TARGET_LABELS = {"job", "instance", "le"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promtool():
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool not installed (Debian: apt-get install prometheus); rules not checked"
        print("\nSKIP: " + reason)
        pytest.skip(reason)
    return path


def run(args):
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = (p.stdout + p.stderr).strip()
    print("\n$ " + " ".join(os.path.relpath(a, ROOT) if a.startswith(ROOT) else a
                            for a in args) + "\n" + out)
    return p.returncode, out


def load_yaml(path):
    try:
        import yaml
    except ImportError:  # python3-yaml missing: the checks below need it
        pytest.skip("python3-yaml is not installed")
    with open(path) as f:
        return yaml.safe_load(f)


def alert_rules():
    doc = load_yaml(RULES)
    rules = [r for g in doc["groups"] for r in g["rules"] if "alert" in r]
    assert rules, "no alert in %s" % RULES
    return rules


def duration_s(text):
    """A Prometheus duration ("90s", "26h30m", "1d") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text), "bad duration %r" % text
    return sum(int(n) * units[u] for n, u in parts)


# --- promtool ---------------------------------------------------------------

def test_promtool_check_rules():
    rc, out = run([promtool(), "check", "rules", RULES])
    assert rc == 0, out
    assert "SUCCESS" in out


def test_promtool_test_rules():
    rc, out = run([promtool(), "test", "rules", RULE_TESTS])
    assert rc == 0, out
    assert "SUCCESS" in out


# --- the rules' shape ----------------------------------------------------------

def runbook_anchors():
    """GitHub's anchors for the headings of docs/runbook.md."""
    anchors = set()
    with open(RUNBOOK) as f:
        for line in f:
            m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
            if m:
                text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
                anchors.add(text.replace(" ", "-"))
    return anchors


def test_every_alert_is_complete_and_has_a_runbook_section():
    anchors = runbook_anchors()
    problems = []
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names)), "an alert name is used twice"
    for r in alert_rules():
        name, ann, labels = r["alert"], r.get("annotations", {}), r.get("labels", {})
        if labels.get("severity") not in ("critical", "warning", "info"):
            problems.append("%s: severity %r" % (name, labels.get("severity")))
        if "for" not in r:
            problems.append("%s: no for:" % name)
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                problems.append("%s: no %s annotation" % (name, key))
        url = ann.get("runbook_url", "")
        if url != "docs/runbook.md#" + name.lower():
            problems.append("%s: runbook_url %r, expected docs/runbook.md#%s"
                            % (name, url, name.lower()))
        elif name.lower() not in anchors:
            problems.append("%s: docs/runbook.md has no heading with anchor #%s"
                            % (name, name.lower()))
    with open(RUNBOOK) as f:
        for link in sorted(set(re.findall(r"\]\(#([^)]+)\)", f.read()))):
            if link not in anchors:
                problems.append("docs/runbook.md links to #%s, which no heading makes" % link)
    assert not problems, "\n".join(problems)


def test_every_alert_fires_and_clears_in_the_unit_tests():
    doc = load_yaml(RULE_TESTS)
    fired, cleared = set(), set()
    for t in doc["tests"]:
        firing_at = {}
        cases = sorted(t.get("alert_rule_test", []), key=lambda c: duration_s(c["eval_time"]))
        for c in cases:
            at = duration_s(c["eval_time"])
            if c.get("exp_alerts"):
                fired.add(c["alertname"])
                firing_at.setdefault(c["alertname"], at)
            elif c["alertname"] in firing_at and at > firing_at[c["alertname"]]:
                cleared.add(c["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - fired == set(), "alerts no unit test makes fire: %s" % sorted(names - fired)
    assert names - cleared == set(), \
        "alerts no unit test clears after firing: %s" % sorted(names - cleared)


# --- the names against a real daemon --------------------------------------------

def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as f:
        return f.read().decode()


def parse_exposition(text):
    """{family: type}, and {family: set of label names seen on its samples}."""
    families, labels = {}, {}
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            families[m.group(1)] = m.group(2)
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s", line)
        assert m, "unparsable sample line %r" % line
        name, body = m.group(1), m.group(2) or ""
        fam = name
        if name not in families:
            for suf in HISTOGRAM_SUFFIXES:
                if name.endswith(suf) and name[:-len(suf)] in families:
                    fam = name[:-len(suf)]
        labels.setdefault(fam, set()).update(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', body))
    return families, labels


def family_of(name, families):
    """The exported family a queried name belongs to, or an error message."""
    if name in families:
        if families[name] in ("histogram", "summary"):
            return None, ("%s is a %s: query %s_bucket, _sum or _count"
                          % (name, families[name], name))
        return name, None
    for suf in HISTOGRAM_SUFFIXES:
        base = name[:-len(suf)]
        if name.endswith(suf) and families.get(base) in ("histogram", "summary"):
            if suf == "_bucket" and families[base] == "summary":
                return None, "%s: a summary has no buckets" % name
            return base, None
    return None, "%s is not exported by otpd" % name


def rule_exprs():
    try:
        import yaml  # noqa: F401
    except ImportError:  # no python3-yaml: every name in the file, comments included
        print("python3-yaml missing: metric names taken from the whole rules file")
        with open(RULES) as f:
            return {"otpd-alerts.yml": f.read()}
    return {r["alert"]: r["expr"] for r in alert_rules()}


def dashboard_exprs():
    """The queries of conf/grafana/otpd.json: every "expr", and the template
    variables' "query"/"definition" strings.  {} when the file is absent."""
    if not os.path.exists(DASHBOARD):
        return {}
    with open(DASHBOARD) as f:
        doc = json.load(f)
    found = {}

    def walk(node, where):
        if isinstance(node, dict):
            title = node.get("title") or node.get("name") or where
            for k, v in node.items():
                if k in ("expr", "query", "definition") and isinstance(v, str):
                    found["%s [%s]" % (title, k) + ("#%d" % len(found))] = v
                else:
                    walk(v, title)
        elif isinstance(node, list):
            for v in node:
                walk(v, where)

    walk(doc, "dashboard")
    return found


def send_some_jobs(client, r):
    """Labelled series: SMS to two countries, an e-mail, a rejected job."""
    jobs = [client.send("+14155552671"), client.send("+447400900123", purpose="password_reset"),
            client.send("alice@example.com", channel="email")]
    r.xadd("otpd:jobs", {"job": json.dumps({"id": "monitoring-bad", "to": "+1 415 555"})})
    for j in jobs:
        assert client.wait(j, timeout=15)["status"] == "sent"
    assert client.wait("monitoring-bad", timeout=15)["status"] == "rejected"


@pytest.fixture
def exported(tmp_path, otpd_factory, client, r):
    """What the real daemon exports: a plain one with jobs through the
    console providers, plus one behind a real Sentinel."""
    port = free_port()
    # Prices and a budget, so that the spend families carry samples.
    otpd_factory({"OTPD_METRICS_ADDR": "127.0.0.1:%d" % port, "OTPD_SMS_PRICES": "*=0.01",
                  "OTPD_DAILY_SPEND_BUDGET": "100"})
    send_some_jobs(client, r)
    # The shared report (conversion, prefixes, spend) is read every 15 s, first after 1 s.
    wait_for(lambda: 'otpd_sms_spend{period="day",country="*"' in scrape(port), 20,
             what="the fraud report on /metrics")
    text = scrape(port)
    families, labels = parse_exposition(text)

    from sentinels import SentinelCluster
    d = tmp_path / "sentinel"
    d.mkdir()
    cluster = SentinelCluster(d, replicas=0, sentinels=1)
    try:
        sport = free_port()
        otpd_factory({"OTPD_METRICS_ADDR": "127.0.0.1:%d" % sport,
                      "OTPD_REDIS_SENTINELS": cluster.sentinels,
                      "OTPD_REDIS_MASTER_NAME": cluster.master_name,
                      "REDIS_URL": "redis://127.0.0.1:1/0"})
        wait_for(lambda: "otpd_redis_master_switches_total" in scrape(sport), 10,
                 what="the Sentinel families on /metrics")
        more, more_labels = parse_exposition(scrape(sport))
    finally:
        cluster.stop()
    for fam, typ in more.items():
        families.setdefault(fam, typ)
    for fam, names in more_labels.items():
        labels.setdefault(fam, set()).update(names)
    print("\notpd exports %d families:" % len(families))
    for fam in sorted(families):
        print("  %-45s %-9s %s" % (fam, families[fam], ",".join(sorted(labels.get(fam, ())))))
    return families, labels


def check_names(exprs, families, labels):
    """Problems with the metric and label names of {where: PromQL}."""
    problems, used = [], set()
    for where, expr in exprs.items():
        for name in sorted(set(METRIC_RE.findall(expr))):
            fam, err = family_of(name, families)
            if err:
                problems.append("%s: %s" % (where, err))
            else:
                used.add(fam)
        for name, body in SELECTOR_RE.findall(expr):
            fam, err = family_of(name, families)
            if err or not labels.get(fam):
                continue  # reported above, or no sample to learn its labels from
            for label in MATCHER_RE.findall(body):
                if label not in labels[fam] | TARGET_LABELS:
                    problems.append("%s: %s has no label %r (it has %s)"
                                    % (where, name, label, ", ".join(sorted(labels[fam]))))
    return problems, used


def test_every_metric_the_rules_and_dashboard_use_is_exported(exported):
    families, labels = exported
    problems, used = check_names(rule_exprs(), families, labels)
    print("the alert rules use %d families: %s" % (len(used), ", ".join(sorted(used))))
    board = dashboard_exprs()
    if board:
        board_problems, board_used = check_names(board, families, labels)
        problems += ["conf/grafana/otpd.json: " + p for p in board_problems]
        print("conf/grafana/otpd.json: %d queries use %d families: %s"
              % (len(board), len(board_used), ", ".join(sorted(board_used))))
        used |= board_used
    else:
        print("conf/grafana/otpd.json: not present (or no queries); only the rules checked")
    unused = sorted(set(families) - used)
    print("exported and used by neither: %s" % (", ".join(unused) or "none"))
    assert not problems, "\n".join(problems)
