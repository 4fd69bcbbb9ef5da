/*
 * Exhaustive accuracy of xent's vectorised exp (arguments <= 0) and log, in float32.
 *
 * Every float32 x in [-104, 0] for exp, and every positive finite float32 for log,
 * is evaluated and compared with the double-precision libm result (exact to far
 * below a float32 ulp), and the largest error is reported in float32 ulps of the
 * true value.  Built and run by bench/accuracy.py against the project's header.
 */
#include <stdio.h>
#include "_rows.h"

static double ulp_of(double ref)
{
    float r = (float)ref;
    float up = nextafterf(r, INFINITY);
    return fabs((double)up - (double)r);
}

int main(void)
{
    uint32_t b;
    double worst_exp = 0, worst_log = 0, at_exp = 0, at_log = 0;
    long n_exp = 0, n_log = 0, sub_exp = 0;
    /* exp: -0 .. -104 are the bit patterns 0x80000000 .. bits(-104) */
    uint32_t lo = 0x80000000u, hi;
    float m104 = -104.0f;
    memcpy(&hi, &m104, sizeof hi);
    for (b = lo; b <= hi; b++) {
        float x;
        double ref, err, u;
        memcpy(&x, &b, sizeof x);
        ref = exp((double)x);
        u = ulp_of(ref);
        if (ref < 1.1754943508222875e-38) { /* subnormal result: ulp is 2^-149 */
            u = 1.401298464324817e-45;
            sub_exp++;
        }
        err = fabs((double)xent_exp_nonpos_f32(x) - ref) / u;
        if (err > worst_exp) { worst_exp = err; at_exp = x; }
        n_exp++;
    }
    for (b = 1; b < 0x7f800000u; b++) {
        float x;
        double ref, err;
        memcpy(&x, &b, sizeof x);
        ref = log((double)x);
        if (ref == 0) {
            if (xent_log_f32(x) != 0) { worst_log = INFINITY; at_log = x; }
            continue;
        }
        err = fabs((double)xent_log_f32(x) - ref) / ulp_of(ref);
        if (err > worst_log) { worst_log = err; at_log = x; }
        n_log++;
    }
#if defined(XENT_HAVE_AVX512_ROWS)
    {
        /* the AVX-512 exp of the sum loop, 16 arguments at a time */
        double worst = 0, at = 0;
        float xs[16], ys[16];
        int j;
        for (b = lo; b <= hi;) {
            for (j = 0; j < 16; j++, b = b < hi ? b + 1 : b)
                memcpy(&xs[j], &b, sizeof xs[j]);
            _mm512_storeu_ps(ys, xent_avx512_exp_nonpos_ps(_mm512_loadu_ps(xs)));
            for (j = 0; j < 16; j++) {
                double ref = exp((double)xs[j]), u = ulp_of(ref), err;
                if (ref < 1.1754943508222875e-38)
                    u = 1.401298464324817e-45;
                err = fabs((double)ys[j] - ref) / u;
                if (err > worst) { worst = err; at = xs[j]; }
            }
            if (b == hi)
                break;
        }
        printf("avx512_exp_nonpos_ps: every float32 in [-104, 0]: max error %.3f ulp at x = %.9g\n",
               worst, at);
    }
#endif
    printf("exp_nonpos_f32: %ld inputs in [-104, 0] (%ld with subnormal results): "
           "max error %.3f ulp at x = %.9g\n", n_exp, sub_exp, worst_exp, at_exp);
    printf("log_f32: %ld positive finite inputs: max error %.3f ulp at x = %.9g\n",
           n_log, worst_log, at_log);
    return 0;
}
