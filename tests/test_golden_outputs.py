"""Golden outputs: every public function gives the bits recorded before a change
that must change none of them (issue 18 reorganises the tree; no output moves).

Each case calls one public function on inputs built from a seed (its name), with
a shape, layout and dtype that send it down one kernel path (the thresholds are
named beside the shapes below), and hashes what comes back: sha256 over every
output's dtype, shape and bytes -- the loss and the gradient alike, the sign of
zero included, every NaN as np.nan (see digest).  tests/golden/record_golden.py
recorded the hashes, one set per SIMD level, each level in a process of its own;
this test checks the level the process runs at.  Every case runs with 1 and with 2 threads against
one hash: the SPEC promises the same bits for any thread count (the recorder
checks that too, with the machine's own count and with the heap moved).

Re-record (``python tests/golden/record_golden.py``) only when a change is MEANT
to change results, and say so in the commit; ``--check`` lists every case that
differs, at every level, without writing anything.

The test skips, saying why, where the bits may legitimately differ from the
recording:
* on another platform (CPU architecture and SIMD features, C library, the
  compiler that built xent, NumPy's version): libm, NumPy's own loops and the
  compiler's vectorisation decide last bits;
* at a SIMD level that was not recorded;
* in a sanitizer build (.ci/sanitizers.sh: its runtime is loaded in the
  process): the instrumentation changes how loops vectorise (measured on the
  first 1615 cases: 201 / 259 / 591 differ at avx512 / avx2 / baseline);
* on AVX-512 emulated by SIMDe (.ci/avx512_emulated.sh sets
  XENT_TEST_EMULATED_SIMD=avx512; also detected as the avx512 variant running on
  a CPU without avx512f): SIMDe's emulation of some AVX-512 instructions is not
  bit-exact (247 of those 1615 differ); the other levels of that build match
  and run.
Other compiler flags (-O0 ``XENT_DEBUG_BUILD=1``, ``--coverage``) change the bits
too, undetected: the failure message says so.
"""

import contextlib
import functools
import hashlib
import io
import json
import os
import platform
import re
import sysconfig
import zlib
from pathlib import Path

import numpy as np
import pytest

import xent

GOLDEN_FILE = Path(__file__).parent / "golden" / "outputs.json"
LEVELS = ("avx512", "avx2", "baseline")
THREAD_COUNTS = (1, 2)

# ---------------------------------------------------------------------------
# The platform and the SIMD level, read from public output where possible
# ---------------------------------------------------------------------------


def _config_text():
    """What xent.show_config() prints (public: the SPEC lists its contents)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        xent.show_config()
    return buf.getvalue()


def active_simd_level():
    """The SIMD level ("avx512", "avx2", "baseline") xent's kernels run at, or None.

    Read from show_config()'s SIMD line (the variant's name, else the
    instruction set it names), then from the dispatch module, so that a move of
    the internals does not lose it.
    """
    text = _config_text()
    found = re.search(r"variant '(\w+)'", text)
    if found and found.group(1) in LEVELS:
        return found.group(1)
    line = re.search(r"^SIMD:(.*)$", text, re.MULTILINE)
    if line:
        head = re.split(r"CPU supports", line.group(1))[0].lower()
        for level, marks in (("avx512", ("avx-512", "avx512", "x86-64-v4")),
                             ("avx2", ("avx2", "x86-64-v3")),
                             ("baseline", ("baseline", "sse2", "portable"))):
            if any(mark in head for mark in marks):
                return level
    for module in ("xent._dispatch", "xent._runtime.dispatch", "xent._api.dispatch"):
        try:
            level = getattr(__import__(module, fromlist=["level"]), "level", None)
        except ImportError:
            continue
        if level in LEVELS:
            return level
    return None


# CPU features that decide which code xent's variants and libm's run.
CPU_FEATURES = ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma", "f16c")


def cpu_features():
    """The CPU_FEATURES this CPU has (Linux: /proc/cpuinfo), or None when unknown."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [name for name in CPU_FEATURES if name in flags]
    except OSError:
        pass
    return None


def platform_fingerprint():
    """What the recorded bits depend on besides xent's code.

    The compiler is the one show_config() reports having built the kernels
    (Python's own compiler from sysconfig when it reports none); the CPU's SIMD
    features, because libm picks its code by CPU too.
    """
    compiler = re.search(r"^compiler:\s*(.*)$", _config_text(), re.MULTILINE)
    libc = platform.libc_ver()
    return {
        "machine": platform.machine(),
        "cpu_features": " ".join(cpu_features() or ["unknown"]),
        "libc": " ".join(libc) if libc[0] else platform.system(),
        "compiler": compiler.group(1).strip() if compiler else str(sysconfig.get_config_var("CC")),
        "numpy": np.__version__,
    }


def build_with_other_bits(level):
    """Why this process's kernels legitimately give other bits than a release
    build's at `level`, or None."""
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
            maps = f.read()
    except OSError:
        maps = ""
    for runtime, name in (("libasan", "AddressSanitizer"), ("libubsan", "UBSan"),
                          ("libtsan", "ThreadSanitizer")):
        if runtime in maps:
            return (f"a sanitizer build ({name} is loaded): instrumented loops vectorise "
                    "differently")
    emulated = os.environ.get("XENT_TEST_EMULATED_SIMD", "").split(",")
    features = cpu_features()
    if level == "avx512" and ("avx512" in emulated or
                              (features is not None and "avx512f" not in features)):
        return "AVX-512 emulated by SIMDe (.ci/avx512_emulated.sh), which is not bit-exact"
    return None


# ---------------------------------------------------------------------------
# Hashing
# ---------------------------------------------------------------------------


def digest(outputs):
    """sha256 (hex) of a sequence of outputs: each one's dtype, shape and bytes,
    every NaN made the one NaN (np.nan).

    A NaN's sign and payload are not results (the SPEC: NaN propagates): where
    two NaNs meet in a sum, x86 keeps the first operand's, and which one is
    first can depend on how a loop was split for the arrays' alignment -- on
    the addresses malloc returned (seen: a NaN loss whose sign changed after an
    unrelated call).  The sign of zero is kept: no operand order changes it.
    """
    h = hashlib.sha256()
    for out in outputs:
        a = np.asarray(out)
        h.update(f"{a.dtype.name}|{a.dtype.str}|{a.shape}|".encode())
        if a.dtype.kind == "f" or a.dtype.name == "bfloat16":
            a = np.where(np.isnan(a), np.array(np.nan, a.dtype), a)
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def case_seed(name):
    """The inputs' seed: from the case's name alone, whatever order cases run in."""
    return zlib.crc32(name.encode())


def run_case(name, n_threads):
    """The digest of case `name` run with xent limited to `n_threads` threads."""
    previous = xent.get_num_threads()
    xent.set_num_threads(n_threads)
    try:
        return digest(CASES[name](np.random.default_rng(case_seed(name))))
    finally:
        xent.set_num_threads(previous)


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def _bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    return np.dtype(ml_dtypes.bfloat16)


def _dtype(dt):
    return _bfloat16() if dt == "bf16" else np.dtype(
        {"f16": np.float16, "f32": np.float32, "f64": np.float64, "i64": np.int64,
         "bool": np.bool_}[dt])


