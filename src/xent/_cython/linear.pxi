# The matrix products of linear_cross_entropy (_api/linear.py), block of rows by block
# of rows: the logits of a block (its rows against every class), and from their
# gradient the gradients of the weight, bias and input.  Included by _kernels.pyx.
#
# The products are BLAS's (SciPy's OpenBLAS, its gemm taken from the function
# pointers scipy.linalg.cython_blas exports: `set_blas`), called single-threaded from
# xent's OpenMP team, each thread on its own tiles: one thread pool, and each thread
# packs only its own share of the weight (OpenBLAS's own threads would each pack all
# of it for a block of a few hundred rows: BENCHMARKS.md, "Cross-entropy from hidden
# states").  The tile grid (LINEAR_TILE_CLASSES classes, LINEAR_TILE_FEATURES features)
# is fixed: every element comes from one call of the same shape whatever the thread
# count, so the results are bitwise identical for any number of threads.

from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
from libc.math cimport INFINITY, exp, expf, isfinite, log, tanh, tanhf
from libc.stdint cimport INT64_MAX
from libc.stdint cimport uint8_t

ctypedef void (*_sgemm_t)(char *transa, char *transb, int *m, int *n, int *k, float *alpha,
                          float *a, int *lda, float *b, int *ldb, float *beta, float *c,
                          int *ldc) noexcept nogil
ctypedef void (*_dgemm_t)(char *transa, char *transb, int *m, int *n, int *k, double *alpha,
                          double *a, int *lda, double *b, int *ldb, double *beta, double *c,
                          int *ldc) noexcept nogil

cdef _sgemm_t _sgemm = NULL
cdef _dgemm_t _dgemm = NULL


def set_blas(sgemm not None, dgemm not None):
    """Use these BLAS gemm routines (PyCapsules of scipy.linalg.cython_blas)."""
    global _sgemm, _dgemm
    _sgemm = <_sgemm_t> PyCapsule_GetPointer(sgemm, PyCapsule_GetName(sgemm))
    _dgemm = <_dgemm_t> PyCapsule_GetPointer(dgemm, PyCapsule_GetName(dgemm))


def has_blas():
    return _sgemm != NULL and _dgemm != NULL


ctypedef fused blas_real:
    float
    double


cdef inline void _gemm_rows(bint ta, bint tb, int m, int n, int k, blas_real alpha,
                            blas_real *a, int lda, blas_real *b, int ldb, blas_real beta,
                            blas_real *c, int ldc) noexcept nogil:
    """Row-major c (m×n) = alpha·op(a) @ op(b) + beta·c, op = transpose when ta/tb.

    BLAS is column-major: a row-major matrix is its transpose there, so this is
    cᵀ = op(b)ᵀ @ op(a)ᵀ, operands swapped."""
    cdef char transa = b'T' if tb else b'N'
    cdef char transb = b'T' if ta else b'N'
    if m <= 0 or n <= 0:
        return
    if blas_real is float:
        _sgemm(&transa, &transb, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc)
    else:
        _dgemm(&transa, &transb, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc)


cdef struct _LinJob:
    # the block: nr rows of x (row stride xld elements, unit stride across D)
    Py_ssize_t nr, C, D, xld
    void *x
    # the weight, (C, D): rows contiguous (w_cols false: w[c, d] at c*wld + d) or
    # columns contiguous (w_cols: w[c, d] at c + d*wld)
    void *w
    Py_ssize_t wld
    bint w_cols
    void *bias        # (C,) or NULL
    double softcap    # 0: none
    void *z           # (nr, C) C-ordered: the (capped) logits
    void *g           # (nr, C) C-ordered: their gradient (may be z)
    double *row_scale  # (nr,) factors of each row's gradient, or NULL
    void *dx          # (nr, D) rows of the input gradient (row stride D), or NULL
    void *dw          # (C, D) C-ordered weight gradient, or NULL
    double *db        # (C,) float64 bias gradient (accumulated), or NULL
    bint dw_accumulate
    Py_ssize_t class_tile, feature_tile  # the grid (_tile_width)


cdef inline Py_ssize_t _n_tiles(Py_ssize_t n, Py_ssize_t width) noexcept nogil:
    return (n + width - 1) // width


cdef inline Py_ssize_t _tile_width(Py_ssize_t n, Py_ssize_t most, Py_ssize_t multiple) noexcept nogil:
    """Width of the tiles that cut n columns into tiles of at most about `most`, their
    count a multiple of `multiple` (so 2 or 4 threads share them evenly), widths a
    multiple of 16.  A function of n only: the grid never depends on the threads."""
    cdef Py_ssize_t tiles = _n_tiles(max(n, 1), most)
    tiles = _n_tiles(tiles, multiple) * multiple
    return max(16, _n_tiles(_n_tiles(n, tiles), 16) * 16)


