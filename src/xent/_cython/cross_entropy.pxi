# Multiclass losses: cross-entropy (class-index and probability targets), the
# distillation KL and the entropy, each over axis 1 of a 3-D (outer, C, inner)
# view.  Included by _kernels.pyx.
#
# Contract (checked by the Python layer, _api/multiclass.py / _api/divergences.py):
# every class index is in [0, C) or equals ignore_index; C >= 1 whenever a row is
# not ignored; strides are whole multiples of the item size; a gradient buffer is
# either disjoint from every input or the logits themselves (same strides);
# per-row outputs are contiguous float64 arrays of outer*inner values.  The one
# exception is cross_entropy_small, the common small call in a single compiled
# call: it checks its own narrow case (indices included) and declines the rest.
#
# Every entry point fills a _CeJob and runs it through _ce_compute, which takes
# the path _ce_path picks (rows, row batches, few-class tiles, or blocks when the
# class axis is not last; cross_entropy_path names it): the same row gets the
# same bits from every entry point.  A batch sum of row
# losses is taken in one fixed order, _sum_tiles (per TILE_ROWS rows, then over
# those sums), which the few-class tiles can also form as they go: the one-pass
# forward of cross_entropy_small gives the bits of sum_rows over the rows.
#
# Arrays arrive as byte pointers with byte strides plus a storage kind, so one
# loop serves float32, float64, float16 and bfloat16 logits and targets of
# another float dtype: a row is used in place when it is contiguous in the
# computation dtype, and converted into per-thread scratch otherwise.

cdef extern from "xent/kernels.h" nogil:
    int64_t load_index "xent_load_index"(const char *p, int code)
    void load_indices "xent_load_indices"(const char *p, Py_ssize_t n, Py_ssize_t stride, int code,
                                          int64_t ignore_index, int64_t *dst)
    Py_ssize_t scan_indices "xent_scan_indices"(
        const char *p, Py_ssize_t n, Py_ssize_t stride, int code, Py_ssize_t C,
        int64_t ignore_index, const double *w, Py_ssize_t *n_valid, double *weight_total)
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
    int ce_index_parts_f32 "xent_ce_index_parts_f32"(
        const float *x, Py_ssize_t C, Py_ssize_t t, const float *w, float eps, float *g,
        float *xt, float *m, double *gap, Py_ssize_t *k, double *rest)
    int ce_index_parts_f64 "xent_ce_index_parts_f64"(
        const double *x, Py_ssize_t C, Py_ssize_t t, const double *w, double eps, double *g,
        double *xt, double *m, double *gap, Py_ssize_t *k, double *rest)
    void ce_index_finish_f32 "xent_ce_index_finish_f32"(
        Py_ssize_t C, Py_ssize_t t, const float *w, float wsum, float eps, float z,
        float scale_ce, float scale_z, float xt, float m, double gap, Py_ssize_t k,
        double rest, float *g, double *ce, double *lse)
    void ce_index_finish_f64 "xent_ce_index_finish_f64"(
        Py_ssize_t C, Py_ssize_t t, const double *w, double wsum, double eps, double z,
        double scale_ce, double scale_z, double xt, double m, double gap, Py_ssize_t k,
        double rest, double *g, double *ce, double *lse)
    float half_to_float "xent_half_to_float"(uint16_t h)

cdef extern from "xent/kernels.h" nogil:
    Py_ssize_t tile_targets "xent_tile_targets"(const char *p, int code, Py_ssize_t stride,
                                                Py_ssize_t n, int64_t ignore_index, Py_ssize_t C,
                                                int32_t *ti, Py_ssize_t *n_valid)
    int tile_ce_forward_f32 "xent_tile_ce_forward_f32"(
        const float *x, Py_ssize_t xs, Py_ssize_t nr, Py_ssize_t C, const int32_t *t,
        const float *w, double *ce, double *lse)
    int tile_ce_forward_f64 "xent_tile_ce_forward_f64"(
        const double *x, Py_ssize_t xs, Py_ssize_t nr, Py_ssize_t C, const int32_t *t,
        const double *w, double *ce, double *lse)

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


# One cross-entropy call: everything a row, tile or block task reads.  Strides
# are in bytes; the scalars are converted to the computation type where a task
# uses them (the same conversion every time, so the same bits).
cdef struct _CeJob:
    const char *x           # logits, storage xkind, (outer, C, inner)
    int xkind
    Py_ssize_t outer, C, inner, xs0, xs1, xs2
    const char *t           # class indices (integer storage tcode), or with prob
    int tcode               # probabilities (float storage tcode) of the logits' shape
    Py_ssize_t ts0, ts1, ts2
    bint prob
    int64_t ignore_index
    const void *w           # NULL, or C weights of the computation dtype
    double wsum, eps, z, scale_ce, scale_z
    char *g                 # NULL: loss only; else the gradient, computation dtype
    Py_ssize_t gs0, gs1, gs2
    double *ce              # outer*inner per-row losses (without z-loss)
    double *lse             # outer*inner per-row logsumexps
    # NULL, or the one-pass forward of few-class tiles (cross_entropy_small; the
    # tile path, no gradient, indices not checked yet): ce and lse are then not
    # used (each tile's rows go to scratch), and per tile k, tile_sums[k] is the
    # _sum_fixed of its rows' ce, tile_info[2k] its number of rows not ignored
    # and tile_info[2k + 1] its first row with an index outside [0, C) and not
    # ignored (the tile is then not computed), or -1.
    double *tile_sums
    Py_ssize_t *tile_info


