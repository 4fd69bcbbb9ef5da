/*
 * The hottest float32 row loops (the max, and the sum of exp(x - max) with or
 * without storing the exps), written with AVX2+FMA intrinsics: the x86-64-v3
 * build of the kernels only.  The AVX-512 build has its own (x86_64_v4/rows.h);
 * the baseline build uses the portable C of portable/rows.h.
 *
 * Why by hand.  Compiled from the portable C for x86-64-v3, the sum of exps
 * took about twice the time its vector operations need.  Two things were in
 * the way:
 *  - latency, not operations: the exp is a long chain of dependent
 *    operations, and the compiler emits each vector's chain whole, one after
 *    the other; the out-of-order window then holds too few independent chains
 *    to fill the pipes.  Here XENT_AVX2_WAYS vectors are computed step by step
 *    together, so their chains overlap in program order;
 *  - operations the compiler does not find: 2^n taken from the rounding
 *    constant itself (adding 1.5*2^23 + 191 to d*log2(e) rounds it to an
 *    integer and leaves n + 191 in the low mantissa bits, so one shift makes
 *    the float 2^(n+64)); p * 2^(n+64) is exact and the final * 2^-64 rounds a
 *    subnormal result once, exactly as the portable two-step scaling does, for
 *    every n down to -150, with no integer clamps or selects; a sum is kept
 *    scaled by 2^64, so each term is one FMA into it.  The entries equal to
 *    the max are left out of the sum by zeroing their scale (one and-not) and
 *    counted from the compare masks' sign bits (movemask, popcnt).
 * Together they make the sum much faster than the compiled portable loop or
 * straightforward intrinsics (BENCHMARKS.md, "Decisions in the kernels").
 * float16 rows are converted in registers (vcvtph2ps) instead of through a
 * float32 copy: half the bytes, no copy pass.
 *
 * The stored exps (xent_avx2_exp_parts) use the arithmetic of portable/math.h
 * (Cody-Waite reduction with a two-part ln 2, the degree-6 polynomial
 * XENT_EXP_C*) and have the bits of xent_exp_nonpos_f32 of this build (whose
 * multiply-adds are FMAs written out, XENT_FMAF, whatever -ffp-contract says;
 * tests/test_exp_and_log.py); the terms of sums use a cheaper exp
 * (xent_avx2_term_parts, see there).
 *
 * The twins of portable/rows.h's functions are at the end; select.h includes
 * this header in the x86-64-v3 build and maps the generic names to them.
 */
#ifndef XENT_X86_64_V3_ROWS_H
#define XENT_X86_64_V3_ROWS_H

/* Vectors computed together (see the header comment), and entries per step. */
#define XENT_AVX2_WAYS 4
#define XENT_AVX2_STEP (8 * XENT_AVX2_WAYS)
#define XENT_AVX2_EACH for (j = 0; j < XENT_AVX2_WAYS; j++)
/* The same over the first `ways` vectors only (a constant where inlined): the
 * tail of a row takes one vector at a time, with no work on padding. */
#define XENT_AVX2_FIRST(ways) for (j = 0; j < (ways); j++)

/* exp(d) = p * s * 2^-64 for `ways` vectors of arguments d <= 0, in
 * two parts: p = e^r in [0.7, 1.42] (NaN for a NaN d) and s = 2^(n+64), a
 * normal float for every d >= -104; d <= -104 (-inf included) is taken as -104,
 * whose exp rounds to 0.  The caller multiplies (exactly) and scales. */
