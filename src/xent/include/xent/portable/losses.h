/*
 * Multiclass loss rows: cross-entropy (class-index and probability targets,
 * with weights, label smoothing and z-loss), distillation KL and entropy.
 * A per-type template (kernels.h: XENT_T = float, then double), after rows.h,
 * whose row_stats / row_log_softmax these build on.
 *
 * Each function handles one contiguous row of C >= 1 logits (plus, where it
 * applies, one contiguous row of targets), writes the row's loss in double, and,
 * when g != NULL, the row's gradient into g, which may be the logits row itself.
 *
 * Conventions (SPEC "Conventions", "Multiclass losses"): formulas are PyTorch's
 * (F.cross_entropy, label smoothing as Szegedy et al. 2016 / torch: (1-eps)*onehot
 * + eps/C); z-loss is PaLM's (Chowdhery et al. 2022): z * lse^2; a term whose
 * coefficient is exactly 0 contributes 0 even where its log is infinite
 * (0 * log 0 = 0); -inf logits are classes of probability 0; k +inf logits share
 * the probability equally.
 */

/* a * b, but 0 when a == 0 and b is not NaN (so 0 * inf = 0: a zero-weight term
 * costs nothing even where its log is infinite), while 0 * NaN stays NaN: a NaN
 * reaches everything computed from its row (SPEC), a zero weight included. */
XENT_INLINE double XENT_FN(mul0)(double a, double b)
{
    return a == 0 && b == b ? 0 : a * b;
}

/* (eps/C) * v, the label-smoothing mass of a weight (or weight sum) v: exactly 0
 * without smoothing (eps == 0), so a NaN or infinite weight of a class that is
 * not the target stays out of rows that do not smooth (torch: the weights of
 * the other classes enter a row only through label smoothing). */
XENT_INLINE XENT_T XENT_FN(smooth_mass)(XENT_T eps, XENT_T smooth, XENT_T v)
{
    return eps > 0 ? smooth * v : 0;
}

/* -log_softmax of entry x_c of a row whose stats are (kind, m, s), for the
 * non-finite kinds: k = s entries at +inf share probability 1/k. */
static double XENT_FN(nll_special)(int kind, XENT_T xc, XENT_T s)
{
    if (kind != XENT_ROW_POSINF)
        return NAN;
    return xc == INFINITY ? XENT_FN(log)(s) : INFINITY;
}

/* probability of entry x_c for the non-finite kinds (see nll_special) */
static XENT_T XENT_FN(prob_special)(int kind, XENT_T xc, XENT_T s)
{
    if (kind != XENT_ROW_POSINF)
        return NAN;
    return xc == INFINITY ? 1 / s : 0;
}

/* sum_c w_c * (m - x_c), w == NULL meaning all ones; terms with w_c == 0 are 0.
 * m - x_c >= 0 (no cancellation); chunked double accumulation as in sum_exp. */
static double XENT_FN(weighted_gap)(const XENT_T *x, ptrdiff_t n, XENT_T m, const XENT_T *w)
{
    double total = 0;
    ptrdiff_t b, i, len;
    for (b = 0; b < n; b += XENT_SUM_CHUNK) {
        XENT_T acc = 0;
        len = n - b < XENT_SUM_CHUNK ? n - b : XENT_SUM_CHUNK;
        if (w) {
            XENT_SIMD_SUM(acc)
            for (i = 0; i < len; i++)
                acc += w[b + i] == 0 ? 0 : w[b + i] * (m - x[b + i]);
        } else {
            XENT_SIMD_SUM(acc)
            for (i = 0; i < len; i++)
                acc += m - x[b + i];
        }
        total += acc;
    }
    return total;
}

