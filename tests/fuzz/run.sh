#!/bin/sh
# Build the libFuzzer targets with clang in build-fuzz/ and run each for
# SECONDS (default 20) over a scratch copy of its committed corpus, after
# replaying every saved regression input.  Exits non-zero on any crash,
# sanitizer report, leak or invariant failure.  The committed corpus and
# regressions are only read, never written.
#
#   tests/fuzz/run.sh [SECONDS]     (env: FUZZ_TARGETS="job config", FUZZ_JOBS=1)
set -eu

secs=${1:-20}
case $secs in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
# Every fuzz_<name>.c here is a target (CMakeLists.txt builds the same set).
targets=${FUZZ_TARGETS:-$(cd "$here" && for f in fuzz_*.c; do t=${f#fuzz_}; printf '%s ' "${t%.c}"; done)}

command -v clang >/dev/null || { echo "run.sh: clang not found (apt install clang libclang-rt-14-dev)" >&2; exit 2; }
mkdir -p "$build"
if ! { CC=clang cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
       cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)"; } >"$build/build.log" 2>&1; then
    tail -n 30 "$build/build.log" >&2
    echo "run.sh: build failed; full log in $build/build.log" >&2
    exit 2
fi

work=$build/runs
mkdir -p "$work"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

fail=0
for t in $targets; do
    bin=$build/fuzz_$t
    [ -x "$bin" ] || { echo "run.sh: $bin missing" >&2; exit 2; }

    # 1. Every saved regression input must pass.
    regs=$(ls "$here"/regressions/"$t"-* 2>/dev/null || true)
    if [ -n "$regs" ]; then
        # shellcheck disable=SC2086
        if ! "$bin" $regs >"$work/$t.regressions.log" 2>&1; then
            echo "FAIL fuzz_$t: a regression input crashes again; see $work/$t.regressions.log"
            fail=1
            continue
        fi
    fi

    # 2. Fuzz over a scratch copy of the corpus; new inputs and crashes stay in build-fuzz.
    rm -rf "$work/$t.corpus" "$work/$t.artifacts"
    mkdir -p "$work/$t.corpus" "$work/$t.artifacts"
    cp "$here"/corpus/"$t"/* "$work/$t.corpus/"
    dict=
    [ -f "$here/dict/$t.dict" ] && dict="-dict=$here/dict/$t.dict"
    # shellcheck disable=SC2086
    if "$bin" -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$work/$t.artifacts/" $dict \
        "$work/$t.corpus" >"$work/$t.log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log")
        echo "ok   fuzz_$t: ${secs}s, ${execs:-?} execs, corpus $(ls "$work/$t.corpus" | wc -l)"
    else
        echo "FAIL fuzz_$t: crash or invariant failure; log $work/$t.log, input(s):"
        ls "$work/$t.artifacts"/* 2>/dev/null | sed 's/^/       /'
        grep -m3 -E 'invariant failed|ERROR: |runtime error' "$work/$t.log" | sed 's/^/       /'
        fail=1
    fi
done
exit $fail