cdef inline void _ce_row(const _CeJob *j, const char *xrow, const char *trow, char *grow,
                         double *ce, double *lse, real *mine) noexcept nogil:
    """One row of the job: logits at xrow (class stride j.xs1), its target at trow,
    its gradient at grow (class stride j.gs1; NULL: loss only), its loss and
    logsumexp into *ce and *lse.  mine: 3*C reals."""
    cdef Py_ssize_t C = j.C
    cdef const real *w = <const real *> j.w
    cdef int64_t t = 0
    cdef const real *xr
    cdef const real *yr
    cdef real *gr = NULL
    if not j.prob:
        t = load_index(trow, j.tcode)
        if t == j.ignore_index:
            # Ignored rows contribute exactly 0, whatever their logits hold.
            ce[0] = 0
            lse[0] = 0
            if grow != NULL:
                _row_zero(<real *> grow, C, j.gs1)
            return
    xr = _row_in(xrow, C, j.xs1, j.xkind, mine)
    if grow != NULL:
        gr = _row_out(grow, j.gs1, mine + C)
    if j.prob:
        yr = _row_in(trow, C, j.ts1, j.tcode, mine + 2 * C)
        if real is float:
            ce_prob_row_f32(xr, yr, C, w, <float> j.eps, <float> j.z, <float> j.scale_ce,
                            <float> j.scale_z, gr, ce, lse)
        else:
            ce_prob_row_f64(xr, yr, C, w, j.eps, j.z, j.scale_ce, j.scale_z, gr, ce, lse)
    else:
        if real is float:
            ce_index_row_f32(xr, C, t, w, <float> j.wsum, <float> j.eps, <float> j.z,
                             <float> j.scale_ce, <float> j.scale_z, gr, ce, lse)
        else:
            ce_index_row_f64(xr, C, t, w, j.wsum, j.eps, j.z, j.scale_ce, j.scale_z, gr,
                             ce, lse)
    if gr != NULL:
        _row_done(grow, C, j.gs1, gr)


cdef inline void _ce_rows_task(const _CeJob *j, Py_ssize_t r, real *mine) noexcept nogil:
    """Row r = o*inner + i, any strides and storage.  mine: 3*C reals."""
    cdef Py_ssize_t o = r // j.inner, i = r % j.inner
    _ce_row(j, j.x + o * j.xs0 + i * j.xs2, j.t + o * j.ts0 + i * j.ts2,
            j.g + o * j.gs0 + i * j.gs2 if j.g != NULL else NULL, &j.ce[r], &j.lse[r], mine)


cdef void _ce_row_batch(const _CeJob *j, Py_ssize_t batch, Py_ssize_t nb,
                        real *mine) noexcept nogil:
    """Rows batch*nb .. (nb <= ROW_BATCH, see _batch_rows) of a job with class
    indices, inner == 1, unit-stride rows (native, or float16 read in place) and a
    unit-stride gradient if any, in two passes: every row's reads of x, max and sum of exps (ce_index_parts,
    which stores the exps into the gradient), then every row's log, loss and
    gradient (ce_index_finish): the arithmetic of ce_index_row, split; see
    ROW_BATCH.  Rows whose max is not finite, and ignored ones, take _ce_row.
    mine: 3*C reals."""
    cdef Py_ssize_t r0 = batch * nb, C = j.C, b, r
    cdef Py_ssize_t n = j.outer - r0 if j.outer - r0 < nb else nb
    cdef const real *w = <const real *> j.w
    cdef bint half = real is float and j.xkind == XENT_KIND_F16
    cdef real m[ROW_BATCH]
    cdef real xt[ROW_BATCH]
    cdef Py_ssize_t t[ROW_BATCH]
    cdef Py_ssize_t k[ROW_BATCH]
    cdef double rest[ROW_BATCH]
    cdef double gap[ROW_BATCH]
    cdef int ready[ROW_BATCH]
    cdef const char *xrow
    cdef real *grow = NULL
    for b in range(n):
        r = r0 + b
        xrow = j.x + r * j.xs0
        if j.g != NULL:
            grow = <real *> (j.g + r * j.gs0)
        ready[b] = 0
        t[b] = load_index(j.t + r * j.ts0, j.tcode)
        if t[b] == j.ignore_index:
            continue
        if real is float:
            if half:  # no label smoothing (see _ce_path)
                xt[b] = half_to_float((<const uint16_u *> xrow)[t[b]])
                gap[b] = 0
                ready[b] = f16_row_parts(<const uint16_u *> xrow, C, &m[b], &k[b], &rest[b], grow)
            else:
                ready[b] = ce_index_parts_f32(<const float_u *> xrow, C, t[b], w, <float> j.eps,
                                              grow, &xt[b], &m[b], &gap[b], &k[b], &rest[b])
        else:
            ready[b] = ce_index_parts_f64(<const double_u *> xrow, C, t[b], w, j.eps, grow,
                                          &xt[b], &m[b], &gap[b], &k[b], &rest[b])
    for b in range(n):
        r = r0 + b
        if j.g != NULL:
            grow = <real *> (j.g + r * j.gs0)
        if not ready[b]:
            _ce_row(j, j.x + r * j.xs0, j.t + r * j.ts0, <char *> grow, &j.ce[r], &j.lse[r],
                    mine)
        elif real is float:
            ce_index_finish_f32(C, t[b], w, <float> j.wsum, <float> j.eps, <float> j.z,
                                <float> j.scale_ce, <float> j.scale_z, xt[b], m[b], gap[b],
                                k[b], rest[b], grow, &j.ce[r], &j.lse[r])
        else:
            ce_index_finish_f64(C, t[b], w, j.wsum, j.eps, j.z, j.scale_ce, j.scale_z, xt[b],
                                m[b], gap[b], k[b], rest[b], grow, &j.ce[r], &j.lse[r])


cdef inline Py_ssize_t _ce_tile_scratch(Py_ssize_t C, Py_ssize_t itemsize) noexcept nogil:
    """Reals of scratch per thread for _ce_tile (kept even for 8-byte alignment)."""
    cdef Py_ssize_t wide = (TILE_ROWS * 8) // itemsize  # TILE_ROWS doubles / int64s
    cdef Py_ssize_t n = (4 * wide + (TILE_ROWS * 4) // itemsize  # + TILE_ROWS int32s
                         + 4 * TILE_ROWS + 2 * C * TILE_ROWS + 3 * C)
    return n + n % 2


