"""The exp and log of xent/portable/math.h, compiled into small C programs against xent's headers.

These are the functions under every kernel (each normaliser, loss and gradient
takes its exps and logs from them), tested where Python cannot reach them:

* Special values (NaN of either sign, +-inf, -0, subnormals, huge) under
  UBSan: the exp scaling builds powers of two from the bits of a rounded
  argument, and for NaN or +-inf those bits are garbage -- the shifts must be
  defined for any value (unsigned), and the log's exponent arithmetic must not
  overflow for negative inputs.  The results must still be the SPEC's.
* The hand-vectorised exps of the AVX2 and AVX-512 builds have the bits of the
  portable xent_exp_nonpos_f32 over every float32 in [-104, 0] (the comments of
  x86_64_v3/rows.h / x86_64_v4/rows.h say so, and the gradients rely on it), and the
  portable exp gives the same bits whether the compiler contracts a*b + c into
  an FMA or not (-ffp-contract=off / fast): the FMAs are written out.

The programs are built for the SIMD level this process runs (XENT_SIMD picks
it; CI runs the suite at each level).  They need a C compiler (and, for the
UBSan test, its runtime); the tests skip cleanly without them.
"""

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

import xent
from xent._runtime import dispatch as _dispatch

# -march of the kernel build of each SIMD level (setup.py's SIMD_FLAGS).
MARCH = {"baseline": [], "avx2": ["-march=x86-64-v3"], "avx512": ["-march=x86-64-v4"]}
# setup.py's flags for the kernels, minus OpenMP threading (not needed here).
KERNEL_FLAGS = ["-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-Wno-unused-function"]


def _cc():
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    if shutil.which(cc[0]) is None:
        pytest.skip(f"no C compiler ({cc[0]!r} not found)")
    return cc


def _build_and_run(tmp_path, name, source, flags, timeout=300, args=()):
    """Compile `source` against xent's headers with `flags` for this SIMD level,
    run it; returns (returncode, stdout + stderr).  Skips if it cannot be built
    for a reason other than the headers (e.g. no sanitizer runtime)."""
    cc = _cc()
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    exe = tmp_path / name
    cmd = [*cc, *flags, *KERNEL_FLAGS, *MARCH[_dispatch.level], "-I", xent.get_include(),
           str(src), "-o", str(exe), "-lm"]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if build.returncode != 0:
        probe = tmp_path / f"{name}_probe.c"
        probe.write_text("int main(void) { return 0; }\n")
        trivial = subprocess.run([*cc, *flags, str(probe), "-o", str(tmp_path / "probe")],
                                 capture_output=True, text=True, timeout=timeout)
        if trivial.returncode != 0:
            pytest.skip(f"the compiler cannot build with {' '.join(flags)}: {trivial.stderr[-300:]}")
        raise AssertionError(f"{' '.join(cmd)} failed:\n{build.stderr[-4000:]}")
    env = dict(os.environ, UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    env.pop("LD_PRELOAD", None)  # the harness links its own sanitizer runtime
    run = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                         env=env)
    return run.returncode, run.stdout + run.stderr