/*
 * Cross-entropy of one row with class-index target t (0 <= t < C), by
 * ce_index_row (or its two parts, ce_index_parts then ce_index_finish):
 *   ce  = (1-eps) w_t (-lp_t) + (eps/C) sum_c w_c (-lp_c)      (without z-loss)
 *   lse = logsumexp(x)
 * wsum = sum_c w_c (C when w == NULL).  The gradient written to g is
 *   scale_ce * d(ce)/dx + scale_z * d(z lse^2)/dx
 *   = p_c K - scale_ce (eps/C) w_c - [c == t] scale_ce (1-eps) w_t,
 *   K = scale_ce ((1-eps) w_t + (eps/C) wsum) + 2 z scale_z lse.
 */
/* The first part of ce_index_row: *xt = x[t] and *m the max; then, for a finite
 * max (returns 1; 0 otherwise, setting nothing more), *gap (label smoothing
 * only, else 0) and the parts of the sum of exps (row_parts: *k, *rest, and
 * with g != NULL the exps stored into g, which may be x).  Everything that
 * reads x is done here.  Callers that finish rows later, for a batch of
 * rows at once (see row_parts), call ce_index_finish after. */
static int XENT_FN(ce_index_parts)(const XENT_T *x, ptrdiff_t C, ptrdiff_t t, const XENT_T *w,
                                   XENT_T eps, XENT_T *g, XENT_T *xt, XENT_T *m, double *gap,
                                   ptrdiff_t *k, double *rest)
{
    *xt = x[t];
    *gap = 0;
    if (!g && eps == 0)
        return XENT_FN(max_rest)(x, C, m, k, rest);
    *m = XENT_FN(max)(x, C);
    if (!isfinite(*m))
        return 0;
    *gap = eps > 0 ? XENT_FN(weighted_gap)(x, C, *m, w) : 0;
    *rest = g ? XENT_FN(sum_exp_rest_store)(x, C, *m, k, g) : XENT_FN(sum_exp_rest)(x, C, *m, k);
    return 1;
}

/* The rest of ce_index_row (below) from ce_index_parts: the loss, the
 * logsumexp, and with g != NULL the gradient from the exps stored there. */
static void XENT_FN(ce_index_finish)(ptrdiff_t C, ptrdiff_t t, const XENT_T *w, XENT_T wsum,
                                     XENT_T eps, XENT_T z, XENT_T scale_ce, XENT_T scale_z,
                                     XENT_T xt, XENT_T m, double gap, ptrdiff_t k, double rest,
                                     XENT_T *g, double *ce, double *lse)
{
    XENT_T s = (XENT_T)((double)k + rest), ls = (XENT_T)XENT_FN(log_sum)(k, rest);
    XENT_T lse_row = m + ls, K, Ks, wt = w ? w[t] : 1;
    XENT_T smooth = eps / (XENT_T)C; /* eps/C, the smoothing mass of each class */
    double loss = XENT_FN(mul0)((1 - (double)eps) * wt, ((double)m - xt) + ls);
    ptrdiff_t c;
    if (eps > 0)
        loss += (double)smooth * (gap + (double)wsum * ls);
    *ce = loss;
    *lse = lse_row;
    if (!g)
        return;
    K = scale_ce * ((1 - eps) * wt + XENT_FN(smooth_mass)(eps, smooth, wsum));
    if (z != 0)
        K += 2 * z * scale_z * lse_row;
    Ks = K / s;
    if (w && eps > 0) {
        XENT_T b = scale_ce * smooth;
        XENT_SIMD
        for (c = 0; c < C; c++)
            g[c] = g[c] * Ks - b * w[c];
    } else {
        XENT_T b = scale_ce * smooth;
        XENT_SIMD
        for (c = 0; c < C; c++)
            g[c] = g[c] * Ks - b;
    }
    g[t] -= scale_ce * (1 - eps) * wt;
}

