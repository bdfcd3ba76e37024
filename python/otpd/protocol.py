"""The names otpd's Redis protocol fixes: key names and status words.

docs/protocol.md is the contract; this module is its Python spelling, and
include/protocol.h is the daemon's.  tests/integration/test_protocol_constants.py
reads the document's key and status tables and checks that both files name
exactly the same keys and words, so none of the three can drift alone.

Every key is OTPD_PREFIX followed by one of the templates below, whose
{fields} are named as in the document's key table.  Use the builders
(job_key, otp_key, ...) or prefix + a fixed suffix (JOBS, EVENTS, ...).
"""

# Key templates, in the order of the key table at the top of docs/protocol.md.
JOBS = "jobs"
OTP = "otp:{purpose}:{to}"
JOB = "job:{id}"
REF = "ref:{provider}:{provider_ref}"
EVENTS = "events"
DEAD = "dead"
LIMITS = "limits"
RL_NUM = "rl:num:{to}"
RL_GLOBAL = "rl:global"
RL_CC = "rl:cc:{cc}"
OPTOUT = "optout"
STATS = "stats"
INSTANCE = "instance:{consumer}"
ALERT_COUNTRY_BUDGET = "alert:country_budget:{cc}"
POLLS = "polls"
FALLBACKS = "fallbacks"
FALLBACK = "fallback:{id}"
# The SMS-pumping model and the spend (docs/fraud.md).
FRAUD_RULES = "fraud:rules"
FRAUD_CODES = "fraud:codes:{px}"
FRAUD_OK = "fraud:ok:{px}"
FRAUD_BASE = "fraud:base"
FRAUD_ACTIVE = "fraud:active"
FRAUD_COUNTS = "fraud:counts:{bucket}"
SPEND_DAY = "spend:day:{day}"
SPEND_HOUR = "spend:hour:{hour}"
ALERT_PUMPING = "alert:pumping:{px}"
ALERT_SPEND_BUDGET = "alert:spend_budget:*"
ALERT_COUNTRY_SPEND_BUDGET = "alert:country_spend_budget:{cc}"

KEYS = (JOBS, OTP, JOB, REF, EVENTS, DEAD, LIMITS, RL_NUM, RL_GLOBAL, RL_CC, OPTOUT,
        STATS, INSTANCE, ALERT_COUNTRY_BUDGET, POLLS, FALLBACKS, FALLBACK, FRAUD_RULES, FRAUD_CODES, FRAUD_OK,
        FRAUD_BASE, FRAUD_ACTIVE, FRAUD_COUNTS, SPEND_DAY, SPEND_HOUR, ALERT_PUMPING,
        ALERT_SPEND_BUDGET, ALERT_COUNTRY_SPEND_BUDGET)

# For SCAN patterns: every heartbeat key starts with this, every alert with ALERT.
INSTANCE_PREFIX = "instance:"
ALERT = "alert:"


def key(prefix, template, **fields):
    """prefix + template with its fields filled in:
    key("otpd:", JOB, id="login-1") -> "otpd:job:login-1"."""
    return prefix + template.format(**fields)


def job_key(prefix, job_id):
    """The job's status record."""
    return key(prefix, JOB, id=job_id)


def otp_key(prefix, purpose, to):
    """The record of the code currently valid for this purpose and number."""
    return key(prefix, OTP, purpose=purpose, to=to)


def instance_key(prefix, consumer):
    """One running daemon's heartbeat hash."""
    return key(prefix, INSTANCE, consumer=consumer)


def limits_keys(prefix, purpose, to, cc):
    """The six KEYS of the send-limits script, in its order (section 7)."""
    return [prefix + LIMITS, key(prefix, RL_NUM, to=to), prefix + RL_GLOBAL,
            key(prefix, RL_CC, cc=cc), prefix + OPTOUT, key(prefix, ALERT_COUNTRY_BUDGET, cc=cc)]


# Status words (section 4), in the document's order.
QUEUED = "queued"
SENDING = "sending"
RETRYING = "retrying"
SENT = "sent"
DELIVERED = "delivered"
UNDELIVERED = "undelivered"
FAILED = "failed"
EXPIRED = "expired"
REJECTED = "rejected"
RATE_LIMITED = "rate_limited"

STATUSES = (QUEUED, SENDING, RETRYING, SENT, DELIVERED, UNDELIVERED, FAILED, EXPIRED, REJECTED,
            RATE_LIMITED)

# The statuses the document marks final.  `sent` is final for the job (its
# entry is acknowledged) although a receipt may still move it on.
FINAL = frozenset({SENT, DELIVERED, UNDELIVERED, FAILED, EXPIRED, REJECTED, RATE_LIMITED})

# Not a status: an event and a counter for a second entry with a taken id
# (section 8); no status record ever holds it.
DUPLICATE = "duplicate"
