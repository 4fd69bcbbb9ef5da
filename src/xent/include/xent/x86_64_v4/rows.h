/*
 * The hottest float32 loops, written with AVX-512 intrinsics (only in the
 * x86-64-v4 build of the kernels; the other builds use x86_64_v3/rows.h or the
 * portable C of portable/rows.h).
 *
 * Why by hand: the sum of exp(x - max) over a row is bound by the number of
 * vector operations per element, and AVX-512 has instructions the compiler
 * does not reach from portable C: vscalefps (p * 2^n in one operation, with
 * correct rounding into subnormals, no integer exponent arithmetic), vreduceps
 * (t - floor(t) in one operation) and masked adds (the "entry equals the max"
 * bookkeeping of sum_exp_rest costs one compare instead of selects).
 *  - Stored exps (softmax, log_softmax, gradients): Cody-Waite reduction and a
 *    minimax polynomial of degree 6, 13 operations per 16 values, within an
 *    ulp (xent_avx512_exp_nonpos_ps, the bits of xent_exp_nonpos_f32).
 *  - Sums of exps that store nothing (losses, logsumexp): base-2 terms from a
 *    32-entry table and a quadratic, 8 operations per 16 with their addition
 *    (xent_avx512_add_exp2), and the row's max taken in the same pass as its
 *    sum (xent_avx512_max_rest); float16 rows in blocks of 8 vectors, step by
 *    step (xent_avx512_term_block).  Together they bring a float16 row's
 *    cross-entropy close to the time of reading it (BENCHMARKS.md,
 *    "Decisions in the kernels").
 *
 * The twins of portable/rows.h's functions are at the end; select.h includes
 * this header in the x86-64-v4 build and maps the generic names to them.
 */
#ifndef XENT_X86_64_V4_ROWS_H
#define XENT_X86_64_V4_ROWS_H

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
        const xent_u16u *h = (const xent_u16u *)x + i;
        if (valid == (__mmask16)0xFFFF)
            return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(valid, h));
    }
    if (valid == (__mmask16)0xFFFF)
        return _mm512_loadu_ps((const float *)x + i);
    return _mm512_maskz_loadu_ps(valid, (const float *)x + i);
}

/* One chunk (len <= XENT_SUM_CHUNK values) of sum_exp_rest: the terms of the
 * entries != m added into *s, those entries counted in *cnt; with e != NULL also
 * e[i] = exp(x[i] - m) for every i (1 where x[i] == m).  Always inlined, so the
 * e == NULL calls compile without the stores.  The cache line `ahead` values
 * further is prefetched, one per vector (see prefetch_ahead in portable/rows.h). */
XENT_INLINE void xent_avx512_rest_chunk(const void *x, int half, ptrdiff_t len, __m512 vm,
                                        xent_f32u *e, __m512 *s, __m512 *cnt, ptrdiff_t ahead)
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

/* ---- the terms of a sum of exps ----------------------------------------------
 * A sum of exps needs less than the stored exps, so the sums (not the stored
 * exps) take a cheaper route, in base 2, with a table:
 *   t = x*L - hi, one FMA, where L = log2(e) rounded to float and m*L = hi + lo
 *     exactly (hi a float, lo tiny): t + lo is (x - m)*L with one rounding, and
 *     the factor 2^-lo, the same for every term, is applied to the row's sum
 *     once, in double (xent_avx512_term_split);
 *   t = k + j/32 + r with k = floor(t), j in 0..31 and r in [0, 1/32): r by
 *     vreduceps, j from the low bits of t + 1.5*2^18 added rounding down;
 *   2^t = T[j] * 2^k * p(r): T[j] = 2^(j/32) rounded to float, from a
 *     32-entry table in two registers (vpermt2ps), p the degree-2 polynomial
 *     of least relative error for 2^r on [0, 1/32) with p(0) = 1 (6.6e-8,
 *     XENT_EXP2_C*), 2^k by vscalefps (exact, or a subnormal rounded once,
 *     0 for t = -inf, where vreduceps gives r = 0; NaN stays NaN), and the
 *     product T[j] * (p * 2^k) fused into the FMA that adds it to the sum.
 * 8 vector operations per 16 terms with their addition, where the stored exps
 * take 13 before theirs.  Why: the FMA pipes bounded the loop (the float16
 * conversion, vreduceps and vscalefps take the other two; now both sides carry
 * about as much), and this term needs 4 FMAs and a permute there, where a
 * degree-5 polynomial on [0, 1) took 7 FMAs; float16 and float32 rows both got
 * faster (BENCHMARKS.md, "Decisions in the kernels").
 * The price is accuracy in the small terms: t is rounded to float, half an ulp
 * of t, a relative error of up to |t| * 4e-8 in the term (as when x - m is
 * rounded, for float32 rows).  Measured over every float32 x in [-104, 0] by
 * bench/accuracy.py (BENCHMARKS.md): the table and the polynomial add about an
 * ulp to that.  A sum is off by the weighted mean of its terms' errors, below
 * 1e-6 relative even when every term sits at x = -17, and a cross-entropy or
 * logsumexp by about that much after the log. */