static void XENT_FN(ce_index_row)(const XENT_T *x, ptrdiff_t C, ptrdiff_t t, const XENT_T *w,
                                  XENT_T wsum, XENT_T eps, XENT_T z, XENT_T scale_ce,
                                  XENT_T scale_z, XENT_T *g, double *ce, double *lse)
{
    XENT_T m, s, ls, K, wt = w ? w[t] : 1, xt;
    XENT_T smooth = eps / (XENT_T)C;
    double loss, gap, rest;
    ptrdiff_t c, k;
    int kind;

    if (XENT_FN(ce_index_parts)(x, C, t, w, eps, g, &xt, &m, &gap, &k, &rest)) {
        XENT_FN(ce_index_finish)(C, t, w, wsum, eps, z, scale_ce, scale_z, xt, m, gap, k, rest,
                                 g, ce, lse);
        return;
    }

    kind = XENT_FN(row_stats)(x, C, &m, &s, &ls);
    /* +inf / all -inf / NaN rows: the same formulas, term by term, with the
     * limits of the non-finite rule (rare, so scalar). */
    loss = XENT_FN(mul0)((1 - (double)eps) * wt, XENT_FN(nll_special)(kind, xt, s));
    if (eps > 0) {
        double sm = 0;
        for (c = 0; c < C; c++)
            sm += XENT_FN(mul0)(w ? w[c] : 1, XENT_FN(nll_special)(kind, x[c], s));
        loss += (double)smooth * sm;
    }
    *ce = loss;
    *lse = kind == XENT_ROW_POSINF ? INFINITY : (kind == XENT_ROW_NOPROB ? -INFINITY : NAN);
    if (!g)
        return;
    K = scale_ce * ((1 - eps) * wt + XENT_FN(smooth_mass)(eps, smooth, wsum));
    for (c = 0; c < C; c++) {
        XENT_T p = XENT_FN(prob_special)(kind, x[c], s);
        XENT_T gc = p * K - scale_ce * XENT_FN(smooth_mass)(eps, smooth, w ? w[c] : 1);
        if (z != 0)
            gc += (XENT_T)XENT_FN(mul0)(p, 2 * (double)z * scale_z * (double)*lse);
        g[c] = gc;
    }
    g[t] -= scale_ce * (1 - eps) * wt;
}

/* ce_index_row with wsum = sum_c w_c summed here when label smoothing needs it
 * (C otherwise); returns ce and stores lse when lse != NULL.  The row of the
 * public xent_cross_entropy_row_ex_* (xent_kernels.h). */
static double XENT_FN(ce_index_row_wsum)(const XENT_T *x, ptrdiff_t C, ptrdiff_t t,
                                         const XENT_T *w, XENT_T eps, XENT_T z, XENT_T scale_ce,
                                         XENT_T scale_z, XENT_T *g, double *lse)
{
    double ce, lse_row, wsum = (double)C;
    ptrdiff_t c;
    if (w && eps > 0)
        for (wsum = 0, c = 0; c < C; c++)
            wsum += w[c];
    XENT_FN(ce_index_row)(x, C, t, w, (XENT_T)wsum, eps, z, scale_ce, scale_z, g, &ce, &lse_row);
    if (lse)
        *lse = lse_row;
    return ce;
}

/* w_c t'_c, t'_c = keep y_c + smooth, as ce_prob_limits takes it: a zero factor
 * (keep = 0 at eps = 1, or w_c = 0) keeps an infinite y_c out, not a NaN one. */
static double XENT_FN(prob_coef)(XENT_T yc, XENT_T wc, XENT_T keep, XENT_T smooth)
{
    XENT_T tc = keep == 0 && yc == yc ? smooth : keep * yc + smooth;
    return wc == 0 && tc == tc ? 0 : (double)wc * tc;
}

/* p_c > 0 exactly: a logit above -inf, or +inf in a row with +inf entries. */
XENT_INLINE int XENT_FN(live)(int kind, XENT_T xc)
{
    return kind == XENT_ROW_POSINF ? xc == INFINITY : xc > -INFINITY;
}

