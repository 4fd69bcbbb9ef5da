/*
 * Exhaustive accuracy of xent's vectorised exp (arguments <= 0) and log, in float32.
 *
 * Every float32 x in [-104, 0] for exp, and every positive finite float32 for log,
 * is evaluated and compared with the double-precision libm result (exact to far
 * below a float32 ulp), and the largest error is reported in float32 ulps of the
 * true value.  Built and run by bench/accuracy.py against the project's header,
 * once per SIMD build: each build adds the exps of its hand-vectorised loops.
 */
#include <stdio.h>
#include "xent/kernels.h"

static double ulp_of(double ref)
{
    float r = (float)ref;
    float up = nextafterf(r, INFINITY);
    if (fabs(ref) < 1.1754943508222875e-38) /* subnormal result: the ulp is 2^-149 */
        return 1.401298464324817e-45;
    return fabs((double)up - (double)r);
}

/* An exp under test: ys[i] = exp(xs[i]) for i < XENT_EXP_BATCH. */
#define XENT_EXP_BATCH 32
typedef void (*exp_batch_fn)(const float *xs, float *ys);

/* Every float32 in [-104, 0] (the bit patterns 0x80000000 .. bits(-104)) through
 * fn, XENT_EXP_BATCH at a time; prints the largest error in ulps, and how many
 * results differ in any bit from xent_exp_nonpos_f32 of this build. */
static void sweep_exp(const char *name, exp_batch_fn fn)
{
    uint32_t b = 0x80000000u, hi;
    float m104 = -104.0f, xs[XENT_EXP_BATCH], ys[XENT_EXP_BATCH];
    double worst = 0, at = 0, worst_near = 0;
    long n = 0, subnormal = 0, differ = 0;
    int j, last = 0;
    memcpy(&hi, &m104, sizeof hi);
    while (!last) {
        int len = 0;
        for (; len < XENT_EXP_BATCH && !last; len++, b++) {
            memcpy(&xs[len], &b, sizeof xs[len]);
            last = b == hi;
        }
        for (j = len; j < XENT_EXP_BATCH; j++)
            xs[j] = xs[len - 1]; /* pad the last batch */
        fn(xs, ys);
        for (j = 0; j < len; j++) {
            double ref = exp((double)xs[j]), err = fabs((double)ys[j] - ref) / ulp_of(ref);
            if (err > worst) {
                worst = err;
                at = xs[j];
            }
            if (xs[j] >= -17.0f && err > worst_near) /* terms >= 4e-8 of the max's 1 */
                worst_near = err;
            subnormal += ref < 1.1754943508222875e-38;
            differ += ys[j] != xent_exp_nonpos_f32(xs[j]);
            n++;
        }
    }
    printf("%s: %ld inputs in [-104, 0] (%ld with subnormal results): max error %.3f ulp "
           "at x = %.9g (%.3f ulp for x >= -17); %ld results differ from exp_nonpos_f32 of "
           "this build\n", name, n, subnormal, worst, at, worst_near, differ);
}

static void portable_exp(const float *xs, float *ys)
{
    int j;
    for (j = 0; j < XENT_EXP_BATCH; j++)
        ys[j] = xent_exp_nonpos_f32(xs[j]);
}

#if defined(XENT_ISA_X86_64_V4)
/* the AVX-512 exp of the stored exps (softmax, gradients) */
static void avx512_exp(const float *xs, float *ys)
{
    int j;
    for (j = 0; j < XENT_EXP_BATCH; j += 16)
        _mm512_storeu_ps(ys + j, xent_avx512_exp_nonpos_ps(_mm512_loadu_ps(xs + j)));
}

/* the base-2 terms of the AVX-512 sums of exps, for a row whose max is 0
 * (hi = lo = 0: t = x * log2(e) rounded once), each added to a sum of 0 */
static void avx512_term(const float *xs, float *ys)
{
    int j;
    for (j = 0; j < XENT_EXP_BATCH; j += 16)
        _mm512_storeu_ps(ys + j, xent_avx512_add_exp2(_mm512_setzero_ps(), _mm512_mul_ps(
                                     _mm512_loadu_ps(xs + j), _mm512_set1_ps(XENT_LOG2E_F))));
}

/* Whether the table of those terms holds 2^(j/32) rounded to float. */
static void check_exp2_table(void)
{
    int j, wrong = 0;
    for (j = 0; j < 32; j++)
        wrong += xent_exp2_table32[j] != (float)exp2(j / 32.0);
    printf("avx512 sum terms' table of 2^(j/32): %d of 32 entries differ from libm's exp2\n",
           wrong);
}
#endif

#if defined(XENT_ISA_X86_64_V3)
/* One of the AVX2 exps, as its callers finish it: p * s * 2^-64. */
static void avx2_batch(const float *xs, float *ys, int term)
{
    __m256 d[XENT_AVX2_WAYS], p[XENT_AVX2_WAYS], s[XENT_AVX2_WAYS];
    int j, k;
    for (k = 0; k < XENT_EXP_BATCH; k += XENT_AVX2_STEP) {
        for (j = 0; j < XENT_AVX2_WAYS; j++)
            d[j] = _mm256_loadu_ps(xs + k + 8 * j);
        if (term)
            xent_avx2_term_parts(d, NULL, p, s, XENT_AVX2_WAYS);
        else
            xent_avx2_exp_parts(d, p, s, XENT_AVX2_WAYS);
        for (j = 0; j < XENT_AVX2_WAYS; j++)
            _mm256_storeu_ps(ys + k + 8 * j, _mm256_mul_ps(_mm256_mul_ps(p[j], s[j]),
                                                           _mm256_set1_ps(XENT_AVX2_TWO_M64)));
    }
}

/* the AVX2 exp of the stored exps (softmax, gradients) and of the BCE loop */
static void avx2_exp(const float *xs, float *ys)
{
    avx2_batch(xs, ys, 0);
}

/* the cheaper exp of the AVX2 sums of exps */
static void avx2_term(const float *xs, float *ys)
{
    avx2_batch(xs, ys, 1);
}
#endif

int main(void)
{
    uint32_t b;
    double worst_log = 0, at_log = 0;
    long n_log = 0;
    sweep_exp("exp_nonpos_f32", portable_exp);
#if defined(XENT_ISA_X86_64_V4)
    sweep_exp("avx512 stored exps (exp_nonpos_ps)", avx512_exp);
    check_exp2_table();
    sweep_exp("avx512 sum terms (add_exp2)", avx512_term);
#endif
#if defined(XENT_ISA_X86_64_V3)
    sweep_exp("avx2 stored exps (exp_parts)", avx2_exp);
    sweep_exp("avx2 sum terms (term_parts)", avx2_term);
#endif
    for (b = 1; b < 0x7f800000u; b++) {
        float x;
        double ref, err;
        memcpy(&x, &b, sizeof x);
        ref = log((double)x);
        if (ref == 0) {
            if (xent_log_f32(x) != 0) {
                worst_log = INFINITY;
                at_log = x;
            }
            continue;
        }
        err = fabs((double)xent_log_f32(x) - ref) / ulp_of(ref);
        if (err > worst_log) {
            worst_log = err;
            at_log = x;
        }
        n_log++;
    }
    printf("log_f32: %ld positive finite inputs: max error %.3f ulp at x = %.9g\n",
           n_log, worst_log, at_log);
    return 0;
}