#define XENT_LOG2E_F 1.44269504088896341f
#define XENT_EXP2_C1 0.6931237578392029f
#define XENT_EXP2_C2 0.24265269935131073f

/* 2^(j/32) rounded to float (checked by bench/accuracy.py) */
static const float xent_exp2_table32[32] __attribute__((aligned(64))) = {
    1.0f, 1.0218971486541166f, 1.0442737824274138f, 1.0671404006768237f,
    1.0905077326652577f, 1.1143867425958924f, 1.1387886347566916f, 1.1637248587775775f,
    1.1892071150027210f, 1.2152473599804690f, 1.2418578120734840f, 1.2690509571917332f,
    1.2968395546510096f, 1.3252366431597413f, 1.3542555469368927f, 1.3839098819638320f,
    1.4142135623730951f, 1.4451808069770467f, 1.4768261459394993f, 1.5091644275934228f,
    1.5422108254079407f, 1.5759808451078865f, 1.6104903319492543f, 1.6457554781539649f,
    1.6817928305074290f, 1.7186192981224779f, 1.7562521603732995f, 1.7947090750031072f,
    1.8340080864093424f, 1.8741676341102997f, 1.9152065613971472f, 1.9571441241754002f};

/* The largest |m| for which the sums take the base-2 terms: m*L = hi + lo with
 * |lo| <= 2^-8, so 2^-lo is a short series; rows of larger logits (float32
 * only) take the stored exps' arithmetic instead. */
#define XENT_TERM_MAX_ABS_M 65536.0f

/* Splits m*L (exact in double) into hi = float(m*L) and lo; returns 2^-lo,
 * by its Taylor series to the fourth power (|lo ln 2| < 2^-8: error < 1e-15). */
XENT_INLINE double xent_avx512_term_split(float m, float *hi)
{
    double ml = (double)m * (double)XENT_LOG2E_F, y;
    *hi = (float)ml;
    y = (ml - (double)*hi) * 0.69314718055994531;
    return 1.0 - y * (1.0 - y * (0.5 - y * (1.0 / 6.0 - y * (1.0 / 24.0))));
}

/* acc + 2^t (see above) in the lanes of `lanes`, acc in the others, as
 * acc + T[j] * (p(r) * 2^k) with one rounding.  Valid for every t <= 2^-8
 * (-inf adds 0, NaN gives NaN): below -2^17 the low bits of t + 1.5*2^18 no
 * longer give j, but T[any j] * 2^k is then 0. */