/*
 * ce_prob_row (below) term by term, for the rows its one pass cannot do: a max
 * that is not finite (kind, m, s, ls from row_stats), or a target mass
 * T = sum_c w_c t'_c that is not finite (an infinite probability).  Each term
 * takes its limit under the SPEC's non-finite rule:
 *  - a_c = w_c t'_c, with 0 * inf = 0 (a zero weight, or eps = 1, keeps an
 *    infinite probability out); a NaN coefficient, a NaN in the row, or a row
 *    with no class of any probability (all -inf: NaN log-softmax) give NaN;
 *  - loss: a finite a_c times -lp_c (0 * inf = 0, a class of probability 0);
 *    an infinite a_c times -lp_c >= 0 is a_c's infinity, unless p_c = 1 exactly
 *    (c the only class with any probability), where it is 0 for every mass;
 *  - gradient: sum_c a_c (p_j - [j == c]), each infinite a_c pulling g_j
 *    towards its sign times sign(p_j - [j == c]) unless that is exactly 0
 *    (p_j = 0, or p_j = 1 at j == c); pulls of both signs have no limit (NaN);
 *    what is left is scale_ce (p_j T_fin - a_j) over the finite a's.
 * Exactly 0 and 1 are decided on the logits (-inf / the only live class), not on
 * rounded exps: a class of logit -1000 below the max has a positive probability.
 */
static void XENT_FN(ce_prob_limits)(int kind, const XENT_T *x, const XENT_T *y, ptrdiff_t C,
                                    const XENT_T *w, XENT_T keep, XENT_T smooth, XENT_T z,
                                    XENT_T scale_ce, XENT_T scale_z, XENT_T m, XENT_T s,
                                    XENT_T ls, XENT_T *g, double *ce, double *lse)
{
    double loss = 0, T_fin = 0;
    ptrdiff_t c, n_live = 0, n_up = 0, n_down = 0;
    /* an empty row (C = 0) has no class: its loss is the empty sum, 0 */
    int nan = kind == XENT_ROW_NAN || (kind == XENT_ROW_NOPROB && C > 0) || ls != ls;

    *lse = kind == XENT_ROW_FINITE ? (double)m + ls
           : kind == XENT_ROW_POSINF ? INFINITY : (kind == XENT_ROW_NOPROB ? -INFINITY : NAN);
    for (c = 0; c < C && !nan; c++) {
        double a = XENT_FN(prob_coef)(y[c], w ? w[c] : 1, keep, smooth);
        n_live += XENT_FN(live)(kind, x[c]);
        nan = a != a;
        if (isinf(a)) {
            n_up += a > 0;
            n_down += a < 0;
        } else {
            T_fin += a;
        }
    }
    if (nan) {
        *ce = NAN;
        if (g)
            for (c = 0; c < C; c++)
                g[c] = NAN;
        return;
    }
    for (c = 0; c < C; c++) {
        double a = XENT_FN(prob_coef)(y[c], w ? w[c] : 1, keep, smooth);
        double nll = kind == XENT_ROW_FINITE ? ((double)m - x[c]) + ls
                                             : XENT_FN(nll_special)(kind, x[c], s);
        if (!isinf(a))
            loss += XENT_FN(mul0)(a, nll);
        else if (!(n_live == 1 && XENT_FN(live)(kind, x[c])))
            loss += a; /* -lp_c > 0 (or +inf): the term is a's infinity */
    }
    *ce = loss;
    if (!g)
        return;
    for (c = 0; c < C; c++) {
        double a = XENT_FN(prob_coef)(y[c], w ? w[c] : 1, keep, smooth);
        int live = XENT_FN(live)(kind, x[c]), up, down;
        XENT_T gc, p = kind == XENT_ROW_FINITE ? XENT_FN(exp_nonpos)(x[c] - m) / s
                                    : XENT_FN(prob_special)(kind, x[c], s);
        /* the other infinite masses pull g_c their way where p_c > 0 ... */
        up = live && n_up - (a == INFINITY) > 0;
        down = live && n_down - (a == -INFINITY) > 0;
        /* ... and c's own mass against its sign, unless p_c = 1 */
        if (isinf(a) && !(n_live == 1 && live)) {
            up |= a < 0;
            down |= a > 0;
        }
        gc = scale_ce * (p * (XENT_T)T_fin - (isinf(a) ? 0 : (XENT_T)a));
        if (z != 0)
            gc += (XENT_T)XENT_FN(mul0)(p, 2 * (double)z * scale_z * *lse);
        g[c] = up && down ? NAN : up ? INFINITY : down ? -INFINITY : gc;
    }
}