XENT_INLINE void xent_avx2_exp_parts(const __m256 d_in[XENT_AVX2_WAYS],
                                     __m256 p[XENT_AVX2_WAYS], __m256 s[XENT_AVX2_WAYS],
                                     const int ways)
{
    /* 1.5*2^23 + 191: t's low mantissa bits hold n + 191, and 191 = 127 + 64 */
    const __m256 shifter = _mm256_set1_ps(12583103.0f);
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693145751953125f); /* n*ln2_hi exact */
    const __m256 ln2_lo = _mm256_set1_ps(1.42860676533018704e-06f);
    __m256 d[XENT_AVX2_WAYS], t[XENT_AVX2_WAYS];
    int j;
    /* the second operand of vmaxps wins on NaN: NaN stays NaN */
    XENT_AVX2_FIRST(ways) d[j] = _mm256_max_ps(_mm256_set1_ps(-104.0f), d_in[j]);
    XENT_AVX2_FIRST(ways) t[j] = _mm256_fmadd_ps(d[j], log2e, shifter);
    XENT_AVX2_FIRST(ways) p[j] = _mm256_sub_ps(t[j], shifter); /* n, exactly */
    XENT_AVX2_FIRST(ways) d[j] = _mm256_fnmadd_ps(p[j], ln2_hi, d[j]);
    XENT_AVX2_FIRST(ways) d[j] = _mm256_fnmadd_ps(p[j], ln2_lo, d[j]); /* r, |r| <= ln2/2 */
    XENT_AVX2_FIRST(ways) p[j] = _mm256_fmadd_ps(_mm256_set1_ps(XENT_EXP_C6), d[j],
                                          _mm256_set1_ps(XENT_EXP_C5));
    XENT_AVX2_FIRST(ways) p[j] = _mm256_fmadd_ps(p[j], d[j], _mm256_set1_ps(XENT_EXP_C4));
    XENT_AVX2_FIRST(ways) p[j] = _mm256_fmadd_ps(p[j], d[j], _mm256_set1_ps(XENT_EXP_C3));
    XENT_AVX2_FIRST(ways) p[j] = _mm256_fmadd_ps(p[j], d[j], _mm256_set1_ps(XENT_EXP_C2));
    XENT_AVX2_FIRST(ways) p[j] = _mm256_fmadd_ps(p[j], d[j], _mm256_set1_ps(1.0f));
    XENT_AVX2_FIRST(ways) p[j] = _mm256_fmadd_ps(p[j], d[j], _mm256_set1_ps(1.0f));
    /* (n + 191) << 23: the shift drops the bits of 1.5*2^23.  For a NaN d the
     * scale is garbage, but p is NaN. */
    XENT_AVX2_FIRST(ways) s[j] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t[j]), 23));
}

/* The terms of a sum of exps need less: a few ulps of error in each change a
 * sum >= 1 (the max's term is 1) by a few ulps at most, far below what a
 * float32 result resolves after the log.  So the sums (not the stored exps)
 * use two operations fewer per vector, a good share of the loop
 * (BENCHMARKS.md, "Decisions in the kernels"): the reduction in one step,
 * r = d - n ln2 with ln2 rounded to float (error |n| * 1.9e-9, at most
 * 2.9e-7 relative for the smallest terms, n = -150), and e^r as
 * 1 + r + r^2 q(r) with q the cubic XENT_TERM_Q* (minimax for the relative
 * error on |r| <= ln2/2: 1.1e-7 with these float32 coefficients).  Measured
 * over every float32 d in [-104, 0] by bench/accuracy.py (BENCHMARKS.md). */
#define XENT_TERM_Q0 0.499992311000824f
#define XENT_TERM_Q1 0.16667115688323975f
#define XENT_TERM_Q2 0.04189033433794975f
#define XENT_TERM_Q3 0.008312501944601536f

/* xent_avx2_exp_parts for the terms of a sum (see above): exp(d) ~= p s 2^-64,
 * except that s = 0 in the lanes where `drop` is all ones (drop may be NULL:
 * none; a constant where this is inlined).  The mask is
 * applied to the bits that become s as soon as they exist, so it is dead after
 * the first few operations: keeping it until the end spills registers.
 * Arguments are clamped at -132.3, not -104: there n = -191, whose bits
 * (n + 191) << 23 make s exactly 0, so -inf and everything below exp(-132.3)
 * add exactly nothing even when many such terms are summed before the final
 * * 2^-64 (between -132.3 and -104 they are the true, tiny exps: s is then a
 * normal 2^-126 .. 2^-86). */
