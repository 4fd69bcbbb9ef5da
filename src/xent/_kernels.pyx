"""Compiled kernels of xent: the loops over rows of a 3-D ``(outer, C, inner)`` view.

setup.py builds this file once per SIMD level (xent._kernels, _kernels_avx2,
_kernels_avx512); xent._runtime.dispatch picks one at import.  It includes one
.pxi per kernel family (xent/_cython/): thresholds (every constant that chooses
a path), storage, normalize, cross_entropy, pointwise, evaluate.

Design and contract
-------------------
Every array reaching this module has been validated and shaped by the Python
layer (``xent/_api``):

* an input is a 3-D view ``(outer, C, inner)`` of the caller's array with the
  class axis in the middle, any element strides (whole multiples of the item
  size), dtype float32, float64, float16 or bfloat16, with its storage code
  (``FLOAT_KINDS`` / ``INDEX_CODES``) passed alongside;
* outputs are writable arrays of the matching shape and of the computation
  dtype (float32 for 16-bit inputs); an output is either disjoint from the
  inputs or the very same buffer with the same strides (in place);
* ``n_threads >= 1``.

Entry points take keyword arguments (``cross_entropy`` after its logits and
target; ``cross_entropy_small``, the hot small call, by position in the public
function's order; ``sum_rows`` its one array), and fill one job struct per
family (``_NormJob``, ``_CeJob``, ...) that their loops read.

The kernels never allocate anything the size of the input.  Scratch memory is
``n_threads`` slices of a few rows, allocated before the parallel region.

Layers: the arithmetic on one contiguous row (or one block of adjacent
columns) is C in ``include/xent/`` (``kernels.h``, which ``select.h`` fills with
the build's hand-written loops); this file owns the loops over rows, the
strides, the threads (``prange``, static schedule) and the scratch.  Each row is
computed by exactly one thread, so results do not depend on the thread count.
"""

from cpython.long cimport PyLong_AsLongLongAndOverflow
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint16_t
from libc.math cimport NAN
from libc.stdlib cimport free, malloc

cimport numpy as cnp

include "xent/_cython/openmp.pxi"

cnp.import_array()

# The element types of the arrays the kernels read and write: float and double
# with alignment 1 (xent_f32u / xent_f64u, xent/common.h), because NumPy arrays need
# not be aligned (np.frombuffer(buf, offset=1)) and a plain float* access to a
# misaligned float is undefined behaviour.  As values they are float and double
# (`real is float` holds for float_u); on x86-64 the accesses compile to the
# same moves as aligned ones.
cdef extern from "xent/kernels.h" nogil:
    ctypedef float float_u "xent_f32u"
    ctypedef double double_u "xent_f64u"
    ctypedef uint16_t uint16_u "xent_u16u"

cdef extern from "xent/kernels.h" nogil:
    void gather_f32 "xent_gather_f32"(const float *x, Py_ssize_t n, Py_ssize_t stride, float *dst)
    void gather_f64 "xent_gather_f64"(const double *x, Py_ssize_t n, Py_ssize_t stride, double *dst)
    void scatter_f32 "xent_scatter_f32"(const float *src, Py_ssize_t n, float *out, Py_ssize_t stride)
    void scatter_f64 "xent_scatter_f64"(const double *src, Py_ssize_t n, double *out, Py_ssize_t stride)
    void tile_in_f32 "xent_tile_in_f32"(const float *x, Py_ssize_t R, Py_ssize_t C, Py_ssize_t xs0,
                                        float *t)
    void tile_in_f64 "xent_tile_in_f64"(const double *x, Py_ssize_t R, Py_ssize_t C, Py_ssize_t xs0,
                                        double *t)
    void load_half_row "xent_load_half_row"(const uint16_u *x, Py_ssize_t n, Py_ssize_t stride,
                                            int is_bfloat16, float *dst)
    const char *xent_simd_level()
    const char *xent_simd_feature(Py_ssize_t i)

ctypedef fused real:
    float_u
    double_u

def simd_level():
    """SIMD instruction set the kernels were compiled for."""
    return xent_simd_level().decode("ascii")


def simd_features():
    """The hand-written SIMD paths compiled into this module (xent/select.h), in order.

    Empty for the portable build; tests/test_simd_features.py asserts the list of
    each level, so a variant cannot fall back to the portable code unnoticed."""
    cdef Py_ssize_t i = 0
    names = []
    while xent_simd_feature(i) != NULL:
        names.append(xent_simd_feature(i).decode("ascii"))
        i += 1
    return tuple(names)


cdef inline void _gather(const real *x, Py_ssize_t n, Py_ssize_t stride, real *dst) noexcept nogil:
    if real is float:
        gather_f32(x, n, stride, dst)
    else:
        gather_f64(x, n, stride, dst)


cdef inline void _scatter(const real *src, Py_ssize_t n, real *out, Py_ssize_t stride) noexcept nogil:
    if real is float:
        scatter_f32(src, n, out, stride)
    else:
        scatter_f64(src, n, out, stride)


cdef inline void _tile_in(const real *x, Py_ssize_t R, Py_ssize_t C, Py_ssize_t xs0,
                          real *t) noexcept nogil:
    """t[c*R + r] = x[r*xs0 + c]: a tile of R few-class rows, class-major."""
    if real is float:
        tile_in_f32(x, R, C, xs0, t)
    else:
        tile_in_f64(x, R, C, xs0, t)


# ---- helpers for the entry points -----------------------------------------------

cdef inline Py_ssize_t _stride(cnp.ndarray a, int axis):
    return cnp.PyArray_STRIDE(a, axis) // cnp.PyArray_ITEMSIZE(a)


cdef void *_alloc_scratch(Py_ssize_t n_bytes) except? NULL:
    cdef void *p
    if n_bytes <= 0:
        return NULL
    p = malloc(n_bytes)
    if p == NULL:
        raise MemoryError(f"xent: cannot allocate {n_bytes} bytes of scratch memory")
    return p


# ---- the kernel families ----------------------------------------------------------

include "xent/_cython/thresholds.pxi"
include "xent/_cython/storage.pxi"
include "xent/_cython/normalize.pxi"
include "xent/_cython/cross_entropy.pxi"
include "xent/_cython/pointwise.pxi"
include "xent/_cython/evaluate.pxi"
include "xent/_cython/linear.pxi"
