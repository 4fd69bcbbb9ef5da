/* Test-only: compile xent's AVX-512 variant for a CPU without AVX-512, so that
 * its hand-written loops (src/xent/include/xent/x86_64_v4/, and the x86_64_v3/
 * code it builds on) run and can be tested on an AVX2 machine.  Used by
 * .ci/avx512_emulated.sh, force-included (-include) before anything else.
 *
 * SIMDe (Debian's libsimde-dev, 0.7.4) supplies most _mm512_* intrinsics in
 * portable/AVX2 code.  The few it lacks (vreduceps among them) are written
 * here lane by lane, and
 * vscalefps is replaced by an exact ldexp (SIMDe's flushes subnormals).  The
 * emulated vrcp14ps keeps 14 bits of 1/x, an error up to the ISA's bound of
 * 2^-14: code that passes with it does not depend on more than the ISA promises. */
#include <math.h>
#include <string.h>
#include <stdint.h>
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <simde/x86/f16c.h>

typedef union { simde__m512 v; float f[16]; } emu_ps;
typedef union { simde__m512d v; double d[8]; } emu_pd;
typedef union { simde__m512i v; int32_t i[16]; } emu_si;

static inline simde__m512 emu_scalef_ps(simde__m512 a, simde__m512 b)
{
    emu_ps x = {a}, y = {b}, r;
    for (int j = 0; j < 16; j++) {
        float e = y.f[j];
        if (isnan(x.f[j]) || isnan(e)) r.f[j] = x.f[j] + e;
        else if (e == INFINITY) r.f[j] = x.f[j] == 0 ? NAN : x.f[j] * INFINITY;
        else if (e == -INFINITY) r.f[j] = isinf(x.f[j]) ? NAN : x.f[j] * 0.0f;
        else {
            float fe = floorf(e);
            int n = fe > 1000 ? 1000 : fe < -1000 ? -1000 : (int)fe;
            r.f[j] = ldexpf(x.f[j], n);
        }
    }
    return r.v;
}
#undef _mm512_scalef_ps
#define _mm512_scalef_ps(a, b) emu_scalef_ps(a, b)

/* vreduceps: x - round(x * 2^M) / 2^M, M = imm >> 4, rounded as imm's low two
 * bits say (0 nearest, 1 down, 2 up, 3 toward zero); +0 for an infinite x,
 * NaN for a NaN (what the hardware gives; xent uses imm = 1, t - floor(t), and
 * imm = 0x51, t - floor(32t)/32). */
static inline simde__m512 emu_reduce_ps(simde__m512 a, int imm)
{
    emu_ps x = {a}, r;
    float scale = ldexpf(1.0f, imm >> 4);
    for (int j = 0; j < 16; j++) {
        float v = x.f[j], y = v * scale, q;
        switch (imm & 3) {
        case 0: q = nearbyintf(y); break;
        case 1: q = floorf(y); break;
        case 2: q = ceilf(y); break;
        default: q = truncf(y);
        }
        r.f[j] = isnan(v) ? v + v : isinf(v) ? 0.0f : v - q / scale;
    }
    return r.v;
}
#define _mm512_reduce_ps(a, imm) emu_reduce_ps(a, imm)

/* vaddps with embedded rounding, for the one mode xent uses (toward -inf):
 * the float sum rounded to nearest, stepped down when it exceeds the exact sum
 * (whose error the TwoSum below gives exactly). */
static inline simde__m512 emu_add_round_ps(simde__m512 a, simde__m512 b, int rounding)
{
    emu_ps x = {a}, y = {b}, r;
    for (int j = 0; j < 16; j++) {
        float s = x.f[j] + y.f[j];
        if ((rounding & 3) != 1) {
            s = NAN; /* other modes not emulated: make any use visible */
        } else if (isfinite(s)) {
            float bv = s - x.f[j], err = (x.f[j] - (s - bv)) + (y.f[j] - bv);
            if (err < 0)
                s = nextafterf(s, -INFINITY);
        }
        r.f[j] = s;
    }
    return r.v;
}
#define _mm512_add_round_ps(a, b, rounding) emu_add_round_ps(a, b, rounding)
/* SIMDe 0.7.4 has the mask_ but not the mask3_ form */
#define _mm512_mask3_fmadd_ps(a, b, c, k) _mm512_mask_mov_ps(c, k, _mm512_fmadd_ps(a, b, c))

static inline int emu_fpclass(float v, int imm)
{
    uint32_t u; memcpy(&u, &v, 4);
    int c = 0;
    if (isnan(v)) c = (u & 0x00400000u) ? 0x01 : 0x80;
    else if (v == 0) c = signbit(v) ? 0x04 : 0x02;
    else if (isinf(v)) c = v > 0 ? 0x08 : 0x10;
    else {
        if (fpclassify(v) == FP_SUBNORMAL) c |= 0x20;
        if (v < 0) c |= 0x40;
    }
    return (c & imm) != 0;
}
static inline simde__mmask16 emu_mask_fpclass_ps_mask(simde__mmask16 k, simde__m512 a, int imm)
{
    emu_ps x = {a}; simde__mmask16 r = 0;
    for (int j = 0; j < 16; j++)
        if (((k >> j) & 1) && emu_fpclass(x.f[j], imm)) r |= (simde__mmask16)(1u << j);
    return r;
}
#define _mm512_mask_fpclass_ps_mask(k, a, imm) emu_mask_fpclass_ps_mask(k, a, imm)

