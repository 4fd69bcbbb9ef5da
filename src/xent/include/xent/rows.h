/*
 * xent's hot loops, in plain C so the compiler can vectorise them.
 *
 * This is the "small C block" of the design: branch-free loops with OpenMP SIMD
 * pragmas (enabled by -fopenmp-simd even when OpenMP threading is off), a
 * vectorisable exp for non-positive arguments, and the per-row normaliser with
 * the SPEC's non-finite rules.  Cython (_kernels.pyx) owns the loops over rows,
 * threads, strides and scratch memory; these functions only ever see one
 * contiguous row (or one block of adjacent columns) at a time.
 *
 * The functions are written once, in _rows_impl.h, and instantiated here for
 * float (suffix f32) and double (suffix f64).
 *
 * No -ffast-math anywhere: -inf must stay -inf, NaN must stay NaN, and
 * subnormal results must not be flushed.
 */
#ifndef XENT_ROWS_H
#define XENT_ROWS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define XENT_INLINE static inline __attribute__((always_inline))
#else
#define XENT_INLINE static inline
#endif

/* ---- element types of the arrays the kernels read and write ------------------
 * NumPy arrays need not be aligned (np.frombuffer(buf, offset=1) viewed as
 * float32, a field of a packed record array, what dask hands over), and the
 * kernels read and write the caller's arrays in place.  An access through a
 * plain float* to a float that is not 4-byte aligned is undefined behaviour in
 * C, whatever the CPU does with it.  These element types have alignment 1, so
 * every access through a pointer to them is defined at any address; on x86-64
 * (and ARMv8) the compiler emits the same moves as for aligned data (its vector
 * loops use unaligned vector moves anyway), so aligned arrays lose nothing.
 * XENT_T (the element and compute type of the per-type functions) is one of
 * them: as a value it is a plain float or double.  Other compilers (MSVC) get
 * the plain types. */
#if defined(__GNUC__) || defined(__clang__)
#define XENT_UNALIGNED __attribute__((aligned(1)))
#else
#define XENT_UNALIGNED
#endif
typedef float xent_f32u XENT_UNALIGNED;
typedef double xent_f64u XENT_UNALIGNED;
typedef uint16_t xent_u16u XENT_UNALIGNED;
/* class indices of every integer storage (XENT_INDEX_STORAGES below) */
typedef int8_t xent_u_int8_t;
typedef uint8_t xent_u_uint8_t;
typedef int16_t xent_u_int16_t XENT_UNALIGNED;
typedef uint16_t xent_u_uint16_t XENT_UNALIGNED;
typedef int32_t xent_u_int32_t XENT_UNALIGNED;
typedef uint32_t xent_u_uint32_t XENT_UNALIGNED;
typedef int64_t xent_u_int64_t XENT_UNALIGNED;
typedef uint64_t xent_u_uint64_t XENT_UNALIGNED;

#define XENT_PRAGMA(x) _Pragma(#x)
#if defined(_OPENMP) || defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 5)
#define XENT_SIMD XENT_PRAGMA(omp simd)
#define XENT_SIMD_SUM(...) XENT_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#define XENT_SIMD_MAX(var) XENT_PRAGMA(omp simd reduction(max : var))
#else
#define XENT_SIMD
#define XENT_SIMD_SUM(...)
#define XENT_SIMD_MAX(var)
#endif

/* What a row's maximum says about the row (see xent_row_stats_*). */
enum {
    XENT_ROW_FINITE = 0, /* finite max: normal path (a NaN shows up as a NaN sum) */
    XENT_ROW_POSINF = 1, /* k entries are +inf and no NaN: the limit of equal huge logits */
    XENT_ROW_NOPROB = 2, /* empty, or every entry is -inf: no class has probability */
    XENT_ROW_NAN = 3     /* NaN present and the finite path cannot show it */
};

