/*
 * The selector: the one header that looks at the instruction set the
 * compiler targets (__AVX512F__, __AVX2__, __FMA__, __F16C__...).  It
 *   1. names the build's level (XENT_ISA_*),
 *   2. chooses whether the portable exp fuses its multiply-adds,
 *   3. includes the hand-written code of that level (x86_64_v3/, x86_64_v4/),
 *   4. maps each generic name the portable code calls (xent_sum_exp_rest_f32,
 *      ...) to one implementation: xent_avx512_*, xent_avx2_*, xent_f16c_* or
 *      xent_portable_*, the portable twin every hand-written function has,
 *   5. lists the hand-written paths compiled in (xent_simd_feature, reported
 *      by simd_features() of each kernel module and asserted per level by
 *      tests/test_simd_features.py), so a variant cannot fall back silently.
 * kernels.h includes it before the per-type templates (portable/).
 */
#ifndef XENT_SELECT_H
#define XENT_SELECT_H

#include "common.h"

/* ---- 1. the level ------------------------------------------------------------
 * setup.py builds the kernels three times: -march=x86-64-v4, -march=x86-64-v3
 * and the compiler's default (portable C).  A build for a CPU with F16C but
 * not AVX2 converts float16 rows 8 at a time and is otherwise portable. */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && \
    defined(__AVX512VL__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define XENT_ISA_X86_64_V4 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define XENT_ISA_X86_64_V3 1
#elif defined(__F16C__)
#define XENT_ISA_F16C 1
#endif

/* ---- 2. multiply-adds of the portable exp -------------------------------------- */
/* a*b + c in the exp's reduction and polynomial.  Where the build has FMA
 * instructions it is fused (one rounding), as the hand-written exps of
 * x86_64_v3/rows.h and x86_64_v4/rows.h compute it, so that the portable exp
 * (portable/math.h) has
 * their bits; elsewhere it is a product and a sum, which no compiler fuses
 * without FMA instructions.  Written out instead of left to the compiler:
 * whether a*b + c is contracted into an FMA is an option (-ffp-contract: GCC
 * fuses by default, Clang within one expression, =off never), and the bits of
 * the portable exp, and the claims that other exps have them, must not depend
 * on it.  (fmaf/fma compile to one instruction where the FMA is there, and
 * vectorise.) */
#if defined(__FMA__) || defined(__FP_FAST_FMAF) || defined(__ARM_FEATURE_FMA)
#define XENT_FMAF(a, b, c) fmaf((a), (b), (c))
#define XENT_FMA_FEATURE "fma_exp",
#else
#define XENT_FMAF(a, b, c) ((a) * (b) + (c))
#define XENT_FMA_FEATURE
#endif
#if defined(__FMA__) || defined(__FP_FAST_FMA) || defined(__ARM_FEATURE_FMA)
#define XENT_FMA(a, b, c) fma((a), (b), (c))
#else
#define XENT_FMA(a, b, c) ((a) * (b) + (c))
#endif

/* ---- 3. the implementations ------------------------------------------------------
 * The scalar exp, log and float16 conversions every implementation builds on,
 * then the build's hand-written code. */
#include "portable/math.h"
#include "portable/half.h"
#if defined(XENT_ISA_X86_64_V4) || defined(XENT_ISA_X86_64_V3) || defined(XENT_ISA_F16C)
#include <immintrin.h>
#include "x86_64_v3/half.h"
#endif
#if defined(XENT_ISA_X86_64_V4)
#include "x86_64_v3/f16_max.h"
#include "x86_64_v4/half.h"
#include "x86_64_v4/rows.h"
#include "x86_64_v4/pointwise.h"
#include "x86_64_v4/tiles.h"
#elif defined(XENT_ISA_X86_64_V3)
#include "x86_64_v3/f16_max.h"
#include "x86_64_v3/rows.h"
#include "x86_64_v3/pointwise.h"
#include "x86_64_v3/tiles.h"
#endif

/* ---- 4. generic name -> implementation, and 5. the hand-written paths ---------
 * float32 names; float64 is portable at every level (below). */
#if defined(XENT_ISA_X86_64_V4)
#define XENT_ISA_FEATURES "avx512_rows", "avx512_f16_rows", "avx512_half_loads", \
    "f16c_f16_log_softmax", "avx512_bce_logits", "avx512_tiles",
#define xent_max_f32 xent_portable_max_f32
#define xent_sum_exp_rest_f32 xent_avx512_sum_exp_rest_f32
#define xent_sum_exp_rest_store_f32 xent_avx512_sum_exp_rest_store_f32
#define xent_max_rest_f32 xent_avx512_max_rest_f32
#define xent_f16_row_parts xent_avx512_f16_row_parts
#define xent_half_row_head xent_avx512_half_row_head
#define xent_f16_log_softmax_head xent_f16c_f16_log_softmax_head
#define xent_bce_logits_loss_f32 xent_avx512_bce_logits_loss_f32
#define xent_one_group_f32 xent_avx512_one_group_f32
#define xent_group_finish_f32 xent_portable_group_finish_f32
#elif defined(XENT_ISA_X86_64_V3)
#define XENT_ISA_FEATURES "avx2_rows", "avx2_f16_rows", "f16c_half_loads", \
    "f16c_f16_log_softmax", "avx2_bce_logits", "avx2_tiles",
#define xent_max_f32 xent_avx2_max_f32
#define xent_sum_exp_rest_f32 xent_avx2_sum_exp_rest_f32
#define xent_sum_exp_rest_store_f32 xent_avx2_sum_exp_rest_store_f32
#define xent_max_rest_f32 xent_portable_max_rest_f32
#define xent_f16_row_parts xent_avx2_f16_row_parts
#define xent_half_row_head xent_f16c_half_row_head
#define xent_f16_log_softmax_head xent_f16c_f16_log_softmax_head
#define xent_bce_logits_loss_f32 xent_avx2_bce_logits_loss_f32
#define xent_one_group_f32 xent_avx2_group_ce_f32
#define xent_group_finish_f32 xent_avx2_group_finish_f32
#else
#define xent_max_f32 xent_portable_max_f32
#define xent_sum_exp_rest_f32 xent_portable_sum_exp_rest_f32
#define xent_sum_exp_rest_store_f32 xent_portable_sum_exp_rest_store_f32
#define xent_max_rest_f32 xent_portable_max_rest_f32
#define xent_f16_row_parts xent_portable_f16_row_parts
#if defined(XENT_ISA_F16C)
#define XENT_ISA_FEATURES "f16c_half_loads", "f16c_f16_log_softmax",
#define xent_half_row_head xent_f16c_half_row_head
#define xent_f16_log_softmax_head xent_f16c_f16_log_softmax_head
#else
#define XENT_ISA_FEATURES
#define xent_half_row_head xent_portable_half_row_head
#define xent_f16_log_softmax_head xent_portable_f16_log_softmax_head
#endif
#define xent_bce_logits_loss_f32 xent_portable_bce_logits_loss_f32
#define xent_one_group_f32 xent_portable_one_group_f32
#define xent_group_finish_f32 xent_portable_group_finish_f32
#endif
#define xent_max_f64 xent_portable_max_f64
#define xent_sum_exp_rest_f64 xent_portable_sum_exp_rest_f64
#define xent_sum_exp_rest_store_f64 xent_portable_sum_exp_rest_store_f64
#define xent_max_rest_f64 xent_portable_max_rest_f64
#define xent_bce_logits_loss_f64 xent_portable_bce_logits_loss_f64
#define xent_one_group_f64 xent_portable_one_group_f64
#define xent_group_finish_f64 xent_portable_group_finish_f64

/* The i-th hand-written path compiled in (see 5. above), NULL past the last. */
static const char *xent_simd_feature(ptrdiff_t i)
{
    static const char *const names[] = {XENT_ISA_FEATURES XENT_FMA_FEATURE NULL};
    return names[i];
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

#endif /* XENT_SELECT_H */