/* vrcp14ps: relative error below 2^-14; here 1/x with its significand cut to
 * 14 bits. */
static inline simde__m512 emu_rcp14_ps(simde__m512 a)
{
    emu_ps x = {a}, r;
    for (int j = 0; j < 16; j++) {
        float q = 1.0f / x.f[j];
        uint32_t u; memcpy(&u, &q, 4);
        if (isfinite(q) && q != 0) u &= ~((1u << 9) - 1u);
        memcpy(&r.f[j], &u, 4);
    }
    return r.v;
}
#define _mm512_rcp14_ps(a) emu_rcp14_ps(a)

static inline simde__m512 emu_mask_i32gather_ps(simde__m512 src, simde__mmask16 k, simde__m512i idx,
                                                const void *base, int scale)
{
    emu_ps s = {src}; emu_si ix = {idx};
    for (int j = 0; j < 16; j++)
        if ((k >> j) & 1)
            memcpy(&s.f[j], (const char *)base + (ptrdiff_t)ix.i[j] * scale, 4);
    return s.v;
}
#define _mm512_mask_i32gather_ps(src, k, idx, base, scale) emu_mask_i32gather_ps(src, k, idx, base, scale)

static inline float emu_reduce_max_ps(simde__m512 a)
{
    emu_ps x = {a}; float m = x.f[0];
    for (int j = 1; j < 16; j++) m = m > x.f[j] ? m : x.f[j];  /* maxps: second operand on NaN */
    return m;
}
#define _mm512_reduce_max_ps(a) emu_reduce_max_ps(a)
/* the hardware sequence's pairing order (halves, then quarters, ...) */
static inline float emu_reduce_add_ps(simde__m512 a)
{
    emu_ps x = {a};
    for (int w = 8; w >= 1; w >>= 1)
        for (int j = 0; j < w; j++) x.f[j] = x.f[j] + x.f[j + w];
    return x.f[0];
}
#define _mm512_reduce_add_ps(a) emu_reduce_add_ps(a)
static inline double emu_reduce_add_pd(simde__m512d a)
{
    emu_pd x = {a};
    for (int w = 4; w >= 1; w >>= 1)
        for (int j = 0; j < w; j++) x.d[j] = x.d[j] + x.d[j + w];
    return x.d[0];
}
#define _mm512_reduce_add_pd(a) emu_reduce_add_pd(a)

/* masked loads read only the lanes of the mask (as the hardware: no fault past them) */
static inline simde__m512 emu_maskz_loadu_ps(simde__mmask16 k, const void *p)
{
    emu_ps r;
    for (int j = 0; j < 16; j++)
        if ((k >> j) & 1) memcpy(&r.f[j], (const float *)p + j, 4);
        else r.f[j] = 0;
    return r.v;
}
#define _mm512_maskz_loadu_ps(k, p) emu_maskz_loadu_ps(k, p)
static inline simde__m256i emu_maskz_loadu_epi16(simde__mmask16 k, const void *p)
{
    union { simde__m256i v; uint16_t h[16]; } r;
    for (int j = 0; j < 16; j++)
        if ((k >> j) & 1) memcpy(&r.h[j], (const uint16_t *)p + j, 2);
        else r.h[j] = 0;
    return r.v;
}
#undef _mm256_maskz_loadu_epi16
#define _mm256_maskz_loadu_epi16(k, p) emu_maskz_loadu_epi16(k, p)
static inline void emu_mask_storeu_ps(void *p, simde__mmask16 k, simde__m512 a)
{
    emu_ps x = {a};
    for (int j = 0; j < 16; j++)
        if ((k >> j) & 1) memcpy((float *)p + j, &x.f[j], 4);
}
#define _mm512_mask_storeu_ps(p, k, a) emu_mask_storeu_ps(p, k, a)
static inline simde__m512 emu_cvtph_ps(simde__m256i h)
{
    union { simde__m256i v; simde__m128i q[2]; } u = {h};
    emu_ps r;
    simde__m256 lo = simde_mm256_cvtph_ps(u.q[0]), hi = simde_mm256_cvtph_ps(u.q[1]);
    memcpy(&r.f[0], &lo, 32); memcpy(&r.f[8], &hi, 32);
    return r.v;
}
#undef _mm512_cvtph_ps
#define _mm512_cvtph_ps(h) emu_cvtph_ps(h)
#define _mm512_mask_cmp_ps_mask(k, a, b, imm) ((simde__mmask16)((k) & _mm512_cmp_ps_mask(a, b, imm)))

static inline simde__m512d emu_cvtps_pd(simde__m256 a)
{
    float f[8]; emu_pd r;
    memcpy(f, &a, 32);
    for (int j = 0; j < 8; j++) r.d[j] = f[j];
    return r.v;
}
#undef _mm512_cvtps_pd
#define _mm512_cvtps_pd(a) emu_cvtps_pd(a)

#undef _mm512_shuffle_f32x4
#define _mm512_shuffle_f32x4(a, b, imm) simde_mm512_shuffle_f32x4(a, b, imm)

/* xent's headers test these to choose their AVX-512 code */
#define __AVX512F__ 1
#define __AVX512DQ__ 1
#define __AVX512BW__ 1
#define __AVX512VL__ 1
#define __AVX512CD__ 1