XENT_INLINE void xent_avx2_term_parts(const __m256 d_in[XENT_AVX2_WAYS],
                                      const __m256 drop[XENT_AVX2_WAYS],
                                      __m256 p[XENT_AVX2_WAYS], __m256 s[XENT_AVX2_WAYS],
                                      const int ways)
{
    const __m256 shifter = _mm256_set1_ps(12583103.0f); /* see xent_avx2_exp_parts */
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2 = _mm256_set1_ps(0.693147180559945309f);
    __m256 d[XENT_AVX2_WAYS], t[XENT_AVX2_WAYS];
    int j;
    XENT_AVX2_FIRST(ways) d[j] = _mm256_max_ps(_mm256_set1_ps(-132.3f), d_in[j]);
    XENT_AVX2_FIRST(ways) t[j] = _mm256_fmadd_ps(d[j], log2e, shifter);
    XENT_AVX2_FIRST(ways) p[j] = _mm256_sub_ps(t[j], shifter);
    if (drop)
        XENT_AVX2_FIRST(ways) t[j] = _mm256_andnot_ps(drop[j], t[j]); /* shifted: s = 0 there */
    XENT_AVX2_FIRST(ways) d[j] = _mm256_fnmadd_ps(p[j], ln2, d[j]);
    XENT_AVX2_FIRST(ways) p[j] = _mm256_fmadd_ps(_mm256_set1_ps(XENT_TERM_Q3), d[j],
                                          _mm256_set1_ps(XENT_TERM_Q2));
    XENT_AVX2_FIRST(ways) p[j] = _mm256_fmadd_ps(p[j], d[j], _mm256_set1_ps(XENT_TERM_Q1));
    XENT_AVX2_FIRST(ways) p[j] = _mm256_fmadd_ps(p[j], d[j], _mm256_set1_ps(XENT_TERM_Q0));
    XENT_AVX2_FIRST(ways) p[j] = _mm256_fmadd_ps(p[j], d[j], _mm256_set1_ps(1.0f));
    XENT_AVX2_FIRST(ways) p[j] = _mm256_fmadd_ps(p[j], d[j], _mm256_set1_ps(1.0f));
    XENT_AVX2_FIRST(ways) s[j] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t[j]), 23));
}

/* 2^-64, the last factor of every exp (see xent_avx2_exp_parts). */
#define XENT_AVX2_TWO_M64 5.42101086242752217e-20f

/* Values i .. i+7 of a row stored as float32 (half == 0) or float16 (half == 1,
 * converted exactly by vcvtph2ps).  `half` is a constant wherever this is
 * inlined, so each caller compiles to one kind of load. */
XENT_INLINE __m256 xent_avx2_load(const void *x, ptrdiff_t i, int half)
{
    if (half)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)x + i)));
    return _mm256_loadu_ps((const float *)x + i);
}

/* The 8 floats of v as two vectors of doubles (exact). */
XENT_INLINE void xent_avx2_widen(__m256 v, __m256d *lo, __m256d *hi)
{
    *lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    *hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
}

/* Largest of n float32 values, ignoring NaN as xent_max_f32 does (vmaxps
 * returns its second operand when one is NaN).  Four accumulators: the loop
 * is bound by loads, not by one chain of dependent maxima.  The last values
 * of a row (n >= 8) are read as the row's last whole vector, overlapping ones
 * already seen (a max does not mind): no scalar loop on a short row's tail. */
