/*
 * Binary cross-entropy with logits on float32, without gradient, written with
 * AVX-512 intrinsics (x86-64-v4 build of the kernels only; the other builds,
 * float64 and the gradient use bce_logits_body of portable/pointwise.h).
 *
 * Why by hand: the portable body is compute-bound (two divisions, the generic
 * exp and log with their special-case handling, selects for zero
 * coefficients; BENCHMARKS.md, "Decisions in the kernels").  For a finite
 * logit x everything is simpler:
 *   e = exp(-|x|) in [0, 1]        xent_avx512_exp_nonpos_ps (0.90 ulp)
 *   u = 1 + e in [1, 2]            rounded; c = e - (u - 1) exact (Fast2Sum)
 *   log(u)                         no division, no special cases: u = 2^k m with
 *                                  m in [sqrt(1/2), sqrt(2)), f = m - 1 exact,
 *                                  log1p(f) = f + f^2 (-1/2 + f P(f)), P a
 *                                  degree-7 minimax fit (0.93 ulp over every
 *                                  float32 u in [1, 2), bench/accuracy-style
 *                                  exhaustive check)
 *   log1p(e) = log(u) + c/u,       c/u = c - c (u-1)/u with (u-1)/u from
 *                                  vrcp14ps: exact (= c = e) when u == 1, and an
 *                                  error of 2^-14 of a term that is already
 *                                  <= 2^-24 (u - 1) otherwise
 *   softplus(+-x) = max(+-x, 0) + log1p(e), both finite, so a zero coefficient
 *   times a softplus is already 0 and the selects of the portable body are not
 *   needed; without weights l = (max(x, 0) - y x) + log1p(e) (one fma, no
 *   cancellation for y in [0, 1]).
 * A vector with a non-finite logit (or, without weights, a target outside
 * [0, 1]) is computed by the portable body instead, so infinities, NaN and odd
 * targets keep exactly its semantics.  Losses are summed in two double vectors;
 * the order depends only on the piece, not on the thread count.
 */
#ifndef XENT_X86_64_V4_POINTWISE_H
#define XENT_X86_64_V4_POINTWISE_H

#include "../portable/declarations.h"

/* log(u) for 16 values u in [1, 2] (nothing else: no zero, negative,
 * subnormal, infinite or NaN handling). */
XENT_INLINE __m512 xent_avx512_log_unit_ps(__m512 u)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    __mmask16 k = _mm512_cmp_ps_mask(u, _mm512_set1_ps(1.41421356237309505f), _CMP_GE_OQ);
    __m512 m = _mm512_mask_mul_ps(u, k, u, _mm512_set1_ps(0.5f)); /* exact */
    __m512 f = _mm512_sub_ps(m, one);                             /* exact (Sterbenz) */
    __m512 p = _mm512_set1_ps(XENT_LOG1P_P7), f2, lm;
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(XENT_LOG1P_P6));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(XENT_LOG1P_P5));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(XENT_LOG1P_P4));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(XENT_LOG1P_P3));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(XENT_LOG1P_P2));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(XENT_LOG1P_P1));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(XENT_LOG1P_P0));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(-0.5f));
    f2 = _mm512_mul_ps(f, f);
    lm = _mm512_fmadd_ps(f2, p, f);
    /* + k ln2 (only where k) */
    return _mm512_mask_add_ps(lm, k, lm, _mm512_set1_ps(0.693147180559945309f));
}

/* log1p(e) for 16 values e in [0, 1]: see the header comment. */
XENT_INLINE __m512 xent_avx512_log1p_unit_ps(__m512 e)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 u = _mm512_add_ps(one, e);
    __m512 um1 = _mm512_sub_ps(u, one);
    __m512 c = _mm512_sub_ps(e, um1);
    __m512 t = _mm512_mul_ps(um1, _mm512_rcp14_ps(u)); /* ~ (u - 1) / u, 0 when u == 1 */
    __m512 corr = _mm512_fnmadd_ps(c, t, c);            /* ~ c / u, = c when u == 1 */
    return _mm512_add_ps(xent_avx512_log_unit_ps(u), corr);
}

/* Sum of 16 float losses added to two double accumulators (exact conversion). */
XENT_INLINE void xent_avx512_acc_pd(__m512 l, __m512d *lo, __m512d *hi)
{
    *lo = _mm512_add_pd(*lo, _mm512_cvtps_pd(_mm512_castps512_ps256(l)));
    *hi = _mm512_add_pd(*hi, _mm512_cvtps_pd(_mm256_castpd_ps(
                                 _mm512_extractf64x4_pd(_mm512_castps_pd(l), 1))));
}

/* Losses of lanes `valid` of elements i.. (the others 0); *bad = the lanes that
 * must go to the portable body instead. */