/*
 * Cross-entropy of one row with probability targets y (contiguous, C values):
 *   t'_c = (1-eps) y_c + eps/C,   ce = sum_c w_c t'_c (-lp_c),   lse = logsumexp(x)
 * gradient: scale_ce (p_c T - w_c t'_c) + 2 z scale_z lse p_c,  T = sum_c w_c t'_c.
 * Rows with a non-finite max or a non-finite T: ce_prob_limits.
 */
static void XENT_FN(ce_prob_row)(const XENT_T *x, const XENT_T *y, ptrdiff_t C, const XENT_T *w,
                                 XENT_T eps, XENT_T z, XENT_T scale_ce, XENT_T scale_z,
                                 XENT_T *g, double *ce, double *lse)
{
    XENT_T m, s, ls, lse_row, Ks, keep = 1 - eps, smooth = eps / (XENT_T)C;
    double T = 0, D = 0;
    ptrdiff_t b, c, len;
    int kind = XENT_FN(row_stats)(x, C, &m, &s, &ls);

    if (kind == XENT_ROW_FINITE) {
        /* T = sum w t', D = sum w t' (m - x): one pass, chunked double sums */
        for (b = 0; b < C; b += XENT_SUM_CHUNK) {
            XENT_T tsum = 0, dsum = 0;
            len = C - b < XENT_SUM_CHUNK ? C - b : XENT_SUM_CHUNK;
            XENT_SIMD_SUM(tsum, dsum)
            for (c = b; c < b + len; c++) {
                XENT_T wt = (w ? w[c] : 1) * (keep * y[c] + smooth);
                tsum += wt;
                dsum += wt == 0 ? 0 : wt * (m - x[c]);
            }
            T += tsum;
            D += dsum;
        }
        if (isfinite(T)) {
            lse_row = m + ls;
            *ce = D + T * ls;
            *lse = lse_row;
            if (!g)
                return;
            Ks = scale_ce * (XENT_T)T;
            if (z != 0)
                Ks += 2 * z * scale_z * lse_row;
            Ks /= s;
            XENT_SIMD
            for (c = 0; c < C; c++)
                g[c] = XENT_FN(exp_nonpos)(x[c] - m) * Ks
                       - scale_ce * (w ? w[c] : 1) * (keep * y[c] + smooth);
            return;
        }
    }
    XENT_FN(ce_prob_limits)(kind, x, y, C, w, keep, smooth, z, scale_ce, scale_z, m, s, ls, g,
                            ce, lse);
}

/* How far below the student's max a log-probability must lie before a teacher
 * probability under the normal range (dropped by exp_term, < 2^-126 / 2^-1022)
 * can make a term above 2^-96 / 2^-900: kl_row recomputes such rows exactly. */
XENT_INLINE XENT_T XENT_FN(normal_min)(void)
{
    return sizeof(XENT_T) == 4 ? (XENT_T)1.17549435e-38 : (XENT_T)2.2250738585072014e-308;
}

XENT_INLINE XENT_T XENT_FN(kl_far)(void)
{
    return sizeof(XENT_T) == 4 ? (XENT_T)1.0e9 : (XENT_T)1.0e36;
}

/*
 * Distillation KL of one row: KL(softmax(p/T) || softmax(q/T)) from teacher
 * logits p and student logits q, and (g != NULL) its gradient with respect to q:
 * scale * (softmax(q/T) - softmax(p/T)) / T.  g may be q itself.
 * scratch: 2*C values, used only for rows with non-finite maxima.
 */