cdef void _logits_tile(const _LinJob *j, Py_ssize_t tile, blas_real *dummy) noexcept nogil:
    """z[:, c0:c1] = softcap·tanh((x @ w[c0:c1].T + bias[c0:c1]) / softcap), then the
    bias and cap applied while the tile is in cache."""
    cdef Py_ssize_t c0 = tile * j.class_tile
    cdef Py_ssize_t c1 = min(j.C, c0 + j.class_tile)
    cdef Py_ssize_t r, c
    cdef blas_real *z = <blas_real *> j.z
    cdef blas_real *w = <blas_real *> j.w
    cdef const blas_real *b = <const blas_real *> j.bias
    cdef blas_real *zr
    cdef blas_real s = <blas_real> j.softcap
    cdef blas_real inv_s = <blas_real> (1.0 / j.softcap) if j.softcap > 0 else 0
    if j.w_cols:  # w[c0:c1].T is (D, c1-c0) row-major with row stride wld
        _gemm_rows(False, False, <int> j.nr, <int> (c1 - c0), <int> j.D, <blas_real> 1,
                   <blas_real *> j.x, <int> j.xld, w + c0, <int> j.wld, <blas_real> 0,
                   z + c0, <int> j.C)
    else:
        _gemm_rows(False, True, <int> j.nr, <int> (c1 - c0), <int> j.D, <blas_real> 1,
                   <blas_real *> j.x, <int> j.xld, w + c0 * j.wld, <int> j.wld, <blas_real> 0,
                   z + c0, <int> j.C)
    if b == NULL and j.softcap == 0:
        return
    for r in range(j.nr):
        zr = z + r * j.C
        if b != NULL:
            for c in range(c0, c1):
                zr[c] += b[c]
        if j.softcap > 0:
            for c in range(c0, c1):
                if blas_real is float:
                    zr[c] = s * tanhf(zr[c] * inv_s)
                else:
                    zr[c] = s * tanh(zr[c] * inv_s)


cdef void _weight_tile(const _LinJob *j, Py_ssize_t tile, blas_real *dummy) noexcept nogil:
    """The gradient of classes c0..c1 finished (cap's chain rule, row factors), then
    dw[c0:c1] (+)= g[:, c0:c1].T @ x and db[c0:c1] += column sums, while it is hot."""
    cdef Py_ssize_t c0 = tile * j.class_tile
    cdef Py_ssize_t c1 = min(j.C, c0 + j.class_tile)
    cdef Py_ssize_t r, c
    cdef blas_real *g = <blas_real *> j.g
    cdef const blas_real *z = <const blas_real *> j.z
    cdef blas_real *gr
    cdef const blas_real *zr
    cdef blas_real f, q
    cdef blas_real inv_s = <blas_real> (1.0 / j.softcap) if j.softcap > 0 else 0
    if j.softcap > 0 or j.row_scale != NULL:
        for r in range(j.nr):
            gr = g + r * j.C
            zr = z + r * j.C
            f = <blas_real> j.row_scale[r] if j.row_scale != NULL else 1
            if j.softcap > 0:  # d softcap·tanh(u/softcap)/du = 1 - (z/softcap)²
                for c in range(c0, c1):
                    if gr[c] != 0:  # an ignored row stays 0, even where its z is NaN
                        q = zr[c] * inv_s
                        gr[c] = gr[c] * (1 - q * q) * f
            else:
                for c in range(c0, c1):
                    gr[c] = gr[c] * f
    if j.db != NULL:
        for r in range(j.nr):
            gr = g + r * j.C
            for c in range(c0, c1):
                j.db[c] += gr[c]
    if j.dw != NULL:
        _gemm_rows(True, False, <int> (c1 - c0), <int> j.D, <int> j.nr, <blas_real> 1,
                   g + c0, <int> j.C, <blas_real *> j.x, <int> j.xld,
                   <blas_real> (1 if j.dw_accumulate else 0),
                   <blas_real *> j.dw + c0 * j.D, <int> j.D)


cdef void _input_tile(const _LinJob *j, Py_ssize_t tile, blas_real *dummy) noexcept nogil:
    """dx[:, d0:d1] = g @ w[:, d0:d1] (the whole row of classes: one call per slice)."""
    cdef Py_ssize_t d0 = tile * j.feature_tile
    cdef Py_ssize_t d1 = min(j.D, d0 + j.feature_tile)
    cdef blas_real *w = <blas_real *> j.w
    if j.w_cols:  # w[:, d0:d1] is (d1-d0, C).T: rows d0.. of the (D, C) row-major array
        _gemm_rows(False, True, <int> j.nr, <int> (d1 - d0), <int> j.C, <blas_real> 1,
                   <blas_real *> j.g, <int> j.C, w + d0 * j.wld, <int> j.wld, <blas_real> 0,
                   <blas_real *> j.dx + d0, <int> j.D)
    else:
        _gemm_rows(False, False, <int> j.nr, <int> (d1 - d0), <int> j.C, <blas_real> 1,
                   <blas_real *> j.g, <int> j.C, w + d0, <int> j.wld, <blas_real> 0,
                   <blas_real *> j.dx + d0, <int> j.D)


cdef void _linear_tiles(const _LinJob *j, int phase, bint double_precision,
                        int n_threads) noexcept nogil:
    """Run phase 0 (logits), 1 (weight and bias) or 2 (input) over its tiles."""
    cdef Py_ssize_t n, t
    cdef float *f = NULL
    cdef double *d = NULL
    n = _n_tiles(j.D, j.feature_tile) if phase == 2 else _n_tiles(j.C, j.class_tile)
    if n_threads > n:
        n_threads = <int> max(1, n)
    for t in prange(n, num_threads=n_threads, schedule="static", chunksize=1):
        if double_precision:
            if phase == 0:
                _logits_tile(j, t, d)
            elif phase == 1:
                _weight_tile(j, t, d)
            else:
                _input_tile(j, t, d)
        else:
            if phase == 0:
                _logits_tile(j, t, f)
            elif phase == 1:
                _weight_tile(j, t, f)
            else:
                _input_tile(j, t, f)


