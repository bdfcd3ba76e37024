#!/bin/sh
# Static analysis of the daemon: clang-tidy (checks in /.clang-tidy) with
# the compile commands of build-tidy/, then cppcheck.  Prints every finding
# as file:line and exits non-zero if there is any.
#
#   tests/static/run.sh            (env: TIDY_JOBS=N, CLANG_TIDY=clang-tidy-14)
set -u

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${TIDY_BUILD_DIR:-$root/build-tidy}
tidy=${CLANG_TIDY:-clang-tidy}
jobs=${TIDY_JOBS:-$(nproc 2>/dev/null || echo 2)}
cd "$root" || exit 2

for tool in "$tidy" cppcheck cmake; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (apt install clang-tidy cppcheck cmake)" >&2; exit 2; }
done

# Only the compile commands are needed: configure, no build.  OTPD_TESTS=OFF
# keeps cmocka out of the requirements.
mkdir -p "$build"
if ! cmake -S . -B "$build" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DOTPD_TESTS=OFF \
    >"$build/configure.log" 2>&1; then
    cat "$build/configure.log" >&2
    exit 2
fi

status=0
out=$build/clang-tidy.log
# One file per process, in parallel; clang-tidy's own summary lines
# ("N warnings generated", "Suppressed ...") go to stderr and are dropped.
ls daemon/*.c | xargs -P "$jobs" -n 1 "$tidy" -p "$build" --quiet 2>"$build/clang-tidy.stderr" >"$out"
tidy_rc=$?
if grep -qE '^[^ ].*:[0-9]+:[0-9]+: (warning|error):' "$out"; then
    echo "== clang-tidy findings (full text in $out)"
    grep -E '^[^ ].*:[0-9]+:[0-9]+: (warning|error):' "$out" | sed "s#^$root/##" | sort -u
    status=1
elif [ $tidy_rc -ne 0 ]; then
    echo "== clang-tidy failed (exit $tidy_rc) without a finding line; see $build/clang-tidy.stderr"
    tail -n 20 "$build/clang-tidy.stderr"
    status=1
else
    echo "== clang-tidy: clean ($(ls daemon/*.c | wc -l) files)"
fi

# cppcheck: warnings, performance and portability, with the POSIX library
# model.  Suppressed: missingIncludeSystem (system headers are not given
# to it on purpose; it checks our code, not glibc's).  Per-line
# suppressions go in the code as // cppcheck-suppress id, with a reason.
if cppcheck --enable=warning,performance,portability --error-exitcode=1 --inline-suppr \
    --library=posix --std=c11 -I include -D_GNU_SOURCE -DOTPD_VERSION='"static"' \
    --suppress=missingIncludeSystem --quiet -j "$jobs" \
    --template='{file}:{line}: {severity}: {message} [{id}]' daemon/ \
    >"$build/cppcheck.log" 2>&1; then
    echo "== cppcheck: clean"
else
    echo "== cppcheck findings"
    cat "$build/cppcheck.log"
    status=1
fi
exit $status
