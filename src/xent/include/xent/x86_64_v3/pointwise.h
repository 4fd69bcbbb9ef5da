/*
 * Binary cross-entropy with logits on float32, without gradient, written with
 * AVX2+FMA intrinsics (x86-64-v3 build of the kernels only; float64, the
 * gradient and the other builds use bce_logits_body of portable/pointwise.h,
 * the AVX-512 build its own loop in x86_64_v4/pointwise.h, whose method this
 * is).
 *
 * The portable body compiled for x86-64-v3 is compute-bound (two divisions,
 * the generic exp and log with their special cases, selects for zero
 * coefficients): the loss took several times one read of its inputs
 * (BENCHMARKS.md, "Decisions in the kernels").  For a finite logit x:
 *   e = exp(-|x|) in [0, 1]       the exp of x86_64_v3/rows.h (0.90 ulp)
 *   u = 1 + e in [1, 2]           rounded; c = e - (u - 1) exact (Fast2Sum)
 *   log(u)                        u = 2^k m, m in [sqrt(1/2), sqrt(2)), f = m - 1
 *                                 exact, log1p(f) = f + f^2 (-1/2 + f P(f)), the
 *                                 degree-7 P of portable/math.h (0.93 ulp
 *                                 over every float32 u in [1, 2))
 *   log1p(e) = log(u) + c/u,      c/u = c - c (u-1)/u, (u-1)/u from vrcpps:
 *                                 exact (= c) when u == 1, and an error of
 *                                 2^-12 of a term below 2^-24 (u - 1) otherwise
 *                                 (xent_avx2_log1p_ps below, which the few-class
 *                                 rows of x86_64_v3/tiles.h share)
 *   without weights l = (max(x, 0) - y x) + log1p(e), with them
 *   l = cp softplus(-x) + cn softplus(x) as the portable body.
 * Four vectors are computed together (their exp chains interleaved, see
 * x86_64_v3/rows.h).  A step with a non-finite logit (or, without weights, a
 * target outside [0, 1]) is computed by the portable body instead, so
 * infinities, NaN and odd targets keep exactly its semantics; so is the tail
 * of fewer than 32 elements.  Losses are summed in two double vectors, in an
 * order that depends only on the piece, not on the thread count.
 */
#ifndef XENT_X86_64_V3_POINTWISE_H
#define XENT_X86_64_V3_POINTWISE_H

#include "../portable/declarations.h"

/* log1p(y) for 8 values y >= 0 (NaN -> NaN): u = 1 + y rounded, err its exact
 * rounding error (Fast2Sum on max(1, y) and min(1, y)), log u = e ln2 +
 * log1p(f) for u = 2^e (1 + f), 1 + f in [sqrt(1/2), sqrt(2)) (f exact), by
 * the polynomial XENT_LOG1P_P* (0.93 ulp), and err / u added as
 * err - err (u - 1)/u with (u - 1)/u from vrcpps: exactly err when u == 1, so
 * a confident row, y tiny, gets log1p(y) = y. */
XENT_INLINE __m256 xent_avx2_log1p_ps(__m256 y)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256i sqrt_half = _mm256_set1_epi32(0x3f3504f3);
    __m256 a = _mm256_max_ps(one, y), b = _mm256_min_ps(one, y); /* NaN: y (2nd operand) */
    __m256 u = _mm256_add_ps(a, b), um1 = _mm256_sub_ps(u, one);
    __m256 err = _mm256_sub_ps(b, _mm256_sub_ps(u, a));
    __m256 corr = _mm256_fnmadd_ps(err, _mm256_mul_ps(um1, _mm256_rcp_ps(u)), err);
    __m256i ix = _mm256_sub_epi32(_mm256_castps_si256(u), sqrt_half);
    __m256 e = _mm256_cvtepi32_ps(_mm256_srai_epi32(ix, 23));
    __m256 f = _mm256_sub_ps(
        _mm256_castsi256_ps(_mm256_add_epi32(_mm256_and_si256(ix, _mm256_set1_epi32(0x007fffff)),
                                             sqrt_half)),
        one);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(XENT_LOG1P_P7), f, _mm256_set1_ps(XENT_LOG1P_P6));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(XENT_LOG1P_P5));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(XENT_LOG1P_P4));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(XENT_LOG1P_P3));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(XENT_LOG1P_P2));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(XENT_LOG1P_P1));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(XENT_LOG1P_P0));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(-0.5f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(f, f), p, f); /* log1p(f) */
    p = _mm256_fmadd_ps(e, _mm256_set1_ps(0.693147180559945309f), p);
    return _mm256_add_ps(p, corr);
}

/* Losses of the XENT_AVX2_STEP elements from x (y, w, pw alike) into l[j];
 * returns nonzero when some element must go to the portable body instead. */