/* ---- exp for arguments <= 0 --------------------------------------------------
 * Every exp in a normaliser is exp(x - max) with x - max <= 0 (or -inf, or NaN),
 * so only that half-line is needed.  Method: Cody-Waite range reduction
 * x = n*ln2 + r with |r| <= ln2/2, a polynomial for exp(r) whose error is far
 * below half an ulp (minimax degree 6 for float: 3.7e-9 relative; Taylor degree 13
 * for double: 4e-18), and the scale 2^n applied as two exact powers of two so results
 * that are subnormal are rounded once instead of flushed.  Branch-free, so the
 * compiler vectorises it.  -inf -> 0, NaN -> NaN, 0 -> 1 exactly.
 */
/* a*b + c in the exp's reduction and polynomial.  Where the build has FMA
 * instructions it is fused (one rounding), as the hand-vectorised exps of
 * _rows_avx2.h and _rows_avx512.h compute it, so that the portable exp has
 * their bits; elsewhere it is a product and a sum, which no compiler fuses
 * without FMA instructions.  Written out instead of left to the compiler:
 * whether a*b + c is contracted into an FMA is an option (-ffp-contract: GCC
 * fuses by default, Clang within one expression, =off never), and the bits of
 * the portable exp, and the claims that other exps have them, must not depend
 * on it.  (fmaf/fma compile to one instruction where the FMA is there, and
 * vectorise.) */
#if defined(__FMA__) || defined(__FP_FAST_FMAF) || defined(__ARM_FEATURE_FMA)
#define XENT_FMAF(a, b, c) fmaf((a), (b), (c))
#else
#define XENT_FMAF(a, b, c) ((a) * (b) + (c))
#endif
#if defined(__FMA__) || defined(__FP_FAST_FMA) || defined(__ARM_FEATURE_FMA)
#define XENT_FMA(a, b, c) fma((a), (b), (c))
#else
#define XENT_FMA(a, b, c) ((a) * (b) + (c))
#endif

/* Shared steps: x = n ln2 + r with |r| <= ln2/2 (Cody-Waite, two-part ln2 so
 * n*ln2_hi is exact), e^r by its Taylor polynomial, and 2^n. */
XENT_INLINE float xent_exp_reduce_f32(float x, int32_t *n)
{
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693145751953125f; /* 0x3f317200: n*ln2_hi is exact, |n| <= 150 */
    const float ln2_lo = 1.42860676533018704e-06f;
    float t = XENT_FMAF(x, log2e, shifter), nf = t - shifter, r;
    int32_t ti;
    memcpy(&ti, &t, sizeof ti);
    *n = ti - 0x4B400000; /* the integer n, from the low mantissa bits of t */
    r = XENT_FMAF(-nf, ln2_hi, x);
    return XENT_FMAF(-nf, ln2_lo, r);
}

/* e^r on |r| <= ln2/2: 1 + r + r^2 q(r), q the minimax polynomial of degree 4
 * for the relative error (3.7e-9 with these float32 coefficients, a sixteenth of
 * an ulp; Taylor needs degree 7 for that).  Shared with _rows_avx512.h. */
#define XENT_EXP_C2 4.999999702e-01f
#define XENT_EXP_C3 1.666651815e-01f
#define XENT_EXP_C4 4.166729003e-02f
#define XENT_EXP_C5 8.368801326e-03f
#define XENT_EXP_C6 1.387980999e-03f

XENT_INLINE float xent_exp_poly_f32(float r)
{
    float p = XENT_EXP_C6;
    p = XENT_FMAF(p, r, XENT_EXP_C5);
    p = XENT_FMAF(p, r, XENT_EXP_C4);
    p = XENT_FMAF(p, r, XENT_EXP_C3);
    p = XENT_FMAF(p, r, XENT_EXP_C2);
    p = XENT_FMAF(p, r, 1.0f);
    return XENT_FMAF(p, r, 1.0f);
}

/* p * 2^n for n in [-150, 129]: two halves keep each 2^k a normal float, so a
 * subnormal result is rounded once instead of flushed.  The exponent bits are
 * formed in unsigned arithmetic: for a NaN argument n is whatever the bits of
 * a NaN make it (p is NaN, so the scale does not matter), and a signed shift
 * of such an n would be undefined behaviour.  Modulo 2^32 the bits are those
 * of the signed expression for every n in range. */
