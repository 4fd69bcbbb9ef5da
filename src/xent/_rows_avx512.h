/*
 * The hottest float32 loop, written with AVX-512 intrinsics (only in the
 * x86-64-v4 build of the kernels; the other builds use the portable C of
 * _rows_impl.h).
 *
 * Why by hand: the sum of exp(x - max) over a row is bound by the number of
 * vector operations per element, and AVX-512 has two instructions the compiler
 * cannot reach from portable C: vscalefps (p * 2^n in one operation, with
 * correct rounding into subnormals, no integer exponent arithmetic) and masked
 * adds (the "entry equals the max" bookkeeping of sum_exp_rest costs one
 * compare instead of selects).  Together with a minimax polynomial of degree 6
 * (instead of Taylor degree 7) this is about 15 vector operations per 16
 * elements instead of 25.
 *
 * Included by _rows.h; XENT_HAVE_AVX512_ROWS tells _rows_impl.h to use it.
 */
#ifndef XENT_ROWS_AVX512_H
#define XENT_ROWS_AVX512_H

#if defined(__AVX512F__)
#include <immintrin.h>

#define XENT_HAVE_AVX512_ROWS 1

/* exp(d) for 16 arguments d <= 0 (NaN -> NaN; d <= -104, -inf included, -> 0).
 * Cody-Waite reduction d = n ln2 + r, |r| <= ln2/2 (two-part ln2, n*ln2_hi
 * exact), e^r by the minimax polynomial of degree 6 (relative error 1.7e-8 with
 * float32 coefficients, below a third of an ulp), and 2^n by vscalefps, which
 * rounds a subnormal result once.  Measured over every float32 in [-104, 0] by
 * bench/accuracy.py. */
XENT_INLINE __m512 xent_avx512_exp_nonpos_ps(__m512 d)
{
    const __m512 shifter = _mm512_set1_ps(12582912.0f); /* 1.5 * 2^23: rounds to an integer */
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693145751953125f);
    const __m512 ln2_lo = _mm512_set1_ps(1.42860676533018704e-06f);
    __m512 t, nf, r, p;
    d = _mm512_max_ps(_mm512_set1_ps(-104.0f), d); /* the second operand (d) wins on NaN */
    t = _mm512_fmadd_ps(d, log2e, shifter);
    nf = _mm512_sub_ps(t, shifter);
    r = _mm512_fnmadd_ps(nf, ln2_hi, d);
    r = _mm512_fnmadd_ps(nf, ln2_lo, r);
    p = _mm512_set1_ps(XENT_EXP_C6);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(XENT_EXP_C5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(XENT_EXP_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(XENT_EXP_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(XENT_EXP_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, nf);
}

/* Mask of the first `len` lanes (len < 16). */
XENT_INLINE __mmask16 xent_avx512_head_mask(ptrdiff_t len)
{
    return (__mmask16)((1u << len) - 1u);
}

/* Values i .. i+15 of a row stored as float32 (half == 0) or float16 (half == 1,
 * converted exactly by vcvtph2ps), as floats; with valid != all ones only those
 * lanes are read (the others are 0).  `half` is a constant wherever this is
 * inlined, so each caller compiles to one kind of load. */
XENT_INLINE __m512 xent_avx512_load(const void *x, ptrdiff_t i, int half, __mmask16 valid)
{
    if (half) {
        const uint16_t *h = (const uint16_t *)x + i;
        if (valid == (__mmask16)0xFFFF)
            return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(valid, h));
    }
    if (valid == (__mmask16)0xFFFF)
        return _mm512_loadu_ps((const float *)x + i);
    return _mm512_maskz_loadu_ps(valid, (const float *)x + i);
}

/* Largest of n values (float32 or float16 storage, see xent_avx512_load),
 * ignoring NaN as xent_max_f32 does. */
XENT_INLINE float xent_avx512_max(const void *x, ptrdiff_t n, int half)
{
    __m512 m = _mm512_set1_ps(-INFINITY);
    ptrdiff_t i;
    for (i = 0; i + 16 <= n; i += 16) /* vmaxps returns its second operand on NaN */
        m = _mm512_max_ps(xent_avx512_load(x, i, half, 0xFFFF), m);
    if (i < n) {
        __mmask16 valid = xent_avx512_head_mask(n - i);
        m = _mm512_mask_max_ps(m, valid, xent_avx512_load(x, i, half, valid), m);
    }
    return _mm512_reduce_max_ps(m);
}

/* One chunk (len <= XENT_SUM_CHUNK values) of sum_exp_rest: the terms of the
 * entries != m added into *s, those entries counted in *cnt; with e != NULL also
 * e[i] = exp(x[i] - m) for every i (1 where x[i] == m).  Always inlined, so the
 * e == NULL calls compile without the stores.  The cache line `ahead` values
 * further is prefetched, one per vector (see prefetch_ahead in _rows_impl.h). */
XENT_INLINE void xent_avx512_rest_chunk(const void *x, int half, ptrdiff_t len, __m512 vm,
                                        float *e, __m512 *s, __m512 *cnt, ptrdiff_t ahead)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    const ptrdiff_t size = half ? 2 : 4;
    __m512 acc = *s, counted = *cnt;
    ptrdiff_t i;
    for (i = 0; i + 16 <= len; i += 16) {
        __m512 v = xent_avx512_load(x, i, half, 0xFFFF);
        _mm_prefetch((const char *)x + (i + ahead) * size, _MM_HINT_T0); /* see prefetch_ahead */
        /* entries below m (and NaN, which must reach the sum) */
        __mmask16 below = _mm512_cmp_ps_mask(v, vm, _CMP_NEQ_UQ);
        __m512 ev = xent_avx512_exp_nonpos_ps(_mm512_sub_ps(v, vm));
        acc = _mm512_mask_add_ps(acc, below, acc, ev);
        counted = _mm512_mask_add_ps(counted, below, counted, one);
        if (e)
            _mm512_storeu_ps(e + i, ev);
    }
    if (i < len) {
        __mmask16 valid = xent_avx512_head_mask(len - i);
        __m512 v = xent_avx512_load(x, i, half, valid);
        __mmask16 below = _mm512_mask_cmp_ps_mask(valid, v, vm, _CMP_NEQ_UQ);
        __m512 ev = xent_avx512_exp_nonpos_ps(_mm512_sub_ps(v, vm));
        acc = _mm512_mask_add_ps(acc, below, acc, ev);
        counted = _mm512_mask_add_ps(counted, below, counted, one);
        if (e)
            _mm512_mask_storeu_ps(e + i, valid, ev);
    }
    *s = acc;
    *cnt = counted;
}

