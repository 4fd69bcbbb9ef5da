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
from libc.math cimport tanh, tanhf

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


cdef inline Py_ssize_t _n_tiles(Py_ssize_t n, Py_ssize_t width) noexcept nogil:
    return (n + width - 1) // width


cdef void _logits_tile(const _LinJob *j, Py_ssize_t tile, blas_real *dummy) noexcept nogil:
    """z[:, c0:c1] = softcap·tanh((x @ w[c0:c1].T + bias[c0:c1]) / softcap), then the
    bias and cap applied while the tile is in cache."""
    cdef Py_ssize_t c0 = tile * LINEAR_TILE_CLASSES
    cdef Py_ssize_t c1 = min(j.C, c0 + LINEAR_TILE_CLASSES)
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
    cdef Py_ssize_t c0 = tile * LINEAR_TILE_CLASSES
    cdef Py_ssize_t c1 = min(j.C, c0 + LINEAR_TILE_CLASSES)
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
    cdef Py_ssize_t d0 = tile * LINEAR_TILE_FEATURES
    cdef Py_ssize_t d1 = min(j.D, d0 + LINEAR_TILE_FEATURES)
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
    n = _n_tiles(j.D, LINEAR_TILE_FEATURES) if phase == 2 else _n_tiles(j.C, LINEAR_TILE_CLASSES)
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
    if cnp.PyArray_DIM(a, 1) > 1 and _stride(a, 1) != 1:
        raise ValueError("xent._kernels.linear: internal contract violated (strides)")
    return _stride(a, 0) if rows > 1 else cnp.PyArray_DIM(a, 1)


cdef int _linear_job(_LinJob *j, cnp.ndarray x, cnp.ndarray w, cnp.ndarray z,
                     double softcap) except -1:
    if not has_blas():
        raise RuntimeError("xent._kernels.linear: set_blas was not called")
    j.nr, j.D = cnp.PyArray_DIM(x, 0), cnp.PyArray_DIM(x, 1)
    j.C = cnp.PyArray_DIM(w, 0)
    if cnp.PyArray_DIM(w, 1) != j.D or cnp.PyArray_DIM(z, 0) != j.nr or cnp.PyArray_DIM(z, 1) != j.C:
        raise ValueError("xent._kernels.linear: internal contract violated (shapes)")
    if not cnp.PyArray_IS_C_CONTIGUOUS(z):
        raise ValueError("xent._kernels.linear: internal contract violated (z)")
    j.x = cnp.PyArray_DATA(x)
    j.xld = _leading_stride(x, j.nr)
    j.w = cnp.PyArray_DATA(w)
    j.w_cols = j.C > 1 and _stride(w, 0) == 1
    if j.w_cols:
        j.wld = _stride(w, 1) if j.D > 1 else j.C
    else:
        j.wld = _leading_stride(w, j.C)
    if j.wld < 1:
        j.wld = 1
    j.z = cnp.PyArray_DATA(z)
    j.g = j.z
    j.softcap = softcap
    j.bias = NULL
    j.row_scale = NULL
    j.dx = j.dw = NULL
    j.db = NULL
    j.dw_accumulate = False
    return 0


def linear_logits(*, cnp.ndarray x not None, cnp.ndarray w not None, bias,
                  double softcap, cnp.ndarray z not None, int n_threads):
    """z = softcap·tanh((x @ w.T + bias)/softcap) for one block of rows.

    x : (nr, D) rows with contiguous features; w : (C, D) with rows or columns
    contiguous; both aligned, of z's dtype (float32 or float64); bias : None or a
    contiguous (C,) array of that dtype; softcap : 0 for none; z : C-ordered (nr, C)."""
    cdef _LinJob j
    cdef bint dp = cnp.PyArray_TYPE(z) == cnp.NPY_FLOAT64
    _linear_job(&j, x, w, z, softcap)
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
    _linear_job(&j, x, w, z, softcap)
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