XENT_INLINE float xent_exp_scale2_f32(float p, int32_t n)
{
    int32_t n1 = n >> 1, n2 = n - n1;
    uint32_t b1 = ((uint32_t)n1 + 127u) << 23, b2 = ((uint32_t)n2 + 127u) << 23;
    float s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    return (p * s1) * s2;
}

XENT_INLINE double xent_exp_reduce_f64(double x, int64_t *n)
{
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    const double log2e = 1.4426950408889634;
    const double ln2_hi = 0.6931471803691238; /* 0x3fe62e42fee00000: exact n*ln2_hi */
    const double ln2_lo = 1.9082149292705877e-10;
    double t = XENT_FMA(x, log2e, shifter), nf = t - shifter, r;
    int64_t ti;
    memcpy(&ti, &t, sizeof ti);
    *n = ti - INT64_C(0x4338000000000000);
    r = XENT_FMA(-nf, ln2_hi, x);
    return XENT_FMA(-nf, ln2_lo, r);
}

XENT_INLINE double xent_exp_poly_f64(double r)
{
    double p = 1.0 / 6227020800.0; /* 1/13! */
    p = XENT_FMA(p, r, 1.0 / 479001600.0);
    p = XENT_FMA(p, r, 1.0 / 39916800.0);
    p = XENT_FMA(p, r, 1.0 / 3628800.0);
    p = XENT_FMA(p, r, 1.0 / 362880.0);
    p = XENT_FMA(p, r, 1.0 / 40320.0);
    p = XENT_FMA(p, r, 1.0 / 5040.0);
    p = XENT_FMA(p, r, 1.0 / 720.0);
    p = XENT_FMA(p, r, 1.0 / 120.0);
    p = XENT_FMA(p, r, 1.0 / 24.0);
    p = XENT_FMA(p, r, 1.0 / 6.0);
    p = XENT_FMA(p, r, 0.5);
    p = XENT_FMA(p, r, 1.0);
    return XENT_FMA(p, r, 1.0);
}

XENT_INLINE double xent_exp_scale2_f64(double p, int64_t n)
{
    int64_t n1 = n >> 1, n2 = n - n1; /* the bits in unsigned arithmetic, as for f32 */
    uint64_t b1 = ((uint64_t)n1 + 1023u) << 52, b2 = ((uint64_t)n2 + 1023u) << 52;
    double s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    return (p * s1) * s2;
}

XENT_INLINE float xent_exp_nonpos_f32(float x)
{
    int32_t n;
    float r;
    x = x < -104.0f ? -104.0f : x; /* exp(-104) < half the smallest subnormal */
    r = xent_exp_reduce_f32(x, &n);
    return xent_exp_scale2_f32(xent_exp_poly_f32(r), n);
}

XENT_INLINE double xent_exp_nonpos_f64(double x)
{
    int64_t n;
    double r;
    x = x < -746.0 ? -746.0 : x; /* exp(-746) < half the smallest subnormal */
    r = xent_exp_reduce_f64(x, &n);
    return xent_exp_scale2_f64(xent_exp_poly_f64(r), n);
}

/* exp(x) for any x: the same method, x clamped to [-104, 89] (float) /
 * [-746, 710] (double), past which the result is 0 or +inf anyway.
 * exp(-inf) = 0, exp(+inf) = +inf, NaN -> NaN. */
XENT_INLINE float xent_exp_wide_f32(float x)
{
    x = x > 89.0f ? 89.0f : x;
    return xent_exp_nonpos_f32(x);
}

XENT_INLINE double xent_exp_wide_f64(double x)
{
    x = x > 710.0 ? 710.0 : x;
    return xent_exp_nonpos_f64(x);
}

/* exp(x) for x <= 0 as a term of a sum of exps whose largest term is 1: results
 * below the smallest normal (x < -87 in float, -708 in double) are 0 instead
 * of subnormal.  That changes a sum >= 1 by less than 2^-126 per term, far below
 * its rounding, and saves the two-step scaling: one exact power of two. */