static float xent_avx2_max_f32(const xent_f32u *x, ptrdiff_t n)
{
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    float m;
    ptrdiff_t i;
    for (i = 0; i + 32 <= n; i += 32) {
        m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
        m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
        m2 = _mm256_max_ps(_mm256_loadu_ps(x + i + 16), m2);
        m3 = _mm256_max_ps(_mm256_loadu_ps(x + i + 24), m3);
    }
    for (; i + 8 <= n; i += 8)
        m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
    if (i < n && n >= 8) {
        m1 = _mm256_max_ps(_mm256_loadu_ps(x + n - 8), m1);
        i = n;
    }
    m = xent_avx2_hmax(_mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
    for (; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

/* Max of a float16 row (as xent_avx2_max_f16) that also leaves the max of
 * each of its chunks of XENT_SUM_CHUNK values in chunk_max[0 .. n_chunks),
 * n_chunks = min(max_chunks, the row's chunks): the sum of exps then skips the
 * bookkeeping of the entries equal to the row's max in the chunks that have
 * none (see xent_avx2_sum_exp_rest).  A chunk is 1 KB: its reduction to one
 * value costs nothing next to the loads. */
XENT_INLINE float xent_avx2_max_f16_chunks(const xent_u16u *x, ptrdiff_t n, float *chunk_max,
                                           ptrdiff_t max_chunks, ptrdiff_t *n_chunks)
{
    float m = -INFINITY, mc;
    ptrdiff_t b, c = 0;
    for (b = 0; b < n; b += XENT_SUM_CHUNK, c++) {
        mc = xent_avx2_max_f16(x + b, n - b < XENT_SUM_CHUNK ? n - b : XENT_SUM_CHUNK);
        if (c < max_chunks)
            chunk_max[c] = mc;
        m = mc > m ? mc : m;
    }
    *n_chunks = c < max_chunks ? c : max_chunks;
    return m;
}

/* 8 * ways values from x (storage `half`) as vectors v[j]; for a tail
 * (len < 8 * ways) the values past len are -inf, which add nothing to a sum of
 * exps. */
XENT_INLINE void xent_avx2_load_step(const void *x, ptrdiff_t len, int half,
                                     __m256 v[XENT_AVX2_WAYS], const int ways)
{
    int j;
    if (len >= 8 * ways) {
        XENT_AVX2_FIRST(ways) v[j] = xent_avx2_load(x, 8 * j, half);
    } else if (half) {
        /* padded with float16 -inf (0xFC00) and converted as whole vectors: a
         * scalar conversion of the tail costs as much as a short row's sum.
         * The padding is stored as vectors, then the values copied over it. */
        uint16_t pad[XENT_AVX2_STEP];
        ptrdiff_t i;
        _mm256_storeu_si256((__m256i *)pad, _mm256_set1_epi16((short)0xFC00));
        _mm256_storeu_si256((__m256i *)(pad + 16), _mm256_set1_epi16((short)0xFC00));
        for (i = 0; i < len; i++)
            pad[i] = ((const xent_u16u *)x)[i];
        XENT_AVX2_FIRST(ways) v[j] = xent_avx2_load(pad, 8 * j, 1);
    } else {
        /* masked loads (nothing is read past len), -inf in the other lanes */
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        XENT_AVX2_FIRST(ways) {
            __m256i in = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)len - 8 * j), lane);
            v[j] = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY),
                                    _mm256_maskload_ps((const float *)x + 8 * j, in),
                                    _mm256_castsi256_ps(in));
        }
    }
}

/* One step (8 * ways values, fewer for a tail) of sum_exp_rest: the exps of
 * v - m where v != m (NaN included, so it reaches the sum), times 2^64, vector
 * j added into acc[j % 2]; returns how many lanes have v == m.  With e != NULL
 * the exps of every value are stored into e (1 where v == m).  With
 * none_equal (and no e) the step is known to hold no entry equal to m, and
 * skips that bookkeeping.  Always inlined, with e, none_equal and ways
 * constants, so each caller compiles to one kind of step.
 *
 * The sums are kept scaled by 2^64: a term is then just p * s (exact, and
 * >= 2^-86, no subnormal), one FMA into the accumulator; the chunk's sum is
 * scaled back once.  Registers are the limit of this loop (four vectors of
 * three live values each, out of sixteen), so the count goes through a
 * general-purpose register (the compare masks' sign bits, popcnt). */