cdef Py_ssize_t _leading_stride(cnp.ndarray a, Py_ssize_t rows):
    """a's row stride in elements (its last axis must be contiguous)."""
    if cnp.PyArray_NDIM(a) != 2 or not cnp.PyArray_ISALIGNED(a):
        raise ValueError("xent._kernels.linear: internal contract violated (layout)")
    if rows == 0 or cnp.PyArray_DIM(a, 1) == 0:  # nothing is read (NumPy's strides of
        return max(1, cnp.PyArray_DIM(a, 1))    # an empty array are arbitrary)
    if cnp.PyArray_DIM(a, 1) > 1 and _stride(a, 1) != 1:
        raise ValueError("xent._kernels.linear: internal contract violated (strides)")
    return _stride(a, 0) if rows > 1 else cnp.PyArray_DIM(a, 1)


cdef int _linear_job(_LinJob *j, cnp.ndarray x, cnp.ndarray w, double softcap) except -1:
    if not has_blas():
        raise RuntimeError("xent._kernels.linear: set_blas was not called")
    j.nr, j.D = cnp.PyArray_DIM(x, 0), cnp.PyArray_DIM(x, 1)
    j.C = cnp.PyArray_DIM(w, 0)
    if cnp.PyArray_DIM(w, 1) != j.D:
        raise ValueError("xent._kernels.linear: internal contract violated (shapes)")
    j.x = cnp.PyArray_DATA(x)
    j.xld = _leading_stride(x, j.nr)
    j.w = cnp.PyArray_DATA(w)
    # rows contiguous (the usual (C, D) weight), else columns (a (D, C) array's .T;
    # a single class's row read as a column, whatever its stride)
    j.w_cols = (j.D > 1 and _stride(w, 1) != 1) and (j.C <= 1 or _stride(w, 0) == 1)
    if j.w_cols:
        j.wld = _stride(w, 1) if j.D > 1 else j.C
    else:
        j.wld = _leading_stride(w, j.C)
    if j.wld < 1:
        j.wld = 1
    j.z = j.g = NULL
    j.class_tile = _tile_width(j.C, LINEAR_TILE_CLASSES, 4)
    j.feature_tile = _tile_width(j.D, LINEAR_TILE_FEATURES, 2)
    j.softcap = softcap
    j.bias = NULL
    j.row_scale = NULL
    j.dx = j.dw = NULL
    j.db = NULL
    j.dw_accumulate = False
    return 0


cdef int _block_z(_LinJob *j, cnp.ndarray z) except -1:
    """z: the block's C-ordered (nr, C) logits."""
    if (cnp.PyArray_NDIM(z) != 2 or cnp.PyArray_DIM(z, 0) != j.nr or cnp.PyArray_DIM(z, 1) != j.C
            or not cnp.PyArray_IS_C_CONTIGUOUS(z)):
        raise ValueError("xent._kernels.linear: internal contract violated (z)")
    j.z = j.g = cnp.PyArray_DATA(z)
    return 0


def linear_logits(*, cnp.ndarray x not None, cnp.ndarray w not None, bias,
                  double softcap, cnp.ndarray z not None, int n_threads):
    """z = softcap·tanh((x @ w.T + bias)/softcap) for one block of rows.

    x : (nr, D) rows with contiguous features; w : (C, D) with rows or columns
    contiguous; both aligned, of z's dtype (float32 or float64); bias : None or a
    contiguous (C,) array of that dtype; softcap : 0 for none; z : C-ordered (nr, C)."""
    cdef _LinJob j
    cdef bint dp = cnp.PyArray_TYPE(z) == cnp.NPY_FLOAT64
    _linear_job(&j, x, w, softcap)
    _block_z(&j, z)
    if bias is not None:
        j.bias = cnp.PyArray_DATA(<cnp.ndarray> bias)
    with nogil:
        _linear_tiles(&j, 0, dp, n_threads)


def linear_backward(*, cnp.ndarray x not None, cnp.ndarray w not None,
                    cnp.ndarray z not None, cnp.ndarray g not None, double softcap,
                    row_scale, dx, dw, db, bint dw_accumulate, int n_threads):
    """From the gradient g of a block's (capped) logits z: finish g (the cap's chain
    rule, the rows' factors), then dw (+)= g.T @ x, db += g's column sums (float64),
    dx = g @ w.  Each of dx, dw, db is None or a C-ordered array (dx: (nr, D) rows
    of the input gradient, dw: (C, D), db: (C,) float64); row_scale: None or a
    float64 (nr,) array."""
    cdef _LinJob j
    cdef bint dp = cnp.PyArray_TYPE(z) == cnp.NPY_FLOAT64
    _linear_job(&j, x, w, softcap)
    _block_z(&j, z)
    j.g = cnp.PyArray_DATA(g)
    if row_scale is not None:
        j.row_scale = <double *> cnp.PyArray_DATA(<cnp.ndarray> row_scale)
    if dx is not None:
        j.dx = cnp.PyArray_DATA(<cnp.ndarray> dx)
    if dw is not None:
        j.dw = cnp.PyArray_DATA(<cnp.ndarray> dw)
    if db is not None:
        j.db = <double *> cnp.PyArray_DATA(<cnp.ndarray> db)
    j.dw_accumulate = dw_accumulate
    with nogil:
        _linear_tiles(&j, 1, dp, n_threads)
        if j.dx != NULL:
            _linear_tiles(&j, 2, dp, n_threads)