SPECIAL_VALUES = r"""
#include <stdio.h>
#include "xent/kernels.h"

static int failures = 0;

#define CHECK(cond, what, x)                                                          \
    do {                                                                              \
        if (!(cond)) {                                                                \
            printf("FAIL %s at x = %a\n", what, (double)(x));                         \
            failures++;                                                               \
        }                                                                             \
    } while (0)

static float f32_bits(uint32_t b) { float f; memcpy(&f, &b, sizeof f); return f; }
static double f64_bits(uint64_t b) { double f; memcpy(&f, &b, sizeof f); return f; }

int main(void)
{
    /* NaNs of both signs with small and large payloads, infinities, zeros,
     * subnormals and the extremes: every path of the bit tricks. */
    const uint32_t b32[] = {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFFFFFFFFu, 0x7FFFFFFFu,
                            0xFF800001u, 0x7F800000u, 0xFF800000u, 0x00000000u, 0x80000000u,
                            0x00000001u, 0x80000001u, 0x007FFFFFu, 0x807FFFFFu, 0x7F7FFFFFu,
                            0xFF7FFFFFu, 0x3F800000u, 0xBF800000u, 0xC2D00000u, 0xC3000000u};
    const uint64_t b64[] = {UINT64_C(0x7FF8000000000000), UINT64_C(0xFFF8000000000000),
                            UINT64_C(0x7FF0000000000001), UINT64_C(0xFFFFFFFFFFFFFFFF),
                            UINT64_C(0x7FFFFFFFFFFFFFFF), UINT64_C(0xFFF0000000000001),
                            UINT64_C(0x7FF0000000000000), UINT64_C(0xFFF0000000000000),
                            UINT64_C(0x0000000000000000), UINT64_C(0x8000000000000000),
                            UINT64_C(0x0000000000000001), UINT64_C(0x8000000000000001),
                            UINT64_C(0x000FFFFFFFFFFFFF), UINT64_C(0x800FFFFFFFFFFFFF),
                            UINT64_C(0x7FEFFFFFFFFFFFFF), UINT64_C(0xFFEFFFFFFFFFFFFF),
                            UINT64_C(0x3FF0000000000000), UINT64_C(0xBFF0000000000000),
                            UINT64_C(0xC087500000000000), UINT64_C(0xC090000000000000)};
    float row32[sizeof b32 / sizeof b32[0]], out32[sizeof b32 / sizeof b32[0]];
    double row64[sizeof b64 / sizeof b64[0]], out64[sizeof b64 / sizeof b64[0]];
    size_t i, j;
    /* The same checks for both types: T the type, S its suffix. */
#define CHECK_VALUE(T, S, x)                                                                \
    do {                                                                                    \
        T e = xent_exp_nonpos_##S(x), w = xent_exp_wide_##S(x), t = xent_exp_term_##S(x);   \
        T l = xent_log_##S(x), l1 = xent_log1p_##S(x);                                      \
        if (x != x) {                                                                       \
            CHECK(e != e && w != w && t != t && l != l && l1 != l1, "NaN -> NaN " #S, x);   \
            break;                                                                          \
        }                                                                                   \
        CHECK(x > 0 || (e >= 0 && e <= 1), "exp_nonpos in [0, 1] " #S, x);                  \
        CHECK(x > 0 || (t >= 0 && t <= 1), "exp_term in [0, 1] " #S, x);                    \
        CHECK(x != -INFINITY || (e == 0 && t == 0 && w == 0), "exp(-inf) = 0 " #S, x);      \
        CHECK(x != INFINITY || w == INFINITY, "exp_wide(+inf) = +inf " #S, x);              \
        CHECK(x != 0 || (e == 1 && t == 1 && w == 1), "exp(0) = 1 " #S, x);                 \
        CHECK(x != 0 || l == -INFINITY, "log(+-0) = -inf " #S, x);                          \
        CHECK(!(x < 0) || l != l, "log(x < 0) = NaN " #S, x);                               \
        CHECK(x != INFINITY || (l == INFINITY && l1 == INFINITY), "log(+inf) " #S, x);      \
        CHECK(!(x > 0 && x < INFINITY) || (l == l && l > -INFINITY && l < INFINITY),        \
              "log finite " #S, x);                                                         \
    } while (0)
    for (i = 0; i < sizeof b32 / sizeof b32[0]; i++) {
        row32[i] = f32_bits(b32[i]);
        CHECK_VALUE(float, f32, row32[i]);
    }
    for (i = 0; i < sizeof b64 / sizeof b64[0]; i++) {
        row64[i] = f64_bits(b64[i]);
        CHECK_VALUE(double, f64, row64[i]);
    }
    /* Whole rows of them through the row functions (each SIMD build's loops):
     * every row holds a NaN, so every result is NaN. */
#define CHECK_ROWS(T, S, row, out)                                                      \
    for (j = 1; j <= sizeof row / sizeof row[0]; j++) {                                     \
        T lse = xent_row_logsumexp_##S(row, (ptrdiff_t)j);                                  \
        CHECK(lse != lse, "logsumexp of a row with NaN " #S, j);                            \
        xent_row_softmax_##S(row, (ptrdiff_t)j, out);                                       \
        CHECK(out[0] != out[0], "softmax of a row with NaN " #S, j);                        \
        xent_row_log_softmax_##S(row, (ptrdiff_t)j, out);                                   \
        CHECK(out[0] != out[0], "log_softmax of a row with NaN " #S, j);                    \
    }
    CHECK_ROWS(float, f32, row32, out32)
    CHECK_ROWS(double, f64, row64, out64)
    /* Rows without NaN but with the other special values (+inf rows, all -inf). */
    {
        float r[4] = {-INFINITY, INFINITY, 1.0f, -0.0f}, o[4];
        xent_row_softmax_f32(r, 4, o);
        CHECK(o[1] == 1 && o[0] == 0 && o[2] == 0, "softmax with +inf (f32)", 0);
        r[1] = -INFINITY, r[2] = -INFINITY, r[3] = -INFINITY;
        CHECK(xent_row_logsumexp_f32(r, 4) == -INFINITY, "logsumexp of -inf (f32)", 0);
    }
    printf("%s (%d failures)\n", failures ? "FAILED" : "OK", failures);
    return failures != 0;
}
"""


