"""The names docs/protocol.md fixes, checked against both of their spellings.

python/otpd/protocol.py and include/protocol.h each define the Redis key
names and the status words once for their language.  These tests read the
document's key table and status table, and the header as text, so a key or
word added, renamed or dropped in any one of the three fails here instead
of drifting silently.  Pure: no Redis, no daemon, no build.
"""
import os
import re

from conftest import ROOT

from otpd import client, protocol

DOC = os.path.join(ROOT, "docs", "protocol.md")
HEADER = os.path.join(ROOT, "include", "protocol.h")
CALLING_CODES = os.path.join(ROOT, "python", "otpd", "data", "calling_codes.txt")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def doc_table(first_columns):
    """The body rows (as lists of cells) of the one table in the document
    whose header row begins with these column names."""
    lines = read(DOC).splitlines()
    found = [i for i, line in enumerate(lines)
             if line.startswith("|") and cells(line)[:len(first_columns)] == first_columns]
    assert len(found) == 1, "docs/protocol.md: %d tables with columns %s" % (len(found), first_columns)
    rows = []
    for line in lines[found[0] + 2:]:  # skip the |---| row
        if not line.startswith("|"):
            break
        rows.append(cells(line))
    assert rows, "docs/protocol.md: the %s table is empty" % first_columns
    return rows


def doc_keys():
    """Every {p}... in the first column of the key table, without the {p}."""
    keys = []
    for row in doc_table(["key", "type", "written by", "holds"]):
        keys += re.findall(r"`\{p\}([^`]+)`", row[0])
    return keys


def doc_statuses():
    """[(word, final)] in the status table's order."""
    out = []
    for row in doc_table(["status", "written when", "final"]):
        m = re.fullmatch(r"`([a-z_]+)`", row[0])
        assert m, "status table: %r is not a `word`" % row[0]
        final = row[2].split()[0].rstrip(",;:")
        assert final in ("yes", "no"), "status table: final column %r" % row[2]
        out.append((m.group(1), final == "yes"))
    return out


def doc_not_a_status():
    words = re.findall(r"`([a-z_]+)` is not a status", read(DOC))
    assert len(words) == 1, words
    return words[0]


def c_format(template):
    """The document's and Python's {field} placeholders as C's %s."""
    return re.sub(r"\{[a-z_]+\}", "%s", template)


def header_defines(prefix):
    """{NAME: "value"} of the header's string macros PROTO_<prefix>NAME."""
    return dict(re.findall(r'^#define\s+PROTO_%s(\w+)\s+"([^"]*)"' % prefix, read(HEADER), re.M))


def python_names(values):
    """{NAME: value} of protocol.py's module constants whose value is in values."""
    return {n: v for n, v in vars(protocol).items()
            if n.isupper() and isinstance(v, str) and v in values}


# ------------------------------------------------------------------ keys

def test_python_keys_are_the_documents():
    keys = doc_keys()
    assert len(keys) == len(set(keys))
    assert len(protocol.KEYS) == len(set(protocol.KEYS))
    # Field names included: {provider_ref}, not {ref}.
    assert sorted(protocol.KEYS) == sorted(keys)


def test_header_keys_are_the_documents():
    header = header_defines("KEY_")
    assert sorted(header.values()) == sorted(c_format(k) for k in doc_keys())
    # And under the same names as in Python: PROTO_KEY_RL_NUM is RL_NUM.
    named = python_names(protocol.KEYS)
    assert sorted(named) == sorted(header)
    for name, template in named.items():
        assert header[name] == c_format(template), name


def test_key_builders():
    assert protocol.job_key("otpd:", "login-1") == "otpd:job:login-1"
    assert protocol.otp_key("otpd:", "login", "+14155552671") == "otpd:otp:login:+14155552671"
    assert protocol.instance_key("{x}:", "h:1") == "{x}:instance:h:1"
    assert protocol.key("p:", protocol.REF, provider="twilio", provider_ref="SM1") == "p:ref:twilio:SM1"
    assert protocol.INSTANCE.startswith(protocol.INSTANCE_PREFIX)
    assert protocol.ALERT_COUNTRY_BUDGET.startswith(protocol.ALERT)


def test_limits_keys_are_in_the_scripts_order():
    """Section 7 lists the limits script's six KEYS in order."""
    m = re.search(r"`KEYS` \(6\):(.*?)\.\n", read(DOC), re.S)
    assert m, "docs/protocol.md section 7 no longer lists `KEYS` (6)"
    want = re.findall(r"`([^`]+)`", m.group(1))
    assert protocol.limits_keys("{p}", "{purpose}", "{to}", "{cc}") == want


# ------------------------------------------------------------------ status words

def test_python_status_words_are_the_documents():
    st = doc_statuses()
    assert protocol.STATUSES == tuple(w for w, _final in st)
    assert protocol.FINAL == {w for w, final in st if final}
    assert protocol.DUPLICATE == doc_not_a_status()
    assert protocol.DUPLICATE not in protocol.STATUSES
    # The client's wait() default: the final statuses, and the duplicate event.
    assert client.FINAL == protocol.FINAL | {protocol.DUPLICATE}


def test_header_status_words_are_the_documents():
    header = header_defines("STATUS_")
    words = [w for w, _final in doc_statuses()] + [doc_not_a_status()]
    assert sorted(header.values()) == sorted(words)
    named = python_names(words)
    assert sorted(named) == sorted(header)
    for name, word in named.items():
        assert header[name] == word, name
    m = re.search(r"^#define\s+PROTO_FINAL_STATUSES((?:.*\\\n)*.*)$", read(HEADER), re.M)
    assert m, "include/protocol.h: no PROTO_FINAL_STATUSES"
    finals = [header[n] for n in re.findall(r"PROTO_STATUS_(\w+)", m.group(1))]
    assert len(finals) == len(set(finals))
    assert set(finals) == {w for w, final in doc_statuses() if final}


# ------------------------------------------------------------------ calling codes

def test_calling_codes_file_is_prefix_free():
    """daemon/route.c and otpd.country_code both take the first listed code
    that prefixes the number, so the list must be prefix-free to be right."""
    codes = [ln.strip() for ln in read(CALLING_CODES).splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert len(codes) == len(set(codes))
    assert "1" in codes and "7" in codes
    for a in codes:
        assert re.fullmatch(r"[1-9][0-9]?", a), a
        assert not [b for b in codes if b != a and b.startswith(a)], a
