/*
 * Pointwise losses (binary cross-entropy with logits, binary cross-entropy on
 * probabilities, kl_div).  A per-type template (kernels.h: XENT_T = float,
 * then double).  BCE with logits without gradient has float32 twins
 * (x86_64_v3/pointwise.h, x86_64_v4/pointwise.h).
 *
 * Each function handles one contiguous piece of n elements (the Cython layer in
 * _cython/pointwise.pxi owns strides, broadcasting, threads and scratch) and returns the
 * piece's sum of losses accumulated in double.  Optional operands are NULL when
 * absent; every NULL combination is a separate specialisation of one inlined
 * body, so the hot loops have no per-element flag tests.
 *
 * Contract: pointers are valid for n elements; outputs are disjoint from the
 * inputs, except that `grad` may be exactly `x` (in place: each element is read
 * before it is written, in the same iteration).
 */

/* ---- vectorisable log and exp --------------------------------------------------
 * libm's log/log1p/exp are scalar calls, which keep a loop from vectorising; the
 * loops below use xent's own branch-free log and exp (math.h).
 *
 * log_any(v, corr) = log(v) + corr, where corr is a small correction for the
 * rounding of v (log1p uses it for the rounding error of 1 + e); pass 0 otherwise.
 */
XENT_INLINE XENT_T XENT_FN(log_any)(XENT_T v, XENT_T corr)
{
    return XENT_FN(log)(v) + corr;
}

/* log1p(e) for e in [0, 1] (or NaN): log(u) for u = 1 + e rounded, plus c / u
 * where c = e - (u - 1) is the exact rounding error (Fast2Sum, 1 >= e), as in
 * fdlibm's log1p.  Also returns r = 1 / u (the sigmoid's denominator).
 * e = 0 -> 0 exactly; tiny e -> e. */
XENT_INLINE XENT_T XENT_FN(log1p_unit)(XENT_T e, XENT_T *r_out)
{
    XENT_T u = 1 + e;
    XENT_T c = e - (u - 1);
    XENT_T r = 1 / u;
    *r_out = r;
    return XENT_FN(log_any)(u, c * r);
}

/* log1p(-p) = log(1 - p) for p in [0, 1] (or anything: NaN outside), the same way:
 * u = 1 - p rounded, c = -p - (u - 1) exact; log(u) + c / u.  p = 1 -> -inf. */
XENT_INLINE XENT_T XENT_FN(log1m)(XENT_T p)
{
    XENT_T u = 1 - p;
    XENT_T c = -p - (u - 1);
    XENT_T corr = c / (u == 0 ? (XENT_T)1 : u);
    return XENT_FN(log_any)(u, corr);
}

/* exp(x) for any x (see xent_exp_wide_* in math.h). */
XENT_INLINE XENT_T XENT_FN(exp_any)(XENT_T x)
{
    if (sizeof(XENT_T) == sizeof(float))
        return (XENT_T)xent_exp_wide_f32((float)x);
    return (XENT_T)xent_exp_wide_f64((double)x);
}

/* ---- binary cross-entropy with logits ----------------------------------------
 * PyTorch's binary_cross_entropy_with_logits,
 *     l = w * [(1 - y) * x - (1 + (pw - 1) * y) * log sigmoid(x)],
 * rewritten with softplus(z) = max(z, 0) + log1p(exp(-|z|)) as
 *     l = cp * softplus(-x) + cn * softplus(x),  cp = w*pw*y,  cn = w*(1 - y),
 * which has no cancellation and no overflow.  A term whose coefficient is exactly
 * 0 contributes 0 even when its softplus is +inf (SPEC: the loss returns its limit
 * at infinite logits, so x = +inf, y = 1 gives 0 where PyTorch gives NaN); a NaN
 * logit still gives NaN.
 * Gradient (PyTorch's backward formula): dl/dx = sigmoid(x) * (cp + cn) - cp,
 * times `scale` (1 for "sum"/"none", 1/numel for "mean").
 */