static double XENT_FN(kl_row)(const XENT_T *p, const XENT_T *q, ptrdiff_t C, XENT_T T,
                              XENT_T scale, XENT_T *g, XENT_T *scratch)
{
    XENT_T mp = XENT_FN(max)(p, C) / T, mq = XENT_FN(max)(q, C) / T;
    XENT_T inv_sp, inv_sq, gs = scale / T, lo = 0;
    double sp = 0, sq = 0, D = 0, kl;
    ptrdiff_t b, c, len;

    if (isfinite(mp) && isfinite(mq)) {
        for (b = 0; b < C; b += XENT_SUM_CHUNK) {
            XENT_T a_sp = 0, a_sq = 0, a_d = 0, a_lo = 0;
            len = C - b < XENT_SUM_CHUNK ? C - b : XENT_SUM_CHUNK;
            XENT_KL_SIMD
            for (c = b; c < b + len; c++) {
                XENT_T da = p[c] / T - mp, db = q[c] / T - mq;
                XENT_T e = XENT_FN(exp_term)(da);
                a_sp += e;
                a_sq += XENT_FN(exp_term)(db);
                a_d += e == 0 ? 0 : e * (da - db);
                a_lo = db < a_lo ? db : a_lo;
            }
            sp += a_sp;
            sq += a_sq;
            D += a_d;
            lo = a_lo < lo ? a_lo : lo;
        }
    }
    /* exp_term drops teacher probabilities below the normal range; their terms
     * P_c (log P_c - log Q_c) stay below XENT_KL_TINY_TERM unless the student's
     * log-probability is far lower still (or -inf: the term is +inf): such rows
     * take the term-by-term pass below. */
    if (isfinite(mp) && isfinite(mq) && !(lo < -XENT_FN(kl_far)())) {
        /* sum_c P_c (log P_c - log Q_c) = D/sp - log sp + log sq; NaN reaches D */
        kl = D / sp - log(sp) + log(sq);
        if (g) {
            inv_sp = (XENT_T)(1 / sp);
            inv_sq = (XENT_T)(1 / sq);
            XENT_SIMD
            for (c = 0; c < C; c++)
                g[c] = gs * (XENT_FN(exp_nonpos)(q[c] / T - mq) * inv_sq
                             - XENT_FN(exp_nonpos)(p[c] / T - mp) * inv_sp);
        }
        return kl;
    }

    /* Non-finite maxima: log-softmaxes with the non-finite rule, term by term. */
    {
        XENT_T *la = scratch, *lb = scratch + C;
        for (c = 0; c < C; c++) {
            la[c] = p[c] / T;
            lb[c] = q[c] / T;
        }
        XENT_FN(row_log_softmax)(la, C, la);
        XENT_FN(row_log_softmax)(lb, C, lb);
        kl = 0;
        for (c = 0; c < C; c++) {
            /* P_c as softmax gives it (subnormals kept; 0 only where it rounds
             * to 0): P_c = 0 costs 0, even against lb = -inf (-inf - -inf);
             * below the normal range the product P_c (la - lb) is taken in logs,
             * exact for a huge log ratio and +inf against lb = -inf. */
            XENT_T pc = exp(la[c]);
            double d = (double)la[c] - lb[c];
            kl += (la[c] != la[c] || lb[c] != lb[c]) ? NAN
                  : pc == 0 ? 0
                  : pc >= XENT_FN(normal_min)() || d == 0 ? pc * d
                  : copysign(exp((double)la[c] + log(fabs(d))), d);
        }
        if (g)
            for (c = 0; c < C; c++)
                g[c] = gs * (exp(lb[c]) - exp(la[c]));
        return kl;
    }
}

/* Shannon entropy (nats) of softmax(x) for one row:
 * H = log s - (1/s) sum_c e_c (x_c - m), e_c = exp(x_c - m). */
