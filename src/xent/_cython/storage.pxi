# Reading a row of any floating storage (float32, float64, float16, bfloat16) as
# contiguous values of the computation type.  Included by _kernels.pyx before the
# kernel families, which all read their floating inputs through _row_in.

cdef extern from "xent/kernels.h" nogil:
    enum:
        XENT_KIND_F32
        XENT_KIND_F64
        XENT_KIND_F16
        XENT_KIND_BF16
    void load_row_f32 "xent_load_row_f32"(const char *p, Py_ssize_t n, Py_ssize_t stride,
                                          int kind, float *dst)
    void load_row_f64 "xent_load_row_f64"(const char *p, Py_ssize_t n, Py_ssize_t stride,
                                          int kind, double *dst)

# The storage kinds, for the Python layer (XENT_KIND_* in _validation.py).
KIND_F32 = XENT_KIND_F32
KIND_F64 = XENT_KIND_F64
KIND_F16 = XENT_KIND_F16
KIND_BF16 = XENT_KIND_BF16


cdef inline const real *_row_in(const char *p, Py_ssize_t n, Py_ssize_t stride, int kind,
                                real *scratch) noexcept nogil:
    """Row of n values (stride in bytes, storage `kind`) as contiguous `real`s:
    the row itself when it already is one, else a converted copy in scratch."""
    if real is float:
        if kind == XENT_KIND_F32 and stride == sizeof(float):
            return <const float_u *> p
        load_row_f32(p, n, stride, kind, scratch)
    else:
        if kind == XENT_KIND_F64 and stride == sizeof(double):
            return <const double_u *> p
        load_row_f64(p, n, stride, kind, scratch)
    return scratch
