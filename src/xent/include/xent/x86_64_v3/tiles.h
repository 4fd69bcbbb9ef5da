/*
 * Few-class cross-entropy rows (see portable/tiles.h) on AVX2+FMA, float32:
 * the x86-64-v3 build only.
 *
 * Why by hand.  Compiled from the portable group_ce for x86-64-v3, a group of
 * rows is slow for its size (BENCHMARKS.md, "Decisions in the kernels"):
 * every logit is read by a scalar load inserted into a vector, and the exp and
 * log are the generic ones (the log with a division and its special cases).
 * Here each half group of 8 rows is transposed through registers (8 rows of
 * up to 16 classes, masked loads so nothing past a row is read, two 8x8
 * transposes), the sum of exps uses the term exp of x86_64_v3/rows.h on four
 * class vectors at a time, and log(k + rest) = log1p((k - 1) + rest) is the
 * branch-free vector log1p of x86_64_v3/pointwise.h: no division, exact for a
 * confident row (k = 1, rest tiny).
 *
 * The results are those of group_ce (portable/tiles.h): ce[j] = (m - x_t) +
 * log(k + rest) and lse[j] = m + log(k + rest) in double for the rows with
 * t[j] >= 0, 0 for the others, and the count of counted rows whose max is not
 * finite (their values are then recomputed by the caller), in two phases (see
 * below).
 */
#ifndef XENT_X86_64_V3_TILES_H
#define XENT_X86_64_V3_TILES_H

/* 8x8 transpose of r[0..7] (r[i] lane j becomes r[j] lane i). */
XENT_INLINE void xent_avx2_transpose8(__m256 r[8])
{
    __m256 u[8], v[8];
    int i;
    for (i = 0; i < 8; i += 2) {
        u[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        u[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (i = 0; i < 8; i += 4) {
        v[i] = _mm256_shuffle_ps(u[i], u[i + 2], 0x44);
        v[i + 1] = _mm256_shuffle_ps(u[i], u[i + 2], 0xEE);
        v[i + 2] = _mm256_shuffle_ps(u[i + 1], u[i + 3], 0x44);
        v[i + 3] = _mm256_shuffle_ps(u[i + 1], u[i + 3], 0xEE);
    }
    for (i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(v[i], v[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(v[i], v[i + 4], 0x31);
    }
}

/* cols[c*stride + j] = x[j*xs + c] for the 8 rows x + j*xs and the classes
 * c < C, and -inf for c = C when C is odd (a term that adds nothing).  Masked
 * loads: nothing past a row's C values is read. */
XENT_INLINE void xent_avx2_columns8(const float *x, ptrdiff_t xs, const ptrdiff_t C,
                                    float *cols, ptrdiff_t stride)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 r[8];
    ptrdiff_t c0, j;
    for (c0 = 0; c0 < C; c0 += 8) {
        __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(C - c0)), lane);
        for (j = 0; j < 8; j++)
            r[j] = C - c0 >= 8 ? _mm256_loadu_ps(x + j * xs + c0)
                               : _mm256_maskload_ps(x + j * xs + c0, keep);
        xent_avx2_transpose8(r);
        for (j = 0; j < 8 && c0 + j < C; j++)
            _mm256_storeu_ps(cols + (c0 + j) * stride, r[j]);
    }
    if (C % 2)
        _mm256_storeu_ps(cols + C * stride, _mm256_set1_ps(-INFINITY));
}

/* ce and lse of 8 rows (see group_ce) from their max m, target logit xt, log of
 * the sum of exps ls and targets tv; returns how many counted rows (t >= 0)
 * have a max that is not finite. */
XENT_INLINE ptrdiff_t xent_avx2_group8_out(__m256 m, __m256 xt, __m256 ls, __m256i tv,
                                           double *ce, double *lse)
{
    __m256d m_lo, m_hi, xt_lo, xt_hi, ls_lo, ls_hi, keep_lo, keep_hi;
    __m256i counted = _mm256_cmpgt_epi32(tv, _mm256_set1_epi32(-1));
    __m256 finite = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), m),
                                  _mm256_set1_ps(INFINITY), _CMP_LT_OQ);
    int special = _mm256_movemask_ps(_mm256_andnot_ps(finite, _mm256_castsi256_ps(counted)));
    xent_avx2_widen(m, &m_lo, &m_hi);
    xent_avx2_widen(xt, &xt_lo, &xt_hi);
    xent_avx2_widen(ls, &ls_lo, &ls_hi);
    /* the row mask, widened to 64-bit lanes (sign extension keeps all ones) */
    keep_lo = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(counted)));
    keep_hi = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(counted, 1)));
    _mm256_storeu_pd(ce, _mm256_and_pd(keep_lo, _mm256_add_pd(_mm256_sub_pd(m_lo, xt_lo), ls_lo)));
    _mm256_storeu_pd(ce + 4, _mm256_and_pd(keep_hi, _mm256_add_pd(_mm256_sub_pd(m_hi, xt_hi), ls_hi)));
    _mm256_storeu_pd(lse, _mm256_and_pd(keep_lo, _mm256_add_pd(m_lo, ls_lo)));
    _mm256_storeu_pd(lse + 4, _mm256_and_pd(keep_hi, _mm256_add_pd(m_hi, ls_hi)));
    return _mm_popcnt_u32((unsigned)special);
}

/*
 * Two phases, so that consecutive groups overlap: the log and the output of a
 * group are a chain of ~25 dependent operations, which the out-of-order window
 * cannot overlap with the next group's work when they follow each other.  The
 * first phase (per group) leaves, for each block of 8 rows j..j+7, the floats
 * m (the rows' max) and x_t (the target's logit) in the 64 bytes of
 * ce[j..j+7], and y = (k - 1) + rest in the first 32 bytes of lse[j..j+7]; the
 * second phase (over all the groups of a tile) turns them into ce and lse with
 * independent iterations.
 */

