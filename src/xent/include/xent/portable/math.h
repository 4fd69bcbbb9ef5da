/*
 * The scalar exp and log of every implementation, written so the compiler
 * vectorises the loops that call them (branch-free, no libm calls).  The
 * hand-written exps of x86_64_v3/ and x86_64_v4/ use the same reduction and
 * polynomial (XENT_EXP_C*) and have these bits (tests/test_exp_and_log.py).
 *
 * XENT_FMAF / XENT_FMA (fused or not) are chosen by select.h, which includes
 * this header.
 */
#ifndef XENT_PORTABLE_MATH_H
#define XENT_PORTABLE_MATH_H

#include "../common.h"

/* ---- exp for arguments <= 0 --------------------------------------------------
 * Every exp in a normaliser is exp(x - max) with x - max <= 0 (or -inf, or NaN),
 * so only that half-line is needed.  Method: Cody-Waite range reduction
 * x = n*ln2 + r with |r| <= ln2/2, a polynomial for exp(r) whose error is far
 * below half an ulp (minimax degree 6 for float: 3.7e-9 relative; Taylor degree 13
 * for double: 4e-18), and the scale 2^n applied as two exact powers of two so results
 * that are subnormal are rounded once instead of flushed.  Branch-free, so the
 * compiler vectorises it.  -inf -> 0, NaN -> NaN, 0 -> 1 exactly.
 */
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
 * an ulp; Taylor needs degree 7 for that).  Shared with the
 * hand-written exps (x86_64_v3/rows.h, x86_64_v4/rows.h). */
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

/* log1p(f) - f = f^2 (-1/2 + f P(f)) on [sqrt(1/2) - 1, sqrt(2) - 1]: P's
 * coefficients, lowest degree first (weighted least squares / Lawson fit), for
 * the vector log1p of the hand-written BCE loops (x86_64_v3/pointwise.h,
 * x86_64_v4/pointwise.h). */
#define XENT_LOG1P_P0 0.3333330750465393f
#define XENT_LOG1P_P1 -0.25000637769699097f
#define XENT_LOG1P_P2 0.200028657913208f
#define XENT_LOG1P_P3 -0.16630764305591583f
#define XENT_LOG1P_P4 0.14173159003257751f
#define XENT_LOG1P_P5 -0.13061600923538208f
#define XENT_LOG1P_P6 0.12904897332191467f
#define XENT_LOG1P_P7 -0.08062484115362167f

#endif /* XENT_PORTABLE_MATH_H */