XENT_INLINE float xent_exp_term_f32(float x)
{
    int32_t n;
    uint32_t b;
    float r, s, p;
    r = xent_exp_reduce_f32(x < -87.0f ? -87.0f : x, &n);
    b = ((uint32_t)n + 127u) << 23; /* n >= -126: a normal power of two (unsigned: see scale2) */
    memcpy(&s, &b, sizeof s);
    p = xent_exp_poly_f32(r) * s;
    return x < -87.0f ? 0.0f : p; /* -inf -> 0; NaN (comparison false) -> NaN */
}

XENT_INLINE double xent_exp_term_f64(double x)
{
    int64_t n;
    uint64_t b;
    double r, s, p;
    r = xent_exp_reduce_f64(x < -708.0 ? -708.0 : x, &n);
    b = ((uint64_t)n + 1023u) << 52;
    memcpy(&s, &b, sizeof s);
    p = xent_exp_poly_f64(r) * s;
    return x < -708.0 ? 0.0 : p;
}

/* ---- log for any argument ------------------------------------------------------
 * Vectorisable natural log: x = 2^e * m with m in [sqrt(1/2), sqrt(2)), and
 * log m = 2 atanh(u), u = (m-1)/(m+1), |u| <= 0.1716, by its odd series (to u^9
 * for float, truncation 7e-10; to u^21 for double, 2e-19).  Subnormals are
 * rescaled first.  Measured: at most 1.97 ulp over every positive float32, and
 * 1.97 ulp over 2e8 random doubles (see BENCHMARKS.md).  0 -> -inf, x < 0 or
 * NaN -> NaN, +inf -> +inf.  Branch-free, so loops over it vectorise (libm's log
 * does not, without -ffast-math).
 */
XENT_INLINE float xent_log_f32(float x)
{
    const float ln2_hi = 0.693145751953125f, ln2_lo = 1.42860676533018704e-06f;
    uint32_t ix, eb, mb;
    float m, e, f, u, u2, p, r, xs;
    float sub = x < 1.17549435e-38f ? 23.0f : 0.0f; /* subnormal (or <= 0): rescale by 2^23 */
    xs = sub != 0.0f ? x * 8388608.0f : x;
    memcpy(&ix, &xs, sizeof ix);
    ix -= 0x3f3504f3u; /* so the mantissa lands in [sqrt(1/2), sqrt(2)) */
    eb = ((uint32_t)((int32_t)ix >> 23) + 0x4b400000u); /* 1.5*2^23 + e, as float bits */
    memcpy(&e, &eb, sizeof e);
    e = e - 12582912.0f - sub;
    mb = (ix & 0x007fffffu) + 0x3f3504f3u;
    memcpy(&m, &mb, sizeof m);
    f = m - 1.0f;
    u = f / (f + 2.0f); /* log m = 2 atanh(u), |u| <= 0.1716 */
    u2 = u * u;
    p = 1.0f / 9.0f;
    p = p * u2 + 1.0f / 7.0f;
    p = p * u2 + 1.0f / 5.0f;
    p = p * u2 + 1.0f / 3.0f;
    p = p * u2;
    r = e * ln2_lo + (2.0f * u) * p;
    r = r + 2.0f * u;
    r = e * ln2_hi + r;
    /* x == 0 -> -inf; x < 0 or NaN -> NaN; +inf -> +inf */
    /* no || or && here: short-circuit logic would keep the loops from vectorising */
    r = x == INFINITY ? INFINITY : r;
    r = x == 0.0f ? -INFINITY : r;
    return x >= 0.0f ? r : NAN; /* x < 0 or NaN */
}