static double XENT_FN(entropy_row)(const XENT_T *x, ptrdiff_t C)
{
    XENT_T m, s, ls;
    double D = 0;
    ptrdiff_t b, c, len;
    int kind = XENT_FN(row_stats)(x, C, &m, &s, &ls);
    if (C == 0)
        return 0; /* no class: the empty sum, as kl_row and ce_prob_row give */
    if (kind == XENT_ROW_POSINF)
        return ls; /* log k: uniform over the k entries at +inf */
    if (kind != XENT_ROW_FINITE)
        return NAN;
    for (b = 0; b < C; b += XENT_SUM_CHUNK) {
        XENT_T acc = 0;
        len = C - b < XENT_SUM_CHUNK ? C - b : XENT_SUM_CHUNK;
        XENT_SIMD_SUM(acc)
        for (c = b; c < b + len; c++) {
            XENT_T d = x[c] - m, e = XENT_FN(exp_term)(d);
            acc += e == 0 ? 0 : e * d;
        }
        D += acc;
    }
    return (double)ls - D / s;
}

/*
 * Cross-entropy of the nb columns of a block whose class c of column j is at
 * x[c*cs + j] (the transposed tile of few-class rows), after block_stats
 * returned 0 for it (every column has a finite max m[j], sum s[j], log-sum ls[j]).
 * t[j] is column j's class index, or -1 if the column is ignored (loss,
 * logsumexp and gradient 0).  Writes ce[j], lse[j] and, if g != NULL, the
 * gradient g[c*gcs + j].  Same formulas as ce_index_row; vectorised across
 * columns.  K is nb values of scratch.
 */
static void XENT_FN(block_ce_index)(const XENT_T *x, ptrdiff_t C, ptrdiff_t cs, ptrdiff_t nb,
                                    const XENT_T *m, const XENT_T *s, const XENT_T *lsum,
                                    const int64_t *t,
                                    const XENT_T *w, XENT_T wsum, XENT_T eps, XENT_T z,
                                    XENT_T scale_ce, XENT_T scale_z, XENT_T *g, ptrdiff_t gcs,
                                    double *ce, double *lse, XENT_T *K)
{
    XENT_T smooth = eps / (XENT_T)C, keep = 1 - eps;
    ptrdiff_t c, j;
    if (eps > 0) {
        /* ce[j] = sum_c w_c (m_j - x_cj), accumulated across columns */
        for (j = 0; j < nb; j++)
            ce[j] = 0;
        for (c = 0; c < C; c++) {
            const XENT_T *xc = x + c * cs;
            XENT_T wc = w ? w[c] : 1;
            if (wc == 0)
                continue;
            XENT_SIMD
            for (j = 0; j < nb; j++)
                ce[j] += (double)(wc * (m[j] - xc[j]));
        }
    }
    for (j = 0; j < nb; j++) {
        XENT_T ls = lsum[j], wt;
        double loss;
        if (t[j] < 0) {
            ce[j] = 0;
            lse[j] = 0;
            K[j] = 0;
            continue;
        }
        wt = w ? w[t[j]] : 1;
        loss = XENT_FN(mul0)((double)keep * wt, ((double)m[j] - x[t[j] * cs + j]) + ls);
        if (eps > 0)
            loss += (double)smooth * (ce[j] + (double)wsum * ls);
        ce[j] = loss;
        lse[j] = (double)m[j] + ls;
        if (!g)
            continue; /* K (and its division) is for the gradient only */
        K[j] = scale_ce * (keep * wt + XENT_FN(smooth_mass)(eps, smooth, wsum));
        if (z != 0)
            K[j] += 2 * z * scale_z * (m[j] + ls);
        K[j] /= s[j];
    }
    if (!g)
        return;
    for (c = 0; c < C; c++) {
        const XENT_T *xc = x + c * cs;
        XENT_T *gc = g + c * gcs;
        XENT_T b = scale_ce * XENT_FN(smooth_mass)(eps, smooth, w ? w[c] : 1);
        XENT_SIMD
        for (j = 0; j < nb; j++)
            gc[j] = XENT_FN(exp_nonpos)(xc[j] - m[j]) * K[j] - b;
    }
    for (j = 0; j < nb; j++) {
        if (t[j] >= 0) {
            g[t[j] * gcs + j] -= scale_ce * keep * (w ? w[t[j]] : 1);
        } else {
            for (c = 0; c < C; c++)
                g[c * gcs + j] = 0;
        }
    }
}