cdef void _ce_tile(const _CeJob *j, Py_ssize_t tile, real *mine) noexcept nogil:
    """Class-index cross-entropy of few-class rows (C <= SMALL_C, contiguous rows
    of the computation dtype, inner == 1): rows tile*TILE_ROWS onwards, at most
    TILE_ROWS of them.  The indices are read once into int32 (xent_tile_targets,
    which also counts and checks them).  Without a gradient or label smoothing
    the rows are read in place by the function of tiles.h specialised for this
    C; for other C, or with a gradient or smoothing, they are transposed into
    scratch so the arithmetic vectorises across rows (block_stats /
    block_ce_index).  With j.tile_sums, the one-pass forward (see _CeJob).
    mine: _ce_tile_scratch reals."""
    cdef Py_ssize_t C = j.C, xs0 = j.xs0 // <Py_ssize_t> sizeof(real)
    cdef Py_ssize_t r0 = tile * TILE_ROWS, r, c, bad, valid
    cdef Py_ssize_t R = j.outer - r0 if j.outer - r0 < TILE_ROWS else TILE_ROWS
    cdef Py_ssize_t wide = (TILE_ROWS * 8) // sizeof(real)
    cdef const real *x = <const real *> j.x + r0 * xs0
    cdef const real *w = <const real *> j.w
    cdef double *acc = <double *> mine
    cdef int64_t *tt = <int64_t *> (mine + wide)
    cdef double *ce = <double *> (mine + 2 * wide)
    cdef double *lse = <double *> (mine + 3 * wide)
    cdef int32_t *ti = <int32_t *> (mine + 4 * wide)
    cdef real *m = mine + 4 * wide + (TILE_ROWS * 4) // sizeof(real)
    cdef real *s = m + TILE_ROWS
    cdef real *ls = s + TILE_ROWS
    cdef real *K = ls + TILE_ROWS
    cdef real *xt = K + TILE_ROWS
    cdef real *gt = xt + C * TILE_ROWS
    cdef int special, status
    bad = tile_targets(j.t + r0 * j.ts0, j.tcode, j.ts0, R, j.ignore_index, C, ti, &valid)
    if j.tile_sums != NULL:
        j.tile_info[2 * tile] = valid
        j.tile_info[2 * tile + 1] = r0 + bad if bad >= 0 else -1
        j.tile_sums[tile] = 0
        if bad >= 0:
            return
    else:
        ce = &j.ce[r0]
        lse = &j.lse[r0]
    if j.g == NULL and j.eps == 0:
        # -1: no specialised function for this C, take the transposed tile
        if real is float:
            status = tile_ce_forward_f32(x, xs0, R, C, ti, w, ce, lse)
        else:
            status = tile_ce_forward_f64(x, xs0, R, C, ti, w, ce, lse)
        if status == 0:
            if j.tile_sums != NULL:
                j.tile_sums[tile] = _sum_fixed(ce, R)
            return
    _tile_in(x, R, C, xs0, xt)
    for r in range(R):
        tt[r] = ti[r]
    if real is float:
        special = block_stats_f32(xt, C, R, R, m, s, ls, acc)
    else:
        special = block_stats_f64(xt, C, R, R, m, s, ls, acc)
    if special:
        # A row with a non-finite max: every row of this tile by the row path.
        for r in range(R):
            _ce_row(j, j.x + (r0 + r) * j.xs0, j.t + (r0 + r) * j.ts0,
                    j.g + (r0 + r) * j.gs0 if j.g != NULL else NULL, &ce[r], &lse[r], gt)
    else:
        if real is float:
            block_ce_index_f32(xt, C, R, R, m, s, ls, tt, w, <float> j.wsum, <float> j.eps,
                               <float> j.z, <float> j.scale_ce, <float> j.scale_z,
                               gt if j.g != NULL else NULL, R, ce, lse, K)
        else:
            block_ce_index_f64(xt, C, R, R, m, s, ls, tt, w, j.wsum, j.eps, j.z, j.scale_ce,
                               j.scale_z, gt if j.g != NULL else NULL, R, ce, lse, K)
        if j.g != NULL:
            for r in range(R):
                for c in range(C):
                    (<real *> (j.g + (r0 + r) * j.gs0 + c * j.gs1))[0] = gt[c * R + r]
    if j.tile_sums != NULL:
        j.tile_sums[tile] = _sum_fixed(ce, R)


