# Multiclass losses: cross-entropy (class-index and probability targets), the
# distillation KL and the entropy, each over axis 1 of a 3-D (outer, C, inner)
# view.  Included by _kernels.pyx.
#
# Contract (checked by the Python layer, _crossentropy.py / _divergences.py):
# every class index is in [0, C) or equals ignore_index; C >= 1 whenever a row is
# not ignored; strides are whole multiples of the item size; a gradient buffer is
# either disjoint from every input or the logits themselves (same strides);
# per-row outputs are contiguous float64 arrays of outer*inner values.
#
# Arrays arrive as byte pointers with byte strides plus a storage kind, so one
# loop serves float32, float64, float16 and bfloat16 logits and targets of
# another float dtype: a row is used in place when it is contiguous in the
# computation dtype, and converted into per-thread scratch otherwise.

cdef extern from "_rows.h" nogil:
    enum:
        XENT_KIND_F32
        XENT_KIND_F64
        XENT_KIND_F16
        XENT_KIND_BF16
    void load_row_f32 "xent_load_row_f32"(const char *p, Py_ssize_t n, Py_ssize_t stride,
                                          int kind, float *dst)
    void load_row_f64 "xent_load_row_f64"(const char *p, Py_ssize_t n, Py_ssize_t stride,
                                          int kind, double *dst)
    int64_t load_index "xent_load_index"(const char *p, int code)
    void ce_index_row_f32 "xent_ce_index_row_f32"(
        const float *x, Py_ssize_t C, Py_ssize_t t, const float *w, float wsum, float eps,
        float z, float scale_ce, float scale_z, float *g, double *ce, double *lse)
    void ce_index_row_f64 "xent_ce_index_row_f64"(
        const double *x, Py_ssize_t C, Py_ssize_t t, const double *w, double wsum, double eps,
        double z, double scale_ce, double scale_z, double *g, double *ce, double *lse)
    void ce_prob_row_f32 "xent_ce_prob_row_f32"(
        const float *x, const float *y, Py_ssize_t C, const float *w, float eps, float z,
        float scale_ce, float scale_z, float *g, double *ce, double *lse)
    void ce_prob_row_f64 "xent_ce_prob_row_f64"(
        const double *x, const double *y, Py_ssize_t C, const double *w, double eps, double z,
        double scale_ce, double scale_z, double *g, double *ce, double *lse)
    double kl_row_f32 "xent_kl_row_f32"(const float *p, const float *q, Py_ssize_t C, float T,
                                        float scale, float *g, float *scratch)
    double kl_row_f64 "xent_kl_row_f64"(const double *p, const double *q, Py_ssize_t C, double T,
                                        double scale, double *g, double *scratch)
    void block_ce_index_f32 "xent_block_ce_index_f32"(
        const float *x, Py_ssize_t C, Py_ssize_t cs, Py_ssize_t nb, const float *m,
        const float *s, const float *ls, const int64_t *t, const float *w, float wsum,
        float eps, float z,
        float scale_ce, float scale_z, float *g, Py_ssize_t gcs, double *ce, double *lse,
        float *K)
    void block_ce_index_f64 "xent_block_ce_index_f64"(
        const double *x, Py_ssize_t C, Py_ssize_t cs, Py_ssize_t nb, const double *m,
        const double *s, const double *ls, const int64_t *t, const double *w, double wsum,
        double eps, double z,
        double scale_ce, double scale_z, double *g, Py_ssize_t gcs, double *ce, double *lse,
        double *K)
    double entropy_row_f32 "xent_entropy_row_f32"(const float *x, Py_ssize_t C)
    double entropy_row_f64 "xent_entropy_row_f64"(const double *x, Py_ssize_t C)

KIND_F32 = XENT_KIND_F32
KIND_F64 = XENT_KIND_F64
KIND_F16 = XENT_KIND_F16
KIND_BF16 = XENT_KIND_BF16


cdef inline real *_row_out(char *p, Py_ssize_t stride, real *scratch) noexcept nogil:
    """Where to compute a gradient row: in place if contiguous, else scratch."""
    if stride == sizeof(real):
        return <real *> p
    return scratch