/* sum_exp_rest (see _rows_impl.h for the contract) of a float32 (half == 0) or
 * float16 (half == 1) row, optionally storing every exp(x[i] - m) into e (which
 * may be x itself, for float32): the terms of the entries != m summed in float32
 * vectors over chunks of XENT_SUM_CHUNK values, each chunk's 16 lanes added in
 * double; *k = the number of entries equal to m. */
XENT_INLINE double xent_avx512_sum_exp_rest(const void *x, int half, ptrdiff_t n, float m,
                                            ptrdiff_t *k, float *e)
{
    const __m512 vm = _mm512_set1_ps(m);
    __m512d total = _mm512_setzero_pd();
    ptrdiff_t b, counted = 0;
    for (b = 0; b < n; b += XENT_SUM_CHUNK) {
        ptrdiff_t len = n - b < XENT_SUM_CHUNK ? n - b : XENT_SUM_CHUNK;
        const void *xc = (const char *)x + b * (half ? 2 : 4);
        __m512 s = _mm512_setzero_ps(), cnt = _mm512_setzero_ps();
        xent_avx512_rest_chunk(xc, half, len, vm, e ? e + b : NULL, &s, &cnt, n);
        /* float -> double is exact */
        total = _mm512_add_pd(total, _mm512_cvtps_pd(_mm512_castps512_ps256(s)));
        total = _mm512_add_pd(total, _mm512_cvtps_pd(_mm256_castpd_ps(
                                         _mm512_extractf64x4_pd(_mm512_castps_pd(s), 1))));
        counted += (ptrdiff_t)_mm512_reduce_add_ps(cnt); /* <= 512: exact in float */
    }
    *k = n - counted;
    return _mm512_reduce_add_pd(total);
}

/* The max m of a float16 row and, when it is finite, the sum of its exps
 * (sum_exp_rest: returns rest, sets *k); 0 otherwise. */
XENT_INLINE double xent_avx512_f16_rest(const uint16_t *x, ptrdiff_t n, float *m, ptrdiff_t *k)
{
    *m = xent_avx512_max(x, n, 1);
    *k = 0;
    if (!isfinite(*m))
        return 0;
    return xent_avx512_sum_exp_rest(x, 1, n, *m, k, NULL);
}

#endif /* __AVX512F__ */
#endif /* XENT_ROWS_AVX512_H */