XENT_INLINE double XENT_FN(bce_logits_body)(ptrdiff_t n, const XENT_T *x, const XENT_T *y,
                                            const XENT_T *w, const XENT_T *pw, XENT_T *loss,
                                            XENT_T *grad, XENT_T scale, const int has_w,
                                            const int has_pw, const int has_loss,
                                            const int has_grad)
{
    double total = 0;
    ptrdiff_t i;
    XENT_SIMD_SUM(total)
    for (i = 0; i < n; i++) {
        XENT_T xi = x[i], yi = y[i];
        XENT_T wi = has_w ? w[i] : (XENT_T)1;
        XENT_T pwi = has_pw ? pw[i] : (XENT_T)1;
        XENT_T ax = xi < 0 ? -xi : xi;
        XENT_T e = XENT_FN(exp_nonpos)(-ax); /* exp(-|x|) in [0, 1] */
        XENT_T r, lg = XENT_FN(log1p_unit)(e, &r);
        XENT_T cp = wi * pwi * yi;
        XENT_T cn = wi * (1 - yi);
        XENT_T sp_pos = (xi > 0 ? xi : 0) + lg;  /* softplus(x)  = -log(1 - sigmoid(x)) */
        XENT_T sp_neg = (xi < 0 ? -xi : 0) + lg; /* softplus(-x) = -log sigmoid(x) */
        XENT_T l = (cp == 0 ? (XENT_T)0 : cp * sp_neg) + (cn == 0 ? (XENT_T)0 : cn * sp_pos);
        l = xi != xi ? xi : l; /* NaN logit -> NaN loss, even with zero coefficients */
        total += (double)l;
        if (has_loss)
            loss[i] = l;
        if (has_grad) {
            XENT_T sig = xi >= 0 ? r : e * r; /* 1/(1+e) or e/(1+e); NaN stays NaN */
            grad[i] = scale * (sig * (cp + cn) - cp);
        }
    }
    return total;
}

/* bce_logits_body specialised for the operands present (bit 0 w, 1 pw,
 * 2 loss, 3 grad of k). */
#define XENT_BCE_LOGITS_CASE(k)                                                            \
    case k:                                                                                \
        return XENT_FN(bce_logits_body)(n, x, y, w, pw, loss, grad, scale, (k) & 1,        \
                                        ((k) >> 1) & 1, ((k) >> 2) & 1, ((k) >> 3) & 1)

/* The pieces without gradient by hand (bce_logits_loss; returns 1 with the
 * sum in *total) where the build has such a loop, x86_64_v3/pointwise.h and
 * x86_64_v4/pointwise.h for float32.  The portable build has none: it returns 0
 * and bce_logits takes every piece. */
XENT_INLINE int XENT_FN(portable_bce_logits_loss)(ptrdiff_t n, const XENT_T *x, const XENT_T *y,
                                                  const XENT_T *w, const XENT_T *pw, XENT_T *loss,
                                                  double *total)
{
    (void)n, (void)x, (void)y, (void)w, (void)pw, (void)loss, (void)total;
    return 0;
}

/* One piece of BCE with logits; w, pw, loss and grad may each be NULL.
 * Returns the sum of the piece's losses, in double. */
static double XENT_FN(bce_logits)(ptrdiff_t n, const XENT_T *x, const XENT_T *y, const XENT_T *w,
                                  const XENT_T *pw, XENT_T *loss, XENT_T *grad, XENT_T scale)
{
    int k = (w != NULL) | (pw != NULL) << 1 | (loss != NULL) << 2 | (grad != NULL) << 3;
    double total;
    if (grad == NULL && XENT_FN(bce_logits_loss)(n, x, y, w, pw, loss, &total))
        return total;
    switch (k) {
        XENT_BCE_LOGITS_CASE(0);
        XENT_BCE_LOGITS_CASE(1);
        XENT_BCE_LOGITS_CASE(2);
        XENT_BCE_LOGITS_CASE(3);
        XENT_BCE_LOGITS_CASE(4);
        XENT_BCE_LOGITS_CASE(5);
        XENT_BCE_LOGITS_CASE(6);
        XENT_BCE_LOGITS_CASE(7);
        XENT_BCE_LOGITS_CASE(8);
        XENT_BCE_LOGITS_CASE(9);
        XENT_BCE_LOGITS_CASE(10);
        XENT_BCE_LOGITS_CASE(11);
        XENT_BCE_LOGITS_CASE(12);
        XENT_BCE_LOGITS_CASE(13);
        XENT_BCE_LOGITS_CASE(14);
    default:
        XENT_BCE_LOGITS_CASE(15);
    }
}
#undef XENT_BCE_LOGITS_CASE

