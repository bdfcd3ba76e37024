#!/usr/bin/env bash
# bench/run.sh: measure otpd against a Celery + twilio-python baseline (issue #7).
#
#   bench/run.sh                      full scale (~10-15 min on 2 cores)
#   BENCH_SCALE=small bench/run.sh    quick run (~2-3 min)
#   BENCH_ONLY=realistic BENCH_SCALE=small bench/run.sh
#                                     only the "realistic provider" row (HTTP/1.1 mock
#                                     answering in 300 ms, otpd with defaults), ~1 min
#   BENCH_ONLY=compare bench/run.sh   only the before/after comparison: this otpd against
#                                     a build of d7a84a1 (BENCH_REF=commit for another),
#                                     made from this repository with git archive + cmake
#                                     into build-ref/<sha>/ (reused), ~1 min (+10 s to build)
#   BENCH_ONLY=wait bench/run.sh      only what OTPD_REDIS_WAIT_REPLICAS=1 costs against 0: each
#                                     run's redis-server gets one replica; Redis (primary and
#                                     replica) and otpd CPU per OTP, WAITs per OTP, throughput,
#                                     5 runs per setting, alternating (BENCH_WAIT_REPS, BENCH_WAIT_N
#                                     jobs per run, default 3000), ~1-2 min
#
# Starts its own redis-server (no persistence), nginx as an HTTPS Twilio mock and
# the workers, all on 127.0.0.1, and stops them at the end. Prints one table and
# writes the numbers to bench/results/. Needs build/otpd (./dev build) and the
# Debian packages listed in REQUIRED below; installs nothing itself. It builds
# only the comparison's reference commit (cmake and otpd's build dependencies),
# and uses perf (linux-perf) for that comparison's Redis profile when present.
# Every run ends with that comparison; it is skipped, saying why, when the repository
# does not have the commit (a shallow clone).
# Other knobs: OTPD_BIN=path, BENCH_ONLY=realistic|compare|wait, BENCH_CALLGRIND=0 (skip callgrind),
# BENCH_PERF=0 (skip the perf profile), BENCH_REF=commit, BENCH_KEEP=1 (keep the work
# directory with every log), BENCH_NGINX_WORKERS=N.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REQUIRED=(nginx libnginx-mod-http-echo redis-server valgrind python3-celery python3-twilio
          python3-gevent python3-redis curl openssl)
missing=()
for p in "${REQUIRED[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench/run.sh: missing Debian packages: ${missing[*]}" >&2
    echo "  apt-get install ${missing[*]}" >&2
    exit 1
fi
OTPD_BIN=${OTPD_BIN:-$ROOT/build/otpd}
[ -x "$OTPD_BIN" ] || { echo "bench/run.sh: no $OTPD_BIN; build first (./dev build)" >&2; exit 1; }
export OTPD_BIN
# nginx, otpd and redis each want many descriptors at 5,000 in flight.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# The whole run is bounded: small 15 min, full 40 min, the comparison or WAIT runs alone 20 min.
case "${BENCH_SCALE:=full}" in
small) limit=900 ;; full) limit=2400 ;; *) echo "BENCH_SCALE must be full or small" >&2; exit 2 ;;
esac
export BENCH_SCALE
case "${BENCH_ONLY:-}" in
"" | realistic) ;; compare | wait) limit=1200 ;;
*) echo "BENCH_ONLY must be empty, realistic, compare or wait" >&2; exit 2 ;;
esac
exec timeout --signal=TERM --kill-after=30 "$limit" /usr/bin/python3 "$ROOT/bench/bench.py"