XENT_INLINE int xent_avx2_bce_logits_step(const float *x, const float *y, const float *w,
                                          const float *pw, const int has_w, const int has_pw,
                                          __m256 l[XENT_AVX2_WAYS])
{
    const __m256 sign = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
    const __m256 one = _mm256_set1_ps(1.0f), inf = _mm256_set1_ps(INFINITY);
    __m256 xv[XENT_AVX2_WAYS], d[XENT_AVX2_WAYS], e[XENT_AVX2_WAYS], s[XENT_AVX2_WAYS];
    __m256 lg[XENT_AVX2_WAYS];
    __m256 bad = zero;
    int j;
    XENT_AVX2_EACH {
        xv[j] = _mm256_loadu_ps(x + 8 * j);
        d[j] = _mm256_or_ps(xv[j], sign); /* -|x| */
        /* |x| not below +inf: an infinity or NaN */
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_andnot_ps(sign, xv[j]), inf, _CMP_NLT_UQ));
    }
    xent_avx2_exp_parts(d, e, s, XENT_AVX2_WAYS);
    XENT_AVX2_EACH e[j] = _mm256_mul_ps(_mm256_mul_ps(e[j], s[j]),
                                        _mm256_set1_ps(XENT_AVX2_TWO_M64));
    XENT_AVX2_EACH lg[j] = xent_avx2_log1p_ps(e[j]);
    XENT_AVX2_EACH {
        __m256 yv = _mm256_loadu_ps(y + 8 * j);
        if (!has_w && !has_pw) {
            /* y outside [0, 1] (or NaN): |y - 1/2| > 1/2 */
            __m256 half = _mm256_set1_ps(0.5f);
            bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(yv, half)),
                                                  half, _CMP_NLE_UQ));
            l[j] = _mm256_add_ps(_mm256_fnmadd_ps(yv, xv[j], _mm256_max_ps(xv[j], zero)), lg[j]);
        } else {
            /* the portable body's formula, in its order of operations */
            __m256 wv = has_w ? _mm256_loadu_ps(w + 8 * j) : one;
            __m256 pwv = has_pw ? _mm256_loadu_ps(pw + 8 * j) : one;
            __m256 cp = _mm256_mul_ps(_mm256_mul_ps(wv, pwv), yv);
            __m256 cn = _mm256_mul_ps(wv, _mm256_sub_ps(one, yv));
            __m256 sp_pos = _mm256_add_ps(_mm256_max_ps(xv[j], zero), lg[j]);
            __m256 sp_neg = _mm256_add_ps(_mm256_max_ps(_mm256_sub_ps(zero, xv[j]), zero), lg[j]);
            l[j] = _mm256_add_ps(_mm256_mul_ps(cp, sp_neg), _mm256_mul_ps(cn, sp_pos));
        }
    }
    return _mm256_movemask_ps(bad);
}

/* One piece (see bce_logits in portable/pointwise.h) without gradient. */
XENT_INLINE double xent_avx2_bce_logits_body(ptrdiff_t n, const float *x, const float *y,
                                             const float *w, const float *pw, float *loss,
                                             const int has_w, const int has_pw,
                                             const int has_loss)
{
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    __m128d h;
    double slow = 0;
    ptrdiff_t i;
    int j;
    for (i = 0; i + XENT_AVX2_STEP <= n; i += XENT_AVX2_STEP) {
        __m256 l[XENT_AVX2_WAYS];
        if (!xent_avx2_bce_logits_step(x + i, y + i, has_w ? w + i : NULL, has_pw ? pw + i : NULL,
                                       has_w, has_pw, l)) {
            XENT_AVX2_EACH {
                __m256d l_lo, l_hi;
                xent_avx2_widen(l[j], &l_lo, &l_hi);
                lo = _mm256_add_pd(lo, l_lo);
                hi = _mm256_add_pd(hi, l_hi);
                if (has_loss)
                    _mm256_storeu_ps(loss + i + 8 * j, l[j]);
            }
        } else { /* rare: these elements by the portable body */
            slow += xent_bce_logits_body_f32(XENT_AVX2_STEP, x + i, y + i, has_w ? w + i : NULL,
                                             has_pw ? pw + i : NULL, has_loss ? loss + i : NULL,
                                             NULL, 1.0f, has_w, has_pw, has_loss, 0);
        }
    }
    if (i < n) /* the tail, by the portable body */
        slow += xent_bce_logits_body_f32(n - i, x + i, y + i, has_w ? w + i : NULL,
                                         has_pw ? pw + i : NULL, has_loss ? loss + i : NULL,
                                         NULL, 1.0f, has_w, has_pw, has_loss, 0);
    lo = _mm256_add_pd(lo, hi);
    h = _mm_add_pd(_mm256_castpd256_pd128(lo), _mm256_extractf128_pd(lo, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h))) + slow;
}

#define XENT_AVX2_BCE_CASE(k)                                                            \
    case k:                                                                              \
        return xent_avx2_bce_logits_body(n, x, y, w, pw, loss, (k) & 1, ((k) >> 1) & 1,  \
                                         ((k) >> 2) & 1)

/* One float32 piece without gradient; w, pw, loss may be NULL. */
static double xent_avx2_bce_logits_loss(ptrdiff_t n, const float *x, const float *y,
                                        const float *w, const float *pw, float *loss)
{
    int k = (w != NULL) | (pw != NULL) << 1 | (loss != NULL) << 2;
    switch (k) {
        XENT_AVX2_BCE_CASE(0);
        XENT_AVX2_BCE_CASE(1);
        XENT_AVX2_BCE_CASE(2);
        XENT_AVX2_BCE_CASE(3);
        XENT_AVX2_BCE_CASE(4);
        XENT_AVX2_BCE_CASE(5);
        XENT_AVX2_BCE_CASE(6);
    default:
        XENT_AVX2_BCE_CASE(7);
    }
}
#undef XENT_AVX2_BCE_CASE

/* bce_logits_loss of portable/pointwise.h for float32: always by hand. */
XENT_INLINE int xent_avx2_bce_logits_loss_f32(ptrdiff_t n, const xent_f32u *x, const xent_f32u *y,
                                              const xent_f32u *w, const xent_f32u *pw, xent_f32u *loss,
                                              double *total)
{
    *total = xent_avx2_bce_logits_loss(n, x, y, w, pw, loss);
    return 1;
}

#endif /* XENT_X86_64_V3_POINTWISE_H */