XENT_INLINE ptrdiff_t xent_avx2_rest_step(const void *x, ptrdiff_t len, int half, __m256 vm,
                                          xent_f32u *e, __m256 acc[2], const int none_equal,
                                          const int ways)
{
    __m256 v[XENT_AVX2_WAYS], eq[XENT_AVX2_WAYS], p[XENT_AVX2_WAYS], s[XENT_AVX2_WAYS];
    unsigned bits = 0;
    int j;
    xent_avx2_load_step(x, len, half, v, ways);
    if (none_equal && !e) { /* a chunk known to hold no entry equal to m */
        XENT_AVX2_FIRST(ways) v[j] = _mm256_sub_ps(v[j], vm);
        xent_avx2_term_parts(v, NULL, p, s, ways);
        XENT_AVX2_FIRST(ways) acc[j % 2] = _mm256_fmadd_ps(p[j], s[j], acc[j % 2]);
        return 0;
    }
    XENT_AVX2_FIRST(ways) {
        eq[j] = _mm256_cmp_ps(v[j], vm, _CMP_EQ_OQ);
        bits |= (unsigned)_mm256_movemask_ps(eq[j]) << (8 * j);
        v[j] = _mm256_sub_ps(v[j], vm);
    }
    if (e) {
        const __m256 two_m64 = _mm256_set1_ps(XENT_AVX2_TWO_M64);
        float tail[XENT_AVX2_STEP];
        xent_f32u *dst = len >= 8 * ways ? e : tail;
        ptrdiff_t i;
        xent_avx2_exp_parts(v, p, s, ways);
        XENT_AVX2_FIRST(ways) {
            p[j] = _mm256_mul_ps(p[j], s[j]);
            _mm256_storeu_ps(dst + 8 * j, _mm256_mul_ps(p[j], two_m64));
            acc[j % 2] = _mm256_add_ps(acc[j % 2], _mm256_andnot_ps(eq[j], p[j]));
        }
        for (i = 0; dst == tail && i < len; i++)
            e[i] = tail[i];
    } else {
        /* s = 0 leaves the entries equal to m out */
        xent_avx2_term_parts(v, eq, p, s, ways);
        XENT_AVX2_FIRST(ways) acc[j % 2] = _mm256_fmadd_ps(p[j], s[j], acc[j % 2]);
    }
    return _mm_popcnt_u32(bits);
}

/* The steps of one chunk (len <= XENT_SUM_CHUNK values at x) of sum_exp_rest:
 * returns its sum of terms (as float32 lanes) and sets *count to how many
 * entries equal m.  The cache line `ahead` bytes further is asked for as each
 * step is read (see prefetch_ahead in portable/rows.h). */
XENT_INLINE __m256 xent_avx2_rest_chunk(const char *x, ptrdiff_t len, int half, __m256 vm,
                                        xent_f32u *e, ptrdiff_t ahead, const int none_equal,
                                        ptrdiff_t *count)
{
    const ptrdiff_t size = half ? 2 : 4;
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    ptrdiff_t i, n_equal = 0;
    /* whole steps, then the tail one vector at a time (the last one padded):
     * vector i / 8 goes into acc[(i / 8) % 2] either way, so the bits do not
     * depend on where the steps end */
    for (i = 0; i + XENT_AVX2_STEP <= len; i += XENT_AVX2_STEP) {
        const char *xi = x + i * size;
        _mm_prefetch(xi + ahead, _MM_HINT_T0);
        if (!half)
            _mm_prefetch(xi + ahead + 64, _MM_HINT_T0);
        n_equal += xent_avx2_rest_step(xi, XENT_AVX2_STEP, half, vm, e ? e + i : NULL, acc,
                                       none_equal, XENT_AVX2_WAYS);
    }
    for (; i < len; i += 8)
        n_equal += xent_avx2_rest_step(x + i * size, len - i, half, vm, e ? e + i : NULL,
                                       acc + (i / 8) % 2, none_equal, 1);
    *count = n_equal;
    /* back from the 2^64 scale: one rounding, for a sum below 2^-126 only */
    return _mm256_mul_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_set1_ps(XENT_AVX2_TWO_M64));
}