def _cast(x, dt):
    """float64 values as dtype `dt` (bfloat16 through float32, as NumPy converts)."""
    d = _dtype(dt)
    if dt == "bf16":
        return x.astype(np.float32).astype(d)
    if d.kind in "ib":
        with np.errstate(invalid="ignore"):
            return (np.nan_to_num(x, nan=0.0, posinf=9.0, neginf=-9.0) > 0 if d.kind == "b"
                    else np.round(np.nan_to_num(x, nan=0.0, posinf=50, neginf=-50)).astype(d))
    with np.errstate(over="ignore"):
        return x.astype(d)


def _big(dt):
    """A huge finite magnitude of dtype dt."""
    return 6e4 if dt == "f16" else 1e30


def _put_specials(x, dt):
    """Rows 0-8 of (rows, C) float64 logits get the SPEC's special values: a -inf
    class, all -inf, one and two +inf, a NaN, huge finite values, a tie at a huge
    max, half the classes impossible, one positive entry before negative ones.
    Later rows stay ordinary (so tiles, blocks and batches past the first still
    take their fast paths)."""
    n, C = x.shape
    if n < 9 or C < 2:
        return x
    big = _big(dt)
    x[0, 1] = -np.inf
    x[1, :] = -np.inf
    x[2, C // 2] = np.inf
    x[3, 0] = x[3, -1] = np.inf
    x[4, C // 3] = np.nan
    x[5] = np.tanh(x[5]) * big
    x[6] = big
    x[6, 0] = -big
    x[7, ::2] = -np.inf
    x[8] = -np.abs(x[8]) - 0.5
    x[8, 0] = 2.0
    return x


def _rows(rng, n, C, dt="f32", special=True, scale=3.0):
    """(n, C) logits of dtype dt (standard normal times `scale`)."""
    x = rng.standard_normal((n, C)) * scale
    if special:
        _put_specials(x, dt)
    return _cast(x, dt)


def _with_class_axis(rows, lead, axis):
    """(N, C) rows laid out as lead + (C,), the class axis then moved to `axis`,
    C-contiguous (so axis=1 of (N, C, H, W) has unit stride across positions)."""
    a = rows.reshape(tuple(lead) + (rows.shape[-1],))
    return np.ascontiguousarray(np.moveaxis(a, -1, axis))


def _logits(rng, lead, C, axis=-1, dt="f32", special=True):
    n = int(np.prod(lead))
    return _with_class_axis(_rows(rng, n, C, dt, special), lead, axis)


def _indices(rng, shape, C, dtype=np.int64, ignore=-100, frac=0.1):
    """Class indices in [0, C), a fraction `frac` of them set to `ignore`."""
    t = rng.integers(0, C, size=shape)
    if ignore is not None and frac:
        t = np.where(rng.random(shape) < frac, ignore, t)
    return t.astype(dtype)


def _probs(rng, lead, C, axis=-1, dt="f32"):
    """Class probabilities (rows summing to 1), some exactly 0, class axis `axis`;
    rows 10-13 hold an infinite mass, a NaN and a negative target (SPEC: the
    limit, NaN, the formula as it stands)."""
    n = int(np.prod(lead))
    z = rng.standard_normal((n, C)) * 2
    z[rng.random((n, C)) < 0.1] = -np.inf
    z[:, 0] = np.maximum(z[:, 0], 0)  # no row all zero
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    if n > 13 and C > 2:
        p[10, 1] = np.inf
        p[11, 0], p[11, 2] = np.inf, -np.inf
        p[12, 1] = np.nan
        p[13, 1] = -0.25
    return _with_class_axis(_cast(p, dt), lead, axis)


# ---------------------------------------------------------------------------
# The cases: name -> function(rng) returning the outputs to hash
# ---------------------------------------------------------------------------

CASES = {}


def _add(name, builder, /, **kwargs):
    assert name not in CASES, name
    CASES[name] = functools.partial(builder, **kwargs)


# Layouts (lead shape, classes, class axis) and the path each takes; the
# thresholds are those of the kernels (src/xent/_cython/thresholds.pxi):
# SMALL_C = 32 few-class tiles of TILE_ROWS = 256 rows need >= 2*MIN_BLOCK = 32
# rows; the class axis not last goes in blocks of BLOCK_BYTES / (C*itemsize)
# positions clamped to [MIN_BLOCK = 16, MAX_BLOCK = 1024]; short unit-stride rows
# go in batches of ROW_BATCH_BYTES = 4 KiB (<= 16 rows, >= 4 or row by row);
# rows of >= SPLIT_MIN = 2**18 classes are normalised in chunks of 2**15.
LAYOUTS = {
    "tiles-C7": ((300,), 7, -1),        # a full tile of 256 rows and one of 44
    "tiles-C16": ((300,), 16, -1),      # the widest specialised tile function
    "tiles-C20": ((300,), 20, -1),      # transposed tiles (no specialised function)
    "tiles-C32": ((40,), 32, -1),       # C = SMALL_C, one partial tile
    "short-31rows": ((31,), 5, -1),     # few classes but < 2*MIN_BLOCK rows: batches
    "batches-C100": ((50,), 100, -1),   # 10-row batches of 4 KiB
    "rows-C1500": ((12,), 1500, -1),    # too long for a batch of 4: row by row
    "rows-C5000": ((12,), 5000, -1),    # evaluate's rows in chunks of 2048 classes
    "blocks-C10": ((2,), 10, 1, (24, 30)),      # (N, C, H, W): one block of 720
    "blocks-max": ((2,), 4, 1, (40, 40)),       # MAX_BLOCK = 1024 positions, then 576
    "blocks-min": ((2,), 3000, 1, (40,)),       # MIN_BLOCK = 16 positions per block
    "axis0": ((), 9, 0, (45,)),                 # 2-D, class axis 0: blocks
}
# Cross-entropy's few-class tiles have a function compiled for each C = 2..16
# (include/xent/portable/tiles.h): one layout per C (only cross-entropy takes them
# all).
TILE_SWEEP = {f"tiles-C{C}": ((300,), C, -1) for C in list(range(1, 18)) + [31]}


def _layout(name):
    spec = LAYOUTS.get(name) or TILE_SWEEP[name]
    lead, C, axis = spec[:3]
    inner = spec[3] if len(spec) > 3 else ()
    # the array's shape: lead, then C at `axis`, then the inner positions
    return tuple(lead) + tuple(inner), C, axis


def _logits_for(rng, layout, dt, special=True):
    lead, C, axis = _layout(layout)
    return _logits(rng, lead, C, axis, dt, special)


# ---- normalizers ------------------------------------------------------------------


def _norm(rng, *, fn, layout, dt, special=True, view=None, out=None, keepdims=None):
    x = _logits_for(rng, layout, dt, special)
    kwargs = {}
    if keepdims is not None:
        kwargs["keepdims"] = keepdims
    axis = _layout(layout)[2]
    if view == "strided":          # rows with a class stride of 2 (gathered into scratch)
        x = _strided(x, axis)
    elif view == "inner-strided":  # class axis not last, positions 2 apart: no blocks
        x = _strided(x, -1)
    func = getattr(xent, fn)
    if out is None:
        return (func(x, axis, **kwargs),)
    shape = func(x, axis, **kwargs).shape if fn == "logsumexp" else x.shape
    if out == "inplace":
        buf = x
    elif out == "strided":
        compute = np.float32 if x.dtype.itemsize <= 4 else np.float64
        buf = _strided(np.full(shape, np.nan, compute), -1)
    elif out == "fortran":  # not viewable as the kernel's (outer, inner): a copy back
        buf = np.asfortranarray(np.full(shape, np.nan, np.float32))
    else:
        buf = np.full(shape, np.nan, _dtype(out))
    res = func(x, axis, out=buf, **kwargs)
    assert res is buf
    return (buf,)


def _misaligned(a, offset=1):
    """A C-contiguous copy of `a` at an address `offset` bytes past an aligned one
    (NumPy allows it: np.frombuffer(buf, offset=1)); the kernels read it in place."""
    a = np.ascontiguousarray(a)
    buf = np.zeros(a.nbytes + 64, np.uint8)
    start = (-buf.ctypes.data) % 64 + offset
    m = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    m[...] = a
    return m


def _strided(a, axis, offset=0):
    """a copied into every other element along `axis` of a buffer twice as long
    (`offset` bytes past an aligned address)."""
    shape = list(a.shape)
    shape[axis] *= 2
    buf = _misaligned(np.zeros(shape, a.dtype), offset)
    index = [slice(None)] * a.ndim
    index[axis] = slice(None, None, 2)
    view = buf[tuple(index)]
    view[...] = a
    return view


def _norm_long(rng, *, fn, dt, C):
    """Rows of >= SPLIT_MIN classes: chunked; a row with +inf and one with NaN take
    the whole-row path after the chunk merge."""
    x = rng.standard_normal((4, C)) * 3
    x[1, C // 2] = np.inf
    x[2, 7] = np.nan
    x[3, : C // 2] = -np.inf
    return (getattr(xent, fn)(_cast(x, dt), -1),)


def _norm_cases():
    for fn in ("logsumexp", "log_softmax", "softmax"):
        for layout in LAYOUTS:
            for dt in ("f32", "f64"):
                for special in (False, True):
                    _add(f"{fn}/{layout}/{dt}/{'special' if special else 'finite'}", _norm,
                         fn=fn, layout=layout, dt=dt, special=special)
            for dt in ("f16", "bf16"):  # 16-bit rows: float16 read in place, bfloat16 converted
                _add(f"{fn}/{layout}/{dt}/special", _norm, fn=fn, layout=layout, dt=dt)
        for dt in ("i64", "bool"):      # integers and bools: converted to float64
            _add(f"{fn}/batches-C100/{dt}", _norm, fn=fn, layout="batches-C100", dt=dt,
                 special=False)
        for dt in ("f32", "f64", "f16"):
            _add(f"{fn}/strided-rows/{dt}", _norm, fn=fn, layout="batches-C100", dt=dt,
                 view="strided")
            _add(f"{fn}/blocks-C10-inner-strided/{dt}", _norm, fn=fn, layout="blocks-C10",
                 dt=dt, view="inner-strided")
        for dt in ("f32", "f64"):
            _add(f"{fn}/split-long-rows/{dt}", _norm_long, fn=fn, dt=dt,
                 C=(1 << 18) + 3 * (1 << 15) + 77)
        _add(f"{fn}/split-threshold-minus-1/f32", _norm_long, fn=fn, dt="f32", C=(1 << 18) - 1)
        _add(f"{fn}/long-row-f16", _norm_long, fn=fn, dt="f16", C=(1 << 18) + 5)
        # out=: the computation dtype (written directly), a wider/narrower dtype
        # (rounded copy), a strided buffer; log_softmax/softmax also in place
        for layout in ("batches-C100", "tiles-C7", "blocks-C10"):
            for out in ("f32", "f64", "f16", "bf16", "strided", "fortran") + (
                    ("inplace",) if fn != "logsumexp" else ()):
                _add(f"{fn}/{layout}/f32/out-{out}", _norm, fn=fn, layout=layout, dt="f32",
                     out=out)
            _add(f"{fn}/{layout}/f64/out-f32", _norm, fn=fn, layout=layout, dt="f64", out="f32")
    for layout in ("batches-C100", "blocks-C10"):
        _add(f"logsumexp/{layout}/f32/keepdims", _norm, fn="logsumexp", layout=layout, dt="f32",
             keepdims=True)
        _add(f"logsumexp/{layout}/f32/keepdims-out-f64", _norm, fn="logsumexp", layout=layout,
             dt="f32", keepdims=True, out="f64")


def _norm_whole(rng, *, fn, dt, shape, out=None):
    x = _cast(rng.standard_normal(shape) * 3, dt)
    if out is None:
        return (getattr(xent, fn)(x, None),)
    if out == "fortran":  # not viewable as one flat row: computed aside, copied back
        buf = np.asfortranarray(np.full(x.shape, np.nan, x.dtype))
    else:
        buf = np.full(x.shape if fn != "logsumexp" else (), np.nan, _dtype(out))
    getattr(xent, fn)(x, None, out=buf)
    return (buf,)


def _norm_edge_cases():
    for fn in ("logsumexp", "log_softmax", "softmax"):
        for dt in ("f32", "f64", "f16"):
            _add(f"{fn}/axis-None/{dt}", _norm_whole, fn=fn, dt=dt, shape=(7, 33))
        _add(f"{fn}/axis-None/f32/out-f64", _norm_whole, fn=fn, dt="f32", shape=(7, 33), out="f64")
        if fn != "logsumexp":
            _add(f"{fn}/axis-None/f32/out-fortran", _norm_whole, fn=fn, dt="f32", shape=(7, 33),
                 out="fortran")
        _add(f"{fn}/0-d/f64", _norm_whole, fn=fn, dt="f64", shape=())
        _add(f"{fn}/empty-classes/f32", _norm_whole_axis, fn=fn, shape=(3, 0))
        _add(f"{fn}/empty-rows/f32", _norm_whole_axis, fn=fn, shape=(0, 5))
        for dt in ("f32", "f64", "f16", "bf16"):
            for layout in ("tiles-C7", "batches-C100", "blocks-C10"):
                _add(f"{fn}/{layout}/{dt}/misaligned", _norm_misaligned, fn=fn, layout=layout,
                     dt=dt)
            _add(f"{fn}/batches-C100/{dt}/misaligned-strided", _norm_misaligned, fn=fn,
                 layout="batches-C100", dt=dt, strided=True)
        _add(f"{fn}/one-class/f32", _norm_whole_axis, fn=fn, shape=(40, 1))
        _add(f"{fn}/threaded-batches/f32", _norm_big, fn=fn, shape=(512, 100), axis=-1)
        _add(f"{fn}/threaded-tiles/f64", _norm_big, fn=fn, shape=(8192, 5), axis=-1)
        _add(f"{fn}/threaded-blocks/f32", _norm_big, fn=fn, shape=(4, 10, 64, 64), axis=1)


def _norm_misaligned(rng, *, fn, layout, dt, strided=False):
    x = _logits_for(rng, layout, dt)
    axis = _layout(layout)[2]
    x = _strided(x, axis, offset=1) if strided else _misaligned(x)
    return (getattr(xent, fn)(x, axis),)


def _norm_whole_axis(rng, *, fn, shape):
    x = _cast(rng.standard_normal(shape), "f32")
    return (getattr(xent, fn)(x, -1),)


def _norm_big(rng, *, fn, shape, axis):
    """Enough elements (>= 32K) for a team of two threads."""
    x = rng.standard_normal(shape) * 3
    x.reshape(-1, shape[-1])[:3, 1] = [-np.inf, np.inf, np.nan]
    x = x.astype(np.float64 if shape[-1] == 5 else np.float32)
    return (getattr(xent, fn)(x, axis),)


# ---- cross-entropy ----------------------------------------------------------------

# Options a cross-entropy call takes (reduction "mean" unless named).
CE_OPTIONS = {
    "mean": {},
    "none": {"reduction": "none"},
    "sum": {"reduction": "sum"},
    "weight": {"weight": True},
    "smoothing": {"label_smoothing": 0.1},
    "zloss": {"z_loss": 1e-3},
    "all-grad": {"weight": True, "label_smoothing": 0.1, "z_loss": 1e-3, "return_grad": True},
    "grad-none": {"reduction": "none", "return_grad": True},
    "grad-sum": {"reduction": "sum", "return_grad": True},
    "grad-mean": {"return_grad": True},
    "ignore-class2-grad": {"ignore_index": 2, "return_grad": True},
    "weight-sum-none": {"weight": True, "reduction": "none"},
}


def _ce(rng, *, layout, dt, target="index", tdtype=np.int64, ignore=-100, frac=0.1,
        special=True, weight=False, view=None, grad_out=None, **kwargs):
    lead, C, axis = _layout(layout)
    x = _logits(rng, lead, C, axis, dt, special)
    row_shape = x.shape[:axis % x.ndim] + x.shape[axis % x.ndim + 1:]
    if target == "index":
        ignore_index = kwargs.pop("ignore_index", ignore)
        t = _indices(rng, row_shape, C, tdtype, ignore_index, frac)
        if ignore_index != -100:
            kwargs["ignore_index"] = ignore_index
    else:
        t = _probs(rng, lead, C, axis, target)
    if weight:
        kwargs["weight"] = rng.uniform(0.25, 2.0, C).astype(np.float32)
        kwargs["weight"][1 % C] = 0  # a class that costs nothing (skipped by smoothing)
    if view == "strided":
        x = _strided(x, axis)
    elif view == "padded":       # rows of a wider array: tiles with a row stride
        x = np.pad(x, ((0, 0), (0, 3)))[:, :C]
    if grad_out is not None:
        kwargs["return_grad"] = True
        if grad_out == "inplace":
            kwargs["grad_out"] = x
        elif grad_out == "strided":
            kwargs["grad_out"] = _strided(np.full(x.shape, np.nan, np.float32), axis)
        else:
            kwargs["grad_out"] = np.full(x.shape, np.nan, _dtype(grad_out))
    res = xent.cross_entropy(x, t, axis=axis, **kwargs)
    if grad_out is not None:
        assert res[1] is kwargs["grad_out"]
    return res if isinstance(res, tuple) else (res,)


def _ce_cases():
    ce_layouts = ("tiles-C7", "tiles-C16", "tiles-C20", "tiles-C32", "short-31rows",
                  "batches-C100", "rows-C1500", "blocks-C10", "blocks-min", "axis0")
    for layout in ce_layouts:
        for dt in ("f32", "f64"):
            for opt, kw in CE_OPTIONS.items():
                _add(f"cross_entropy/{layout}/{dt}/{opt}", _ce, layout=layout, dt=dt, **kw)
            _add(f"cross_entropy/{layout}/{dt}/finite-grad", _ce, layout=layout, dt=dt,
                 special=False, return_grad=True)
            _add(f"cross_entropy/{layout}/{dt}/finite-sum", _ce, layout=layout, dt=dt,
                 special=False, reduction="sum")
        for dt in ("f16", "bf16"):
            for opt in ("mean", "none", "smoothing", "grad-mean", "all-grad"):
                _add(f"cross_entropy/{layout}/{dt}/{opt}", _ce, layout=layout, dt=dt,
                     **CE_OPTIONS[opt])
    for layout in ("tiles-C7", "batches-C100", "blocks-C10", "rows-C1500"):
        for dt, tdt in (("f32", "f32"), ("f64", "f64"), ("f16", "f32"), ("f32", "f64"),
                        ("bf16", "f16")):
            for opt in ("mean", "none", "all-grad", "grad-sum", "weight-sum-none"):
                kw = dict(CE_OPTIONS[opt])
                kw.pop("ignore_index", None)
                _add(f"cross_entropy/{layout}/{dt}/prob-{tdt}/{opt}", _ce, layout=layout,
                     dt=dt, target=tdt, **kw)
    # class-index storages (int8 .. uint64) through the one-call small path
    # (mean/sum, no weight or gradient) and the general one ("none")
    for tdtype, ignore in ((np.int8, -100), (np.uint8, 255), (np.int16, -100), (np.int32, -1),
                           (np.uint16, 999), (np.uint32, 7), (np.uint64, 3), (np.int64, 0)):
        for red in ("mean", "sum", "none"):
            for layout in ("tiles-C7", "batches-C100"):
                _add(f"cross_entropy/{layout}/f32/target-{np.dtype(tdtype).name}-ignore{ignore}/"
                     f"{red}", _ce, layout=layout, dt="f32", tdtype=tdtype, ignore=ignore,
                     reduction=red)
    for layout in ("tiles-C7", "tiles-C20", "batches-C100", "rows-C1500"):
        for view in ("strided", "padded"):
            for opt in ("mean", "grad-mean", "all-grad"):
                _add(f"cross_entropy/{layout}/f32/{view}/{opt}", _ce, layout=layout, dt="f32",
                     view=view, **CE_OPTIONS[opt])
        for dt, go in (("f32", "f32"), ("f32", "f64"), ("f32", "bf16"), ("f32", "inplace"),
                       ("f32", "strided"), ("f64", "inplace"), ("f16", "f16"),
                       ("f16", "inplace")):
            _add(f"cross_entropy/{layout}/{dt}/grad_out-{go}", _ce, layout=layout, dt=dt,
                 grad_out=go, reduction="sum" if layout == "tiles-C20" else "mean")
    for layout in ("blocks-C10", "blocks-max"):
        for go in ("f32", "inplace", "strided"):
            _add(f"cross_entropy/{layout}/f32/grad_out-{go}", _ce, layout=layout, dt="f32",
                 grad_out=go)
    _add("cross_entropy/blocks-max/f64/all-grad", _ce, layout="blocks-max", dt="f64",
         **CE_OPTIONS["all-grad"])
    # every few-class tile function (one compiled per C = 2..16), the one-pass
    # forward of the small call ("mean") and the general path ("none")
    for layout in TILE_SWEEP:
        for dt in ("f32", "f64"):
            for opt in ("mean", "none", "weight-sum-none"):
                name = f"cross_entropy/{layout}/{dt}/{opt}"
                if name not in CASES:  # (the layouts above have them already)
                    _add(name, _ce, layout=layout, dt=dt, **CE_OPTIONS[opt])
    for dt, tdt in (("f64", "f32"), ("f64", "f16"), ("f32", "bf16")):
        for opt in ("mean", "all-grad"):
            _add(f"cross_entropy/batches-C100/{dt}/prob-{tdt}/{opt}", _ce, layout="batches-C100",
                 dt=dt, target=tdt, **CE_OPTIONS[opt])
    for layout in ("tiles-C7", "batches-C100", "blocks-C10"):
        for dt in ("f32", "f64"):
            for opt in ("mean", "sum", "grad-none"):
                _add(f"cross_entropy/{layout}/{dt}/empty-batch/{opt}", _ce_empty, layout=layout,
                     dt=dt, **CE_OPTIONS[opt])
    for how in ("lists", "big-endian-targets", "fortran-logits", "uint64-ignore-neg",
                "noncontiguous-targets", "readonly", "numpy-int-axis", "misaligned-f32",
                "misaligned-f64", "misaligned-f16", "misaligned-bf16", "misaligned-bf16-strided",
                "misaligned-f16-strided"):
        for layout in ("tiles-C7", "batches-C100"):
            for opt in ("mean", "grad-sum"):
                _add(f"cross_entropy/{layout}/f32/{how}/{opt}", _ce_odd, layout=layout,
                     how=how, **CE_OPTIONS[opt])
    _add("cross_entropy/all-ignored/f32/mean", _ce, layout="tiles-C7", dt="f32", frac=1.0)
    _add("cross_entropy/all-ignored/f32/grad-sum", _ce, layout="batches-C100", dt="f32",
         frac=1.0, reduction="sum", return_grad=True)
    _add("cross_entropy/int-logits/batches-C100/grad", _ce, layout="batches-C100", dt="i64",
         special=False, return_grad=True)
    for dt in ("f32", "f64"):
        _add(f"cross_entropy/long-row/{dt}/grad", _ce_long, dt=dt)
    for opt in ("mean", "grad-mean", "all-grad"):
        _add(f"cross_entropy/threaded-tiles/f32/{opt}", _ce_big, shape=(8192, 10), axis=-1,
             **CE_OPTIONS[opt])
        _add(f"cross_entropy/threaded-batches/f32/{opt}", _ce_big, shape=(512, 100), axis=-1,
             **CE_OPTIONS[opt])
        _add(f"cross_entropy/threaded-rows/f64/{opt}", _ce_big, shape=(40, 2000), axis=-1,
             **CE_OPTIONS[opt])
        _add(f"cross_entropy/threaded-blocks/f32/{opt}", _ce_big, shape=(4, 10, 64, 64), axis=1,
             **CE_OPTIONS[opt])


def _ce_empty(rng, *, layout, dt, **kwargs):
    """No rows: NaN for "mean", 0 for "sum", empty arrays."""
    lead, C, axis = _layout(layout)
    x = _logits(rng, lead, C, axis, dt)[:0]
    t = _indices(rng, x.shape[:axis % x.ndim] + x.shape[axis % x.ndim + 1:], C)
    res = xent.cross_entropy(x, t, axis=axis, **kwargs)
    return res if isinstance(res, tuple) else (res,)


def _ce_odd(rng, *, layout, how, **kwargs):
    """Inputs the one-call small path declines (or that need a conversion first)."""
    lead, C, axis = _layout(layout)
    x = _logits(rng, lead, C, axis, "f32")
    t = _indices(rng, lead, C, ignore=-100)
    if how == "lists":
        x, t = x.tolist(), t.tolist()
    elif how == "big-endian-targets":
        t = t.astype(">i4")
    elif how == "fortran-logits":
        x = np.asfortranarray(x)
    elif how == "uint64-ignore-neg":   # uint64 indices with a negative ignore_index
        t = np.where(t < 0, 0, t).astype(np.uint64)
    elif how == "noncontiguous-targets":
        t = _strided(t, 0)
    elif how == "readonly":
        x.flags.writeable = t.flags.writeable = False
    elif how == "numpy-int-axis":
        axis = np.int64(axis)
    elif how.startswith("misaligned"):  # misaligned-<dtype>[-strided]
        x = _cast(x.astype(np.float64), how.split("-")[1])
        x = _strided(x, -1, offset=1) if how.endswith("strided") else _misaligned(x)
        t = _misaligned(t)
    res = xent.cross_entropy(x, t, axis=axis, **kwargs)
    return res if isinstance(res, tuple) else (res,)


def _ce_long(rng, *, dt):
    """Rows of 300000 classes (no split path for cross-entropy: long row sums)."""
    x = rng.standard_normal((3, 300_000)) * 3
    x[1, 5] = np.inf
    t = np.array([17, 5, 299_999])
    return xent.cross_entropy(_cast(x, dt), t, return_grad=True, label_smoothing=0.05)


def _ce_big(rng, *, shape, axis, weight=False, **kwargs):
    """Enough elements (>= 32K) for a team of two threads."""
    C = shape[axis]
    x = rng.standard_normal(shape) * 3
    np.moveaxis(x, axis, -1).reshape(-1, C)[:3, 1] = [-np.inf, np.inf, np.nan]
    x = x.astype(np.float64 if C == 2000 else np.float32)
    t = _indices(rng, x.shape[:axis % x.ndim] + x.shape[axis % x.ndim + 1:], C)
    if weight:
        kwargs["weight"] = np.linspace(0.5, 1.5, C)
    res = xent.cross_entropy(x, t, axis=axis, **kwargs)
    return res if isinstance(res, tuple) else (res,)


# ---- nll_loss, focal_loss ----------------------------------------------------------


def _nll(rng, *, layout, dt, weight=False, reduction="mean", ignore_index=-100):
    lead, C, axis = _layout(layout)
    n = int(np.prod(lead))
    z = rng.standard_normal((n, C)) * 3
    z[0, 1] = -np.inf
    lp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))   # NumPy's log-probabilities
    t = _indices(rng, (n,), C, ignore=ignore_index)
    lp[np.flatnonzero(t == ignore_index)[:1], :] = np.nan    # ignored rows count 0 anyway
    x = _with_class_axis(_cast(lp, dt), lead, axis)
    t = t.reshape(lead)  # the rows' shape: the logits' without the class axis
    kwargs = {"reduction": reduction}
    if weight:
        kwargs["weight"] = rng.uniform(0.0, 2.0, C)
    if ignore_index != -100:
        kwargs["ignore_index"] = ignore_index
    return (xent.nll_loss(x, t, axis=axis, **kwargs),)


def _no_classes(rng, *, fn, reduction):
    """C = 0: every target must be ignored; the loss is 0 per row."""
    x = np.zeros((6, 0), np.float32)
    t = np.full(6, -100)
    return (getattr(xent, fn)(x, t, reduction=reduction),)


def _focal(rng, *, layout, dt, gamma=2.0, alpha=None, reduction="mean", special=True):
    lead, C, axis = _layout(layout)
    x = _logits(rng, lead, C, axis, dt, special)
    t = _indices(rng, x.shape[:axis % x.ndim] + x.shape[axis % x.ndim + 1:], C)
    if alpha == "array":
        alpha = rng.uniform(0.1, 1.0, C)
    return (xent.focal_loss(x, t, axis=axis, gamma=gamma, alpha=alpha, reduction=reduction),)


def _nll_focal_cases():
    for fn in ("nll_loss", "focal_loss"):
        for red in ("mean", "sum", "none"):
            _add(f"{fn}/no-classes/{red}", _no_classes, fn=fn, reduction=red)
    for layout in ("tiles-C7", "batches-C100", "blocks-C10"):
        for dt in ("f32", "f64", "f16", "bf16"):
            for red in ("mean", "sum", "none"):
                _add(f"nll_loss/{layout}/{dt}/{red}", _nll, layout=layout, dt=dt, reduction=red)
            _add(f"nll_loss/{layout}/{dt}/weight", _nll, layout=layout, dt=dt, weight=True)
            _add(f"focal_loss/{layout}/{dt}/mean", _focal, layout=layout, dt=dt)
            _add(f"focal_loss/{layout}/{dt}/none-alpha-array", _focal, layout=layout, dt=dt,
                 alpha="array", reduction="none")
        _add(f"nll_loss/{layout}/f32/weight-ignore0-none", _nll, layout=layout, dt="f32",
             weight=True, ignore_index=0, reduction="none")
        for gamma, alpha, red in ((0.0, None, "sum"), (0.5, 0.25, "mean"), (3.0, "array", "sum"),
                                  (1.0, -0.5, "none")):
            _add(f"focal_loss/{layout}/f32/gamma{gamma}-alpha{alpha}-{red}", _focal,
                 layout=layout, dt="f32", gamma=gamma, alpha=alpha, reduction=red)


# ---- binary cross-entropy ------------------------------------------------------------

BCE_SHAPE = (64, 700)   # 44800 elements: several tasks of 8192 (PW_TASK), two threads


def _bce_logits(rng, *, dt, shape=BCE_SHAPE, weight=None, pos_weight=None, reduction="mean",
                return_grad=False, grad_out=None, view=None, hard=False, special=True):
    x = rng.standard_normal(shape) * 4
    flat = x.reshape(-1)
    if flat.size >= 13 and special:  # special values at the start and in the last (partial) vector
        flat[:6] = [np.inf, -np.inf, np.inf, -np.inf, np.nan, 0.0]
        flat[6:10] = [_big(dt), -_big(dt), 40.0, -40.0]
        flat[-3:] = [np.inf, np.nan, -np.inf]
    x = _cast(x, dt)
    y = rng.random(shape)
    if hard:
        y = (y > 0.5).astype(np.float64)
    if y.size >= 13:
        y.reshape(-1)[:4] = [1.0, 0.0, 0.0, 1.0]
        y.reshape(-1)[-3:] = [0.0, 1.0, 1.0]
    y = y.astype(np.float32 if dt != "f64" else np.float64)
    kwargs = {"reduction": reduction, "return_grad": return_grad}
    if weight == "row":
        kwargs["weight"] = rng.uniform(0, 2, shape[-1]).astype(y.dtype)
    elif weight == "column":
        kwargs["weight"] = rng.uniform(0, 2, (shape[0], 1))
    elif weight == "full":
        kwargs["weight"] = rng.uniform(0, 2, shape).astype(y.dtype)
    if pos_weight is not None:
        kwargs["pos_weight"] = rng.uniform(0.5, 3, shape[-1]).astype(y.dtype)
    if view == "strided":
        x, y = _strided(x, -1), _strided(y, -1)
    elif view == "misaligned":
        x, y = _misaligned(x), _misaligned(y)
    elif view == "transposed":
        x, y = x.T, y.T
        for key in ("weight", "pos_weight"):
            kwargs.pop(key, None)
    if grad_out is not None:
        kwargs["return_grad"] = True
        if grad_out == "inplace":
            kwargs["grad_out"] = x
        elif grad_out == "strided":
            kwargs["grad_out"] = _strided(np.full(x.shape, np.nan, x.dtype), -1)
        else:
            kwargs["grad_out"] = np.full(x.shape, np.nan, _dtype(grad_out))
    res = xent.binary_cross_entropy_with_logits(x, y, **kwargs)
    return res if isinstance(res, tuple) else (res,)


def _bce_probs(rng, *, dt, shape=BCE_SHAPE, weight=False, reduction="mean"):
    p = rng.random(shape)
    y = rng.random(shape)
    if p.size:
        p.reshape(-1)[:6] = [0.0, 1.0, 0.0, 1.0, 1e-30, 1 - 1e-7]
        y.reshape(-1)[:4] = [0.0, 1.0, 1.0, 0.0]
    kwargs = {"reduction": reduction}
    if weight:
        kwargs["weight"] = rng.uniform(0, 2, shape[-1])
    return (xent.binary_cross_entropy(_cast(p, dt), _cast(y, "f32" if dt != "f64" else "f64"),
                                      **kwargs),)


def _binary_cases():
    for dt in ("f32", "f64", "f16", "bf16"):
        for red in ("mean", "sum", "none"):
            _add(f"bce_with_logits/{dt}/{red}", _bce_logits, dt=dt, reduction=red)
            _add(f"bce_with_logits/{dt}/{red}-grad", _bce_logits, dt=dt, reduction=red,
                 return_grad=True)
            _add(f"binary_cross_entropy/{dt}/{red}", _bce_probs, dt=dt, reduction=red)
        _add(f"bce_with_logits/{dt}/weights-grad", _bce_logits, dt=dt, weight="row",
             pos_weight=True, return_grad=True)
        _add(f"binary_cross_entropy/{dt}/weight-sum", _bce_probs, dt=dt, weight=True,
             reduction="sum")
    for dt in ("f32", "f64"):
        for weight in ("row", "column", "full"):
            _add(f"bce_with_logits/{dt}/weight-{weight}-none", _bce_logits, dt=dt, weight=weight,
                 reduction="none")
        _add(f"bce_with_logits/{dt}/pos_weight-hard-mean-grad", _bce_logits, dt=dt,
             pos_weight=True, hard=True, return_grad=True)
        for view in ("strided", "transposed"):
            _add(f"bce_with_logits/{dt}/{view}-grad", _bce_logits, dt=dt, view=view,
                 weight="row", pos_weight=True, return_grad=True)
        for go in ("inplace", "f64", "f16", "strided"):
            _add(f"bce_with_logits/{dt}/grad_out-{go}", _bce_logits, dt=dt, grad_out=go,
                 reduction="sum")
        # each combination of operands (weight, pos_weight, per-element loss) without
        # a gradient has a loop of its own; 1001 elements end in a partial vector
        for weight in (None, "row"):
            for pw in (None, True):
                for red in ("sum", "none"):
                    _add(f"bce_with_logits/{dt}/w-{weight}-pw-{pw}-{red}-1001", _bce_logits,
                         dt=dt, shape=(7, 143), weight=weight, pos_weight=pw, reduction=red)
        _add(f"bce_with_logits/{dt}/small-3d", _bce_logits, dt=dt, shape=(3, 4, 5),
             weight="row", return_grad=True)
        for shape in ((5, 1, 30), (1, 1)):
            _add(f"bce_with_logits/{dt}/shape{shape}-none-grad", _bce_logits, dt=dt, shape=shape,
                 weight="row", reduction="none", return_grad=True)
    _add("bce_with_logits/i64/mean", _bce_logits, dt="i64", reduction="mean")
    for red in ("mean", "sum", "none"):
        _add(f"bce_with_logits/f32/empty-{red}", _bce_logits, dt="f32", shape=(0, 7),
             reduction=red, return_grad=True)
        _add(f"binary_cross_entropy/f32/empty-{red}", _bce_probs, dt="f32", shape=(0, 7),
             reduction=red)
    for dt in ("f32", "f64", "f16", "bf16"):
        _add(f"bce_with_logits/{dt}/misaligned-grad", _bce_logits, dt=dt, view="misaligned",
             weight="row", pos_weight=True, return_grad=True)


# ---- divergences, entropy --------------------------------------------------------------


def _kl_div(rng, *, dt, reduction="mean", log_target=False, shape=(50, 300), special=True):
    q = rng.standard_normal(shape)
    lq = q - np.log(np.exp(q).sum(axis=-1, keepdims=True))
    p = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    if p.size and special:
        lq.reshape(-1)[:3] = [-np.inf, -np.inf, np.nan]
        p.reshape(-1)[:4] = [0.0, 0.3, 0.0, 0.0]
    with np.errstate(divide="ignore"):
        target = _cast(np.log(p) if log_target else p, dt if dt != "i64" else "f64")
    return (xent.kl_div(_cast(lq, dt), target, reduction=reduction, log_target=log_target),)


def _kl_div_scalar(rng, *, reduction):
    return (xent.kl_div(np.float64(-1.5), np.float64(0.25), reduction=reduction),)


def _kl_divergence(rng, *, layout, dt, temperature=1.0, reduction="mean", return_grad=False,
                   grad_out=None, qdt=None, empty=False, misaligned=False, special=True):
    lead, C, axis = _layout(layout)
    p = _logits(rng, lead, C, axis, dt, special=False)
    q = _logits(rng, lead, C, axis, qdt or dt, special)
    if empty:
        p, q = p[:0], q[:0]
    if misaligned:
        p, q = _misaligned(p), _misaligned(q)
    kwargs = {"temperature": temperature, "reduction": reduction, "return_grad": return_grad}
    if grad_out is not None:
        kwargs["return_grad"] = True
        kwargs["grad_out"] = q if grad_out == "inplace" else np.full(q.shape, np.nan,
                                                                     _dtype(grad_out))
    res = xent.kl_divergence(p, q, axis=axis, **kwargs)
    return res if isinstance(res, tuple) else (res,)


def _entropy(rng, *, layout, dt, base=None, view=None):
    lead, C, axis = _layout(layout)
    x = _logits(rng, lead, C, axis, dt)
    if view == "strided":
        x = _strided(x, axis)
    elif view == "misaligned":
        x = _misaligned(x)
    elif view == "empty":
        x = x[:0]
    return (xent.entropy(x, axis=axis, base=base),)


def _divergence_cases():
    for dt in ("f32", "f64", "f16", "bf16", "i64"):
        for red in ("mean", "sum", "none", "batchmean"):
            _add(f"kl_div/{dt}/{red}", _kl_div, dt=dt, reduction=red)
        _add(f"kl_div/{dt}/log_target-sum", _kl_div, dt=dt, reduction="sum", log_target=True)
    _add("kl_div/f32/log_target-none-3d", _kl_div, dt="f32", reduction="none", log_target=True,
         shape=(4, 6, 30))
    for red in ("mean", "batchmean", "none"):
        _add(f"kl_div/f32/empty-{red}", _kl_div, dt="f32", reduction=red, shape=(0, 6))
        _add(f"kl_div/f64/0-d-{red}", _kl_div_scalar, reduction=red)
    for layout in ("batches-C100", "blocks-C10"):
        for red in ("mean", "sum", "none"):
            _add(f"kl_divergence/{layout}/f32/empty-{red}", _kl_divergence, layout=layout,
                 dt="f32", reduction=red, return_grad=True, empty=True)
        _add(f"entropy/{layout}/f32/empty", _entropy, layout=layout, dt="f32", view="empty")
        for dt in ("f32", "f16"):
            _add(f"kl_divergence/{layout}/{dt}/misaligned-grad", _kl_divergence, layout=layout,
                 dt=dt, return_grad=True, misaligned=True)
            _add(f"entropy/{layout}/{dt}/misaligned", _entropy, layout=layout, dt=dt,
                 view="misaligned")
    for layout in ("tiles-C7", "batches-C100", "rows-C1500", "rows-C5000", "blocks-C10"):
        for dt in ("f32", "f64", "f16", "bf16"):
            for red in ("mean", "none"):
                _add(f"kl_divergence/{layout}/{dt}/{red}", _kl_divergence, layout=layout, dt=dt,
                     reduction=red)
            _add(f"kl_divergence/{layout}/{dt}/T2.5-sum-grad", _kl_divergence, layout=layout,
                 dt=dt, temperature=2.5, reduction="sum", return_grad=True)
            _add(f"entropy/{layout}/{dt}", _entropy, layout=layout, dt=dt)
        _add(f"kl_divergence/{layout}/f32/grad-none", _kl_divergence, layout=layout, dt="f32",
             reduction="none", return_grad=True)
        for go in ("inplace", "f64"):
            _add(f"kl_divergence/{layout}/f32/grad_out-{go}", _kl_divergence, layout=layout,
                 dt="f32", grad_out=go)
        _add(f"kl_divergence/{layout}/f32-q-f16/grad", _kl_divergence, layout=layout, dt="f32",
             qdt="f16", return_grad=True)
        _add(f"entropy/{layout}/f32/base2", _entropy, layout=layout, dt="f32", base=2)
        _add(f"entropy/{layout}/f64/strided", _entropy, layout=layout, dt="f64", view="strided")


# ---- evaluate, Evaluator -----------------------------------------------------------------


def _evaluation(e):
    return (np.float64(e.loss), np.float64(e.perplexity),
            np.array(sorted(e.accuracy.items()), dtype=np.float64), np.int64(e.count))


def _eval_inputs(rng, layout, dt, ties, special=True):
    lead, C, axis = _layout(layout)
    n = int(np.prod(lead))
    z = rng.standard_normal((n, C)) * 3
    if ties:  # integer logits: many ties, ranked by class index
        z = np.round(z / 2)
    if special:
        _put_specials(z, dt)
    x = _with_class_axis(_cast(z, dt), lead, axis)
    t = _indices(rng, x.shape[:axis % x.ndim] + x.shape[axis % x.ndim + 1:], C)
    return x, t, axis


def _evaluate(rng, *, layout, dt, k=(1, 5), ties=False, ignore_index=-100, special=True):
    x, t, axis = _eval_inputs(rng, layout, dt, ties, special)
    if ignore_index != -100:
        t = np.where(t == -100, ignore_index, t)
    return _evaluation(xent.evaluate(x, t, axis=axis, k=k, ignore_index=ignore_index))


def _evaluate_extreme(rng, *, how):
    x = rng.standard_normal((40, 6))
    t = _indices(rng, (40,), 6, frac=0)
    if how == "all-ignored":
        t[:] = -100
    else:  # every target 1000 below the max: loss ~1000, exp overflows
        x[np.arange(40), t] -= 1000.0
    return _evaluation(xent.evaluate(x, t))


def _evaluator(rng, *, layout, dt, special=True):
    """Batches through update() on two evaluators, merged."""
    x, t, axis = _eval_inputs(rng, layout, dt, ties=True, special=special)
    first, second = xent.Evaluator(axis=axis, k=(1, 2, 3)), xent.Evaluator(axis=axis, k=(1, 2, 3))
    n = x.shape[0]
    for lo, hi in ((0, n // 3), (n // 3, n // 2)):
        first.update(x[lo:hi], t[lo:hi])
    second.update(x[n // 2:], t[n // 2:])
    return _evaluation(first.merge(second).result())


def _eval_cases():
    for layout in ("tiles-C7", "batches-C100", "rows-C1500", "rows-C5000", "blocks-C10"):
        for dt in ("f32", "f64", "f16", "bf16"):
            _add(f"evaluate/{layout}/{dt}", _evaluate, layout=layout, dt=dt)
            _add(f"evaluate/{layout}/{dt}/ties-k1-2-10", _evaluate, layout=layout, dt=dt,
                 k=(1, 2, 10), ties=True)
            _add(f"Evaluator/{layout}/{dt}/batches-merged", _evaluator, layout=layout, dt=dt)
        _add(f"evaluate/{layout}/f32/k3-ignore0", _evaluate, layout=layout, dt="f32", k=3,
             ignore_index=0)
    _add("evaluate/all-ignored/f32", _evaluate_extreme, how="all-ignored")
    _add("evaluate/loss-beyond-exp-range/f64", _evaluate_extreme, how="huge-loss")


# ---- the optional front ends: xent.torch, xent.dask --------------------------------------


def _torch_ce(rng, *, dt, weight=False, label_smoothing=0.0):
    torch = pytest.importorskip("torch")
    import xent.torch as xt

    x = _rows(rng, 300, 7, dt)
    t = _indices(rng, (300,), 7)
    xt_ = torch.from_numpy(x).requires_grad_(True)
    w = torch.from_numpy(rng.uniform(0.5, 2, 7).astype(x.dtype)) if weight else None
    loss = xt.cross_entropy(xt_, torch.from_numpy(t), weight=w, label_smoothing=label_smoothing)
    loss.backward()
    return loss.detach().numpy(), xt_.grad.numpy()


def _torch_bce(rng, *, dt):
    torch = pytest.importorskip("torch")
    import xent.torch as xt

    x = torch.from_numpy(_cast(rng.standard_normal((30, 40)) * 4, dt)).requires_grad_(True)
    y = torch.from_numpy(_cast(rng.random((30, 40)), dt))
    pw = torch.from_numpy(_cast(rng.uniform(0.5, 2, 40), dt))
    loss = xt.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="sum")
    loss.backward()
    return loss.detach().numpy(), x.grad.numpy()


def _torch_kl(rng, *, dt):
    torch = pytest.importorskip("torch")
    import xent.torch as xt

    p = torch.from_numpy(_rows(rng, 50, 100, dt, special=False))
    q = torch.from_numpy(_rows(rng, 50, 100, dt)).requires_grad_(True)
    loss = xt.kl_divergence(p, q, temperature=2.0)
    loss.backward()
    return loss.detach().numpy(), q.grad.numpy()


def _dask_call(rng, *, fn):
    da = pytest.importorskip("dask.array")
    import dask

    import xent.dask as xd

    x = _rows(rng, 300, 20, "f32")
    t = _indices(rng, (300,), 20)
    dx, dt_ = da.from_array(x, chunks=(70, 20)), da.from_array(t, chunks=(70,))
    with dask.config.set(scheduler="synchronous"):
        if fn == "cross_entropy":
            return tuple(np.asarray(xd.cross_entropy(dx, dt_, reduction=r, label_smoothing=0.1,
                                                     z_loss=1e-3).compute())
                         for r in ("mean", "sum", "none"))
        if fn == "evaluate":
            return _evaluation(xd.evaluate(dx, dt_, k=(1, 3)).compute())
        return (np.asarray(getattr(xd, fn)(dx, -1).compute()),)


def _front_end_cases():
    for dt in ("f32", "f64"):
        _add(f"torch.cross_entropy/{dt}", _torch_ce, dt=dt)
        _add(f"torch.cross_entropy/{dt}/weight-smoothing", _torch_ce, dt=dt, weight=True,
             label_smoothing=0.1)
        _add(f"torch.binary_cross_entropy_with_logits/{dt}", _torch_bce, dt=dt)
        _add(f"torch.kl_divergence/{dt}", _torch_kl, dt=dt)
    for fn in ("cross_entropy", "evaluate", "log_softmax", "logsumexp"):
        _add(f"dask.{fn}/f32", _dask_call, fn=fn)


def _finite_sum_cases():
    """Special values make most batch sums inf or NaN, which hides the order of
    the sum: these cases reduce finite losses only."""
    for dt in ("f32", "f64"):
        for red in ("mean", "sum"):
            for layout in ("tiles-C7", "batches-C100", "blocks-C10"):
                _add(f"focal_loss/{layout}/{dt}/finite-{red}", _focal, layout=layout, dt=dt,
                     reduction=red, special=False)
                _add(f"kl_divergence/{layout}/{dt}/finite-{red}-grad", _kl_divergence,
                     layout=layout, dt=dt, reduction=red, return_grad=True, special=False)
            _add(f"bce_with_logits/{dt}/finite-{red}-grad", _bce_logits, dt=dt, reduction=red,
                 weight="row", pos_weight=True, return_grad=True, special=False)
            _add(f"kl_div/{dt}/finite-{red}", _kl_div, dt=dt, reduction=red, special=False)
        for layout in ("tiles-C7", "batches-C100", "rows-C5000", "blocks-C10"):
            _add(f"evaluate/{layout}/{dt}/finite", _evaluate, layout=layout, dt=dt,
                 special=False)
            _add(f"Evaluator/{layout}/{dt}/finite-batches-merged", _evaluator, layout=layout,
                 dt=dt, special=False)
    _add("kl_div/f32/finite-batchmean", _kl_div, dt="f32", reduction="batchmean", special=False)


_norm_cases()
_norm_edge_cases()
_finite_sum_cases()
_ce_cases()
_nll_focal_cases()
_binary_cases()
_divergence_cases()
_eval_cases()
_front_end_cases()


# ---------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------


def load_golden():
    with open(GOLDEN_FILE, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def recorded():
    """The recorded hashes of the level this process runs at (skips with the
    reason where they do not apply)."""
    if not GOLDEN_FILE.exists():
        pytest.fail(f"{GOLDEN_FILE} is missing: run tests/golden/record_golden.py")
    golden = load_golden()
    here = platform_fingerprint()
    differ = {k: (golden["fingerprint"].get(k), v) for k, v in here.items()
              if golden["fingerprint"].get(k) != v}
    if differ:
        pytest.skip("golden outputs were recorded on another platform, whose libm, NumPy and "
                    "compiler may round differently: "
                    + "; ".join(f"{k} recorded {a!r}, here {b!r}" for k, (a, b) in differ.items()))
    level = active_simd_level()
    if level is None:
        pytest.fail("cannot tell which SIMD level xent runs at (show_config() changed?): "
                    "update active_simd_level()")
    other = build_with_other_bits(level)
    if other:
        pytest.skip(f"golden outputs do not apply: {other}")
    if level not in golden["levels"]:
        pytest.skip(f"no golden outputs recorded at SIMD level {level!r}")
    return golden["levels"][level]


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_bits_are_the_recorded_ones(name, recorded):
    expected = recorded.get(name)
    assert expected is not None, (
        f"case {name!r} has no recorded hash: record it (tests/golden/record_golden.py) "
        "from code that predates the change under test")
    for n_threads in THREAD_COUNTS:
        got = run_case(name, n_threads)
        assert got == expected, (
            f"{name} with {n_threads} thread(s): the outputs' bits changed "
            f"(sha256 {got[:16]}..., recorded {expected[:16]}...).  Unless this build "
            "used other compiler flags than a release build (-O0, --coverage), the change "
            "under test moved results: python tests/golden/record_golden.py --check "
            "lists every case that differs, at every level")


def test_every_recorded_case_still_exists(recorded):
    """A case removed from this file is a check lost: the recording names it."""
    assert sorted(set(recorded) - set(CASES)) == []


def test_active_level_is_found():
    assert active_simd_level() in LEVELS