XENT_INLINE double xent_log_f64(double x)
{
    const double ln2_hi = 0.6931471803691238, ln2_lo = 1.9082149292705877e-10;
    uint64_t ix, mb;
    int64_t e;
    double m, f, u, u2, p, r, xs;
    int sub = x < 2.2250738585072014e-308;
    xs = sub ? x * 18014398509481984.0 : x; /* 2^54 */
    memcpy(&ix, &xs, sizeof ix);
    /* Unsigned: for x < 0 (sign bit set; NaN is returned below) the signed
     * difference would overflow.  e is the top 12 bits as a signed number. */
    ix -= UINT64_C(0x3fe6a09e667f3bcd); /* sqrt(1/2) */
    e = ((int64_t)((ix >> 52) ^ 0x800u) - 0x800) - (sub ? 54 : 0);
    mb = (ix & UINT64_C(0x000fffffffffffff)) + UINT64_C(0x3fe6a09e667f3bcd);
    memcpy(&m, &mb, sizeof m);
    f = m - 1.0;
    u = f / (f + 2.0);
    u2 = u * u;
    p = 1.0 / 21;
    p = p * u2 + 1.0 / 19;
    p = p * u2 + 1.0 / 17;
    p = p * u2 + 1.0 / 15;
    p = p * u2 + 1.0 / 13;
    p = p * u2 + 1.0 / 11;
    p = p * u2 + 1.0 / 9;
    p = p * u2 + 1.0 / 7;
    p = p * u2 + 1.0 / 5;
    p = p * u2 + 1.0 / 3;
    p = p * u2;
    r = (double)e * ln2_lo + (2.0 * u) * p;
    r = r + 2.0 * u;
    r = (double)e * ln2_hi + r;
    r = x == INFINITY ? INFINITY : r;
    r = x == 0.0 ? -INFINITY : r;
    return x >= 0.0 ? r : NAN; /* x < 0 or NaN */
}

/* log(1 + y) for y >= -0.25 (and +inf, NaN), vectorisable: 2 atanh(y / (2 + y))
 * by its odd series on [-0.25, 0.5] (|u| <= 0.2; to u^11 for float, u^23 for
 * double), log(1 + y) above.  Used for log(sum of exps) = log1p(sum of the terms
 * other than the max's 1), exact for confident rows where the sum is 1 + tiny. */
XENT_INLINE float xent_log1p_f32(float y)
{
    float u = y / (2.0f + y), u2 = u * u, p, small, big;
    p = 1.0f / 11.0f;
    p = p * u2 + 1.0f / 9.0f;
    p = p * u2 + 1.0f / 7.0f;
    p = p * u2 + 1.0f / 5.0f;
    p = p * u2 + 1.0f / 3.0f;
    p = p * u2;
    small = 2.0f * u + (2.0f * u) * p;
    big = xent_log_f32(1.0f + y);
    return ((y > -0.25f) & (y < 0.5f)) ? small : big;
}

XENT_INLINE double xent_log1p_f64(double y)
{
    double u = y / (2.0 + y), u2 = u * u, p, small, big;
    int k;
    p = 1.0 / 23.0;
    for (k = 21; k >= 3; k -= 2)
        p = p * u2 + 1.0 / k;
    p = p * u2;
    small = 2.0 * u + (2.0 * u) * p;
    big = xent_log_f64(1.0 + y);
    return ((y > -0.25) & (y < 0.5)) ? small : big;
}

/* ---- half-precision loads (computed in float32) ------------------------------ */

/* IEEE binary16 -> float, exact for every input (subnormals, inf, NaN). */
XENT_INLINE float xent_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    uint32_t bits;
    float f;
    if (exp == 0x1Fu) {
        bits = sign | 0x7F800000u | (man << 13); /* inf / NaN */
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13); /* normal: rebias 15 -> 127 */
    } else {
        /* zero or subnormal: man * 2^-24, exact in float */
        f = (float)man * 5.9604644775390625e-08f;
        memcpy(&bits, &f, sizeof bits);
        bits |= sign;
    }
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* bfloat16 -> float: bfloat16 is the top half of a float. */
XENT_INLINE float xent_bfloat16_to_float(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Convert n strided 16-bit values (stride in elements) to contiguous floats.
 * Unit-stride float16 rows use the F16C conversion instruction where the build
 * has it (the AVX2 and AVX-512 variants): 8 or 16 values per instruction. */
static void xent_load_half_row(const xent_u16u *x, ptrdiff_t n, ptrdiff_t stride,
                               int is_bfloat16, float *dst)
{
    ptrdiff_t i = 0;
    if (is_bfloat16) {
        if (stride == 1) {
            XENT_SIMD
            for (i = 0; i < n; i++)
                dst[i] = xent_bfloat16_to_float(x[i]);
        } else {
            for (i = 0; i < n; i++)
                dst[i] = xent_bfloat16_to_float(x[i * stride]);
        }
        return;
    }
#if defined(__F16C__)
    /* 32 values (one cache line) per step, and the line one row further asked
     * for: the next row is read from cache (see prefetch_ahead in _rows_impl.h) */
    if (stride == 1)
        for (; i + 32 <= n; i += 32) {
            __builtin_prefetch(x + i + n);
#if defined(__AVX512F__)
            _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i))));
            _mm512_storeu_ps(dst + i + 16,
                             _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i + 16))));