def test_exp_and_log_of_special_values_have_no_undefined_behaviour(tmp_path):
    """NaN, +-inf, -0 and subnormals through the exps, logs and rows, under UBSan:
    no report (the program halts on the first), and the SPEC's values."""
    flags = ["-O1", "-g", "-fsanitize=undefined", "-fno-sanitize-recover=all"]
    rc, out = _build_and_run(tmp_path, "special_values", SPECIAL_VALUES, flags)
    assert rc == 0 and "runtime error" not in out, out
    assert "OK (0 failures)" in out, out


EXP_BITS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "xent/kernels.h"

/* exp of 8 float32 arguments d <= 0 by this build's hand-vectorised exp, as the
 * row loops store it; returns 0 where the build has none. */
static int simd_exp8(const float *d, float *out)
{
#if defined(XENT_ISA_X86_64_V4)
    __m512 v = _mm512_castps256_ps512(_mm256_loadu_ps(d));
    _mm256_storeu_ps(out, _mm512_castps512_ps256(xent_avx512_exp_nonpos_ps(v)));
    return 1;
#elif defined(XENT_ISA_X86_64_V3)
    __m256 v[XENT_AVX2_WAYS], p[XENT_AVX2_WAYS], s[XENT_AVX2_WAYS];
    v[0] = _mm256_loadu_ps(d);
    xent_avx2_exp_parts(v, p, s, 1); /* as xent_avx2_rest_step stores the exps */
    _mm256_storeu_ps(out, _mm256_mul_ps(_mm256_mul_ps(p[0], s[0]),
                                        _mm256_set1_ps(XENT_AVX2_TWO_M64)));
    return 1;
#else
    (void)d, (void)out;
    return 0;
#endif
}

int main(int argc, char **argv)
{
    /* every STRIDE-th float32 in [-104, 0] (bit patterns 0x80000000 up to -104's),
     * every one of them near 0 and near the subnormal end, and the specials */
    const uint32_t stride = (uint32_t)atoi(argv[1]), last = 0xC2D00000u;
    uint64_t hash32 = 1469598103934665603u, hash64 = 1469598103934665603u;
    long n = 0, differ = 0, simd = 0;
    uint32_t b = 0x80000000u;
    float d[8], ref[8], got[8];
    int j, len;
    while (b <= last) {
        for (len = 0; len < 8 && b <= last; len++) {
            memcpy(&d[len], &b, sizeof d[len]);
            b += (b < 0x80100000u || b > 0xC2A00000u) ? 1u : stride;
        }
        for (j = len; j < 8; j++)
            d[j] = d[0];
        for (j = 0; j < 8; j++) {
            uint32_t bits;
            ref[j] = xent_exp_nonpos_f32(d[j]);
            memcpy(&bits, &ref[j], sizeof bits);
            hash32 = (hash32 ^ bits) * 1099511628211u;
        }
        if (simd_exp8(d, got)) {
            simd = 1;
            for (j = 0; j < len; j++)
                differ += memcmp(&got[j], &ref[j], sizeof got[j]) != 0;
        }
        n += len;
    }
    /* float64: a deterministic spread of arguments over [-746, 0] */
    {
        uint64_t state = 88172645463325252u;
        long i;
        for (i = 0; i < 4000000; i++) {
            double x, e;
            uint64_t bits;
            state ^= state << 13, state ^= state >> 7, state ^= state << 17;
            x = -746.0 * (double)(state >> 11) / 9007199254740992.0;
            e = xent_exp_nonpos_f64(x);
            memcpy(&bits, &e, sizeof bits);
            hash64 = (hash64 ^ bits) * 1099511628211u;
        }
    }
    printf("inputs %ld simd %ld differ %ld hash32 %016llx hash64 %016llx\n", n, simd, differ,
           (unsigned long long)hash32, (unsigned long long)hash64);
    return 0;
}
"""


def _exp_bits(tmp_path, contract, stride=7):
    flags = ["-O2", f"-ffp-contract={contract}"]
    rc, out = _build_and_run(tmp_path, f"exp_bits_{contract}", EXP_BITS, flags,
                             args=[str(stride)])
    assert rc == 0, out
    fields = out.split()
    return dict(zip(fields[::2], fields[1::2]))


def test_simd_exps_have_the_portable_exps_bits_whatever_the_contraction(tmp_path):
    """The exps stored by the hand-vectorised row loops (softmax, gradients) are
    bit for bit xent_exp_nonpos_f32 (the portable exp of the same build, used by
    the write sweeps, blocks and tiles), and the portable exp (float32 and
    float64) has the same bits whether the compiler may contract a*b + c
    (-ffp-contract=fast, GCC's default) or not (=off)."""
    off = _exp_bits(tmp_path, "off")
    fast = _exp_bits(tmp_path, "fast")
    for result in (off, fast):
        assert int(result["inputs"]) > 10**8
        assert result["differ"] == "0", result
        assert result["simd"] == ("0" if _dispatch.level == "baseline" else "1"), result
    assert off["hash32"] == fast["hash32"]
    assert off["hash64"] == fast["hash64"]