/* sum_exp_rest (see portable/rows.h for the contract) of a float32 (half == 0) or
 * float16 (half == 1) row, optionally storing every exp(x[i] - m) into e (which
 * may be x itself, for float32): the terms of the entries != m summed in float32
 * vectors over chunks of XENT_SUM_CHUNK values, each chunk's lanes added in
 * double; *k = the number of entries equal to m.  chunk_max[c] for c < n_known
 * is the max of chunk c (or NULL, n_known = 0): a chunk whose max is below m
 * holds no entry equal to m and is summed without that bookkeeping (about a
 * sixth of the operations). */
XENT_INLINE double xent_avx2_sum_exp_rest_known(const void *x, int half, ptrdiff_t n, float m,
                                                ptrdiff_t *k, xent_f32u *e, const float *chunk_max,
                                                ptrdiff_t n_known)
{
    const __m256 vm = _mm256_set1_ps(m);
    const ptrdiff_t size = half ? 2 : 4;
    __m256d total = _mm256_setzero_pd(), lo, hi;
    __m128d h;
    ptrdiff_t b, c, count = 0;
    for (b = 0, c = 0; b < n; b += XENT_SUM_CHUNK, c++) {
        ptrdiff_t len = n - b < XENT_SUM_CHUNK ? n - b : XENT_SUM_CHUNK;
        const char *xc = (const char *)x + b * size;
        ptrdiff_t n_equal;
        __m256 acc;
        if (c < n_known && chunk_max[c] < m && !e)
            acc = xent_avx2_rest_chunk(xc, len, half, vm, NULL, n * size, 1, &n_equal);
        else
            acc = xent_avx2_rest_chunk(xc, len, half, vm, e ? e + b : NULL, n * size, 0, &n_equal);
        count += n_equal;
        xent_avx2_widen(acc, &lo, &hi);
        total = _mm256_add_pd(_mm256_add_pd(total, lo), hi);
    }
    *k = count;
    h = _mm_add_pd(_mm256_castpd256_pd128(total), _mm256_extractf128_pd(total, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

/* sum_exp_rest of a float32 or float16 row (see xent_avx2_sum_exp_rest_known). */
XENT_INLINE double xent_avx2_sum_exp_rest(const void *x, int half, ptrdiff_t n, float m,
                                          ptrdiff_t *k, xent_f32u *e)
{
    return xent_avx2_sum_exp_rest_known(x, half, n, m, k, e, NULL, 0);
}

/* Chunks whose max a float16 row keeps on the stack (256 KB of row). */
#define XENT_AVX2_KNOWN_CHUNKS 256

/* The max m of a float16 row and, when it is finite, the sum of its exps
 * (sum_exp_rest: returns rest, sets *k); 0 otherwise. */
XENT_INLINE double xent_avx2_f16_rest(const xent_u16u *x, ptrdiff_t n, float *m, ptrdiff_t *k)
{
    float chunk_max[XENT_AVX2_KNOWN_CHUNKS];
    ptrdiff_t n_known;
    *m = xent_avx2_max_f16_chunks(x, n, chunk_max, XENT_AVX2_KNOWN_CHUNKS, &n_known);
    *k = 0;
    if (!isfinite(*m))
        return 0;
    return xent_avx2_sum_exp_rest_known(x, 1, n, *m, k, NULL, chunk_max, n_known);
}

/* ---- twins of portable/rows.h (float32) and portable/half_rows.h ------------- */

/* xent_avx2_sum_exp_rest_f32 and xent_avx2_sum_exp_rest_store_f32 (common.h) */
XENT_SUM_EXP_REST_TWINS(avx2)

/* xent_avx2_f16_row_parts: row_parts_f32 of the converted row for a unit-stride
 * float16 row read in place (common.h, portable/half_rows.h). */
XENT_F16_ROW_PARTS_TWIN(avx2)

#endif /* XENT_X86_64_V3_ROWS_H */
