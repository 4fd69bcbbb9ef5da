/*
 * The max of float16 values on their raw bits (xent_avx2_max_f16), in pieces
 * that the AVX-512 one-pass sums also use to take a chunk's max along with
 * another's sum.  AVX2 instructions, used by the x86-64-v3 build and by the
 * x86-64-v4 one (the loop is bound by its loads, not by the width of its
 * maxima).
 *
 * select.h includes it, before x86_64_v3/rows.h or x86_64_v4/rows.h.
 */
#ifndef XENT_X86_64_V3_F16_MAX_H
#define XENT_X86_64_V3_F16_MAX_H

/* Largest of the 8 lanes. */
XENT_INLINE float xent_avx2_hmax(__m256 m)
{
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* The largest (smallest: a constant where inlined) of the 16 int16 lanes. */
XENT_INLINE int16_t xent_avx2_hext_epi16(__m256i lanes, const int smallest)
{
#define XENT_EXT16(a, b) (smallest ? _mm_min_epi16(a, b) : _mm_max_epi16(a, b))
    __m128i h = XENT_EXT16(_mm256_castsi256_si128(lanes), _mm256_extracti128_si256(lanes, 1));
    h = XENT_EXT16(h, _mm_shuffle_epi32(h, 0x4E));
    h = XENT_EXT16(h, _mm_shuffle_epi32(h, 0xB1));
    h = XENT_EXT16(h, _mm_srli_epi32(h, 16));
#undef XENT_EXT16
    return (int16_t)_mm_cvtsi128_si32(h);
}
#define xent_avx2_hmax_epi16(lanes) xent_avx2_hext_epi16(lanes, 0)
#define xent_avx2_hmin_epi16(lanes) xent_avx2_hext_epi16(lanes, 1)

/* Takes x[i .. n) into the int16 max *hi and min *lo of the bits (see
 * xent_avx2_max_f16): whole vectors, then the last values as the row's last
 * whole vector (n >= 16: overlapping ones already taken, which a max does not
 * mind) or one at a time (a shorter row). */
XENT_INLINE void xent_avx2_f16_bits_rest(const xent_u16u *x, ptrdiff_t i, ptrdiff_t n,
                                         __m256i *hi, __m256i *lo)
{
    for (; i < n && n >= 16; i = i + 16 <= n ? i + 16 : n) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(x + (i + 16 <= n ? i : n - 16)));
        *hi = _mm256_max_epi16(*hi, a);
        *lo = _mm256_min_epi16(*lo, a);
    }
    for (; i < n; i++) {
        __m256i a = _mm256_set1_epi16((short)x[i]);
        *hi = _mm256_max_epi16(*hi, a);
        *lo = _mm256_min_epi16(*lo, a);
    }
}

/* Whether the int16 max hi of float16 bits is their max: some entry >= +0 and
 * no NaN with a clear sign bit (0x7C00 is +inf; see xent_avx2_max_f16). */
XENT_INLINE int xent_f16_hi_is_max(int16_t hi)
{
    return hi >= 0 && hi <= 0x7C00;
}

/* The max of the float16 values x[0 .. n), ignoring NaN, converted and
 * compared as floats: for the rows the bits do not decide. */
XENT_INLINE float xent_f16_max_as_floats(const xent_u16u *x, ptrdiff_t n)
{
    __m256 m = _mm256_set1_ps(-INFINITY);
    float r, f;
    ptrdiff_t i;
    for (i = 0; i + 8 <= n; i += 8)
        m = _mm256_max_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))), m);
    r = xent_avx2_hmax(m);
    for (i = n - n % 8; i < n; i++) {
        f = xent_half_to_float(x[i]);
        r = f > r ? f : r;
    }
    return r;
}

/* The max of the float16 values x[0 .. n), ignoring NaN, from the int16 max
 * hi and min lo of their bits (lanes, see xent_avx2_max_f16). */
XENT_INLINE float xent_f16_max_from_bits(__m256i hi_lanes, __m256i lo_lanes, const xent_u16u *x,
                                         ptrdiff_t n)
{
    int16_t hi = xent_avx2_hmax_epi16(hi_lanes), lo = xent_avx2_hmin_epi16(lo_lanes);
    if (xent_f16_hi_is_max(hi))
        return xent_half_to_float((uint16_t)hi);
    if (hi < 0) /* every entry negative: lo, unless all are NaN (above -inf's bits) */
        return lo <= (int16_t)0xFC00 ? xent_half_to_float((uint16_t)lo) : -INFINITY;
    return xent_f16_max_as_floats(x, n); /* a NaN with its sign bit clear */
}

/* Largest of n float16 values (returned as a float), ignoring NaN.  On the
 * raw bits, 16 per instruction and without converting: a float16 x >= +0 has
 * bits that order like x as int16 (all >= 0), and one < -0 has negative int16
 * bits that order like -x.  So the signed int16 max of the bits is the row's
 * max when it is >= 0 (some entry has its sign bit clear), and otherwise the
 * max is the entry of smallest magnitude: the signed int16 min.  A NaN with
 * its sign bit set never decides either (it is > every negative number's
 * bits, and the min is only taken when every entry is negative); one with it
 * clear would win the int16 max, and then the values are converted and
 * compared as floats instead (a rare row: NaN is an error value).  A row of
 * NaNs alone has the max -inf, as in xent_max_f32.  As in xent_avx2_max_f32,
 * the last values (n >= 16) are read as the row's last whole vector. */
XENT_INLINE float xent_avx2_max_f16(const xent_u16u *x, ptrdiff_t n)
{
    __m256i hi0 = _mm256_set1_epi16(INT16_MIN), hi1 = hi0;
    __m256i lo0 = _mm256_set1_epi16(INT16_MAX), lo1 = lo0;
    ptrdiff_t i;
    for (i = 0; i + 32 <= n; i += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(x + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(x + i + 16));
        hi0 = _mm256_max_epi16(hi0, a);
        lo0 = _mm256_min_epi16(lo0, a);
        hi1 = _mm256_max_epi16(hi1, b);
        lo1 = _mm256_min_epi16(lo1, b);
    }
    xent_avx2_f16_bits_rest(x, i, n, &hi0, &lo0);
    return xent_f16_max_from_bits(_mm256_max_epi16(hi0, hi1), _mm256_min_epi16(lo0, lo1), x, n);
}

#endif /* XENT_X86_64_V3_F16_MAX_H */