XENT_INLINE __m512 xent_avx512_bce_logits_vec(ptrdiff_t i, __mmask16 valid, const float *x,
                                              const float *y, const float *w, const float *pw,
                                              const int has_w, const int has_pw, __mmask16 *bad)
{
    const __m512 zero = _mm512_setzero_ps();
    __m512 xv = xent_avx512_load(x, i, 0, valid);
    __m512 yv = xent_avx512_load(y, i, 0, valid);
    __m512 ax = _mm512_abs_ps(xv);
    __m512 e = xent_avx512_exp_nonpos_ps(_mm512_sub_ps(zero, ax));
    __m512 lg = xent_avx512_log1p_unit_ps(e);
    __m512 l;
    /* non-finite x: 0x01 QNaN | 0x08 +inf | 0x10 -inf | 0x80 SNaN */
    __mmask16 b = _mm512_mask_fpclass_ps_mask(valid, xv, 0x99);
    if (!has_w && !has_pw) {
        /* y outside [0, 1] (or NaN): |y - 1/2| > 1/2 */
        __m512 half = _mm512_set1_ps(0.5f);
        b |= _mm512_mask_cmp_ps_mask(valid, _mm512_abs_ps(_mm512_sub_ps(yv, half)), half,
                                     _CMP_NLE_UQ);
        l = _mm512_add_ps(_mm512_fnmadd_ps(yv, xv, _mm512_max_ps(xv, zero)), lg);
    } else {
        /* the portable body's formula, in its order of operations */
        __m512 wv = has_w ? xent_avx512_load(w, i, 0, valid) : _mm512_set1_ps(1.0f);
        __m512 pwv = has_pw ? xent_avx512_load(pw, i, 0, valid) : _mm512_set1_ps(1.0f);
        __m512 cp = _mm512_mul_ps(_mm512_mul_ps(wv, pwv), yv);
        __m512 cn = _mm512_mul_ps(wv, _mm512_sub_ps(_mm512_set1_ps(1.0f), yv));
        __m512 sp_pos = _mm512_add_ps(_mm512_max_ps(xv, zero), lg);
        __m512 sp_neg = _mm512_add_ps(_mm512_max_ps(_mm512_sub_ps(zero, xv), zero), lg);
        l = _mm512_add_ps(_mm512_mul_ps(cp, sp_neg), _mm512_mul_ps(cn, sp_pos));
    }
    *bad = b;
    return _mm512_maskz_mov_ps((__mmask16)(valid & ~b), l);
}

/* One piece (see bce_logits in portable/pointwise.h) without gradient. */
XENT_INLINE double xent_avx512_bce_logits_body(ptrdiff_t n, const float *x, const float *y,
                                               const float *w, const float *pw, float *loss,
                                               const int has_w, const int has_pw,
                                               const int has_loss)
{
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    double slow = 0;
    ptrdiff_t i;
    /* two vectors per step, computed before either is used: their long exp ->
     * log chains interleave instead of waiting on each other */
    for (i = 0; i + 32 <= n; i += 32) {
        __mmask16 bad0, bad1;
        __m512 l0 = xent_avx512_bce_logits_vec(i, 0xFFFF, x, y, w, pw, has_w, has_pw, &bad0);
        __m512 l1 = xent_avx512_bce_logits_vec(i + 16, 0xFFFF, x, y, w, pw, has_w, has_pw, &bad1);
        if (!(bad0 | bad1)) {
            xent_avx512_acc_pd(l0, &lo, &hi);
            xent_avx512_acc_pd(l1, &lo, &hi);
            if (has_loss) {
                _mm512_storeu_ps(loss + i, l0);
                _mm512_storeu_ps(loss + i + 16, l1);
            }
        } else { /* rare: these 32 elements by the portable body */
            slow += xent_bce_logits_body_f32(32, x + i, y + i, has_w ? w + i : NULL,
                                             has_pw ? pw + i : NULL, has_loss ? loss + i : NULL,
                                             NULL, 1.0f, has_w, has_pw, has_loss, 0);
        }
    }
    for (; i < n; i += 16) {
        ptrdiff_t len = n - i < 16 ? n - i : 16;
        __mmask16 valid = len == 16 ? (__mmask16)0xFFFF : xent_avx512_head_mask(len);
        __mmask16 bad;
        __m512 l = xent_avx512_bce_logits_vec(i, valid, x, y, w, pw, has_w, has_pw, &bad);
        if (!bad) {
            xent_avx512_acc_pd(l, &lo, &hi);
            if (has_loss)
                _mm512_mask_storeu_ps(loss + i, valid, l);
        } else { /* rare: these (up to) 16 elements by the portable body */
            slow += xent_bce_logits_body_f32(len, x + i, y + i, has_w ? w + i : NULL,
                                             has_pw ? pw + i : NULL, has_loss ? loss + i : NULL,
                                             NULL, 1.0f, has_w, has_pw, has_loss, 0);
        }
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi)) + slow;
}

#define XENT_AVX512_BCE_CASE(k)                                                            \
    case k:                                                                                \
        return xent_avx512_bce_logits_body(n, x, y, w, pw, loss, (k) & 1, ((k) >> 1) & 1,  \
                                           ((k) >> 2) & 1)

/* One float32 piece without gradient; w, pw, loss may be NULL. */
static double xent_avx512_bce_logits_loss(ptrdiff_t n, const float *x, const float *y,
                                          const float *w, const float *pw, float *loss)
{
    int k = (w != NULL) | (pw != NULL) << 1 | (loss != NULL) << 2;
    switch (k) {
        XENT_AVX512_BCE_CASE(0);
        XENT_AVX512_BCE_CASE(1);
        XENT_AVX512_BCE_CASE(2);
        XENT_AVX512_BCE_CASE(3);
        XENT_AVX512_BCE_CASE(4);
        XENT_AVX512_BCE_CASE(5);
        XENT_AVX512_BCE_CASE(6);
    default:
        XENT_AVX512_BCE_CASE(7);
    }
}
#undef XENT_AVX512_BCE_CASE

/* bce_logits_loss of portable/pointwise.h for float32: always by hand. */
XENT_INLINE int xent_avx512_bce_logits_loss_f32(ptrdiff_t n, const xent_f32u *x, const xent_f32u *y,
                                                const xent_f32u *w, const xent_f32u *pw, xent_f32u *loss,
                                                double *total)
{
    *total = xent_avx512_bce_logits_loss(n, x, y, w, pw, loss);
    return 1;
}

#endif /* XENT_X86_64_V4_POINTWISE_H */