# ---- the loss alone: class tiles reduced while hot, logits never held whole --------
#
# Without gradients no row needs all its logits at once: each thread computes a tile
# of LINEAR_LOSS_ROWS rows × LINEAR_TILE_CLASSES classes into its own scratch and
# reduces it at once into per-(row, tile) parts: the max, sum of exps and count of the
# max (chunk_stats, the long-row normaliser's), the target's logit when the tile holds
# it, and with label smoothing the tile's sum of w_c·z_c.  The parts of a row are
# merged in tile order (merge_chunks), so the result is the same for any thread count.
# A row whose parts are not all finite (a non-finite max, target logit or sum) is
# flagged `special` and left to the caller, which computes it again with its whole
# row of logits and the cross-entropy kernel's non-finite rules.

cdef struct _LossJob:
    _LinJob lin          # x, w, bias, softcap, nr, C, D (z: unused)
    const int64_t *target  # (nr,) class index, or -1 for an ignored row
    const double *class_w  # (C,) or NULL
    double eps, wsum
    Py_ssize_t n_tiles
    char *tiles          # per-thread scratch: nr × class_tile values each
    double *stats        # (nr, n_tiles, 3) chunk_stats
    double *wz           # (nr, n_tiles) sums of w_c·z_c (eps > 0), or NULL
    double *zt           # (nr,) the target's logit
    double *ce
    double *lse
    uint8_t *special
    # evaluate (topk > 0): each tile's topk highest classes, best first (values and
    # class indices, by the SPEC's rank order), and each row's rank out
    Py_ssize_t topk
    double *top_v
    int64_t *top_i
    int64_t *rank


cdef inline void _tile_top(const _LossJob *j, const blas_real *row, Py_ssize_t n,
                           Py_ssize_t c0, double *tv, int64_t *ti) noexcept nogil:
    """The `topk` classes of one row of a tile that rank highest (a higher logit, or
    an equal one and a smaller index: the SPEC's order; NaN never ranks), best first;
    unused places hold -inf and the largest index, which rank below everything."""
    cdef Py_ssize_t K = j.topk, m = 0, c, p
    cdef double v
    for c in range(n):
        v = row[c]
        if m == K:
            if not v > tv[K - 1]:
                continue
            p = K - 1
        elif v == v:
            p = m
            m += 1
        else:
            continue
        while p > 0 and v > tv[p - 1]:  # strict: the earlier class of a tie stays first
            tv[p] = tv[p - 1]
            ti[p] = ti[p - 1]
            p -= 1
        tv[p] = v
        ti[p] = c0 + c
    for p in range(m, K):
        tv[p] = -INFINITY
        ti[p] = INT64_MAX


cdef void _loss_tile(const _LossJob *j, Py_ssize_t tile, blas_real *mine) noexcept nogil:
    cdef const _LinJob *l = &j.lin
    cdef Py_ssize_t c0 = tile * l.class_tile
    cdef Py_ssize_t c1 = min(l.C, c0 + l.class_tile)
    cdef Py_ssize_t n = c1 - c0
    cdef Py_ssize_t r, c
    cdef int64_t t
    cdef blas_real *w = <blas_real *> l.w
    cdef const blas_real *b = <const blas_real *> l.bias
    cdef blas_real *row
    cdef blas_real s = <blas_real> l.softcap
    cdef blas_real inv_s = <blas_real> (1.0 / l.softcap) if l.softcap > 0 else 0
    cdef double acc
    if l.w_cols:
        _gemm_rows(False, False, <int> l.nr, <int> n, <int> l.D, <blas_real> 1,
                   <blas_real *> l.x, <int> l.xld, w + c0, <int> l.wld, <blas_real> 0,
                   mine, <int> n)
    else:
        _gemm_rows(False, True, <int> l.nr, <int> n, <int> l.D, <blas_real> 1,
                   <blas_real *> l.x, <int> l.xld, w + c0 * l.wld, <int> l.wld, <blas_real> 0,
                   mine, <int> n)
    for r in range(l.nr):
        row = mine + r * n
        if b != NULL:
            for c in range(n):
                row[c] += b[c0 + c]
        if l.softcap > 0:
            for c in range(n):
                if blas_real is float:
                    row[c] = s * tanhf(row[c] * inv_s)
                else:
                    row[c] = s * tanh(row[c] * inv_s)
        if blas_real is float:
            chunk_stats_f32(row, n, j.stats + 3 * (r * j.n_tiles + tile))
        else:
            chunk_stats_f64(row, n, j.stats + 3 * (r * j.n_tiles + tile))
        t = j.target[r]
        if t >= c0 and t < c1:
            j.zt[r] = row[t - c0]
        if j.topk > 0:
            _tile_top(j, row, n, c0, j.top_v + (r * j.n_tiles + tile) * j.topk,
                      j.top_i + (r * j.n_tiles + tile) * j.topk)
        if j.wz != NULL:
            acc = 0
            if j.class_w != NULL:
                for c in range(n):
                    acc += j.class_w[c0 + c] * row[c]
            else:
                for c in range(n):
                    acc += row[c]
            j.wz[r * j.n_tiles + tile] = acc