#else
            int j;
            for (j = 0; j < 32; j += 8)
                _mm256_storeu_ps(dst + i + j,
                                 _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i + j))));
#endif
        }
    if (stride == 1)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
#endif
    for (; i < n; i++)
        dst[i] = xent_half_to_float(x[i * stride]);
}

/* Values summed in the compute type before the partial sum is added in double. */
#define XENT_SUM_CHUNK 512

/* Hand-vectorised float32 row loops: AVX-512 (x86-64-v4 build) or AVX2+FMA
 * (x86-64-v3 build), under one name; the baseline build has none and uses the
 * portable loops of _rows_impl.h. */
#include "rows_f16max.h"
#include "rows_avx512.h"
#include "rows_avx2.h"
#if defined(XENT_HAVE_AVX512_ROWS)
#define XENT_HAVE_SIMD_ROWS 1
#define xent_simd_sum_exp_rest xent_avx512_sum_exp_rest
#define xent_simd_f16_rest(x, n, m, k) xent_avx512_max_rest(x, 1, n, m, k)
#define xent_simd_max_f16(x, n) xent_avx2_max_f16(x, n)
#define XENT_HAVE_SIMD_MAX_REST 1 /* the max and the sum of exps in one pass */
#define xent_simd_max_rest xent_avx512_max_rest
#elif defined(XENT_HAVE_AVX2_ROWS)
#define XENT_HAVE_SIMD_ROWS 1
#define xent_simd_sum_exp_rest xent_avx2_sum_exp_rest
#define xent_simd_f16_rest xent_avx2_f16_rest
#define xent_simd_max_f16(x, n) xent_avx2_max_f16(x, n)
#endif

/* ---- the per-type functions ------------------------------------------------- */
#define XENT_T xent_f32u
#define XENT_FN(name) xent_##name##_f32
#define XENT_IS_F32 1
#include "rows_impl.h"
#undef XENT_T
#undef XENT_FN
#undef XENT_IS_F32

#define XENT_T xent_f64u
#define XENT_FN(name) xent_##name##_f64
#define XENT_IS_F32 0
#include "rows_impl.h"
#undef XENT_T
#undef XENT_FN
#undef XENT_IS_F32

/* ---- loss rows and pointwise losses ---------------------------------------- */
#define XENT_T xent_f32u
#define XENT_FN(name) xent_##name##_f32
#define XENT_IS_F32 1
#include "losses_impl.h"
#include "pointwise_impl.h"
#include "evaluate_impl.h"
#undef XENT_T
#undef XENT_FN
#undef XENT_IS_F32

#define XENT_T xent_f64u
#define XENT_FN(name) xent_##name##_f64
#define XENT_IS_F32 0
#include "losses_impl.h"
#include "pointwise_impl.h"
#include "evaluate_impl.h"
#undef XENT_T
#undef XENT_FN
#undef XENT_IS_F32

/* ---- float16 rows read in place --------------------------------------------- */

/* row_parts_f32 of the converted row (the same max, k and rest, and with
 * e != NULL the same exps, bits and all) for a unit-stride float16 row read in
 * place; returns 0 where this build has no in-place loops or m is not finite. */