XENT_INLINE __m512 xent_avx512_mask_add_exp2(__m512 acc, __mmask16 lanes, __m512 t)
{
    const __m512 lo = _mm512_load_ps(xent_exp2_table32), hi = _mm512_load_ps(xent_exp2_table32 + 16);
    /* 1.5*2^18 has ulp 1/32: rounded down, the sum's low 5 bits are j */
    __m512 s = _mm512_add_round_ps(t, _mm512_set1_ps(393216.0f),
                                   _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_reduce_ps(t, (5 << 4) | _MM_FROUND_TO_NEG_INF), p; /* t - floor(32t)/32 */
    __m512 table = _mm512_permutex2var_ps(lo, _mm512_castps_si512(s), hi);
    p = _mm512_fmadd_ps(_mm512_set1_ps(XENT_EXP2_C2), r, _mm512_set1_ps(XENT_EXP2_C1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    /* vscalefps takes floor(t) = k */
    return _mm512_mask3_fmadd_ps(table, _mm512_scalef_ps(p, t), acc, lanes);
}

/* acc + 2^t in every lane (the constant mask compiles to a plain FMA). */
XENT_INLINE __m512 xent_avx512_add_exp2(__m512 acc, __m512 t)
{
    return xent_avx512_mask_add_exp2(acc, (__mmask16)0xFFFF, t);
}

/* The max of the next chunk, taken along a chunk's sum (see xent_avx512_max_rest):
 * the int16 max (and min) of float16 bits (see xent_avx2_max_f16), or the
 * float32 max. */
typedef struct {
    __m256i hi, lo;
    __m512 m;
} xent_avx512_ahead_max;

XENT_INLINE void xent_avx512_ahead_start(xent_avx512_ahead_max *a)
{
    a->hi = _mm256_set1_epi16(INT16_MIN);
    a->lo = _mm256_set1_epi16(INT16_MAX);
    a->m = _mm512_set1_ps(-INFINITY);
}

/* Takes the 16 values at x + i into a.  For float16, the int16 max of the bits,
 * and their min only with track_min (a constant where inlined): the min decides
 * only chunks whose every entry is negative, which matters only while the max
 * so far is <= 0, and taking it along slows a float16 row measurably
 * (BENCHMARKS.md, "Decisions in the kernels"). */
XENT_INLINE void xent_avx512_ahead_take(xent_avx512_ahead_max *a, const void *x, ptrdiff_t i,
                                        int half, const int track_min)
{
    if (half) {
        __m256i v = _mm256_loadu_si256((const __m256i *)((const xent_u16u *)x + i));
        a->hi = _mm256_max_epi16(a->hi, v);
        if (track_min)
            a->lo = _mm256_min_epi16(a->lo, v);
    } else { /* vmaxps returns its second operand on NaN */
        a->m = _mm512_max_ps(_mm512_loadu_ps((const float *)x + i), a->m);
    }
}

/* The max of x[0 .. n), ignoring NaN, once x[0 .. i) (i a multiple of 16) is in
 * a (taken with track_min as given to xent_avx512_ahead_take); or, for float16
 * values that are all negative while m > 0, -inf (which, like their max, is
 * below m: all the caller needs to know). */
XENT_INLINE float xent_avx512_ahead_finish(xent_avx512_ahead_max *a, const void *x, ptrdiff_t i,
                                           ptrdiff_t n, int half, float m, const int track_min)
{
    if (half) {
        int16_t hi;
        xent_avx2_f16_bits_rest((const xent_u16u *)x, i, n, &a->hi, &a->lo);
        if (track_min)
            return xent_f16_max_from_bits(a->hi, a->lo, (const xent_u16u *)x, n);
        hi = xent_avx2_hmax_epi16(a->hi);
        if (xent_f16_hi_is_max(hi))
            return xent_half_to_float((uint16_t)hi);
        if (hi < 0 && m > 0) /* every entry < 0 (-0 included) or a NaN */
            return -INFINITY;
        /* a NaN with its sign bit clear, or (without track_min, m <= 0) entries
         * all negative: their max as floats */
        return xent_f16_max_as_floats((const xent_u16u *)x, n);
    }
    (void)m;
    for (; i < n; i += 16) {
        __mmask16 valid = n - i >= 16 ? (__mmask16)0xFFFF : xent_avx512_head_mask(n - i);
        a->m = _mm512_mask_max_ps(a->m, valid, xent_avx512_load(x, i, 0, valid), a->m);
    }
    return _mm512_reduce_max_ps(a->m);
}

/* Largest of len values (a chunk, or a row), ignoring NaN (as xent_max_f32). */
XENT_INLINE float xent_avx512_max(const void *x, int half, ptrdiff_t len)
{
    xent_avx512_ahead_max a;
    ptrdiff_t i;
    if (half)
        return xent_avx2_max_f16((const xent_u16u *)x, len);
    xent_avx512_ahead_start(&a);
    for (i = 0; i + 16 <= len; i += 16)
        xent_avx512_ahead_take(&a, x, i, 0, 0);
    return xent_avx512_ahead_finish(&a, x, i, len, 0, 0, 0);
}

/* 16 values at x + i of a chunk's sum in base-2 terms (see
 * xent_avx512_term_chunk). */
XENT_INLINE void xent_avx512_term_step(const void *x, ptrdiff_t i, int half, __m512 vm,
                                       __m512 vl, __m512 vhi, __m512 *acc, ptrdiff_t *n_equal,
                                       ptrdiff_t ahead, const int none_equal)
{
    __m512 v = xent_avx512_load(x, i, half, 0xFFFF), t;
    _mm_prefetch((const char *)x + (i + ahead) * (half ? 2 : 4), _MM_HINT_T0); /* see prefetch_ahead */
    t = _mm512_fmsub_ps(v, vl, vhi);
    if (none_equal) {
        *acc = xent_avx512_add_exp2(*acc, t);
    } else {
        /* entries below m (and NaN, which must reach the sum) */
        __mmask16 below = _mm512_cmp_ps_mask(v, vm, _CMP_NEQ_UQ);
        *acc = xent_avx512_mask_add_exp2(*acc, below, t);
        *n_equal += 16 - _mm_popcnt_u32(below);
    }
}

/* Vectors per block of xent_avx512_term_block. */
#define XENT_AVX512_TERM_BLOCK 8

/* The terms of XENT_AVX512_TERM_BLOCK whole vectors at x + i (none equal to
 * the max), added into *acc0 and *acc1 (alternate vectors): the block's
 * arguments first, then its terms.  Why: a term is a long chain of latency,
 * and issued one vector after another, such chains fill the scheduler with
 * operations that wait, leaving the pipes idle; with 8 independent chains in
 * sight the compiler interleaves their steps, and float16 rows got faster.
 * Float16 rows only: float32 rows, which convert nothing, were slower with it
 * (BENCHMARKS.md, "Decisions in the kernels"). */
XENT_INLINE void xent_avx512_term_block(const void *x, ptrdiff_t i, int half, __m512 vl,
                                        __m512 vhi, __m512 *acc0, __m512 *acc1, ptrdiff_t ahead)
{
    __m512 t[XENT_AVX512_TERM_BLOCK];
    int v;
    for (v = 0; v < XENT_AVX512_TERM_BLOCK; v++) {
        ptrdiff_t j = i + 16 * v;
        _mm_prefetch((const char *)x + (j + ahead) * (half ? 2 : 4), _MM_HINT_T0); /* see prefetch_ahead */
        t[v] = _mm512_fmsub_ps(xent_avx512_load(x, j, half, 0xFFFF), vl, vhi);
    }
    for (v = 0; v < XENT_AVX512_TERM_BLOCK; v += 2) {
        *acc0 = xent_avx512_add_exp2(*acc0, t[v]);
        *acc1 = xent_avx512_add_exp2(*acc1, t[v + 1]);
    }
}

/* One chunk (len <= XENT_SUM_CHUNK values) of sum_exp_rest in base-2 terms:
 * 2^(x*L - hi) over the entries != m added into *s, the entries == m counted
 * into *count.  With none_equal (a constant where inlined) the chunk is known
 * to hold no entry equal to m, and the compares are skipped.  With next !=
 * NULL, *next_max = the max of the next chunk's next_len <= len values (or
 * -inf when it is below m, see xent_avx512_ahead_finish), read along with
 * this chunk's (the loads and integer maxima fit beside the arithmetic, where
 * a pass of their own would not).  Without compares, whole blocks of vectors
 * go through xent_avx512_term_block. */
XENT_INLINE void xent_avx512_term_chunk(const void *x, int half, ptrdiff_t len, float m,
                                        __m512 vhi, __m512 *s, ptrdiff_t *count,
                                        ptrdiff_t ahead, const int none_equal,
                                        const void *next, ptrdiff_t next_len, float *next_max,
                                        const int track_min)
{
    const __m512 vl = _mm512_set1_ps(XENT_LOG2E_F), vm = _mm512_set1_ps(m);
    /* Vector j (values 16j .. 16j + 15) goes into acc when j is even, into acc1
     * when odd, whichever loop takes it: the bits of the sum do not depend on
     * where the loops split, so float16 rows (blocks) and float32 rows (no
     * blocks) agree. */
    __m512 acc = *s, acc1 = _mm512_setzero_ps();
    xent_avx512_ahead_max a;
    /* the first `both` values of this chunk are read along with the next's */
    ptrdiff_t i = 0, n_equal = 0, both = next ? next_len & ~(ptrdiff_t)15 : 0;
    if (next)
        xent_avx512_ahead_start(&a);
    if (none_equal && half) {
        const ptrdiff_t block = 16 * XENT_AVX512_TERM_BLOCK;
        for (; i + block <= len; i += block) {
            ptrdiff_t j;
            if (i + block <= both) { /* unrolled: a bound test per vector (hoisted or not) was slower */
                for (j = 0; j < block; j += 16)
                    xent_avx512_ahead_take(&a, next, i + j, half, track_min);
            } else {
                for (j = i; j < i + block && j < both; j += 16)
                    xent_avx512_ahead_take(&a, next, j, half, track_min);
            }
            xent_avx512_term_block(x, i, half, vl, vhi, &acc, &acc1, ahead);
        }
    }
    for (; i + 32 <= len; i += 32) {
        if (i < both)
            xent_avx512_ahead_take(&a, next, i, half, track_min);
        if (i + 16 < both)
            xent_avx512_ahead_take(&a, next, i + 16, half, track_min);
        xent_avx512_term_step(x, i, half, vm, vl, vhi, &acc, &n_equal, ahead, none_equal);
        xent_avx512_term_step(x, i + 16, half, vm, vl, vhi, &acc1, &n_equal, ahead, none_equal);
    }
    if (i + 16 <= len) {
        if (i < both)
            xent_avx512_ahead_take(&a, next, i, half, track_min);
        xent_avx512_term_step(x, i, half, vm, vl, vhi, &acc, &n_equal, ahead, none_equal);
        i += 16;
    }
    if (i < len) { /* the last values: an odd vector after a single even one */
        __mmask16 valid = xent_avx512_head_mask(len - i);
        __m512 v = xent_avx512_load(x, i, half, valid);
        __mmask16 below = _mm512_mask_cmp_ps_mask(valid, v, vm, _CMP_NEQ_UQ);
        __m512 t = _mm512_fmsub_ps(v, vl, vhi);
        if (i % 32)
            acc1 = xent_avx512_mask_add_exp2(acc1, below, t);
        else
            acc = xent_avx512_mask_add_exp2(acc, below, t);
        n_equal += (ptrdiff_t)(len - i) - _mm_popcnt_u32(below);
    }
    if (next) /* the next chunk's last values (next_len <= len) */
        *next_max = xent_avx512_ahead_finish(&a, next, both, next_len, half, m, track_min);
    *s = _mm512_add_ps(acc, acc1);
    *count += n_equal;
}

/* The 16 lanes of a chunk's float sum, added to a double accumulator (exact
 * conversion). */
XENT_INLINE __m512d xent_avx512_add_chunk(__m512d total, __m512 s)
{
    total = _mm512_add_pd(total, _mm512_cvtps_pd(_mm512_castps512_ps256(s)));
    return _mm512_add_pd(total, _mm512_cvtps_pd(_mm256_castpd_ps(
                                    _mm512_extractf64x4_pd(_mm512_castps_pd(s), 1))));
}

/* lanes + scale * s, the float lanes s widened to double (see
 * xent_avx512_max_rest). */
XENT_INLINE __m512d xent_avx512_fold(__m512d lanes, __m512 s, double scale)
{
    return _mm512_fmadd_pd(xent_avx512_add_chunk(_mm512_setzero_pd(), s), _mm512_set1_pd(scale),
                           lanes);
}

/* sum_exp_rest (see portable/rows.h for the contract) of a float32 (half == 0) or
 * float16 (half == 1) row, optionally storing every exp(x[i] - m) into e (which
 * may be x itself, for float32): the terms of the entries != m summed in float32
 * vectors over chunks of XENT_SUM_CHUNK values, each chunk's 16 lanes added in
 * double; *k = the number of entries equal to m.  Without e (and for
 * |m| <= XENT_TERM_MAX_ABS_M) the terms are the base-2 ones above. */
XENT_INLINE double xent_avx512_sum_exp_rest(const void *x, int half, ptrdiff_t n, float m,
                                            ptrdiff_t *k, xent_f32u *e)
{
    const __m512 vm = _mm512_set1_ps(m);
    const ptrdiff_t size = half ? 2 : 4;
    __m512d total = _mm512_setzero_pd();
    ptrdiff_t b, counted = 0;
    if (!e && fabsf(m) <= XENT_TERM_MAX_ABS_M) {
        float hi;
        double scale = xent_avx512_term_split(m, &hi);
        const __m512 vhi = _mm512_set1_ps(hi);
        ptrdiff_t n_equal = 0;
        for (b = 0; b < n; b += XENT_SUM_CHUNK) {
            ptrdiff_t len = n - b < XENT_SUM_CHUNK ? n - b : XENT_SUM_CHUNK;
            __m512 s = _mm512_setzero_ps();
            xent_avx512_term_chunk((const char *)x + b * size, half, len, m, vhi, &s, &n_equal,
                                   n, 0, NULL, 0, NULL, 0);
            total = xent_avx512_add_chunk(total, s);
        }
        *k = n_equal;
        return _mm512_reduce_add_pd(total) * scale;
    }
    for (b = 0; b < n; b += XENT_SUM_CHUNK) {
        ptrdiff_t len = n - b < XENT_SUM_CHUNK ? n - b : XENT_SUM_CHUNK;
        const char *xc = (const char *)x + b * size;
        __m512 s = _mm512_setzero_ps(), cnt = _mm512_setzero_ps();
        xent_avx512_rest_chunk(xc, half, len, vm, e ? e + b : NULL, &s, &cnt, n);
        total = xent_avx512_add_chunk(total, s);
        counted += (ptrdiff_t)_mm512_reduce_add_ps(cnt); /* <= 512: exact in float */
    }
    *k = n - counted;
    return _mm512_reduce_add_pd(total);
}

/* ---- the max and the sum in one pass ----------------------------------------
 * A row's max and its sum of exps (without storing them) in one read, instead
 * of a whole pass over the row for the max first (a sizeable share of a
 * float16 row's time; BENCHMARKS.md, "Decisions in the kernels").  Each chunk
 * is summed at the max of the chunks so far, m: a chunk with a larger max
 * moves the sum there, multiplying by exp(m_old - m_new) in double (the
 * entries equal to the old max become terms then); the chunks whose max is
 * below m skip the compares.  A chunk's max is read along with the previous
 * chunk's sum (xent_avx512_term_chunk): taken just before the chunk's own sum
 * instead, it gained nothing.  The sums round otherwise than sum_exp_rest's at the row's
 * max, which is why every sum that stores nothing and has no max given goes
 * through here (max_rest in portable/rows.h). */

/* Whether some of len values is NaN. */
XENT_INLINE int xent_avx512_has_nan(const void *x, int half, ptrdiff_t len)
{
    ptrdiff_t i;
    for (i = 0; i < len; i += 16) {
        __mmask16 valid = len - i >= 16 ? (__mmask16)0xFFFF : xent_avx512_head_mask(len - i);
        __m512 v = xent_avx512_load(x, i, half, valid);
        if (_mm512_mask_cmp_ps_mask(valid, v, v, _CMP_UNORD_Q))
            return 1;
    }
    return 0;
}

/* *m = the max of a float32 (half == 0) or float16 (half == 1) row, ignoring
 * NaN; when it is finite, returns rest and sets *k as sum_exp_rest(x, n, *m)
 * does (a NaN entry makes rest NaN), from one pass over the row (see above).
 * Returns 0 otherwise.  Rows of larger logits than XENT_TERM_MAX_ABS_M take
 * the max and then sum_exp_rest. */
XENT_INLINE double xent_avx512_max_rest(const void *x, int half, ptrdiff_t n, float *m_out,
                                        ptrdiff_t *k)
{
    const ptrdiff_t size = half ? 2 : 4;
    float m = -INFINITY, hi = 0, mc;
    double total = 0, scale = 1;
    ptrdiff_t b, count = 0;
    int nan_seen = 0; /* a NaN in the chunks before the first finite max */
    __m512 vhi = _mm512_setzero_ps();
    /* the sum since the last change of m: of the last chunks in s (float lanes,
     * two chunks at most), of the earlier ones in lanes (double) */
    __m512 s = _mm512_setzero_ps();
    __m512d lanes = _mm512_setzero_pd();
    int chunks_in_s = 0;
    *k = 0;
    mc = xent_avx512_max(x, half, n < XENT_SUM_CHUNK ? n : XENT_SUM_CHUNK);
    for (b = 0; b < n; b += XENT_SUM_CHUNK) {
        ptrdiff_t len = n - b < XENT_SUM_CHUNK ? n - b : XENT_SUM_CHUNK;
        ptrdiff_t next_len = n - b - len < XENT_SUM_CHUNK ? n - b - len : XENT_SUM_CHUNK;
        const char *xc = (const char *)x + b * size, *next = xc + len * size;
        float next_max = -INFINITY;
        if (mc > m) {
            if (!(mc <= XENT_TERM_MAX_ABS_M) || !(mc >= -XENT_TERM_MAX_ABS_M)) {
                /* +inf (not a finite row) or large logits: the max, then the sum */
                *m_out = xent_avx512_max(x, half, n);
                if (!isfinite(*m_out))
                    return 0;
                return xent_avx512_sum_exp_rest(x, half, n, *m_out, k, NULL);
            }
            if (m > -INFINITY) { /* the sum so far, and the entries equal to m, at mc */
                lanes = xent_avx512_fold(lanes, s, scale);
                total = (total + _mm512_reduce_add_pd(lanes) + (double)count) *
                        exp((double)m - (double)mc);
            }
            s = _mm512_setzero_ps();
            chunks_in_s = 0;
            lanes = _mm512_setzero_pd();
            count = 0;
            m = mc;
            scale = xent_avx512_term_split(m, &hi);
            vhi = _mm512_set1_ps(hi);
        }
        if (m == -INFINITY) { /* every entry so far is -inf or NaN */
            nan_seen |= xent_avx512_has_nan(xc, half, len);
            next_max = next_len > 0 ? xent_avx512_max(next, half, next_len) : -INFINITY;
        } else {
            /* none_equal and track_min must be constants: one call for each */
            const int none_equal = mc < m, track_min = half && m <= 0;
            if (!next_len)
                next = NULL;
            if (none_equal && !track_min)
                xent_avx512_term_chunk(xc, half, len, m, vhi, &s, &count, n, 1, next, next_len,
                                       &next_max, 0);
            else if (none_equal)
                xent_avx512_term_chunk(xc, half, len, m, vhi, &s, &count, n, 1, next, next_len,
                                       &next_max, 1);
            else if (!track_min)
                xent_avx512_term_chunk(xc, half, len, m, vhi, &s, &count, n, 0, next, next_len,
                                       &next_max, 0);
            else
                xent_avx512_term_chunk(xc, half, len, m, vhi, &s, &count, n, 0, next, next_len,
                                       &next_max, 1);
        }
        /* into double every second chunk (then as many terms have gone into a
         * float lane as into sum_exp_rest's, about 32), without a horizontal
         * sum: both a horizontal sum at each chunk end and converting every
         * chunk were slower (BENCHMARKS.md, "Decisions in the kernels") */
        if (++chunks_in_s == 2) {
            lanes = xent_avx512_fold(lanes, s, scale);
            s = _mm512_setzero_ps();
            chunks_in_s = 0;
        }
        mc = next_max;
    }
    lanes = xent_avx512_fold(lanes, s, scale);
    *m_out = m;
    *k = count;
    return nan_seen ? (double)NAN : total + _mm512_reduce_add_pd(lanes);
}

/* ---- twins of portable/rows.h (float32) and portable/half_rows.h ------------- */

/* xent_avx512_sum_exp_rest_f32 and xent_avx512_sum_exp_rest_store_f32 (common.h) */
XENT_SUM_EXP_REST_TWINS(avx512)

/* max_rest in one pass over the row (see above). */
static int xent_avx512_max_rest_f32(const xent_f32u *x, ptrdiff_t n, xent_f32u *m, ptrdiff_t *k,
                                    double *rest)
{
    float mf;
    double r = xent_avx512_max_rest(x, 0, n, &mf, k);
    *m = mf;
    if (!isfinite(mf))
        return 0;
    *rest = r;
    return 1;
}

/* The rest of a float16 row with its max, in one pass (xent_avx512_max_rest). */
XENT_INLINE double xent_avx512_f16_rest(const xent_u16u *x, ptrdiff_t n, float *m, ptrdiff_t *k)
{
    return xent_avx512_max_rest(x, 1, n, m, k);
}

/* xent_avx512_f16_row_parts: row_parts_f32 of the converted row for a unit-stride
 * float16 row read in place (common.h, portable/half_rows.h). */
XENT_F16_ROW_PARTS_TWIN(avx512)

#endif /* XENT_X86_64_V4_ROWS_H */
