# Every constant that chooses a kernel path, in one place.  Included by
# _kernels.pyx before the kernel families.  Each comment says the decision; the
# measurements behind it are in BENCHMARKS.md (section named in brackets).
# THRESHOLDS exports them to Python, and normalize_path / cross_entropy_path
# (normalize.pxi, cross_entropy.pxi) say which path a call takes, so the path
# tests build their shapes from these values.

# Class axis not last (inner > 1, unit stride across positions): blocks of
# adjacent positions computed together, vectorised across them.  A block holds
# about BLOCK_BYTES (C x nb values, so it stays in L2 between the max, sum and
# write sweeps), and between MIN_BLOCK and MAX_BLOCK positions.
cdef Py_ssize_t BLOCK_BYTES = 128 * 1024
cdef Py_ssize_t MIN_BLOCK = 16
cdef Py_ssize_t MAX_BLOCK = 1024

# Few classes: rows of at most SMALL_C classes (shorter than a SIMD register or
# two) are taken TILE_ROWS at a time, when there are at least 2 * MIN_BLOCK of
# them, and transposed into scratch (or read in place by the specialised
# functions of tiles.h) so the arithmetic vectorises across rows.
cdef Py_ssize_t SMALL_C = 32

# Rows per tile.  Also the first level of the fixed order in which a batch sum
# of row losses is taken (_sum_tiles): changing it changes the bits of every
# "sum"/"mean" reduction.
cdef Py_ssize_t TILE_ROWS = 256

# Long rows, at least SPLIT_MIN unit-stride classes (a megabyte of float32, more
# than one core's L2): normalised in chunks of SPLIT_CHUNK classes, spread over
# the threads even when there are fewer rows than threads (_run_split).
cdef Py_ssize_t SPLIT_MIN = 1 << 18
cdef Py_ssize_t SPLIT_CHUNK = 1 << 15

# Row batches (_row_batch, _ce_row_batch): the maxima and sums of exps of up to
# ROW_BATCH unit-stride rows are all taken before their logs, so the logs do not
# wait on one chain of latencies a row.  Where the second pass reads or writes
# whole rows again (log_softmax, softmax, a gradient) batching only pays for
# short rows, so those batches hold at most ROW_BATCH_BYTES of rows, and rows
# too long for 4 in a batch go one at a time (_batch_rows).
# [BENCHMARKS.md, "Short rows in batches, session 6"]
cdef enum:
    ROW_BATCH = 16
cdef Py_ssize_t ROW_BATCH_BYTES = 4 * 1024

# linear_cross_entropy (linear.pxi): each BLAS call of a block of rows covers
# LINEAR_TILE_CLASSES classes (logits, weight gradient) or LINEAR_TILE_FEATURES
# features (input gradient).  Fixed, so the results do not depend on the thread
# count; a tile of 256 rows x 1024 classes of float32 is 1 MiB, one core's L2, where
# the bias, cap and gradient's finishing touches find it.
# [BENCHMARKS.md, "Cross-entropy from hidden states"]
cdef Py_ssize_t LINEAR_TILE_CLASSES = 1024
cdef Py_ssize_t LINEAR_TILE_FEATURES = 256


THRESHOLDS = {
    "BLOCK_BYTES": BLOCK_BYTES,
    "MIN_BLOCK": MIN_BLOCK,
    "MAX_BLOCK": MAX_BLOCK,
    "SMALL_C": SMALL_C,
    "TILE_ROWS": TILE_ROWS,
    "SPLIT_MIN": SPLIT_MIN,
    "SPLIT_CHUNK": SPLIT_CHUNK,
    "ROW_BATCH": ROW_BATCH,
    "ROW_BATCH_BYTES": ROW_BATCH_BYTES,
    "LINEAR_TILE_CLASSES": LINEAR_TILE_CLASSES,
    "LINEAR_TILE_FEATURES": LINEAR_TILE_FEATURES,
}


cdef inline Py_ssize_t _batch_rows(Py_ssize_t C, Py_ssize_t itemsize, bint rereads) noexcept nogil:
    """Rows in a row batch (see ROW_BATCH) of C classes of `itemsize` bytes."""
    cdef Py_ssize_t n
    if not rereads:
        return ROW_BATCH
    n = ROW_BATCH_BYTES // (C * itemsize) if C > 0 else ROW_BATCH
    return 1 if n < 4 else min(n, ROW_BATCH)  # 1: the row-by-row path instead