static int xent_f16_row_parts(const xent_u16u *x, ptrdiff_t n, float *m, ptrdiff_t *k,
                              double *rest, xent_f32u *e)
{
#if defined(XENT_HAVE_SIMD_ROWS)
    if (e) {
        *m = xent_simd_max_f16(x, n);
        if (!isfinite(*m))
            return 0;
        *rest = xent_simd_sum_exp_rest(x, 1, n, *m, k, e);
        return 1;
    }
    *rest = xent_simd_f16_rest(x, n, m, k);
    return isfinite(*m);
#else
    (void)x, (void)n, (void)m, (void)k, (void)rest, (void)e;
    return 0;
#endif
}

/* log_softmax_finish_f32 for a float16 row read in place: out = (x - m) - ls
 * (write_log_softmax_f32's arithmetic on the converted values). */
static void xent_f16_log_softmax_finish(const xent_u16u *x, ptrdiff_t n, float m, ptrdiff_t k,
                                        double rest, xent_f32u *out)
{
    float ls = (float)xent_log_sum_f32(k, rest);
    ptrdiff_t i = 0;
#if defined(__F16C__)
    const __m256 vm = _mm256_set1_ps(m), vls = _mm256_set1_ps(ls);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i)));
        _mm256_storeu_ps(out + i, _mm256_sub_ps(_mm256_sub_ps(v, vm), vls));
    }
#endif
    for (; i < n; i++)
        out[i] = (xent_half_to_float(x[i]) - m) - ls;
}

/* ---- rows of any floating dtype, and class indices of any integer dtype ----- */

/* Storage of a floating row as the kernels see it (XENT_KIND_* in _validation.py). */
enum { XENT_KIND_F32 = 0, XENT_KIND_F64 = 1, XENT_KIND_F16 = 2, XENT_KIND_BF16 = 3 };

/* Load n values of storage `kind`, stride_bytes apart, as floats / doubles. */
static void xent_load_row_f32(const char *p, ptrdiff_t n, ptrdiff_t stride_bytes, int kind,
                              float *dst)
{
    ptrdiff_t i;
    switch (kind) {
    case XENT_KIND_F32:
        for (i = 0; i < n; i++)
            dst[i] = *(const xent_f32u *)(p + i * stride_bytes);
        break;
    case XENT_KIND_F64:
        for (i = 0; i < n; i++)
            dst[i] = (float)*(const xent_f64u *)(p + i * stride_bytes);
        break;
    default:
        if (stride_bytes % 2 == 0 && ((uintptr_t)p) % 2 == 0) {
            xent_load_half_row((const xent_u16u *)p, n, stride_bytes / 2, kind == XENT_KIND_BF16, dst);
            break;
        }
        for (i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + i * stride_bytes, sizeof h);
            dst[i] = kind == XENT_KIND_BF16 ? xent_bfloat16_to_float(h) : xent_half_to_float(h);
        }
    }
}

static void xent_load_row_f64(const char *p, ptrdiff_t n, ptrdiff_t stride_bytes, int kind,
                              double *dst)
{
    ptrdiff_t i;
    switch (kind) {
    case XENT_KIND_F64:
        for (i = 0; i < n; i++)
            dst[i] = *(const xent_f64u *)(p + i * stride_bytes);
        break;
    case XENT_KIND_F32:
        for (i = 0; i < n; i++)
            dst[i] = *(const xent_f32u *)(p + i * stride_bytes);
        break;
    default:
        for (i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + i * stride_bytes, sizeof h);
            dst[i] = kind == XENT_KIND_BF16 ? xent_bfloat16_to_float(h) : xent_half_to_float(h);
        }
    }
}

/* Integer storage of class indices (XENT_INDEX_* in _validation.py). */
enum {
    XENT_INDEX_I8 = 0, XENT_INDEX_U8, XENT_INDEX_I16, XENT_INDEX_U16,
    XENT_INDEX_I32, XENT_INDEX_U32, XENT_INDEX_I64, XENT_INDEX_U64
};

/* One class index read from storage `code`.  uint64 values above INT64_MAX wrap,
 * but the Python layer has range-checked every index before a kernel runs. */