cdef inline void _row_done(char *p, Py_ssize_t n, Py_ssize_t stride, real *row) noexcept nogil:
    """Scatter a gradient row computed in scratch (no-op when it was in place)."""
    if <char *> row != p:
        _scatter(row, n, <real *> p, stride // <Py_ssize_t> sizeof(real))


cdef inline void _row_zero(real *row, Py_ssize_t n, Py_ssize_t stride) noexcept nogil:
    """row[c * stride] = 0 (stride in bytes)."""
    cdef Py_ssize_t c
    for c in range(n):
        (<real *> (<char *> row + c * stride))[0] = 0


cdef inline void _ce_row(const char *xrow, int xkind, Py_ssize_t C, Py_ssize_t xs1,
                         const char *trow, int tcode, Py_ssize_t ts1, bint prob,
                         int64_t ignore_index, const real *w, real wsum, real eps, real z,
                         real scale_ce, real scale_z, char *grow, Py_ssize_t gs1,
                         double *ce, double *lse, real *mine) noexcept nogil:
    """One cross-entropy row (strides in bytes); grow == NULL: loss only.
    mine: 3*C reals of scratch."""
    cdef int64_t t = 0
    cdef const real *xr
    cdef const real *yr
    cdef real *gr = NULL
    if not prob:
        t = load_index(trow, tcode)
        if t == ignore_index:
            # Ignored rows contribute exactly 0, whatever their logits hold.
            ce[0] = 0
            lse[0] = 0
            if grow != NULL:
                _row_zero(<real *> grow, C, gs1)
            return
    xr = _row_in(xrow, C, xs1, xkind, mine)
    if grow != NULL:
        gr = _row_out(grow, gs1, mine + C)
    if prob:
        yr = _row_in(trow, C, ts1, tcode, mine + 2 * C)
        if real is float:
            ce_prob_row_f32(xr, yr, C, w, eps, z, scale_ce, scale_z, gr, ce, lse)
        else:
            ce_prob_row_f64(xr, yr, C, w, eps, z, scale_ce, scale_z, gr, ce, lse)
    else:
        if real is float:
            ce_index_row_f32(xr, C, t, w, wsum, eps, z, scale_ce, scale_z, gr, ce, lse)
        else:
            ce_index_row_f64(xr, C, t, w, wsum, eps, z, scale_ce, scale_z, gr, ce, lse)
    if gr != NULL:
        _row_done(grow, C, gs1, gr)


cdef void _ce_loop(const char *x, int xkind, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                   Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t xs2,
                   const char *tg, int tcode, Py_ssize_t ts0, Py_ssize_t ts1, Py_ssize_t ts2,
                   bint prob, int64_t ignore_index,
                   const real *w, real wsum, real eps, real z, real scale_ce, real scale_z,
                   char *g, Py_ssize_t gs0, Py_ssize_t gs1, Py_ssize_t gs2,
                   double *ce, double *lse, real *scratch, int n_threads) noexcept nogil:
    """Cross-entropy rows; strides in bytes.  Index targets: tg[o*ts0 + i*ts2] of
    integer storage tcode.  Probability targets (prob): rows tg[o*ts0 + c*ts1 + i*ts2]
    of float storage tcode.  g == NULL: loss only.  scratch: 3*C reals per thread."""
    cdef Py_ssize_t r, o, i
    cdef char *grow
    for r in prange(outer * inner, schedule="static", num_threads=n_threads):
        o = r // inner
        i = r % inner
        grow = NULL
        if g != NULL:
            grow = g + o * gs0 + i * gs2
        _ce_row(x + o * xs0 + i * xs2, xkind, C, xs1, tg + o * ts0 + i * ts2, tcode, ts1,
                prob, ignore_index, w, wsum, eps, z, scale_ce, scale_z, grow, gs1,
                &ce[r], &lse[r], scratch + omp_get_thread_num() * 3 * C)


cdef inline Py_ssize_t _ce_tile_scratch(Py_ssize_t C, Py_ssize_t itemsize) noexcept nogil:
    """Reals of scratch per thread for _ce_tiles (kept even for 8-byte alignment)."""
    cdef Py_ssize_t wide = (TILE_ROWS * 8) // itemsize  # TILE_ROWS doubles / int64s
    cdef Py_ssize_t n = 2 * wide + 4 * TILE_ROWS + 2 * C * TILE_ROWS + 3 * C
    return n + n % 2


cdef void _ce_tiles(const real *x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t xs0,
                    const char *tg, int tcode, Py_ssize_t ts0, int64_t ignore_index,
                    const real *w, real wsum, real eps, real z, real scale_ce, real scale_z,
                    char *g, Py_ssize_t gs0, Py_ssize_t gs1,
                    double *ce, double *lse, real *scratch, int n_threads) noexcept nogil:
    """Class-index cross-entropy of few-class rows (C <= SMALL_C, unit class
    stride, xs0 in elements), TILE_ROWS rows at a time transposed into scratch so
    the arithmetic vectorises across rows (block_ce_index)."""
    cdef Py_ssize_t tile, r0, R, r, c, j, n_tiles = (outer + TILE_ROWS - 1) // TILE_ROWS
    cdef Py_ssize_t per_thread = _ce_tile_scratch(C, sizeof(real))
    cdef Py_ssize_t wide = (TILE_ROWS * 8) // sizeof(real)
    cdef real *mine
    cdef double *acc
    cdef int64_t *tt
    cdef real *m
    cdef real *s
    cdef real *K
    cdef real *ls
    cdef real *xt
    cdef real *gt
    cdef int64_t t
    cdef int special
    for tile in prange(n_tiles, schedule="static", num_threads=n_threads):
        r0 = tile * TILE_ROWS
        R = outer - r0 if outer - r0 < TILE_ROWS else TILE_ROWS
        mine = scratch + omp_get_thread_num() * per_thread
        acc = <double *> mine
        tt = <int64_t *> (mine + wide)
        m = mine + 2 * wide
        s = m + TILE_ROWS
        ls = s + TILE_ROWS
        K = ls + TILE_ROWS
        xt = K + TILE_ROWS
        gt = xt + C * TILE_ROWS
        for r in range(R):
            for c in range(C):
                xt[c * R + r] = x[(r0 + r) * xs0 + c]
            t = load_index(tg + (r0 + r) * ts0, tcode)
            tt[r] = -1 if t == ignore_index else t
        if real is float:
            special = block_stats_f32(xt, C, R, R, m, s, ls, acc)
        else:
            special = block_stats_f64(xt, C, R, R, m, s, ls, acc)
        if special:
            # A row with a non-finite max: every row of this tile by the row path.
            for r in range(r0, r0 + R):
                _ce_row(<const char *> (x + r * xs0), XENT_KIND_F32 if real is float else XENT_KIND_F64,
                        C, sizeof(real), tg + r * ts0, tcode, 0, False, ignore_index,
                        w, wsum, eps, z, scale_ce, scale_z,
                        g + r * gs0 if g != NULL else NULL, gs1, &ce[r], &lse[r], gt)
            continue
        if real is float:
            block_ce_index_f32(xt, C, R, R, m, s, ls, tt, w, wsum, eps, z, scale_ce, scale_z,
                               gt if g != NULL else NULL, R, &ce[r0], &lse[r0], K)
        else:
            block_ce_index_f64(xt, C, R, R, m, s, ls, tt, w, wsum, eps, z, scale_ce, scale_z,
                               gt if g != NULL else NULL, R, &ce[r0], &lse[r0], K)
        if g != NULL:
            for r in range(R):
                for c in range(C):
                    (<real *> (g + (r0 + r) * gs0 + c * gs1))[0] = gt[c * R + r]


cdef inline Py_ssize_t _ce_block_scratch(Py_ssize_t nb, Py_ssize_t C, Py_ssize_t itemsize) noexcept nogil:
    """Reals of scratch per thread for _ce_inner_blocks (even, for 8-byte alignment)."""
    cdef Py_ssize_t n = 2 * ((nb * 8) // itemsize) + 4 * nb + 3 * C
    return n + n % 2


cdef void _ce_inner_blocks(const real *x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                           Py_ssize_t xs0, Py_ssize_t xs1,
                           const char *tg, int tcode, Py_ssize_t ts0, Py_ssize_t ts2,
                           int64_t ignore_index, const real *w, real wsum, real eps, real z,
                           real scale_ce, real scale_z, char *g, Py_ssize_t gs0, Py_ssize_t gs1,
                           double *ce, double *lse, real *scratch, Py_ssize_t nb,
                           int n_threads) noexcept nogil:
    """Class-index cross-entropy with the class axis not last ((N, C, H, W), axis=1):
    blocks of nb adjacent positions (unit stride) whose classes are xs1 elements
    apart are computed together, vectorised across positions (block_ce_index),
    reading the data in memory order with no transposed copy.  xs0, xs1 in
    elements; target and gradient strides in bytes."""
    cdef Py_ssize_t per_thread = _ce_block_scratch(nb, C, sizeof(real))
    cdef Py_ssize_t wide = (nb * 8) // sizeof(real)
    cdef Py_ssize_t n_blocks = (inner + nb - 1) // nb
    cdef Py_ssize_t t, o, i0, width, j
    cdef real *mine
    cdef double *acc
    cdef int64_t *tt
    cdef real *m
    cdef real *s
    cdef real *ls
    cdef real *K
    cdef const real *xb
    cdef int64_t v
    cdef int special
    for t in prange(outer * n_blocks, schedule="static", num_threads=n_threads):
        o = t // n_blocks
        i0 = (t % n_blocks) * nb
        width = inner - i0 if inner - i0 < nb else nb
        mine = scratch + omp_get_thread_num() * per_thread
        acc = <double *> mine
        tt = <int64_t *> (mine + wide)
        m = mine + 2 * wide
        s = m + nb
        ls = s + nb
        K = ls + nb
        xb = x + o * xs0 + i0
        for j in range(width):
            v = load_index(tg + o * ts0 + (i0 + j) * ts2, tcode)
            tt[j] = -1 if v == ignore_index else v
        if real is float:
            special = block_stats_f32(xb, C, xs1, width, m, s, ls, acc)
        else:
            special = block_stats_f64(xb, C, xs1, width, m, s, ls, acc)
        if special:
            # A position with a non-finite max: this block column by column.
            for j in range(width):
                _ce_row(<const char *> (xb + j), XENT_KIND_F32 if real is float else XENT_KIND_F64,
                        C, xs1 * sizeof(real), tg + o * ts0 + (i0 + j) * ts2, tcode, 0, False,
                        ignore_index, w, wsum, eps, z, scale_ce, scale_z,
                        g + o * gs0 + (i0 + j) * sizeof(real) if g != NULL else NULL, gs1,
                        &ce[o * inner + i0 + j], &lse[o * inner + i0 + j], K + nb)
            continue
        if real is float:
            block_ce_index_f32(xb, C, xs1, width, m, s, ls, tt, w, wsum, eps, z, scale_ce,
                               scale_z, <float *> (g + o * gs0) + i0 if g != NULL else NULL,
                               gs1 // sizeof(float), &ce[o * inner + i0], &lse[o * inner + i0], K)
        else:
            block_ce_index_f64(xb, C, xs1, width, m, s, ls, tt, w, wsum, eps, z, scale_ce,
                               scale_z, <double *> (g + o * gs0) + i0 if g != NULL else NULL,
                               gs1 // sizeof(double), &ce[o * inner + i0], &lse[o * inner + i0], K)


cdef inline Py_ssize_t _bstride(cnp.ndarray a, int axis):
    return cnp.PyArray_STRIDE(a, axis)


def cross_entropy(cnp.ndarray x not None, int xkind, bint double_precision,
                  cnp.ndarray target not None, int tcode, bint prob, int64_t ignore_index,
                  weight, double wsum, double eps, double z, double scale_ce, double scale_z,
                  grad, cnp.ndarray ce not None, cnp.ndarray lse not None, int n_threads):
    """Per-row cross-entropy (and gradient) over axis 1 of x (outer, C, inner).

    x : logits of storage `xkind` (uint16 view for 16-bit floats); computed in
        double if `double_precision`, else float.
    target : (outer, 1, inner) class indices of integer storage `tcode`, or with
        `prob`, (outer, C, inner) probabilities of float storage `tcode`.
    weight : None or a contiguous (C,) array of the computation dtype.
    grad : None or a writable (outer, C, inner) array of the computation dtype.
    ce, lse : contiguous float64 (outer*inner,) outputs: the row's loss without
        z-loss, and its logsumexp (0 for ignored rows).
    """
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    if x.ndim != 3 or target.ndim != 3 or ce.shape[0] != outer * inner or lse.shape[0] != outer * inner:
        raise ValueError("xent._kernels.cross_entropy: internal contract violated (shapes)")
    if outer * inner == 0:
        return
    cdef Py_ssize_t itemsize = sizeof(double) if double_precision else sizeof(float)
    cdef void *scratch = NULL
    cdef const char *xp = cnp.PyArray_BYTES(x)
    cdef const char *tp = cnp.PyArray_BYTES(target)
    cdef Py_ssize_t xs0 = _bstride(x, 0), xs1 = _bstride(x, 1), xs2 = _bstride(x, 2)
    cdef Py_ssize_t ts0 = _bstride(target, 0), ts1 = _bstride(target, 1), ts2 = _bstride(target, 2)
    cdef char *gp = NULL
    cdef Py_ssize_t gs0 = 0, gs1 = 0, gs2 = 0
    cdef const void *wp = NULL
    if grad is not None:
        gp = cnp.PyArray_BYTES(<cnp.ndarray> grad)
        gs0, gs1, gs2 = _bstride(grad, 0), _bstride(grad, 1), _bstride(grad, 2)
    if weight is not None:
        wp = cnp.PyArray_DATA(<cnp.ndarray> weight)
    cdef double *cep = <double *> cnp.PyArray_DATA(ce)
    cdef double *lsep = <double *> cnp.PyArray_DATA(lse)
    cdef bint tiles = (not prob and inner == 1 and 0 < C <= SMALL_C and outer >= 2 * MIN_BLOCK
                       and xkind == (XENT_KIND_F64 if double_precision else XENT_KIND_F32)
                       and xs1 == itemsize and xs0 % itemsize == 0)
    # Class axis not last, unit stride across positions: vectorise across them.
    cdef bint blocks = (not tiles and not prob and inner > 1 and C > 0
                        and xkind == (XENT_KIND_F64 if double_precision else XENT_KIND_F32)
                        and xs2 == itemsize and xs1 % itemsize == 0 and xs0 % itemsize == 0
                        and (gp == NULL or (gs2 == itemsize and gs1 % itemsize == 0
                                            and gs0 % itemsize == 0)))
    # One scratch allocation, sized for the path taken: per thread, and no more
    # threads than there are tasks.
    cdef Py_ssize_t nb = 0, n_tasks, per_thread
    if tiles:
        n_tasks = (outer + TILE_ROWS - 1) // TILE_ROWS
        per_thread = _ce_tile_scratch(C, itemsize)
    elif blocks:
        nb = min(max(BLOCK_BYTES // (C * itemsize), MIN_BLOCK), MAX_BLOCK, inner)
        n_tasks = outer * ((inner + nb - 1) // nb)
        per_thread = _ce_block_scratch(nb, C, itemsize)
    else:
        n_tasks = outer * inner
        per_thread = 3 * max(C, 1)
    n_threads = <int> max(1, min(<Py_ssize_t> n_threads, n_tasks))
    scratch = _alloc_scratch(n_threads * per_thread * itemsize)
    try:
        with nogil:
            if blocks and double_precision:
                _ce_inner_blocks(<const double *> xp, outer, C, inner, xs0 // itemsize,
                                 xs1 // itemsize, tp, tcode, ts0, ts2, ignore_index,
                                 <const double *> wp, wsum, eps, z, scale_ce, scale_z,
                                 gp, gs0, gs1, cep, lsep, <double *> scratch, nb, n_threads)
            elif blocks:
                _ce_inner_blocks(<const float *> xp, outer, C, inner, xs0 // itemsize,
                                 xs1 // itemsize, tp, tcode, ts0, ts2, ignore_index,
                                 <const float *> wp, <float> wsum, <float> eps, <float> z,
                                 <float> scale_ce, <float> scale_z,
                                 gp, gs0, gs1, cep, lsep, <float *> scratch, nb, n_threads)
            elif tiles and double_precision:
                _ce_tiles(<const double *> xp, outer, C, xs0 // itemsize, tp, tcode, ts0,
                          ignore_index, <const double *> wp, wsum, eps, z, scale_ce, scale_z,
                          gp, gs0, gs1, cep, lsep, <double *> scratch, n_threads)
            elif tiles:
                _ce_tiles(<const float *> xp, outer, C, xs0 // itemsize, tp, tcode, ts0,
                          ignore_index, <const float *> wp, <float> wsum, <float> eps,
                          <float> z, <float> scale_ce, <float> scale_z,
                          gp, gs0, gs1, cep, lsep, <float *> scratch, n_threads)
            elif double_precision:
                _ce_loop(xp, xkind, outer, C, inner, xs0, xs1, xs2, tp, tcode, ts0, ts1, ts2,
                         prob, ignore_index, <const double *> wp, wsum, eps, z, scale_ce, scale_z,
                         gp, gs0, gs1, gs2, cep, lsep, <double *> scratch, n_threads)
            else:
                _ce_loop(xp, xkind, outer, C, inner, xs0, xs1, xs2, tp, tcode, ts0, ts1, ts2,
                         prob, ignore_index, <const float *> wp, <float> wsum, <float> eps,
                         <float> z, <float> scale_ce, <float> scale_z,
                         gp, gs0, gs1, gs2, cep, lsep, <float *> scratch, n_threads)
    finally:
        free(scratch)


cdef void _kl_loop(const char *p, int pkind, const char *q, int qkind,
                   Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                   Py_ssize_t ps0, Py_ssize_t ps1, Py_ssize_t ps2,
                   Py_ssize_t qs0, Py_ssize_t qs1, Py_ssize_t qs2, real T, real scale,
                   char *g, Py_ssize_t gs0, Py_ssize_t gs1, Py_ssize_t gs2,
                   double *kl, real *scratch, int n_threads) noexcept nogil:
    """Distillation KL rows; scratch: 5*C reals per thread (p, q, grad, 2 special)."""
    cdef Py_ssize_t r, o, i
    cdef real *mine
    cdef const real *pr
    cdef const real *qr
    cdef real *gr
    for r in prange(outer * inner, schedule="static", num_threads=n_threads):
        o = r // inner
        i = r % inner
        mine = scratch + omp_get_thread_num() * 5 * C
        pr = _row_in(p + o * ps0 + i * ps2, C, ps1, pkind, mine)
        qr = _row_in(q + o * qs0 + i * qs2, C, qs1, qkind, mine + C)
        gr = NULL
        if g != NULL:
            gr = _row_out(g + o * gs0 + i * gs2, gs1, mine + 2 * C)
        if real is float:
            kl[r] = kl_row_f32(pr, qr, C, T, scale, gr, mine + 3 * C)
        else:
            kl[r] = kl_row_f64(pr, qr, C, T, scale, gr, mine + 3 * C)
        if gr != NULL:
            _row_done(g + o * gs0 + i * gs2, C, gs1, gr)


def kl_divergence(cnp.ndarray p not None, int pkind, cnp.ndarray q not None, int qkind,
                  bint double_precision, double T, double scale, grad,
                  cnp.ndarray kl not None, int n_threads):
    """Per-row KL(softmax(p/T) || softmax(q/T)) over axis 1 of two (outer, C, inner)
    arrays, and optionally its gradient w.r.t. q times `scale` into `grad`."""
    cdef Py_ssize_t outer = q.shape[0], C = q.shape[1], inner = q.shape[2]
    if p.ndim != 3 or q.ndim != 3 or kl.shape[0] != outer * inner:
        raise ValueError("xent._kernels.kl_divergence: internal contract violated (shapes)")
    if outer * inner == 0:
        return
    cdef Py_ssize_t itemsize = sizeof(double) if double_precision else sizeof(float)
    n_threads = <int> max(1, min(<Py_ssize_t> n_threads, outer * inner))
    cdef void *scratch = _alloc_scratch(n_threads * 5 * max(C, 1) * itemsize)
    cdef const char *pp = cnp.PyArray_BYTES(p)
    cdef const char *qp = cnp.PyArray_BYTES(q)
    cdef Py_ssize_t ps0 = _bstride(p, 0), ps1 = _bstride(p, 1), ps2 = _bstride(p, 2)
    cdef Py_ssize_t qs0 = _bstride(q, 0), qs1 = _bstride(q, 1), qs2 = _bstride(q, 2)
    cdef char *gp = NULL
    cdef Py_ssize_t gs0 = 0, gs1 = 0, gs2 = 0
    if grad is not None:
        gp = cnp.PyArray_BYTES(<cnp.ndarray> grad)
        gs0, gs1, gs2 = _bstride(grad, 0), _bstride(grad, 1), _bstride(grad, 2)
    cdef double *klp = <double *> cnp.PyArray_DATA(kl)
    try:
        with nogil:
            if double_precision:
                _kl_loop(pp, pkind, qp, qkind, outer, C, inner, ps0, ps1, ps2, qs0, qs1, qs2,
                         T, scale, gp, gs0, gs1, gs2, klp, <double *> scratch, n_threads)
            else:
                _kl_loop(pp, pkind, qp, qkind, outer, C, inner, ps0, ps1, ps2, qs0, qs1, qs2,
                         <float> T, <float> scale, gp, gs0, gs1, gs2, klp, <float *> scratch,
                         n_threads)
    finally:
        free(scratch)


cdef void _entropy_loop(const char *x, int xkind, Py_ssize_t outer, Py_ssize_t C,
                        Py_ssize_t inner, Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t xs2,
                        double *h, real *scratch, int n_threads) noexcept nogil:
    cdef Py_ssize_t r, o, i
    cdef const real *xr
    for r in prange(outer * inner, schedule="static", num_threads=n_threads):
        o = r // inner
        i = r % inner
        xr = _row_in(x + o * xs0 + i * xs2, C, xs1, xkind, scratch + omp_get_thread_num() * C)
        if real is float:
            h[r] = entropy_row_f32(xr, C)
        else:
            h[r] = entropy_row_f64(xr, C)


def entropy(cnp.ndarray x not None, int xkind, bint double_precision,
            cnp.ndarray h not None, int n_threads):
    """Per-row entropy (nats) of softmax over axis 1 of x (outer, C, inner) into h."""
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    if x.ndim != 3 or h.shape[0] != outer * inner:
        raise ValueError("xent._kernels.entropy: internal contract violated (shapes)")
    if outer * inner == 0:
        return
    cdef Py_ssize_t itemsize = sizeof(double) if double_precision else sizeof(float)
    n_threads = <int> max(1, min(<Py_ssize_t> n_threads, outer * inner))
    cdef void *scratch = _alloc_scratch(n_threads * max(C, 1) * itemsize)
    cdef const char *xp = cnp.PyArray_BYTES(x)
    cdef Py_ssize_t xs0 = _bstride(x, 0), xs1 = _bstride(x, 1), xs2 = _bstride(x, 2)
    cdef double *hp = <double *> cnp.PyArray_DATA(h)
    try:
        with nogil:
            if double_precision:
                _entropy_loop(xp, xkind, outer, C, inner, xs0, xs1, xs2, hp,
                              <double *> scratch, n_threads)
            else:
                _entropy_loop(xp, xkind, outer, C, inner, xs0, xs1, xs2, hp,
                              <float *> scratch, n_threads)
    finally:
        free(scratch)


def class_index_stats(cnp.ndarray t not None, int tcode, Py_ssize_t C, int64_t ignore_index,
                      weight):
    """One pass over 1-D class indices t (storage tcode, any stride).

    Returns (first_bad, n_valid, weight_total): the flat position of the first
    index outside [0, C) that is not ignore_index (-1 if none), the number of
    non-ignored indices, and the sum of weight[t] over them (float64 weight,
    contiguous, or None for a weight of 1).
    """
    cdef Py_ssize_t n = t.shape[0], stride = cnp.PyArray_STRIDE(t, 0), i, bad = -1, valid = 0
    cdef const char *p = cnp.PyArray_BYTES(t)
    cdef const double *w = NULL
    cdef double total = 0
    cdef int64_t v
    if t.ndim != 1:
        raise ValueError("xent._kernels.class_index_stats: internal contract violated (ndim)")
    if weight is not None:
        w = <const double *> cnp.PyArray_DATA(<cnp.ndarray> weight)
    with nogil:
        for i in range(n):
            v = load_index(p + i * stride, tcode)
            if v == ignore_index:
                continue
            # uint64 indices above INT64_MAX load as negative: out of range too
            if v < 0 or v >= C:
                bad = i
                break
            valid += 1
            if w != NULL:
                total += w[v]
    return bad, valid, (total if w != NULL else <double> valid)


cdef double _sum_fixed(const double *v, Py_ssize_t n) noexcept nogil:
    """Sum in a fixed order (8 interleaved partial sums, then combined in order):
    the same bits whatever the thread count, and ~8x less rounding growth than
    one running sum."""
    cdef double acc[8]
    cdef Py_ssize_t i, j
    for j in range(8):
        acc[j] = 0
    for i in range(0, n - n % 8, 8):
        for j in range(8):
            acc[j] += v[i + j]
    for i in range(n - n % 8, n):
        acc[i % 8] += v[i]
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


def sum_rows(cnp.ndarray v not None):
    """Fixed-order float64 sum of a contiguous 1-D float64 array (see _sum_fixed)."""
    if v.ndim != 1 or cnp.PyArray_TYPE(v) != cnp.NPY_FLOAT64 or not cnp.PyArray_IS_C_CONTIGUOUS(v):
        raise ValueError("xent._kernels.sum_rows: internal contract violated")
    cdef double total
    with nogil:
        total = _sum_fixed(<const double *> cnp.PyArray_DATA(v), v.shape[0])
    return total


def cross_entropy_2d(cnp.ndarray x not None, cnp.ndarray t not None, int tcode,
                     int64_t ignore_index, int n_threads):
    """The common small call, without the Python layer's general machinery:
    C-contiguous 2-D float32/float64 logits (N, C), contiguous 1-D class indices
    of storage tcode, no weights / smoothing / z-loss / gradient.

    Returns (first_bad, total, n_valid): the flat position of the first index
    outside [0, C) that is not ignore_index (-1 if none; then nothing else was
    computed), the fixed-order float64 sum of the row losses, and the number of
    non-ignored rows.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1]
    bad, n_valid, _ = class_index_stats(t, tcode, C, ignore_index, None)
    if bad >= 0 or N == 0:
        return bad, 0.0, n_valid
    ce = cnp.PyArray_EMPTY(1, [N], cnp.NPY_FLOAT64, 0)
    lse = cnp.PyArray_EMPTY(1, [N], cnp.NPY_FLOAT64, 0)
    double_precision = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT64
    cross_entropy(x.reshape(N, C, 1), XENT_KIND_F64 if double_precision else XENT_KIND_F32,
                  double_precision, t.reshape(N, 1, 1), tcode, False, ignore_index,
                  None, <double> C, 0.0, 0.0, 1.0, 1.0, None, ce, lse, n_threads)
    return -1, sum_rows(ce), n_valid