/* Phase one: group_ce (portable/tiles.h) of the XENT_GROUP = 16 rows x + j*xs of
 * C classes (unit stride), targets t[0..15], up to the log: two halves of 8
 * rows, one row per lane, whose class vectors are interleaved (half h of class
 * c is vector 2c + h) so that every step of four vectors holds independent exp
 * chains of both.  Returns 0 (the second phase counts the special rows). */
XENT_INLINE ptrdiff_t xent_avx2_group_ce_f32(const float *x, ptrdiff_t xs, const ptrdiff_t C,
                                             const int32_t *t, double *ce, double *lse)
{
    const __m256 two_m64 = _mm256_set1_ps(XENT_AVX2_TWO_M64), one = _mm256_set1_ps(1.0f);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const ptrdiff_t n_vec = 2 * (C + C % 2); /* a multiple of XENT_AVX2_WAYS */
    float cols[2 * (XENT_ROWS_MAX_C + 1) * 8];
    __m256i cnt[2];
    __m256 m[2], acc[2];
    ptrdiff_t c, v0;
    int h, j;
    /* the rows four groups further, asked for now: the hardware prefetcher
     * stops at page boundaries, and a group's arithmetic is short enough that
     * waiting on memory at its first load shows (a prefetch never faults) */
    for (j = 0; j < 16; j++) {
        _mm_prefetch((const char *)(x + (4 * XENT_GROUP + j) * xs), _MM_HINT_T0);
        _mm_prefetch((const char *)(x + (4 * XENT_GROUP + j) * xs + C - 1), _MM_HINT_T0);
    }
    for (h = 0; h < 2; h++) {
        xent_avx2_columns8(x + 8 * h * xs, xs, C, cols + 8 * h, 16);
        cnt[h] = _mm256_setzero_si256();
        m[h] = _mm256_set1_ps(-INFINITY);
        acc[h] = _mm256_setzero_ps();
    }
    for (c = 0; c < C; c++)
        for (h = 0; h < 2; h++) /* NaN ignored: the second operand wins */
            m[h] = _mm256_max_ps(_mm256_loadu_ps(cols + (2 * c + h) * 8), m[h]);
    for (h = 0; h < 2; h++) {
        /* x_t gathered from the columns (0 for a row not counted, t < 0) */
        __m256i tv = _mm256_loadu_si256((const __m256i *)(t + 8 * h));
        __m256 xt = _mm256_mask_i32gather_ps(
            _mm256_setzero_ps(), cols + 8 * h, _mm256_add_epi32(_mm256_slli_epi32(tv, 4), lane),
            _mm256_castsi256_ps(_mm256_cmpgt_epi32(tv, _mm256_set1_epi32(-1))), 4);
        _mm256_storeu_ps((float *)(ce + 8 * h), m[h]);
        _mm256_storeu_ps((float *)(ce + 8 * h) + 8, xt);
    }
    /* the terms below m, four vectors at a time: vector v0 + j is of half j % 2 */
    for (v0 = 0; v0 < n_vec; v0 += XENT_AVX2_WAYS) {
        __m256 d[XENT_AVX2_WAYS], eq[XENT_AVX2_WAYS], p[XENT_AVX2_WAYS], s[XENT_AVX2_WAYS];
        XENT_AVX2_EACH {
            __m256 v = _mm256_loadu_ps(cols + (v0 + j) * 8);
            eq[j] = _mm256_cmp_ps(v, m[j % 2], _CMP_EQ_OQ);
            cnt[j % 2] = _mm256_sub_epi32(cnt[j % 2], _mm256_castps_si256(eq[j]));
            d[j] = _mm256_sub_ps(v, m[j % 2]);
        }
        xent_avx2_term_parts(d, eq, p, s, XENT_AVX2_WAYS);
        /* kept scaled by 2^64 as in the row sums (x86_64_v3/rows.h): one FMA a term */
        XENT_AVX2_EACH acc[j % 2] = _mm256_fmadd_ps(p[j], s[j], acc[j % 2]);
    }
    /* log(k + rest) will be log1p((k - 1) + rest): exactly log1p(rest) when k == 1 */
    for (h = 0; h < 2; h++)
        _mm256_storeu_ps((float *)(lse + 8 * h),
                         _mm256_fmadd_ps(acc[h], two_m64,
                                         _mm256_sub_ps(_mm256_cvtepi32_ps(cnt[h]), one)));
    return 0;
}

/* Phase two, over the n rows (a multiple of 8) left by xent_avx2_group_ce_f32:
 * ce and lse of each row (see group_ce); returns how many counted rows (t >= 0)
 * have a max that is not finite. */
static ptrdiff_t xent_avx2_group_finish_f32(ptrdiff_t n, const int32_t *t, double *ce,
                                            double *lse)
{
    ptrdiff_t j, n_special = 0;
    for (j = 0; j < n; j += 8) {
        __m256 m = _mm256_loadu_ps((const float *)(ce + j));
        __m256 xt = _mm256_loadu_ps((const float *)(ce + j) + 8);
        __m256 ls = xent_avx2_log1p_ps(_mm256_loadu_ps((const float *)(lse + j)));
        n_special += xent_avx2_group8_out(m, xt, ls, _mm256_loadu_si256((const __m256i *)(t + j)),
                                          ce + j, lse + j);
    }
    return n_special;
}

#endif /* XENT_X86_64_V3_TILES_H */