cdef int64_t _rank_of(const _LossJob *j, Py_ssize_t r, int64_t t, double zt) noexcept nogil:
    """How many classes rank above the target, or topk if at least that many: every
    class that does is in its tile's list unless topk others of that tile rank above
    it, and those rank above the target too."""
    cdef Py_ssize_t i, n = j.n_tiles * j.topk
    cdef const double *tv = j.top_v + r * n
    cdef const int64_t *ti = j.top_i + r * n
    cdef int64_t above = 0
    for i in range(n):
        if tv[i] > zt or (tv[i] == zt and ti[i] < t):
            above += 1
    return min(above, <int64_t> j.topk)


cdef void _loss_row(const _LossJob *j, Py_ssize_t r, bint double_precision) noexcept nogil:
    """The row's loss from its parts (see above), or special[r] = 1."""
    cdef float mf, sf, lsf
    cdef double m, sm, ls, L, zt, wt, c, wz
    cdef int finite
    cdef Py_ssize_t k
    cdef int64_t t = j.target[r]
    j.special[r] = 0
    if t < 0:  # ignored: 0, and no logsumexp (the z-loss skips it)
        j.ce[r] = 0
        j.lse[r] = 0
        if j.topk > 0:
            j.rank[r] = RANK_NEVER
        return
    if double_precision:
        finite = merge_chunks_f64(j.stats + 3 * r * j.n_tiles, j.n_tiles, &m, &sm, &ls)
    else:
        finite = merge_chunks_f32(j.stats + 3 * r * j.n_tiles, j.n_tiles, &mf, &sf, &lsf)
        m, ls = mf, lsf
    zt = j.zt[r]
    if not finite or not isfinite(zt):
        j.special[r] = 1
        return
    L = m + ls
    if j.topk > 0:  # evaluate: -log p_t and the target's rank
        if not isfinite(L):  # a NaN among the other classes: the kernel's rules
            j.special[r] = 1
            return
        j.ce[r] = L - zt
        j.lse[r] = L
        j.rank[r] = _rank_of(j, r, t, zt)
        return
    wt = j.class_w[t] if j.class_w != NULL else 1.0
    c = (1 - j.eps) * wt * (L - zt)
    if j.eps > 0:
        wz = 0
        for k in range(j.n_tiles):
            wz = wz + j.wz[r * j.n_tiles + k]
        c = c + (j.eps / j.lin.C) * (L * j.wsum - wz)
    if not isfinite(c):
        j.special[r] = 1
        return
    j.ce[r] = c
    j.lse[r] = L