XENT_INLINE int64_t xent_load_index(const char *p, int code)
{
    switch (code) {
    case XENT_INDEX_I8: return *(const xent_u_int8_t *)p;
    case XENT_INDEX_U8: return *(const xent_u_uint8_t *)p;
    case XENT_INDEX_I16: return *(const xent_u_int16_t *)p;
    case XENT_INDEX_U16: return *(const xent_u_uint16_t *)p;
    case XENT_INDEX_I32: return *(const xent_u_int32_t *)p;
    case XENT_INDEX_U32: return *(const xent_u_uint32_t *)p;
    case XENT_INDEX_I64: return *(const xent_u_int64_t *)p;
    default: return (int64_t)*(const xent_u_uint64_t *)p;
    }
}

/* Runs of class indices, one loop per storage with the switch outside it
 * (xent_load_index in a loop is an indirect jump per index, which costs more
 * than the rest of these loops).  X(code, C type) for every storage: */
#define XENT_INDEX_STORAGES(X)                                                      \
    X(XENT_INDEX_I8, int8_t) X(XENT_INDEX_U8, uint8_t) X(XENT_INDEX_I16, int16_t)   \
    X(XENT_INDEX_U16, uint16_t) X(XENT_INDEX_I32, int32_t) X(XENT_INDEX_U32, uint32_t) \
    X(XENT_INDEX_I64, int64_t) X(XENT_INDEX_U64, uint64_t)

/* dst[i] = the index at p + i*stride, or -1 where it equals ignore_index. */
static void xent_load_indices(const char *p, ptrdiff_t n, ptrdiff_t stride, int code,
                              int64_t ignore_index, int64_t *dst)
{
    ptrdiff_t i;
    switch (code) {
#define XENT_LOAD_RUN(CODE, TYPE)                                   \
    case CODE:                                                      \
        for (i = 0; i < n; i++) {                                   \
            int64_t v = (int64_t) * (const xent_u_##TYPE *)(p + i * stride); \
            dst[i] = v == ignore_index ? -1 : v;                    \
        }                                                           \
        break;
        XENT_INDEX_STORAGES(XENT_LOAD_RUN)
#undef XENT_LOAD_RUN
    }
}

/* The validation pass over n class indices p[i*stride]: returns the position of
 * the first one outside [0, C) that is not ignore_index, or -1.  Sets *n_valid to
 * the number of the others before that position and *weight_total to the sum
 * of w[index] over them (their number when w == NULL).  uint64 indices above
 * INT64_MAX load as negative: out of range too. */
static ptrdiff_t xent_scan_indices(const char *p, ptrdiff_t n, ptrdiff_t stride, int code,
                                   ptrdiff_t C, int64_t ignore_index, const xent_f64u *w,
                                   ptrdiff_t *n_valid, double *weight_total)
{
    ptrdiff_t i, valid = 0, bad = -1;
    double total = 0;
    switch (code) {
#define XENT_SCAN_RUN(CODE, TYPE)                                   \
    case CODE:                                                      \
        for (i = 0; i < n; i++) {                                   \
            int64_t v = (int64_t) * (const xent_u_##TYPE *)(p + i * stride); \
            if (v == ignore_index)                                  \
                continue;                                           \
            if (v < 0 || v >= C) {                                  \
                bad = i;                                            \
                break;                                              \
            }                                                       \
            valid++;                                                \
            if (w)                                                  \
                total += w[v];                                      \
        }                                                           \
        break;
        XENT_INDEX_STORAGES(XENT_SCAN_RUN)
#undef XENT_SCAN_RUN
    }
    *n_valid = valid;
    *weight_total = w ? total : (double)valid;
    return bad;
}

/* SIMD level this translation unit was compiled for (reported by show_config). */
static const char *xent_simd_level(void)
{
#if defined(__AVX512F__)
    return "AVX-512 (x86-64-v4)";
#elif defined(__AVX2__) && defined(__FMA__)
    return "AVX2+FMA (x86-64-v3)";
#elif defined(__AVX__)
    return "AVX";
#elif defined(__SSE2__) || defined(_M_X64)
    return "SSE2 (x86-64 baseline)";
#elif defined(__ARM_NEON) || defined(__aarch64__)
    return "NEON";
#else
    return "portable C";
#endif
}

#endif /* XENT_ROWS_H */
