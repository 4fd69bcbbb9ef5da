# The storages the kernels read, and reading a row of any floating storage
# (float32, float64, float16, bfloat16) as contiguous values of the computation
# type.  Included by _kernels.pyx before the kernel families, which all read their
# floating inputs through _row_in.

# The storage codes are defined once, in C; FLOAT_KINDS and INDEX_CODES below give
# them to the Python layer (_api/validation.py), by NumPy dtype name.
cdef extern from "xent/kernels.h" nogil:
    enum:
        XENT_KIND_F32
        XENT_KIND_F64
        XENT_KIND_F16
        XENT_KIND_BF16
    enum:
        XENT_INDEX_I8
        XENT_INDEX_U8
        XENT_INDEX_I16
        XENT_INDEX_U16
        XENT_INDEX_I32
        XENT_INDEX_U32
        XENT_INDEX_I64
        XENT_INDEX_U64

cdef extern from "xent/kernels.h" nogil:
    void load_row_f32 "xent_load_row_f32"(const char *p, Py_ssize_t n, Py_ssize_t stride,
                                          int kind, float *dst)
    void load_row_f64 "xent_load_row_f64"(const char *p, Py_ssize_t n, Py_ssize_t stride,
                                          int kind, double *dst)

#: storage kind (XENT_KIND_*) of a floating array, by dtype name
FLOAT_KINDS = {
    "float32": XENT_KIND_F32,
    "float64": XENT_KIND_F64,
    "float16": XENT_KIND_F16,
    "bfloat16": XENT_KIND_BF16,
}
#: storage code (XENT_INDEX_*) of class indices, by integer dtype name
INDEX_CODES = {
    "int8": XENT_INDEX_I8,
    "uint8": XENT_INDEX_U8,
    "int16": XENT_INDEX_I16,
    "uint16": XENT_INDEX_U16,
    "int32": XENT_INDEX_I32,
    "uint32": XENT_INDEX_U32,
    "int64": XENT_INDEX_I64,
    "uint64": XENT_INDEX_U64,
}


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