def linear_loss_tiles(*, cnp.ndarray x not None, cnp.ndarray w not None, bias,
                      double softcap, cnp.ndarray target not None, class_w, double eps,
                      double wsum, cnp.ndarray ce not None, cnp.ndarray lse not None,
                      cnp.ndarray special not None, int n_threads, Py_ssize_t scratch_bytes,
                      Py_ssize_t topk=0, rank=None):
    """Per-row cross-entropy (without z-loss) and logsumexp of the logits
    softcap·tanh((x @ w.T + bias)/softcap) of one block of rows, from class tiles
    (see above).  target: contiguous int64 (nr,), -1 for ignored rows; class_w:
    None or contiguous float64 (C,); wsum: its sum (C without); ce, lse: float64
    (nr,); special: uint8 (nr,), 1 where the row must be computed again whole;
    scratch_bytes: the most the threads' tiles may take together (fewer threads
    then, never smaller tiles: the results do not depend on the team).
    With topk > 0 (evaluate; eps 0, no class_w): ce is -log p_t and rank (int64
    (nr,)) the number of classes ranking above the target, capped at topk (exact
    below it: a row is top-k correct for every k <= topk iff rank < k), NEVER for
    ignored rows."""
    cdef _LossJob j
    cdef bint dp = cnp.PyArray_TYPE(w) == cnp.NPY_FLOAT64
    cdef Py_ssize_t itemsize = 8 if dp else 4
    cdef Py_ssize_t r, tile, team
    cdef int tid
    cdef void *scratch = NULL
    _linear_job(&j.lin, x, w, softcap)
    if bias is not None:
        j.lin.bias = cnp.PyArray_DATA(<cnp.ndarray> bias)
    j.target = <const int64_t *> cnp.PyArray_DATA(target)
    j.class_w = NULL if class_w is None else <const double *> cnp.PyArray_DATA(<cnp.ndarray> class_w)
    j.eps, j.wsum = eps, wsum
    j.n_tiles = _n_tiles(j.lin.C, j.lin.class_tile)
    j.ce = <double *> cnp.PyArray_DATA(ce)
    j.lse = <double *> cnp.PyArray_DATA(lse)
    j.special = <uint8_t *> cnp.PyArray_DATA(special)
    # one tile per thread, then (nr, n_tiles) parts: 3 doubles, +1 with smoothing
    cdef Py_ssize_t tile_values = j.lin.nr * j.lin.class_tile
    team = max(1, min(n_threads, j.n_tiles, scratch_bytes // max(1, tile_values * itemsize)))
    cdef Py_ssize_t parts = j.lin.nr * j.n_tiles
    j.topk = topk
    j.rank = NULL if rank is None else <int64_t *> cnp.PyArray_DATA(<cnp.ndarray> rank)
    if topk > 0 and (j.rank == NULL or eps > 0 or j.class_w != NULL):
        raise ValueError("xent._kernels.linear_loss_tiles: internal contract violated (topk)")
    scratch = _alloc_scratch(team * tile_values * itemsize
                             + (parts * (4 if eps > 0 else 3) + j.lin.nr) * sizeof(double)
                             + parts * topk * (sizeof(double) + sizeof(int64_t)))
    j.tiles = <char *> scratch
    j.stats = <double *> (j.tiles + team * tile_values * itemsize)
    j.wz = j.stats + 3 * parts if eps > 0 else NULL
    j.zt = j.stats + parts * (4 if eps > 0 else 3)
    j.top_v = j.zt + j.lin.nr
    j.top_i = <int64_t *> (j.top_v + parts * topk)
    try:
        with nogil:
            for r in range(j.lin.nr):
                j.zt[r] = NAN  # a row whose target no tile holds (C == 0) is special
            for tile in prange(j.n_tiles, num_threads=team, schedule="static", chunksize=1):
                tid = omp_get_thread_num()
                if dp:
                    _loss_tile(&j, tile, <double *> (j.tiles + tid * tile_values * itemsize))
                else:
                    _loss_tile(&j, tile, <float *> (j.tiles + tid * tile_values * itemsize))
            for r in prange(j.lin.nr, num_threads=team, schedule="static"):
                _loss_row(&j, r, dp)
    finally:
        free(scratch)


# ---- the loss and the input's gradient alone: an online softmax -------------------
#
# With return_grad=("input",) and class-index targets no row needs all its logits at
# once either (flash-attention's online softmax): each thread owns a tile of `h` rows
# and sweeps the class tiles in order; per tile it computes Z = x_R @ W_ct.T into its
# scratch, and per row keeps the running max m, the running sum S of exp(z - m) and
# an accumulator A = Σ_c exp(z_c - m)·d_c·W_c (D values; d_c = 1 - (z_c/softcap)², or
# 1), rescaled by exp(m_old - m_new) when the max grows: the tile's exps overwrite Z,
# and A += P @ W_ct (BLAS, beta 1).  At the end the gradient of the row is
#   dx = f·(K·A/S - scale_ce·(1-eps)·w_t·d_t·W_t - scale_ce·(eps/C)·V),
# K = scale_ce·((1-eps)·w_t + (eps/C)·Σw) + 2·z_loss·scale_z·lse (the cross-entropy
# kernel's gradient, ce_index_finish, multiplied through the weight), V = Σ_c w_c W_c.
# Two products, each as large as the logits' alone, whatever N.  The row tiles have a
# height that does not depend on the threads, and each row's tiles are visited in one
# order by one thread: bitwise identical for any thread count.  Rows whose parts are
# not all finite are flagged `special` (as linear_loss_tiles does) and computed again
# whole by the caller; ignored rows accumulate 0 @ W (0, or NaN as BLAS gives it with a
# non-finite weight, as the whole-row path does).

cdef struct _OnlineJob:
    _LinJob lin            # x (nr rows), w, bias, softcap, C, D, class_tile
    const int64_t *target  # (nr,) class index, or -1 for an ignored row
    const double *class_w  # (C,) or NULL
    double eps, wsum, zc, scale_ce, scale_z
    const double *row_scale  # (nr,) or NULL
    void *V                # (D,) Σ_c w_c W_c in the computation dtype (eps > 0), or NULL
    Py_ssize_t h, n_row_tiles, n_tiles
    char *scratch          # per thread: h × class_tile values (Z, then P), h × D (A)
    Py_ssize_t scratch_values
    double *m              # (nr,) running max
    double *S              # (nr,) running sum of exps
    double *wz             # (nr,) Σ w_c z_c (eps > 0)
    double *zt             # (nr,) the target's logit
    double *ce
    double *lse
    uint8_t *special
    void *dx               # (nr, D) C-ordered


cdef void _online_rows(const _OnlineJob *j, Py_ssize_t rt, blas_real *mine) noexcept nogil:
    """Row tile rt: every class tile, then each row's loss and input gradient."""
    cdef const _LinJob *l = &j.lin
    cdef Py_ssize_t r0 = rt * j.h
    cdef Py_ssize_t nr = min(j.h, l.nr - r0)
    cdef Py_ssize_t D = l.D
    cdef blas_real *z = mine
    cdef blas_real *acc = mine + j.h * l.class_tile
    cdef blas_real *w = <blas_real *> l.w
    cdef const blas_real *b = <const blas_real *> l.bias
    cdef blas_real *xr = (<blas_real *> l.x) + r0 * l.xld
    cdef blas_real *row
    cdef blas_real *ar
    cdef blas_real *dxr
    cdef blas_real s = <blas_real> l.softcap
    cdef blas_real inv_s = <blas_real> (1.0 / l.softcap) if l.softcap > 0 else 0
    cdef blas_real q, mt, ka, kt, kv, f, scale
    cdef const blas_real *wt_row
    cdef const blas_real *V = <const blas_real *> j.V
    cdef Py_ssize_t tile, c0, c1, n, r, R, c, d, k
    cdef int64_t t
    cdef double rest, acc_wz, L, wt, cel, K
    for r in range(nr):
        R = r0 + r
        j.m[R] = -INFINITY
        j.S[R] = 0
        j.wz[R] = 0
        j.zt[R] = NAN
        j.special[R] = 0
    for d in range(nr * D):
        acc[d] = 0
    for tile in range(j.n_tiles):
        c0 = tile * l.class_tile
        c1 = min(l.C, c0 + l.class_tile)
        n = c1 - c0
        if l.w_cols:
            _gemm_rows(False, False, <int> nr, <int> n, <int> D, <blas_real> 1,
                       xr, <int> l.xld, w + c0, <int> l.wld, <blas_real> 0, z, <int> n)
        else:
            _gemm_rows(False, True, <int> nr, <int> n, <int> D, <blas_real> 1,
                       xr, <int> l.xld, w + c0 * l.wld, <int> l.wld, <blas_real> 0,
                       z, <int> n)
        for r in range(nr):
            R = r0 + r
            row = z + r * n
            t = j.target[R]
            if t < 0 or j.special[R]:  # nothing to add; 0 @ W as the whole-row path
                for c in range(n):
                    row[c] = 0
                continue
            if b != NULL:
                for c in range(n):
                    row[c] += b[c0 + c]
            if l.softcap > 0:
                for c in range(n):
                    if blas_real is float:
                        row[c] = s * tanhf(row[c] * inv_s)
                    else:
                        row[c] = s * tanh(row[c] * inv_s)
            if t >= c0 and t < c1:
                j.zt[R] = row[t - c0]
            if j.eps > 0:
                acc_wz = 0
                if j.class_w != NULL:
                    for c in range(n):
                        acc_wz += j.class_w[c0 + c] * row[c]
                else:
                    for c in range(n):
                        acc_wz += row[c]
                j.wz[R] += acc_wz
            # the tile's max and sum of exps from its own max (row_parts'
            # vectorised exps, stored over z unless the cap's chain rule needs z)
            if blas_real is float:
                if not row_parts_f32(row, n, &mt, &k, &rest, NULL if l.softcap > 0 else row):
                    j.special[R] = 1
            else:
                if not row_parts_f64(row, n, &mt, &k, &rest, NULL if l.softcap > 0 else row):
                    j.special[R] = 1
            if j.special[R]:
                for c in range(n):
                    row[c] = 0
                continue
            if mt > j.m[R]:  # the max grows: what came before is rescaled
                if j.m[R] > -INFINITY:
                    scale = <blas_real> exp(j.m[R] - mt)
                    j.S[R] *= scale
                    ar = acc + r * D
                    for d in range(D):
                        ar[d] *= scale
                j.m[R] = mt
                scale = 1
            else:
                scale = <blas_real> exp(<double> mt - j.m[R])
            j.S[R] += scale * (k + rest)
            if l.softcap > 0:  # P·d, d = 1 - (z/softcap)², the cap's chain rule
                for c in range(n):
                    q = row[c] * inv_s
                    if blas_real is float:
                        row[c] = expf(row[c] - mt) * scale * (1 - q * q)
                    else:
                        row[c] = exp(row[c] - mt) * scale * (1 - q * q)
            elif scale != 1:
                for c in range(n):
                    row[c] *= scale
        _gemm_rows(False, l.w_cols, <int> nr, <int> D, <int> n, <blas_real> 1,
                   z, <int> n, (w + c0) if l.w_cols else (w + c0 * l.wld), <int> l.wld,
                   <blas_real> 1, acc, <int> D)
    for r in range(nr):
        R = r0 + r
        t = j.target[R]
        ar = acc + r * D
        dxr = (<blas_real *> j.dx) + R * D
        if t < 0:  # ignored: 0 (0 @ W, times the row's factor as the whole-row path)
            j.ce[R] = 0
            j.lse[R] = 0
            f = <blas_real> j.row_scale[R] if (j.row_scale != NULL and l.softcap == 0) else 1
            for d in range(D):
                dxr[d] = ar[d] * f
            continue
        if j.special[R] or not isfinite(j.zt[R]) or not (j.S[R] > 0) or not isfinite(j.S[R]):
            j.special[R] = 1
            continue
        L = j.m[R] + log(j.S[R])
        wt = j.class_w[t] if j.class_w != NULL else 1.0
        cel = (1 - j.eps) * wt * (L - j.zt[R])
        if j.eps > 0:
            cel = cel + (j.eps / l.C) * (L * j.wsum - j.wz[R])
        if not isfinite(cel) or not isfinite(L):
            j.special[R] = 1
            continue
        j.ce[R] = cel
        j.lse[R] = L
        K = j.scale_ce * ((1 - j.eps) * wt + (j.eps / l.C * j.wsum if j.eps > 0 else 0))
        if j.zc != 0:
            K = K + 2 * j.zc * j.scale_z * L
        f = <blas_real> j.row_scale[R] if j.row_scale != NULL else 1
        ka = <blas_real> (K / j.S[R]) * f
        q = <blas_real> (j.zt[R] / l.softcap) if l.softcap > 0 else 0
        kt = <blas_real> (j.scale_ce * (1 - j.eps) * wt) * (1 - q * q) * f
        kv = <blas_real> (j.scale_ce * j.eps / l.C) * f
        if l.w_cols:
            for d in range(D):
                dxr[d] = ka * ar[d] - kt * w[t + d * l.wld]
        else:
            wt_row = w + t * l.wld
            for d in range(D):
                dxr[d] = ka * ar[d] - kt * wt_row[d]
        if V != NULL:
            for d in range(D):
                dxr[d] = dxr[d] - kv * V[d]


def linear_online_input_grad(*, cnp.ndarray x not None, cnp.ndarray w not None, bias,
                             double softcap, cnp.ndarray target not None, class_w,
                             double eps, double wsum, double z_loss, double scale_ce,
                             double scale_z, row_scale, V, cnp.ndarray ce not None,
                             cnp.ndarray lse not None, cnp.ndarray special not None,
                             cnp.ndarray dx not None, Py_ssize_t row_tile, int n_threads,
                             Py_ssize_t scratch_bytes):
    """Per-row cross-entropy (without z-loss), logsumexp and input gradient of one
    block of rows by the online softmax (see above).  target: contiguous int64 (nr,),
    -1 for ignored rows; class_w: None or contiguous float64 (C,), wsum its sum (C
    without); row_scale: None or float64 (nr,); V: None (eps == 0) or the (D,)
    contiguous Σ_c w_c W_c of the computation dtype; ce, lse: float64 (nr,); special:
    uint8 (nr,), 1 where the row must be computed again whole; dx: C-ordered (nr, D);
    row_tile: the rows of a tile (a function of the shape, never of the threads);
    scratch_bytes: the most the threads' scratch may take together (fewer threads
    then, never smaller tiles).  softcap with eps > 0 is not supported (the smoothing
    term's chain rule varies along the row)."""
    cdef _OnlineJob j
    cdef bint dp = cnp.PyArray_TYPE(w) == cnp.NPY_FLOAT64
    cdef Py_ssize_t itemsize = 8 if dp else 4
    cdef Py_ssize_t rt, team, nr
    cdef int tid
    cdef void *scratch = NULL
    _linear_job(&j.lin, x, w, softcap)
    if softcap > 0 and eps > 0:
        raise ValueError("xent._kernels.linear_online_input_grad: internal contract "
                         "violated (softcap with label smoothing)")
    nr = j.lin.nr
    if (cnp.PyArray_NDIM(dx) != 2 or cnp.PyArray_DIM(dx, 0) != nr
            or cnp.PyArray_DIM(dx, 1) != j.lin.D or not cnp.PyArray_IS_C_CONTIGUOUS(dx)
            or cnp.PyArray_TYPE(dx) != cnp.PyArray_TYPE(w) or row_tile < 1):
        raise ValueError("xent._kernels.linear_online_input_grad: internal contract violated")
    if bias is not None:
        j.lin.bias = cnp.PyArray_DATA(<cnp.ndarray> bias)
    j.target = <const int64_t *> cnp.PyArray_DATA(target)
    j.class_w = NULL if class_w is None else <const double *> cnp.PyArray_DATA(<cnp.ndarray> class_w)
    j.eps, j.wsum, j.zc, j.scale_ce, j.scale_z = eps, wsum, z_loss, scale_ce, scale_z
    j.row_scale = NULL
    if row_scale is not None:
        j.row_scale = <const double *> cnp.PyArray_DATA(<cnp.ndarray> row_scale)
    j.V = NULL if (V is None or eps == 0) else cnp.PyArray_DATA(<cnp.ndarray> V)
    if eps > 0 and j.V == NULL:
        raise ValueError("xent._kernels.linear_online_input_grad: internal contract violated (V)")
    j.h = row_tile
    j.n_row_tiles = _n_tiles(nr, row_tile)
    j.n_tiles = _n_tiles(j.lin.C, j.lin.class_tile)
    j.ce = <double *> cnp.PyArray_DATA(ce)
    j.lse = <double *> cnp.PyArray_DATA(lse)
    j.special = <uint8_t *> cnp.PyArray_DATA(special)
    j.dx = cnp.PyArray_DATA(dx)
    j.scratch_values = row_tile * (j.lin.class_tile + j.lin.D)
    team = max(1, min(n_threads, j.n_row_tiles,
                      scratch_bytes // max(1, j.scratch_values * itemsize)))
    scratch = _alloc_scratch(team * j.scratch_values * itemsize + 4 * nr * sizeof(double))
    j.scratch = <char *> scratch
    j.m = <double *> (j.scratch + team * j.scratch_values * itemsize)
    j.S = j.m + nr
    j.wz = j.S + nr
    j.zt = j.wz + nr
    try:
        with nogil:
            for rt in prange(j.n_row_tiles, num_threads=team, schedule="static", chunksize=1):
                tid = omp_get_thread_num()
                if dp:
                    _online_rows(&j, rt, <double *> (j.scratch + tid * j.scratch_values * itemsize))
                else:
                    _online_rows(&j, rt, <float *> (j.scratch + tid * j.scratch_values * itemsize))
    finally:
        free(scratch)


def linear_class_tile(Py_ssize_t C):
    """The width of the class tiles of C classes (the grid of every linear kernel)."""
    return _tile_width(C, LINEAR_TILE_CLASSES, 4)