/* ---- binary cross-entropy on probabilities -------------------------------------
 * PyTorch's binary_cross_entropy (aten/src/ATen/native/Loss.cpp), formula for
 * formula: l = w * ((y - 1) * max(log1p(-p), -100) - y * max(log(p), -100)).
 * The clamp at -100 keeps l finite at p = 0 and p = 1.  PyTorch rejects p and y
 * outside [0, 1], NaN included; the piece counts such elements and, if there are
 * any, reports the first bad p and the first bad y (index in the piece, or -1).
 * The losses written for a piece with bad values are meaningless: the caller
 * raises instead of returning them.
 */
XENT_INLINE double XENT_FN(bce_body)(ptrdiff_t n, const XENT_T *p, const XENT_T *y,
                                     const XENT_T *w, XENT_T *loss, ptrdiff_t *nbad_out,
                                     const int has_w, const int has_loss)
{
    double total = 0;
    ptrdiff_t i, nbad = 0;
    XENT_SIMD_SUM(total)
    for (i = 0; i < n; i++) {
        XENT_T pi = p[i], yi = y[i];
        XENT_T lp = XENT_FN(log_any)(pi, 0);
        XENT_T lq = XENT_FN(log1m)(pi); /* log1p(-p), as PyTorch */
        XENT_T l;
        lp = lp > (XENT_T)-100 ? lp : (XENT_T)-100; /* NaN (bad p) is counted below */
        lq = lq > (XENT_T)-100 ? lq : (XENT_T)-100;
        l = (yi - 1) * lq - yi * lp;
        if (has_w)
            l = l * w[i];
        nbad += !(pi >= 0 && pi <= 1) | !(yi >= 0 && yi <= 1);
        total += (double)l;
        if (has_loss)
            loss[i] = l;
    }
    *nbad_out = nbad;
    return total;
}

static double XENT_FN(bce)(ptrdiff_t n, const XENT_T *p, const XENT_T *y, const XENT_T *w,
                           XENT_T *loss, ptrdiff_t *bad_p, ptrdiff_t *bad_y)
{
    ptrdiff_t i, nbad;
    double total;
    if (w != NULL)
        total = loss != NULL ? XENT_FN(bce_body)(n, p, y, w, loss, &nbad, 1, 1)
                             : XENT_FN(bce_body)(n, p, y, w, loss, &nbad, 1, 0);
    else
        total = loss != NULL ? XENT_FN(bce_body)(n, p, y, w, loss, &nbad, 0, 1)
                             : XENT_FN(bce_body)(n, p, y, w, loss, &nbad, 0, 0);
    *bad_p = -1;
    *bad_y = -1;
    if (nbad) {
        for (i = 0; i < n; i++) {
            if (*bad_p < 0 && !(p[i] >= 0 && p[i] <= 1))
                *bad_p = i;
            if (*bad_y < 0 && !(y[i] >= 0 && y[i] <= 1))
                *bad_y = i;
        }
    }
    return total;
}

/* ---- kl_div ------------------------------------------------------------------------
 * torch.nn.functional.kl_div with input q = log Q and target p (or t = log p):
 *     log_target=False: l = xlogy(p, p) - p * q
 *     log_target=True:  l = exp(t) * (t - q)
 * Where the target probability is exactly 0 (p == 0, or t == -inf) the term is 0
 * whatever q is (0 log 0 = 0 and the limit p -> 0 of p * q, SPEC "Conventions"),
 * unless q is NaN, which propagates.  PyTorch gives NaN there when q or t is
 * infinite (0 * inf); everywhere else the formulas are PyTorch's.
 */
static double XENT_FN(kl_div)(ptrdiff_t n, const XENT_T *q, const XENT_T *t, XENT_T *loss,
                              int log_target)
{
    double total = 0;
    ptrdiff_t i;
    if (log_target) {
        XENT_SIMD_SUM(total)
        for (i = 0; i < n; i++) {
            XENT_T qi = q[i], ti = t[i];
            XENT_T l = XENT_FN(exp_any)(ti) * (ti - qi);
            l = ti == -INFINITY ? (qi != qi ? qi : (XENT_T)0) : l;
            total += (double)l;
            if (loss != NULL)
                loss[i] = l;
        }
    } else {
        XENT_SIMD_SUM(total)
        for (i = 0; i < n; i++) {
            XENT_T qi = q[i], pi = t[i];
            XENT_T l = pi * XENT_FN(log_any)(pi, 0) - pi * qi;
            l = pi == 0 ? (qi != qi ? qi : (XENT_T)0) : l;
            total += (double)l;
            if (loss != NULL)
                loss[i] = l;
        }
    }
    return total;
}
