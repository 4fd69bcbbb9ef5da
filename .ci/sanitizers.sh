#!/usr/bin/env bash
# CI job: xent built with AddressSanitizer + UndefinedBehaviorSanitizer, and the
# test suite run against that build at every SIMD level this CPU runs
# (XENT_SIMD=avx512/avx2/baseline, each with its own hand-written loops).  Any
# sanitizer report fails the job: a test run stops at the first one
# (-fno-sanitize-recover=all, halt_on_error, abort_on_error), and the logs are
# searched for reports as well, in case one came from a process whose failure
# a test expected.  Then a -O0 debug build (XENT_DEBUG_BUILD=1: Cython's checks
# on, nothing vectorised) runs the accuracy tests that once relied on the
# compiler vectorising a reduction, at baseline.
#
# Everything is built in a temporary copy of the tree (the source directory
# is not touched), without ccache.  The Python (with numpy, pytest, hypothesis,
# cython, setuptools; scipy/torch optional) is $PYTHON, or `python` in PATH.
#
# The whole suite runs at the automatic level, PyTorch and dask tests included
# (the C++ runtime is preloaded after ASan's, or ASan cannot intercept the
# exceptions PyTorch throws: "CHECK failed: real___cxa_throw != 0").  At the
# other levels the files that test no level-dependent code are left out, to
# keep the job within about ten minutes on two cores: the command line, the
# README and docstrings, dask's plumbing, the build probe, memory peaks, the
# hidden-state bench's plumbing (tests/test_bench_linear.py), and
# tests/test_cython_downstream.py (it compiles an extension of its own, which is
# not sanitized; 16 s), tests/test_packaging.py (the packaging job's).  The
# fuzz test runs its first XENT_FUZZ_CASES=10000 cases at the automatic level
# and 5000 at the others (40000 by default: ~50 s of CPU unsanitized).
# Measured on a quiet 2-core machine: the build ~2 min, the suite ~2 min at the
# automatic level, ~1.5 min at each other level.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python}"
PYTHON="$(command -v "$PYTHON")"
start=$SECONDS
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -O1 -g"

# A copy of the sources: the files git knows (tracked, and new ones it does not
# ignore), or everything but build outputs outside a git checkout.
copy_tree() {
    local dest="$1"
    mkdir -p "$dest"
    if git -C "$here" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$here" && git ls-files -z -co --exclude-standard |
            tar cf - --null --no-recursion --ignore-failed-read -T -) | tar xf - -C "$dest"
    else
        (cd "$here" && tar cf - --exclude=./build --exclude='*.so' --exclude='*.o' .) |
            tar xf - -C "$dest"
    fi
    # generated C and extension modules of an in-place build do not come along
    find "$dest/src" \( -name '*.so' -o -name '*.pyd' -o -path '*/xent/_*.c' \) -delete
}

# The sanitizer runtime comes first in the process (Python itself is not
# sanitized, so it is preloaded), then the C++ runtime, whose __cxa_throw ASan
# intercepts (PyTorch's errors are C++ exceptions); leak detection is off
# (CPython keeps interned objects alive on purpose).
asan_lib="$(gcc -print-file-name=libasan.so)"
cxx_lib="$(gcc -print-file-name=libstdc++.so)"
for lib in "$asan_lib" "$cxx_lib"; do
    if [ ! -e "$lib" ]; then
        echo "sanitizers: gcc has no $(basename "$lib") ($lib)" >&2
        exit 1
    fi
done
preload="$asan_lib:$cxx_lib"
# Test files with nothing that depends on the SIMD level (see the top).
LEVEL_FREE=(test_cython_downstream.py test_cli.py test_eval_cli.py test_readme.py
            test_docstrings.py test_dask.py test_openmp_build_flags.py test_loss_memory.py
            test_packaging.py test_bench_linear.py)
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

# Sanitizer reports in a log (some could come from a process whose failure a
# test expected, so the exit status alone does not show them): the first one,
# with its stack, and a failure.
REPORT="runtime error:|ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|CHECK failed:"
check_log() {
    if grep -q -E "$REPORT" "$1"; then
        grep -m1 -A40 -E "$REPORT" "$1"
        echo "sanitizers: a sanitizer report, above" >&2
        return 1
    fi
}

echo "== sanitizers: building xent with $SAN"
copy_tree "$work/san"
(cd "$work/san" && CFLAGS="$SAN" LDFLAGS="$SAN" XENT_REQUIRE_OPENMP=1 \
    "$PYTHON" setup.py -q build_ext --inplace -j 2) > "$work/build.log" 2>&1 ||
    { tail -50 "$work/build.log"; exit 1; }
echo "   built in $((SECONDS - start)) s"

cd "$work/san"
export PYTHONPATH="$work/san/src" XENT_EXPECT_OPENMP=1
levels=$(LD_PRELOAD="$preload" "$PYTHON" -c \
    "from xent._runtime import dispatch as _dispatch; print(' '.join(_dispatch.cpu_levels))")
auto=$(LD_PRELOAD="$preload" "$PYTHON" -c "from xent._runtime import dispatch as _dispatch; print(_dispatch.level)")
echo "== sanitizers: SIMD levels this CPU runs: $levels (automatic: $auto)"
for level in $levels; do
    what=(tests)
    cases=10000
    if [ "$level" != "$auto" ]; then
        what+=("${LEVEL_FREE[@]/#/--ignore=tests/}")
        cases=5000
    fi
    echo "== sanitizers: XENT_SIMD=$level XENT_FUZZ_CASES=$cases: ${what[*]}"
    t0=$SECONDS
    # --capture=sys: a report written to the process's stderr shows even when
    # the report aborts the process
    XENT_SIMD=$level XENT_FUZZ_CASES=$cases LD_PRELOAD="$preload" "$PYTHON" -m pytest -q -x -p no:cacheprovider \
        --capture=sys "${what[@]}" > "$work/test-$level.log" 2>&1 ||
        { check_log "$work/test-$level.log" || exit 1
          tail -60 "$work/test-$level.log"; echo "sanitizers: tests failed at $level" >&2; exit 1; }
    check_log "$work/test-$level.log"
    tail -1 "$work/test-$level.log"
    echo "   $((SECONDS - t0)) s"
done

echo "== debug build (-O0, XENT_DEBUG_BUILD=1): accuracy tests at baseline"
copy_tree "$work/debug"
(cd "$work/debug" && XENT_DEBUG_BUILD=1 XENT_BASELINE_ONLY=1 \
    "$PYTHON" setup.py -q build_ext --inplace -j 2) > "$work/debug-build.log" 2>&1 ||
    { tail -50 "$work/debug-build.log"; exit 1; }
cd "$work/debug"
XENT_SIMD=baseline PYTHONPATH="$work/debug/src" "$PYTHON" -m pytest -q -p no:cacheprovider \
    tests/test_float16_normalizers.py tests/test_contiguous_rows_match_strided.py > "$work/debug.log" 2>&1 ||
    { tail -60 "$work/debug.log"; echo "sanitizers: the -O0 build failed its accuracy tests" >&2; exit 1; }
tail -1 "$work/debug.log"

echo "== sanitizers: all clean in $((SECONDS - start)) s"