cdef inline Py_ssize_t _ce_block_scratch(Py_ssize_t nb, Py_ssize_t C, Py_ssize_t itemsize) noexcept nogil:
    """Reals of scratch per thread for _ce_block (even, for 8-byte alignment)."""
    cdef Py_ssize_t n = 2 * ((nb * 8) // itemsize) + 4 * nb + 3 * C
    return n + n % 2


cdef void _ce_block(const _CeJob *j, Py_ssize_t task, Py_ssize_t nb, real *mine) noexcept nogil:
    """Class-index cross-entropy with the class axis not last ((N, C, H, W), axis=1):
    block `task` of nb adjacent positions (unit stride) whose classes are j.xs1
    bytes apart, computed together, vectorised across positions (block_ce_index),
    reading the data in memory order with no transposed copy (logits and gradient
    of the computation dtype, strides whole multiples of its size).
    mine: _ce_block_scratch reals."""
    cdef Py_ssize_t C = j.C, inner = j.inner
    cdef Py_ssize_t n_blocks = (inner + nb - 1) // nb
    cdef Py_ssize_t o = task // n_blocks, i0 = (task % n_blocks) * nb, k, r
    cdef Py_ssize_t width = inner - i0 if inner - i0 < nb else nb
    cdef Py_ssize_t xs1 = j.xs1 // <Py_ssize_t> sizeof(real)
    cdef Py_ssize_t wide = (nb * 8) // sizeof(real)
    cdef const real *xb = <const real *> (j.x + o * j.xs0) + i0
    cdef const real *w = <const real *> j.w
    cdef double *acc = <double *> mine
    cdef int64_t *tt = <int64_t *> (mine + wide)
    cdef real *m = mine + 2 * wide
    cdef real *s = m + nb
    cdef real *ls = s + nb
    cdef real *K = ls + nb
    cdef real *gb = NULL
    cdef int special
    load_indices(j.t + o * j.ts0 + i0 * j.ts2, width, j.ts2, j.tcode, j.ignore_index, tt)
    if real is float:
        special = block_stats_f32(xb, C, xs1, width, m, s, ls, acc)
    else:
        special = block_stats_f64(xb, C, xs1, width, m, s, ls, acc)
    if special:
        # A position with a non-finite max: this block column by column.
        for k in range(width):
            _ce_rows_task(j, o * inner + i0 + k, K + nb)
        return
    if j.g != NULL:
        gb = <real *> (j.g + o * j.gs0) + i0
    r = o * inner + i0
    if real is float:
        block_ce_index_f32(xb, C, xs1, width, m, s, ls, tt, w, <float> j.wsum, <float> j.eps,
                           <float> j.z, <float> j.scale_ce, <float> j.scale_z,
                           gb, j.gs1 // <Py_ssize_t> sizeof(float), &j.ce[r], &j.lse[r], K)
    else:
        block_ce_index_f64(xb, C, xs1, width, m, s, ls, tt, w, j.wsum, j.eps, j.z,
                           j.scale_ce, j.scale_z, gb, j.gs1 // <Py_ssize_t> sizeof(double),
                           &j.ce[r], &j.lse[r], K)


# The ways through a cross-entropy call, chosen by _ce_path (names: CROSS_ENTROPY_PATHS).
cdef enum:
    _CE_ROWS = 0         # one row at a time, any strides, storage and targets
    _CE_TILES = 1        # few-class rows with class indices, TILE_ROWS at a time (SMALL_C)
    _CE_BLOCKS = 2       # class axis not last: blocks of adjacent positions
    _CE_ROW_BATCHES = 3  # unit-stride rows with class indices in batches (ROW_BATCH)

CROSS_ENTROPY_PATHS = ("rows", "tiles", "blocks", "row_batches")


cdef inline void _ce_task(const _CeJob *j, int path, Py_ssize_t k, Py_ssize_t nb,
                          real *mine) noexcept nogil:
    if path == _CE_TILES:
        _ce_tile(j, k, mine)
    elif path == _CE_BLOCKS:
        _ce_block(j, k, nb, mine)
    elif path == _CE_ROW_BATCHES:
        _ce_row_batch(j, k, nb, mine)
    else:
        _ce_rows_task(j, k, mine)


cdef void _ce_tasks(const _CeJob *j, int path, Py_ssize_t n_tasks, Py_ssize_t nb,
                    real *scratch, Py_ssize_t per_thread, int n_threads) noexcept nogil:
    """Run the job's tasks (rows, tiles or blocks), statically split over n_threads,
    each with per_thread reals of scratch."""
    cdef Py_ssize_t k
    cdef real *mine
    if n_threads == 1:
        # No parallel region: opening one, even for a team of one, costs about a
        # microsecond (libgomp allocates a team), the whole arithmetic of a
        # 256x10 call.
        for k in range(n_tasks):
            _ce_task(j, path, k, nb, scratch)
        return
    for k in prange(n_tasks, schedule="static", num_threads=n_threads):
        mine = scratch + omp_get_thread_num() * per_thread
        _ce_task(j, path, k, nb, mine)


cdef int _ce_path(const _CeJob *j, bint double_precision) noexcept nogil:
    """The path of the job (_CE_*): tiles of few-class rows, blocks of positions
    when the class axis is not last, batches of unit-stride rows, else
    row by row."""
    cdef Py_ssize_t C = j.C, inner = j.inner
    cdef Py_ssize_t itemsize = sizeof(double) if double_precision else sizeof(float)
    cdef bint native = j.xkind == (XENT_KIND_F64 if double_precision else XENT_KIND_F32)
    if (not j.prob and inner == 1 and 0 < C <= SMALL_C and j.outer >= 2 * MIN_BLOCK
            and native and j.xs1 == itemsize and j.xs0 % itemsize == 0):
        return _CE_TILES
    if (not j.prob and inner > 1 and C > 0 and native and j.xs2 == itemsize
            and j.xs1 % itemsize == 0 and j.xs0 % itemsize == 0
            and (j.g == NULL or (j.gs2 == itemsize and j.gs1 % itemsize == 0
                                 and j.gs0 % itemsize == 0))):
        # Class axis not last, unit stride across positions: vectorise across them.
        return _CE_BLOCKS
    if (not j.prob and inner == 1 and C > 0 and (j.g == NULL or j.gs1 == itemsize)
            and (_batch_rows(C, itemsize, j.g != NULL) > 1 or j.xkind == XENT_KIND_F16)
            and ((native and j.xs1 == itemsize)
                 or (not double_precision and j.xkind == XENT_KIND_F16 and j.xs1 == 2
                     and j.eps == 0))):
        # Unit-stride rows (float16 without label smoothing, whose gap would need
        # a converted row): in batches, sums before logs (float16 rows, read in
        # place there, even in batches of one).
        return _CE_ROW_BATCHES
    return _CE_ROWS


cdef int _ce_compute(const _CeJob *j, bint double_precision, int n_threads) except -1:
    """Fill j.ce and j.lse (and the gradient when j.g != NULL) for every row, or
    with j.tile_sums the tile sums and counts (the tile path only).

    Chooses the path (_ce_path), allocates its scratch once and runs it without
    the GIL.  Every caller goes through here, so a row's loss has the same bits
    whichever entry point computed it."""
    cdef Py_ssize_t outer = j.outer, C = j.C, inner = j.inner
    if outer * inner == 0:
        return 0
    cdef Py_ssize_t itemsize = sizeof(double) if double_precision else sizeof(float)
    cdef int path = _ce_path(j, double_precision)
    if j.tile_sums != NULL and (path != _CE_TILES or j.g != NULL):
        raise ValueError("xent._kernels: internal contract violated (tile sums off the tile path)")
    # One scratch allocation, sized for the path taken: per thread, and no more
    # threads than there are tasks.
    cdef Py_ssize_t nb = 0, n_tasks, per_thread
    if path == _CE_TILES:
        n_tasks = (outer + TILE_ROWS - 1) // TILE_ROWS
        per_thread = _ce_tile_scratch(C, itemsize)
    elif path == _CE_BLOCKS:
        nb = min(max(BLOCK_BYTES // (C * itemsize), MIN_BLOCK), MAX_BLOCK, inner)
        n_tasks = outer * ((inner + nb - 1) // nb)
        per_thread = _ce_block_scratch(nb, C, itemsize)
    elif path == _CE_ROW_BATCHES:
        nb = _batch_rows(C, itemsize, j.g != NULL)
        n_tasks = (outer + nb - 1) // nb
        per_thread = 3 * C
    else:
        n_tasks = outer * inner
        per_thread = 3 * max(C, 1)
    n_threads = <int> max(1, min(<Py_ssize_t> n_threads, n_tasks))
    cdef void *scratch = _alloc_scratch(n_threads * per_thread * itemsize)
    with nogil:
        if double_precision:
            _ce_tasks(j, path, n_tasks, nb, <double_u *> scratch, per_thread, n_threads)
        else:
            _ce_tasks(j, path, n_tasks, nb, <float_u *> scratch, per_thread, n_threads)
    free(scratch)
    return 0


cdef inline Py_ssize_t _bstride(cnp.ndarray a, int axis):
    return cnp.PyArray_STRIDE(a, axis)


cdef int _ce_job_arrays(_CeJob *j, cnp.ndarray x, int xkind, cnp.ndarray target, int tcode,
                        bint prob, grad) except -1:
    """The array fields of j (logits, target, gradient) for cross_entropy's arguments."""
    if x.ndim != 3 or target.ndim != 3:
        raise ValueError("xent._kernels.cross_entropy: internal contract violated (shapes)")
    j.outer, j.C, j.inner = x.shape[0], x.shape[1], x.shape[2]
    j.x, j.xkind = cnp.PyArray_BYTES(x), xkind
    j.xs0, j.xs1, j.xs2 = _bstride(x, 0), _bstride(x, 1), _bstride(x, 2)
    j.t, j.tcode, j.prob = cnp.PyArray_BYTES(target), tcode, prob
    j.ts0, j.ts1, j.ts2 = _bstride(target, 0), _bstride(target, 1), _bstride(target, 2)
    j.g, j.gs0, j.gs1, j.gs2 = NULL, 0, 0, 0
    if grad is not None:
        j.g = cnp.PyArray_BYTES(<cnp.ndarray> grad)
        j.gs0, j.gs1, j.gs2 = _bstride(grad, 0), _bstride(grad, 1), _bstride(grad, 2)
    return 0


def cross_entropy(cnp.ndarray x not None, cnp.ndarray target not None, *, int xkind, int tcode,
                  bint prob, int64_t ignore_index, weight, double wsum, double eps, double z,
                  double scale_ce, double scale_z, grad, cnp.ndarray ce not None,
                  cnp.ndarray lse not None, int n_threads):
    """Per-row cross-entropy (and gradient) over axis 1 of x (outer, C, inner).

    The logits and target come first, the rest by keyword.  A call may pass at
    most (30 - positional) / 2 keywords: CPython compiles a call with more into
    one that builds a dict (CALL_FUNCTION_EX), several thousand instructions more
    a call (hence also no `double_precision`: it is xkind == FLOAT_KINDS["float64"]).

    x : logits of storage `xkind` (uint16 view for 16-bit floats); computed in
        double for float64 storage, else in float.
    target : (outer, 1, inner) class indices of integer storage `tcode`, or with
        `prob`, (outer, C, inner) probabilities of float storage `tcode`.
    weight : None or a contiguous (C,) array of the computation dtype; wsum: its
        sum (C without weights).
    eps, z : label smoothing and z-loss coefficient.
    scale_ce, scale_z : the gradient's factors of the loss and z-loss terms.
    grad : None or a writable (outer, C, inner) array of the computation dtype.
    ce, lse : contiguous float64 (outer*inner,) outputs: the row's loss without
        z-loss, and its logsumexp (0 for ignored rows).
    n_threads : upper bound on the OpenMP team size.

    cross_entropy_path names the path these arguments take.
    """
    cdef _CeJob j
    cdef bint double_precision = xkind == XENT_KIND_F64
    _ce_job_arrays(&j, x, xkind, target, tcode, prob, grad)
    if ce.shape[0] != j.outer * j.inner or lse.shape[0] != j.outer * j.inner:
        raise ValueError("xent._kernels.cross_entropy: internal contract violated (shapes)")
    j.ignore_index = ignore_index
    j.w = NULL if weight is None else cnp.PyArray_DATA(<cnp.ndarray> weight)
    j.wsum, j.eps, j.z, j.scale_ce, j.scale_z = wsum, eps, z, scale_ce, scale_z
    j.ce = <double *> cnp.PyArray_DATA(ce)
    j.lse = <double *> cnp.PyArray_DATA(lse)
    j.tile_sums, j.tile_info = NULL, NULL
    _ce_compute(&j, double_precision, n_threads)


def cross_entropy_path(cnp.ndarray x not None, cnp.ndarray target not None, *, int xkind,
                       int tcode, bint prob, double eps=0.0, grad=None):
    """The name (one of CROSS_ENTROPY_PATHS) of the path cross_entropy takes for
    these arguments (as for cross_entropy; the others do not choose the path):
    the same job and the same choice (_ce_path) as cross_entropy and
    cross_entropy_small."""
    cdef _CeJob j
    _ce_job_arrays(&j, x, xkind, target, tcode, prob, grad)
    j.eps = eps
    return CROSS_ENTROPY_PATHS[_ce_path(&j, xkind == XENT_KIND_F64)]


# One distillation-KL call (kl_divergence): strides in bytes; p and q of any
# floating storage, the gradient (or NULL) and scale in the computation dtype.
cdef struct _KlJob:
    const char *p
    int pkind
    const char *q
    int qkind
    Py_ssize_t outer, C, inner, ps0, ps1, ps2, qs0, qs1, qs2
    double T, scale
    char *g
    Py_ssize_t gs0, gs1, gs2
    double *kl              # outer*inner per-row values


cdef void _kl_loop(const _KlJob *j, real *scratch, int n_threads) noexcept nogil:
    """Distillation KL rows; scratch: 5*C reals per thread (p, q, grad, 2 special)."""
    cdef Py_ssize_t r, o, i, C = j.C, inner = j.inner
    cdef real T = <real> j.T, scale = <real> j.scale
    cdef char *g = j.g
    cdef real *mine
    cdef const real *pr
    cdef const real *qr
    cdef real *gr
    for r in prange(j.outer * inner, schedule="static", num_threads=n_threads):
        o = r // inner
        i = r % inner
        mine = scratch + omp_get_thread_num() * 5 * C
        pr = _row_in(j.p + o * j.ps0 + i * j.ps2, C, j.ps1, j.pkind, mine)
        qr = _row_in(j.q + o * j.qs0 + i * j.qs2, C, j.qs1, j.qkind, mine + C)
        gr = NULL
        if g != NULL:
            gr = _row_out(g + o * j.gs0 + i * j.gs2, j.gs1, mine + 2 * C)
        if real is float:
            j.kl[r] = kl_row_f32(pr, qr, C, T, scale, gr, mine + 3 * C)
        else:
            j.kl[r] = kl_row_f64(pr, qr, C, T, scale, gr, mine + 3 * C)
        if gr != NULL:
            _row_done(g + o * j.gs0 + i * j.gs2, C, j.gs1, gr)


def kl_divergence(*, cnp.ndarray p not None, int pkind, cnp.ndarray q not None, int qkind,
                  bint double_precision, double T, double scale, grad,
                  cnp.ndarray kl not None, int n_threads):
    """Per-row KL(softmax(p/T) || softmax(q/T)) over axis 1 of two (outer, C, inner)
    arrays, and optionally its gradient w.r.t. q times `scale` into `grad`."""
    cdef _KlJob j
    j.outer, j.C, j.inner = q.shape[0], q.shape[1], q.shape[2]
    if p.ndim != 3 or q.ndim != 3 or kl.shape[0] != j.outer * j.inner:
        raise ValueError("xent._kernels.kl_divergence: internal contract violated (shapes)")
    if j.outer * j.inner == 0:
        return
    cdef Py_ssize_t itemsize = sizeof(double) if double_precision else sizeof(float)
    n_threads = <int> max(1, min(<Py_ssize_t> n_threads, j.outer * j.inner))
    j.p, j.pkind, j.q, j.qkind = cnp.PyArray_BYTES(p), pkind, cnp.PyArray_BYTES(q), qkind
    j.ps0, j.ps1, j.ps2 = _bstride(p, 0), _bstride(p, 1), _bstride(p, 2)
    j.qs0, j.qs1, j.qs2 = _bstride(q, 0), _bstride(q, 1), _bstride(q, 2)
    j.T, j.scale = T, scale
    j.g, j.gs0, j.gs1, j.gs2 = NULL, 0, 0, 0
    if grad is not None:
        j.g = cnp.PyArray_BYTES(<cnp.ndarray> grad)
        j.gs0, j.gs1, j.gs2 = _bstride(grad, 0), _bstride(grad, 1), _bstride(grad, 2)
    j.kl = <double *> cnp.PyArray_DATA(kl)
    cdef void *scratch = _alloc_scratch(n_threads * 5 * max(j.C, 1) * itemsize)
    try:
        with nogil:
            if double_precision:
                _kl_loop(&j, <double_u *> scratch, n_threads)
            else:
                _kl_loop(&j, <float_u *> scratch, n_threads)
    finally:
        free(scratch)


# One entropy call: x of any floating storage, strides in bytes.
cdef struct _EntropyJob:
    const char *x
    int xkind
    Py_ssize_t outer, C, inner, xs0, xs1, xs2
    double *h               # outer*inner per-row values


cdef void _entropy_loop(const _EntropyJob *j, real *scratch, int n_threads) noexcept nogil:
    """Entropy rows; scratch: C reals per thread."""
    cdef Py_ssize_t r, o, i, C = j.C, inner = j.inner
    cdef const real *xr
    for r in prange(j.outer * inner, schedule="static", num_threads=n_threads):
        o = r // inner
        i = r % inner
        xr = _row_in(j.x + o * j.xs0 + i * j.xs2, C, j.xs1, j.xkind,
                     scratch + omp_get_thread_num() * C)
        if real is float:
            j.h[r] = entropy_row_f32(xr, C)
        else:
            j.h[r] = entropy_row_f64(xr, C)


def entropy(*, cnp.ndarray x not None, int xkind, bint double_precision,
            cnp.ndarray h not None, int n_threads):
    """Per-row entropy (nats) of softmax over axis 1 of x (outer, C, inner) into h."""
    cdef _EntropyJob j
    j.outer, j.C, j.inner = x.shape[0], x.shape[1], x.shape[2]
    if x.ndim != 3 or h.shape[0] != j.outer * j.inner:
        raise ValueError("xent._kernels.entropy: internal contract violated (shapes)")
    if j.outer * j.inner == 0:
        return
    cdef Py_ssize_t itemsize = sizeof(double) if double_precision else sizeof(float)
    n_threads = <int> max(1, min(<Py_ssize_t> n_threads, j.outer * j.inner))
    j.x, j.xkind = cnp.PyArray_BYTES(x), xkind
    j.xs0, j.xs1, j.xs2 = _bstride(x, 0), _bstride(x, 1), _bstride(x, 2)
    j.h = <double *> cnp.PyArray_DATA(h)
    cdef void *scratch = _alloc_scratch(n_threads * max(j.C, 1) * itemsize)
    try:
        with nogil:
            if double_precision:
                _entropy_loop(&j, <double_u *> scratch, n_threads)
            else:
                _entropy_loop(&j, <float_u *> scratch, n_threads)
    finally:
        free(scratch)


def class_index_stats(*, cnp.ndarray t not None, int tcode, Py_ssize_t C,
                      int64_t ignore_index, weight):
    """One pass over 1-D class indices t (storage tcode, any stride), and a
    second one with a weight.

    Returns (first_bad, n_valid, weight_total): the flat position of the first
    index outside [0, C) that is not ignore_index (-1 if none), the number of
    non-ignored indices, and the sum of weight[t] over them (float64 weight,
    contiguous, or None for a weight of 1; not computed when an index is bad).
    The weight sum is the denominator of a weighted "mean": it is taken in the
    fixed order of the row losses' sum (_index_weight_sum), as accurate as that
    numerator (a running sum would lose ~n*eps).
    """
    cdef Py_ssize_t bad, valid
    cdef const char *p = cnp.PyArray_BYTES(t)
    cdef Py_ssize_t n = t.shape[0], stride = cnp.PyArray_STRIDE(t, 0)
    cdef double total
    cdef void *scratch
    if t.ndim != 1:
        raise ValueError("xent._kernels.class_index_stats: internal contract violated (ndim)")
    with nogil:
        bad = scan_indices(p, n, stride, tcode, C, ignore_index, NULL, &valid, &total)
    if weight is None or bad >= 0:
        return bad, valid, total
    scratch = _alloc_scratch(TILE_ROWS * (sizeof(int64_t) + sizeof(double)))
    try:
        with nogil:
            total = _index_weight_sum(p, n, stride, tcode, ignore_index,
                                      <const double_u *> cnp.PyArray_DATA(<cnp.ndarray> weight),
                                      <int64_t *> scratch,
                                      <double *> (<int64_t *> scratch + TILE_ROWS))
    finally:
        free(scratch)
    return bad, valid, total


cdef double _index_weight_sum(const char *p, Py_ssize_t n, Py_ssize_t stride, int tcode,
                              int64_t ignore_index, const double_u *w, int64_t *idx,
                              double *v) noexcept nogil:
    """Sum of w[t_i] over the class indices t_i at p + i*stride (storage tcode,
    each in range or ignore_index) that are not ignored: _sum_tiles of the rows'
    weights (0 for ignored rows), formed a tile at a time.  idx, v: TILE_ROWS
    values of scratch each."""
    cdef double acc[8]
    cdef Py_ssize_t b, i, k, n_blocks = (n + TILE_ROWS - 1) // TILE_ROWS
    for i in range(8):
        acc[i] = 0
    for b in range(n_blocks):
        k = min(TILE_ROWS, n - b * TILE_ROWS)
        load_indices(p + b * TILE_ROWS * stride, k, stride, tcode, ignore_index, idx)
        for i in range(k):
            v[i] = w[idx[i]] if idx[i] >= 0 else 0
        acc[b % 8] += _sum_fixed(v, k)
    return _combine8(acc)


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
    return _combine8(acc)


cdef inline double _combine8(const double *acc) noexcept nogil:
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef double _sum_tiles(const double *v, Py_ssize_t n) noexcept nogil:
    """The fixed order of a batch sum of row losses: each block of TILE_ROWS values
    (the tiles of _ce_tile) by _sum_fixed, then the block sums as _sum_fixed
    would add them.  The one-pass few-class forward forms each tile's sum where
    the tile is computed and adds the sums in this order, so both give the same
    bits."""
    cdef double acc[8]
    cdef Py_ssize_t b, j, n_blocks = (n + TILE_ROWS - 1) // TILE_ROWS
    for j in range(8):
        acc[j] = 0
    for b in range(n_blocks):
        acc[b % 8] += _sum_fixed(v + b * TILE_ROWS, min(TILE_ROWS, n - b * TILE_ROWS))
    return _combine8(acc)


def sum_rows(cnp.ndarray v not None):
    """Fixed-order float64 sum of a contiguous 1-D float64 array (see _sum_tiles)."""
    if v.ndim != 1 or cnp.PyArray_TYPE(v) != cnp.NPY_FLOAT64 or not cnp.PyArray_IS_C_CONTIGUOUS(v):
        raise ValueError("xent._kernels.sum_rows: internal contract violated")
    cdef double total
    with nogil:
        total = _sum_tiles(<const double *> cnp.PyArray_DATA(v), v.shape[0])
    return total


cdef extern from "numpy/arrayobject.h":
    object PyArray_Scalar(void *data, cnp.dtype descr, object base)

cdef cnp.dtype _FLOAT32 = cnp.PyArray_DescrFromType(cnp.NPY_FLOAT32)
cdef cnp.dtype _FLOAT64 = cnp.PyArray_DescrFromType(cnp.NPY_FLOAT64)


cdef inline int _native_index_code(cnp.ndarray t) noexcept:
    """XENT_INDEX_* storage of an aligned, native-order integer array, else -1."""
    cdef int num = cnp.PyArray_TYPE(t)
    cdef Py_ssize_t size = cnp.PyArray_ITEMSIZE(t)
    if not (cnp.PyTypeNum_ISINTEGER(num) and cnp.PyArray_ISBEHAVED_RO(t)):
        return -1
    cdef bint signed = cnp.PyTypeNum_ISSIGNED(num)
    if size == 1:
        return XENT_INDEX_I8 if signed else XENT_INDEX_U8
    if size == 2:
        return XENT_INDEX_I16 if signed else XENT_INDEX_U16
    if size == 4:
        return XENT_INDEX_I32 if signed else XENT_INDEX_U32
    if size == 8:
        return XENT_INDEX_I64 if signed else XENT_INDEX_U64
    return -1


cdef inline bint _is_zero(v):
    """v is the int or float 0 (not a bool, array or other type: those are checked
    by the general path)."""
    return (type(v) is float or type(v) is int) and v == 0


def cross_entropy_small(logits, target, axis, ignore_index, reduction, label_smoothing,
                        z_loss, threads_for):
    """`cross_entropy(logits, target, ...)` (no weight, gradient or grad_out; the
    caller has checked that) in one call with no temporary array, or None: then
    the caller takes the general path, which raises whatever error applies.

    The one entry point taken by position: its arguments are the public
    function's, in its order, and its one caller passes variables of the same
    names; keywords would cost ~500 instructions a call, 2% of a 256x10 call
    (BENCHMARKS.md, "Kernel calls by keyword").

    Taken for: exact ndarrays; 2-D, C-contiguous, aligned, native float32/float64
    logits; class axis -1 or 1 (int); 1-D aligned native integer targets of any
    stride (uint64 only with ignore_index >= 0), every index in [0, C) or
    ignore_index (an int in int64's range);
    reduction "mean" or "sum"; label_smoothing and z_loss the number 0.
    threads_for(n_elements) gives the team size (xent._runtime.threads.threads_for).

    The rows go through the same kernel as `cross_entropy` (_ce_compute) and are
    summed in the same fixed order as `sum_rows` (_sum_tiles), so the result has
    the bits of the general path's.  Where that kernel takes the few-class tiles,
    it does so in one pass (_CeJob.tile_sums): each tile's indices are checked
    and counted, and its losses summed, where the tile is computed, with no
    per-row arrays and no separate index pass.  Elsewhere the indices are
    checked first (xent_scan_indices), then the rows computed and summed.
    """
    cdef cnp.ndarray x, t
    cdef int xnum, tcode, overflow = 0
    cdef bint mean, double_precision
    cdef long long ignore
    cdef Py_ssize_t N, C, bad, n_valid, k, n_tiles
    cdef double unused, total
    cdef char *block
    cdef float total32
    cdef _CeJob j
    if not (cnp.PyArray_CheckExact(logits) and cnp.PyArray_CheckExact(target)):
        return None
    if type(reduction) is not str or type(axis) is not int or type(ignore_index) is not int:
        return None
    if reduction == "mean":
        mean = True
    elif reduction == "sum":
        mean = False
    else:
        return None
    if not (axis == -1 or axis == 1) or not (_is_zero(label_smoothing) and _is_zero(z_loss)):
        return None
    ignore = PyLong_AsLongLongAndOverflow(ignore_index, &overflow)
    x, t = <cnp.ndarray> logits, <cnp.ndarray> target
    xnum = cnp.PyArray_TYPE(x)
    if (overflow or cnp.PyArray_NDIM(x) != 2 or cnp.PyArray_NDIM(t) != 1
            or (xnum != cnp.NPY_FLOAT32 and xnum != cnp.NPY_FLOAT64)
            or not (cnp.PyArray_IS_C_CONTIGUOUS(x) and cnp.PyArray_ISBEHAVED_RO(x))):
        return None
    N, C = cnp.PyArray_DIM(x, 0), cnp.PyArray_DIM(x, 1)
    tcode = _native_index_code(t)
    if tcode < 0 or cnp.PyArray_DIM(t, 0) != N:
        return None
    if tcode == XENT_INDEX_U64 and ignore < 0:
        # The kernels read int64: a uint64 index above INT64_MAX wraps to a
        # negative value, which could equal ignore_index; the general path
        # refuses those (with ignore_index >= 0 the scans below report them).
        return None
    j.t, j.tcode, j.ts0, j.ts1, j.ts2 = cnp.PyArray_BYTES(t), tcode, cnp.PyArray_STRIDE(t, 0), 0, 0
    j.outer, j.C, j.inner = N, C, 1
    j.x, j.xkind = cnp.PyArray_BYTES(x), XENT_KIND_F32 if xnum == cnp.NPY_FLOAT32 else XENT_KIND_F64
    # C-contiguous: these strides, whatever NumPy reports for an axis of length 1
    j.xs1 = cnp.PyArray_ITEMSIZE(x)
    j.xs0, j.xs2 = C * j.xs1, 0
    j.prob, j.ignore_index, j.w = False, ignore, NULL
    j.wsum, j.eps, j.z, j.scale_ce, j.scale_z = <double> C, 0.0, 0.0, 1.0, 1.0
    j.g, j.gs0, j.gs1, j.gs2 = NULL, 0, 0, 0
    j.ce, j.lse, j.tile_sums, j.tile_info = NULL, NULL, NULL, NULL
    double_precision = xnum == cnp.NPY_FLOAT64
    if _ce_path(&j, double_precision) == _CE_TILES:
        # One pass: per tile its loss sum, rows not ignored and first bad index.
        n_tiles = (N + TILE_ROWS - 1) // TILE_ROWS
        block = <char *> _alloc_scratch(n_tiles * (sizeof(double) + 2 * sizeof(Py_ssize_t)))
        j.tile_sums = <double *> block
        j.tile_info = <Py_ssize_t *> (block + n_tiles * sizeof(double))
        bad, n_valid = -1, 0
        try:
            _ce_compute(&j, double_precision, threads_for(N * C))
            for k in range(n_tiles):
                n_valid += j.tile_info[2 * k]
                if bad < 0:
                    bad = j.tile_info[2 * k + 1]
            total = _sum_fixed(j.tile_sums, n_tiles)  # = _sum_tiles over the rows
        finally:
            free(block)
        if bad >= 0:
            return None  # the general path raises the IndexError
    else:
        bad = scan_indices(j.t, N, j.ts0, tcode, C, ignore, NULL, &n_valid, &unused)
        if bad >= 0:
            return None  # the general path raises the IndexError
        # ce and lse side by side in one block (lse is needed by the kernel, not here)
        j.ce = <double *> _alloc_scratch(2 * max(N, 1) * sizeof(double))
        j.lse = j.ce + N
        try:
            _ce_compute(&j, double_precision, threads_for(N * C))
            total = _sum_tiles(j.ce, N)
        finally:
            free(j.ce)
    if mean:
        # 0/0 (nothing to average) is NaN, as in PyTorch
        total = total / <double> n_valid if n_valid != 0 else NAN
    if double_precision:
        return PyArray_Scalar(&total, _FLOAT64, None)
    total32 = <float> total
    return PyArray_Scalar(&total32, _FLOAT32, None)
