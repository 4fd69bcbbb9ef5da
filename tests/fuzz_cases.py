"""The seeded case generator of the fuzz test (tests/test_fuzz.py).

Case ``k`` of seed ``s`` is drawn from ``numpy.random.default_rng([s, k])`` alone, so any
case can be rebuilt and rerun by itself.  A case is one call of a public function of
xent (or a short sequence: Evaluator updates and merges), legal or illegal:

* inputs: random shapes (empty axes, one class, SIMD-boundary class counts, sometimes
  enough elements for several threads), every dtype the SPEC reads (float16, bfloat16,
  float32, float64, non-native byte order, long double, integers, bool, lists), every
  layout (C, Fortran, negative strides, steps, zero strides, unaligned, read-only,
  memory-mapped files), values with ``±inf``, NaN, huge, subnormal, ties;
* targets: every integer dtype, ``ignore_index`` anywhere, probabilities with
  specials; options; ``out=``/``grad_out=`` buffers of every float dtype and layout,
  or the input itself (in place);
* hidden states (linear_cross_entropy, evaluate/Evaluator with ``linear_weight=``): a
  classifier weight and bias in any layout and dtype, ``softcap``, every ``return_grad``
  form, next-token views ``hidden[:, :-1]``; the float64 references compute the logits
  term by term (IEEE ±inf/NaN) and map the cross-entropy's gradient through the cap
  and the three products (fuzz_refs.linear_logits, linear_grads);
* illegal calls: one mutation of a legal call (bad shapes, dtypes, class indices out
  of range, bad scalars, bad ``out=``), with the exception type the SPEC gives and the
  words the message must hold (the argument's name, the offending value or shapes).

A legal case carries its float64 reference (fuzz_refs.py), computed before the call
from copies of the inputs, and a ``check`` that judges the result; ``facts`` records
what the case contains, for the KNOWN table of test_fuzz.py.
"""

import math
import os
import re
import tempfile

import numpy as np

import fuzz_refs as R
from references import BFLOAT16, as_f64

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
LONGDOUBLE = np.dtype(np.longdouble)
INDEX_DTYPES = [np.dtype(d) for d in ("i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8")] + [
    np.dtype(">i4"), np.dtype(">u8"), np.dtype(np.intc), np.dtype(np.longlong)]
# class counts around SIMD widths and tile sizes
SIMD_C = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 257,
          1000, 1025, 4097]
REDUCTIONS = ("none", "mean", "sum")
_TMP = None


def tmpdir():
    global _TMP
    if _TMP is None:
        _TMP = tempfile.TemporaryDirectory(prefix="xent-fuzz-")
    return _TMP.name


def finfo(dt):
    dt = np.dtype(dt)
    if BFLOAT16 is not None and dt == BFLOAT16:
        import ml_dtypes

        return ml_dtypes.finfo(dt)
    return np.finfo(dt)


def comp_dtype(dt):
    """The dtype xent computes in for input dtype ``dt`` (SPEC: dtype rules)."""
    dt = np.dtype(dt)
    if dt.kind == "f" and dt.itemsize <= 4:
        return F32
    if BFLOAT16 is not None and dt == BFLOAT16:
        return F32
    return F64


def is_float(dt):
    dt = np.dtype(dt)
    return dt.kind == "f" or (BFLOAT16 is not None and dt == BFLOAT16)


# ---------------------------------------------------------------------------
# the case
# ---------------------------------------------------------------------------


class Case:
    """One fuzz case: what to call, what must happen, and how to judge it."""

    def __init__(self, k, seed, family, rng):
        self.k, self.seed, self.family, self.rng = k, seed, family, rng
        self.func = None  # public name
        self.args = []
        self.kwargs = {}
        self.call = None  # () -> result; default: xent.<func>(*args, **kwargs)
        self.error = None  # (exception types, [regex, ...]) for an illegal call
        self.mutation = None  # name of the mutation that made it illegal
        self.check = None  # (result) -> None, raises AssertionError
        self.outputs = []  # arrays the call may write (by identity)
        self.facts = {}  # for the KNOWN table
        self.determinism = False  # also compare 1 and 2 threads bitwise

    # inputs the "nothing modified" checks snapshot
    def arrays(self):
        found = []
        for i, a in enumerate(self.args):
            if isinstance(a, np.ndarray):
                found.append((f"arg{i}", a))
        for name, a in self.kwargs.items():
            if isinstance(a, np.ndarray):
                found.append((name, a))
        return found

    def expect_error(self, types, *patterns, mutation):
        self.error = (types, list(patterns))
        self.mutation = mutation

    def repro(self):
        return (f"XENT_FUZZ_SEED={self.seed} XENT_FUZZ_CASE={self.k} "
                "python -m pytest tests/test_fuzz.py -q -p no:cacheprovider")

    def describe(self):
        lines = [f"case {self.k} (seed {self.seed}, family {self.family}): xent.{self.func}"
                 + (f"  [illegal: {self.mutation}]" if self.mutation else "")]
        for i, a in enumerate(self.args):
            lines.append(f"  arg{i} = {describe_value(a)}")
        for name, a in self.kwargs.items():
            lines.append(f"  {name} = {describe_value(a)}")
        for key in ("batches", "merge", "pickle"):
            if key in self.facts:
                lines.append(f"  {key}: {self.facts[key]}")
        return "\n".join(lines)


def describe_value(a):
    if isinstance(a, np.ndarray):
        kind = type(a).__name__
        flags = []
        if not a.flags.writeable:
            flags.append("read-only")
        if not a.flags.aligned:
            flags.append("unaligned")
        if a.flags.c_contiguous:
            flags.append("C")
        elif a.flags.f_contiguous:
            flags.append("F")
        dt = a.dtype.name + ("" if a.dtype.isnative else " (non-native byte order)")
        s = (f"{kind}(shape={a.shape}, dtype={dt}, "
             f"strides={a.strides}, {' '.join(flags)})")
        if a.size <= 24:
            with np.errstate(all="ignore"):
                vals = a.astype(np.float64) if a.dtype.name == "bfloat16" else a
                s += " " + np.array2string(np.asarray(vals), separator=", ", threshold=30,
                                           max_line_width=10**6).replace("\n", "")
        return s
    r = repr(a)
    return r if len(r) < 300 else r[:300] + "..."


# ---------------------------------------------------------------------------
# random pieces
# ---------------------------------------------------------------------------


def pick(rng, items, p=None):
    if p is not None:
        p = np.asarray(p, float)
        p = p / p.sum()
    return items[int(rng.choice(len(items), p=p))]


def chance(rng, p):
    return bool(rng.random() < p)


def one_dim(rng):
    r = rng.random()
    if r < 0.05:
        return 0
    if r < 0.15:
        return 1
    if r < 0.80:
        return int(rng.integers(2, 8))
    if r < 0.96:
        return int(rng.integers(8, 70))
    return int(rng.integers(70, 400))


def rand_shape(rng, ndim, cap=6000):
    shape = [one_dim(rng) for _ in range(ndim)]
    while math.prod(shape) > cap:
        j = int(np.argmax(shape))
        shape[j] = max(1, shape[j] // 3)
    return tuple(shape)


def class_shape(rng, ndim, axis, big=False):
    """A shape whose class axis is sometimes a SIMD-boundary count."""
    cap = 48000 if big else 6000
    shape = list(rand_shape(rng, ndim, cap))
    if ndim and chance(rng, 0.35):
        shape[axis] = pick(rng, SIMD_C)
    if big and ndim:
        C = max(shape[axis], pick(rng, [17, 64, 129, 700]))
        shape[axis] = C
        rows = max(1, 40000 // C)
        others = [i for i in range(ndim) if i != axis % ndim]
        if others:
            shape[others[0]] = rows
            for i in others[1:]:
                shape[i] = 1
    while math.prod(shape) > cap and ndim:
        j = int(np.argmax(shape))
        shape[j] = max(1, shape[j] // 2)
    return tuple(shape)


def rows_layout(rng, ndims, p, p_axis=0.4):
    """(shape, axis, ax, row_shape, big) of a row-wise function's input: ``ndim`` from
    ``ndims`` with weights ``p``, a class axis (-1 or random), sometimes many rows."""
    ndim = pick(rng, ndims, p)
    axis = int(rng.integers(-ndim, ndim)) if chance(rng, p_axis) else -1
    big = chance(rng, 0.03)
    shape = class_shape(rng, ndim, axis, big)
    ax = axis % ndim
    return shape, axis, ax, shape[:ax] + shape[ax + 1:], big


def logits_dtype(rng, allow_int=True):
    items = [F32, F64, F16, "bf16", np.dtype(">f4"), np.dtype(">f8"), LONGDOUBLE,
             np.dtype("i4"), np.dtype("i8"), np.dtype("u1"), np.dtype(bool)]
    p = [30, 30, 12, 12, 2, 2, 2, 3, 2, 1, 1]
    if not allow_int:
        items, p = items[:7], p[:7]
    dt = pick(rng, items, p)
    if isinstance(dt, str):
        return BFLOAT16 if BFLOAT16 is not None else F32
    return dt


def huge_of(dt):
    """A huge value whose differences and pairwise sums do not overflow the computation."""
    dt = np.dtype(dt)
    if dt.kind != "f" and not (BFLOAT16 is not None and dt == BFLOAT16):
        return 1e6
    if dt == F16:
        return 6.0e4
    return float(finfo(comp_dtype(dt)).max) / 1e4 if comp_dtype(dt) == F32 else 1e304


def tiny_of(dt):
    dt = np.dtype(dt)
    if dt == F16:
        return 3e-6
    if BFLOAT16 is not None and dt == BFLOAT16:
        return 1e-39
    if dt.itemsize <= 4:
        return 1e-40
    return 1e-310


SPECIALS = ("inf", "-inf", "nan", "huge", "-huge", "tiny", "-tiny", "zero", "negzero")


def float_values(rng, shape, dt, *, specials=None, p_special=None, scale=None):
    """float64 values for an array of dtype ``dt`` (specials in dt's range)."""
    if scale is None:
        scale = pick(rng, [0.1, 1.0, 3.0, 10.0, 100.0], [1, 3, 4, 2, 1])
    if chance(rng, 0.15):
        v = np.array(rng.integers(-3, 4, size=shape), dtype=np.float64)  # ties
    else:
        v = np.array(rng.standard_normal(shape) * scale, dtype=np.float64)
    if specials is None:
        specials = [s for s in SPECIALS if chance(rng, 0.4)] if chance(rng, 0.45) else []
    n = v.size
    if specials and n:
        p = p_special if p_special is not None else pick(rng, [0.02, 0.1, 0.3, 0.7])
        mask = rng.random(shape) < p
        kinds = rng.choice(len(specials), size=int(mask.sum()))
        huge, tiny = huge_of(dt), tiny_of(dt)
        table = {"inf": np.inf, "-inf": -np.inf, "nan": np.nan, "huge": huge, "-huge": -huge,
                 "tiny": tiny, "-tiny": -tiny, "zero": 0.0, "negzero": -0.0}
        vals = np.array([table[specials[j]] for j in kinds], dtype=np.float64)
        if "huge" in specials or "-huge" in specials:
            vals = vals * np.where(np.abs(vals) == huge, rng.uniform(0.5, 1.0, vals.size), 1.0)
        v[mask] = vals
    return v


def cast(v, dt):
    dt = np.dtype(dt)
    with np.errstate(over="ignore", invalid="ignore"):
        if dt.kind in "iu":
            info = np.iinfo(dt)
            v = np.clip(np.nan_to_num(np.asarray(v, float), nan=0.0), info.min, info.max)
            return np.round(v).astype(dt)
        if dt.kind == "b":
            return np.asarray(v) > 0
        return np.asarray(v, dtype=np.float64).astype(dt)


def logits_values(rng, shape, dt, **kw):
    dt = np.dtype(dt)
    if dt.kind == "b":
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        info = np.iinfo(dt)
        if chance(rng, 0.1):
            return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
        lo, hi = max(info.min, -50), min(info.max, 50)
        return rng.integers(lo, hi, size=shape, endpoint=True).astype(dt)
    return cast(float_values(rng, shape, dt, **kw), dt)


# ---------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------

LAYOUTS = ["C", "F", "neg", "step", "unaligned", "readonly", "memmap"]
LAYOUT_P = [40, 10, 12, 12, 10, 8, 4]


def _memmap(v, mode, order):
    if v.size == 0:
        return None
    fd, path = tempfile.mkstemp(dir=tmpdir(), suffix=".dat")
    os.close(fd)
    try:
        m = np.memmap(path, dtype=v.dtype, mode="w+", shape=v.shape, order=order)
        m[...] = v
        m.flush()
        del m
        return np.memmap(path, dtype=v.dtype, mode=mode, shape=v.shape, order=order)
    finally:
        os.unlink(path)  # the mapping stays valid


def _unaligned(rng, v):
    if v.dtype.itemsize == 1 or v.size == 0:
        return None
    off = int(rng.integers(1, v.dtype.itemsize))
    buf = bytearray(v.nbytes + v.dtype.itemsize)
    a = np.frombuffer(buf, dtype=v.dtype, count=v.size, offset=off).reshape(v.shape)
    if a.ndim and chance(rng, 0.3):
        a = a[::-1]  # negative strides on an unaligned buffer
    a[...] = v
    return a


def place(rng, v, layout=None, writable=None):
    """``v`` (values and dtype fixed) in a random memory layout; (array, layout)."""
    v = np.asarray(v)
    if layout is None:
        layout = pick(rng, LAYOUTS, LAYOUT_P)
    a = None
    if layout == "F":
        a = np.asfortranarray(v) if v.ndim else np.array(v)
    elif layout == "neg" and v.ndim:
        axes = [i for i in range(v.ndim) if chance(rng, 0.6)] or [0]
        base = np.empty_like(v)
        sl = tuple(slice(None, None, -1) if i in axes else slice(None) for i in range(v.ndim))
        a = base[sl]
        a[...] = v
    elif layout == "step" and v.ndim:
        j = int(rng.integers(v.ndim))
        step = int(rng.integers(2, 4))
        big = list(v.shape)
        big[j] = big[j] * step
        base = np.zeros(big, dtype=v.dtype)
        sl = tuple(slice(None, None, step) if i == j else slice(None) for i in range(v.ndim))
        a = base[sl]
        a[...] = v
    elif layout == "unaligned":
        a = _unaligned(rng, v)
    elif layout == "readonly":
        a = np.array(v)
        a.flags.writeable = False
    elif layout == "memmap":
        mode = "r" if writable is False or (writable is None and chance(rng, 0.5)) else "r+"
        a = _memmap(v, mode, "F" if chance(rng, 0.3) else "C")
    if a is None:
        layout = "C"
        a = np.array(v, order="C")
    if writable is True and not a.flags.writeable:
        a = np.array(a)
        layout += "+copy"
    return a, layout


def make_input(rng, shape, gen, writable=None):
    """An input array of ``shape`` from ``gen(shape)`` (values), in a random layout,
    sometimes a zero-stride broadcast along one axis."""
    shape = tuple(shape)
    if writable is not True and len(shape) and chance(rng, 0.06):
        js = [i for i, s in enumerate(shape) if s > 1]
        if js:
            j = pick(rng, js)
            small = list(shape)
            small[j] = 1
            v = gen(tuple(small))
            a, _ = place(rng, v)
            return np.broadcast_to(a, shape)
    a, _ = place(rng, gen(shape), writable=writable)
    return a


def maybe_list(rng, a, p=0.03):
    """Sometimes the same values as a nested list (anything np.asarray accepts)."""
    if (isinstance(a, np.ndarray) and a.dtype in (F64, np.dtype("i8")) and 0 < a.size < 50
            and chance(rng, p)):
        return a.tolist()
    return a


OUT_DTYPES = [F32, F64, F16, "bf16", LONGDOUBLE]


def out_dtype(rng, comp):
    if chance(rng, 0.6):
        return np.dtype(comp)
    dt = pick(rng, OUT_DTYPES)
    if isinstance(dt, str):
        return BFLOAT16 if BFLOAT16 is not None else F32
    return np.dtype(dt)


def make_out(rng, shape, comp, dtype=None):
    """A writable, non-overlapping output buffer of ``shape`` full of garbage."""
    dt = out_dtype(rng, comp) if dtype is None else np.dtype(dtype)
    fill = cast(rng.uniform(-9, 9, size=shape).round(1), dt)
    layout = pick(rng, ["C", "F", "neg", "step", "unaligned", "memmap"], [45, 10, 15, 15, 10, 5])
    a, _ = place(rng, fill, layout, writable=True)
    return a


def narrower(out, comp):
    """True when ``out`` cannot hold every value of the computation dtype."""
    return isinstance(out, np.ndarray) and is_float(out.dtype) and (
        np.dtype(out.dtype).itemsize < np.dtype(comp).itemsize
        or (BFLOAT16 is not None and out.dtype == BFLOAT16))


BAD_OUTS = ["shape", "intdtype", "complex", "readonly", "overlap", "list"]


def bad_out(rng, shape, comp, name):
    """(an illegal out buffer, expected exception types, patterns, mutation name)."""
    kinds = list(BAD_OUTS)
    if not any(s > 1 for s in shape) or 0 in shape:  # no two elements to overlap
        kinds.remove("overlap")
    kind = pick(rng, kinds)
    pat = rf"\b{name}\b"
    if kind == "shape":
        s = list(shape)
        r = rng.random()
        if r < 0.4 and s:
            j = int(rng.integers(len(s)))
            s[j] += int(rng.integers(1, 3))
        elif r < 0.7:
            s.append(int(rng.integers(1, 3)))
        elif s:
            s.pop(int(rng.integers(len(s))))
        else:
            s = [1]
        out = make_out(rng, tuple(s), comp)
        return out, (ValueError,), [pat, re.escape(str(tuple(s))), re.escape(str(tuple(shape)))], \
            f"{name} wrong shape {tuple(s)}"
    if kind in ("intdtype", "complex"):
        out = np.zeros(shape, dtype=pick(rng, ["i4", "i8", "u1"]) if kind == "intdtype" else np.complex128)
        return out, (TypeError,), [pat, re.escape(str(out.dtype))], f"{name} of dtype {out.dtype}"
    if kind == "readonly":
        out = make_out(rng, shape, comp)
        out = np.array(out)
        out.flags.writeable = False
        return out, (ValueError,), [pat], f"{name} read-only"
    if kind == "overlap":
        dt = np.dtype(comp)
        js = [i for i, s in enumerate(shape) if s > 1]
        j = pick(rng, js)
        small = list(shape)
        small[j] = 1
        base = np.zeros(small, dtype=dt)
        strides = list(base.strides)
        strides[j] = 0
        out = np.lib.stride_tricks.as_strided(base, shape, strides, writeable=True)
        return out, (ValueError,), [pat], f"{name} self-overlapping (zero stride)"
    return np.zeros(shape).tolist(), (TypeError,), [pat], f"{name} a list"


def bad_array_dtype(rng, shape):
    """Values of an unsupported dtype (complex, object, string)."""
    kind = pick(rng, ["complex", "object", "str"])
    if kind == "complex":
        return np.zeros(shape, dtype=pick(rng, [np.complex64, np.complex128]))
    if kind == "object":
        a = np.empty(shape, dtype=object)
        a[...] = 1.5
        return a
    return np.full(shape, "a")


# ---------------------------------------------------------------------------
# judging results
# ---------------------------------------------------------------------------


def to_f64(a):
    with np.errstate(invalid="ignore"):  # (a signalling NaN in a wrong result)
        return as_f64(np.asarray(a))


def judge(actual, ref, out_dt, comp, what):
    """Compare ``actual`` (array or scalar of dtype ``out_dt``) with a :class:`Ref`."""
    a = to_f64(actual)
    e = ref.value
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    free = ref.free if ref.free is not None else np.zeros(e.shape, bool)
    fo = finfo(out_dt) if is_float(out_dt) else np.finfo(F64)
    eps_out = float(fo.eps) if np.dtype(out_dt).itemsize < np.dtype(comp).itemsize or (
        BFLOAT16 is not None and np.dtype(out_dt) == BFLOAT16) else 0.0
    maxo = float(fo.max)
    with np.errstate(invalid="ignore", over="ignore"):
        nan_e, nan_a = np.isnan(e), np.isnan(a)
        bad = (nan_e != nan_a) & ~free
        if bad.any():
            i = tuple(np.argwhere(bad)[0])
            raise AssertionError(f"{what}: NaN placement differs at {i}: got {a[i]!r}, "
                                 f"expected {e[i]!r} ({int(bad.sum())} entries)")
        tiny = max(float(fo.smallest_normal), float(finfo(comp).smallest_normal))
        tol = ref.tol + (4 * R.eps_of(comp) + eps_out) * np.abs(np.where(np.isfinite(e), e, 0)) + tiny
        both = ~nan_e & ~nan_a & ~free
        # infinities: exact, except where the result dtype overflows near its maximum
        inf_e = np.isinf(e)
        near_max = ~inf_e & (np.abs(e) + tol >= maxo * (1 - 2 * float(fo.eps)))
        inf_a = np.isinf(a)
        inf_bad = both & (inf_e | inf_a) & ~(
            (a == e) | (near_max & (np.sign(a) == np.sign(e)) & (inf_a | (np.abs(a) >= maxo * (1 - 4 * float(fo.eps))))))
        if inf_bad.any():
            i = tuple(np.argwhere(inf_bad)[0])
            raise AssertionError(f"{what}: infinite values differ at {i}: got {a[i]!r}, "
                                 f"expected {e[i]!r} ({int(inf_bad.sum())} entries)")
        fin = both & ~inf_e & ~inf_a
        err = np.abs(a - e)
        over = fin & ~(err <= tol)
        if over.any():
            i = tuple(np.argwhere(over)[0])
            worst = tuple(np.argwhere(over)[int(np.argmax((err - tol)[over]))])
            raise AssertionError(
                f"{what}: {int(over.sum())} of {int(fin.sum())} values off: at {i} got {a[i]!r}, "
                f"expected {e[i]!r} (tol {tol[i]:.3g}); worst at {worst}: got {a[worst]!r}, "
                f"expected {e[worst]!r} (tol {tol[worst]:.3g})")


def check_array_result(res, ref, shape, dt, comp, what, out=None):
    if out is not None:
        assert res is out, f"{what}: the result is not the out= array"
    else:
        assert isinstance(res, np.ndarray), f"{what}: {type(res).__name__}, expected ndarray"
        assert res.dtype == dt, f"{what}: dtype {res.dtype}, expected {dt}"
    assert res.shape == tuple(shape), f"{what}: shape {res.shape}, expected {tuple(shape)}"
    judge(res, ref, res.dtype, comp, what)


def check_scalar_result(res, ref, comp, what):
    assert type(res) is np.dtype(comp).type, \
        f"{what}: {type(res).__name__}, expected {np.dtype(comp).type.__name__}"
    judge(res, ref, comp, comp, what)


def check_0d_result(res, ref, comp, what):
    """A result with no dimensions: a NumPy scalar (the SPEC's planned rule) or, for now,
    a 0-d array, of the computation dtype."""
    if isinstance(res, np.ndarray):
        assert res.shape == () and res.dtype == comp, f"{what}: {res.shape} {res.dtype}"
        judge(res, ref, comp, comp, what)
    else:
        check_scalar_result(res, ref, comp, what)


def check_loss_result(res, ref, reduction, comp, row_shape, what="loss"):
    if reduction == "none" and len(row_shape):
        check_array_result(res, ref, row_shape, comp, comp, what)
    elif reduction == "none":  # one row
        check_0d_result(res, ref, comp, what)
    else:  # a reduction: a NumPy scalar (SPEC)
        check_scalar_result(res, ref, comp, what)


def loss_grad_check(loss_ref, grad_ref, reduction, comp, row_shape, shape, return_grad, gout):
    """The check of a loss that may also return its gradient: (loss, grad) or loss."""
    def check(res):
        if return_grad:
            assert isinstance(res, tuple) and len(res) == 2, f"expected (loss, grad), got {type(res)}"
            loss, grad = res
        else:
            loss = res
        check_loss_result(loss, loss_ref, reduction, comp, row_shape)
        if return_grad:
            check_array_result(grad, grad_ref, shape, comp, comp, "grad", gout)

    return check


def alias_of(rng, c, x):
    """An output in the memory of input ``x``: ``x`` itself (in place) or, sometimes, a
    view of it flipped along one axis (every element lands on another one's memory);
    None when ``x`` cannot be written."""
    if not (isinstance(x, np.ndarray) and x.flags.writeable and x.ndim and 0 not in x.strides):
        return None
    js = [i for i, n in enumerate(x.shape) if n > 1]
    if js and chance(rng, 0.3):
        j = pick(rng, js)
        c.facts["alias"] = True
        return x[tuple(slice(None, None, -1) if i == j else slice(None) for i in range(x.ndim))]
    c.facts["inplace"] = True
    return x


def set_grad_out(rng, c, x, inplace, shape, comp):
    """return_grad=True, and sometimes a grad_out: in the memory of ``x`` (in place,
    when ``inplace``) or a buffer of its own."""
    c.kwargs["return_grad"] = True
    gout = alias_of(rng, c, x) if inplace else None
    if gout is None and chance(rng, 0.4):
        gout = make_out(rng, shape, comp)
    if gout is not None:
        c.kwargs["grad_out"] = gout
        c.outputs.append(gout)
    return gout


def mut_grad_out(rng, c, shape, comp, return_grad):
    """An illegal grad_out: a bad buffer, or one given without return_grad."""
    if return_grad:
        bad, exc, pats, mname = bad_out(rng, shape, comp, "grad_out")
        c.kwargs["grad_out"] = bad
        c.outputs = []
        c.expect_error(exc, *pats, mutation=mname)
    else:
        c.kwargs["grad_out"] = make_out(rng, shape, comp)
        c.kwargs.pop("return_grad", None)
        c.expect_error((ValueError,), r"\bgrad_out\b", mutation="grad_out without return_grad")


# ---------------------------------------------------------------------------
# families
# ---------------------------------------------------------------------------


def _axis_kw(rng, c, ndim, axis_name="axis", default=-1):
    """Pick an axis in range; sometimes left at its default."""
    if ndim == 0:
        return None
    ax = int(rng.integers(-ndim, ndim))
    if ax == default and chance(rng, 0.5):
        return ax  # not passed
    c.kwargs[axis_name] = ax
    return ax


def value_pattern(v):
    """A regex for a bad value in an error message: its str or its repr (numbers also
    as ints, 2.0 as 2, nan as NaN)."""
    forms = {str(v), repr(v)}
    if isinstance(v, (float, np.floating)):
        f = float(v)
        forms |= {repr(f), str(f), f"{f:g}"}
        if math.isnan(f):
            forms |= {"NaN", "nan"}
        if f == int(f) if math.isfinite(f) else False:
            forms.add(str(int(f)))
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        forms.add(str(int(v)))
    return "|".join(rf"(?<![\w.]){re.escape(x)}(?![\w])" if x[-1:].isalnum() else re.escape(x)
                    for x in sorted(forms))


def _mut_axis(rng, c, ndim, axis_name="axis"):
    if chance(rng, 0.7):
        bad = pick(rng, [ndim, ndim + 3, -ndim - 1, 100, -(2**40)])
        c.kwargs[axis_name] = bad
        c.expect_error((ValueError,), rf"\b{axis_name}\b", value_pattern(bad),
                       mutation=f"{axis_name}={bad} out of range")
    else:
        bad = pick(rng, [1.5, "0", [0], True])
        c.kwargs[axis_name] = bad
        c.expect_error((TypeError,), rf"\b{axis_name}\b", value_pattern(bad),
                       mutation=f"{axis_name}={bad!r} not an int")


def _mut_reduction(rng, c, allowed=REDUCTIONS):
    bad = pick(rng, ["avg", "MEAN", "", None, 1, "batchmean", "elementwise_mean"])
    if bad in allowed:
        bad = "avg"
    c.kwargs["reduction"] = bad
    c.expect_error((ValueError,), r"\breduction\b", re.escape(repr(bad)), mutation=f"reduction={bad!r}")


def _mut_dtype(rng, c, pos, name, shape):
    c.args[pos] = bad_array_dtype(rng, shape)
    dt = c.args[pos].dtype
    c.expect_error((TypeError,), rf"\b{name}\b", f"{re.escape(str(dt))}|{re.escape(dt.name)}",
                   mutation=f"{name} of dtype {dt}")


def _mut_scalar(rng, c, name, bad_values):
    """bad_values: [(value, exception type)]."""
    v, exc = pick(rng, bad_values)
    c.kwargs[name] = v
    pats = [rf"\b{name}\b"] + ([] if isinstance(v, (tuple, list)) else [value_pattern(v)])
    c.expect_error((exc,), *pats, mutation=f"{name}={v!r}")


def _snapshot(a):
    return None if a is None else np.array(a, copy=True)


def gen_normalizer(c, rng):
    op = pick(rng, ["logsumexp", "log_softmax", "softmax"])
    c.func = op
    ndim = pick(rng, [0, 1, 2, 3, 4], [4, 25, 40, 20, 11])
    big = chance(rng, 0.03)
    shape = class_shape(rng, ndim, -1, big) if ndim else ()
    dt = logits_dtype(rng)
    comp = comp_dtype(dt)
    x = make_input(rng, shape, lambda s: logits_values(rng, s, dt))
    c.args = [maybe_list(rng, x)]
    c.facts["comp"] = comp
    if ndim == 0:
        axis = None
        c.kwargs["axis"] = None
    elif chance(rng, 0.15):
        axis = None
        c.kwargs["axis"] = None
    else:
        axis = int(rng.integers(-ndim, ndim))
        r = rng.random()
        if r < 0.3:
            c.args.append(axis)
        elif r < 0.8 or axis != -1:
            c.kwargs["axis"] = axis
    keepdims = False
    if op == "logsumexp" and chance(rng, 0.3):
        keepdims = bool(rng.random() < 0.7)
        c.kwargs["keepdims"] = keepdims
    if op == "logsumexp":
        if axis is None:
            rshape = (1,) * ndim if keepdims else ()
        else:
            ax = axis % ndim
            rshape = shape[:ax] + ((1,) if keepdims else ()) + shape[ax + 1:]
    else:
        rshape = shape
    out = None
    r = rng.random()
    if r < 0.25:
        out = make_out(rng, rshape, comp)
    elif r < 0.33 and op != "logsumexp" and isinstance(x, np.ndarray) and is_float(x.dtype):
        out = alias_of(rng, c, x)  # in place
    if out is not None:
        c.kwargs["out"] = out
        c.outputs.append(out)
    c.determinism = big and out is None

    if chance(rng, 0.22):  # illegal
        m = pick(rng, ["axis", "dtype", "out"] if ndim else ["dtype", "out"])
        if m == "axis":
            if "axis" not in c.kwargs and len(c.args) == 1:
                c.kwargs["axis"] = 0
            if len(c.args) > 1:
                c.args = c.args[:1]
            _mut_axis(rng, c, ndim)
        elif m == "dtype":
            _mut_dtype(rng, c, 0, "x", shape)
        else:
            bad, exc, pats, name = bad_out(rng, rshape, comp, "out")
            c.kwargs["out"] = bad
            c.outputs = []
            c.expect_error(exc, *pats, mutation=name)
        return

    ref = R.normalizer(op, _snapshot(x), axis, keepdims, comp)

    def check(res):
        if out is None and len(rshape) == 0:
            check_0d_result(res, ref, comp, op)
        else:
            check_array_result(res, ref, rshape, comp, comp, op, out)

    c.check = check


def _index_targets(rng, c, row_shape, C, ignore_index=None):
    """(target array, int64 copy, keep mask, ignore_index, dtype) of legal class indices."""
    dt = pick(rng, INDEX_DTYPES)
    info = np.iinfo(dt)
    if ignore_index is None:
        r = rng.random()
        if r < 0.6:
            ignore_index = -100
        else:
            ignore_index = pick(rng, [-1, 0, C, C + 1, 255, 2**31 - 1, -(2**63), 2**63 - 1, 7])
    representable = info.min <= ignore_index <= info.max
    if C > 0:
        t = rng.integers(0, min(C, int(info.max) + 1), size=row_shape).astype(np.int64)
    else:
        t = np.zeros(row_shape, np.int64)
    keep = np.ones(row_shape, bool)
    if representable:
        frac = pick(rng, [0.0, 0.1, 0.3, 1.0], [4, 4, 2, 1]) if C > 0 else 1.0
        ign = rng.random(row_shape) < frac
        if C > 0 and 0 <= ignore_index < C:
            ign |= t == ignore_index  # a class that is ignore_index is ignored
        t = np.where(ign, ignore_index, t)
        keep = ~ign
    elif C == 0:
        keep = np.zeros(row_shape, bool)
    if not representable and C == 0 and math.prod(row_shape) > 0:
        # no legal index exists: use a dtype that holds ignore_index
        dt = np.dtype(np.int64)
        t = np.full(row_shape, ignore_index, np.int64)
        keep = np.zeros(row_shape, bool)
    tv = t.astype(dt)
    ta = make_input(rng, row_shape, lambda s: tv[tuple(slice(0, n) for n in s)])
    # a zero-stride target repeats its first slice: recompute what it holds
    t64 = np.array(ta.astype(object), dtype=object)
    keep = t64 != ignore_index
    t64i = np.where(keep, t64, 0).astype(np.int64)
    c.facts["target_dtype"] = np.dtype(dt)
    return ta, t64i, keep, ignore_index


def mut_bad_index(rng, c, ta, C, ignore_index, pos_arg=1):
    """Put one or more class indices outside [0, C) into a copy of ``ta`` (the target,
    ``c.args[pos_arg]``): an IndexError naming the first one and its position.  Nothing
    happens when no index is out of range for ``ta``'s dtype."""
    dt = ta.dtype
    info = np.iinfo(dt)
    cands = [v for v in (C, C + 1, -1, -5, int(info.max), int(info.min), 2**63, 2**64 - 100)
             if info.min <= v <= info.max and v != ignore_index and not 0 <= v < C]
    if not cands or ta.size == 0:
        return
    bad = pick(rng, cands)
    t = np.array(ta, order="C")  # a C-ordered copy: reshape(-1) is a view of it
    flat = t.reshape(-1)
    n_bad = 1 if chance(rng, 0.6) else int(rng.integers(2, 4))
    pos = sorted(set(int(p) for p in rng.integers(0, flat.size, size=n_bad)))
    for p in pos:
        flat[p] = bad
    first = pos[0]
    c.args[pos_arg], _ = place(rng, t)
    index = tuple(int(i) for i in np.unravel_index(first, t.shape))
    c.facts["bad_index"] = bad
    if bad >= 2**63:
        c.facts["u64_big"] = True
    c.expect_error((IndexError,), r"\btarget\b", rf"(?<!\d){bad}(?!\d)", _pos_pattern(index, first),
                   mutation=f"class index {bad} at {index}")


def _pos_pattern(index, flat):
    tup = ", ".join(str(i) for i in index)
    pats = [re.escape(f"({tup})"), re.escape(f"[{tup}]"), rf"\b{flat}\b"]
    if len(index) == 1:
        pats.append(re.escape(f"({index[0]},)"))
    if len(index) == 0:
        pats.append(re.escape("()"))
    return "|".join(pats)


def _weights(rng, C):
    dt = pick(rng, [F32, F64, F16, np.dtype("i4")], [3, 5, 1, 1])
    v = rng.uniform(0, 2, size=C)
    if C and chance(rng, 0.3):
        v[rng.random(C) < 0.3] = 0.0
    if C and chance(rng, 0.1):
        v[:] = 0.0
    if C and chance(rng, 0.04):
        v[int(rng.integers(C))] = np.nan
    if C and chance(rng, 0.05):
        v[int(rng.integers(C))] *= -1
    w = cast(v, dt)
    a, _ = place(rng, w)
    return maybe_list(rng, a), as_f64(w)


def prob_targets(rng, shape, ax):
    """(target, float64 copy) of class probabilities of ``shape``, classes on axis
    ``ax``: rows mostly normalised, some zeros, sometimes NaN, negative, > 1 or inf."""
    tdt = pick(rng, [F32, F64, F16, "bf16"], [4, 4, 1, 1])
    tdt = (BFLOAT16 if BFLOAT16 is not None else F32) if isinstance(tdt, str) else tdt

    def tgen(s):
        v = np.array(rng.random(s) ** 2)
        if chance(rng, 0.5) and v.size:
            v[rng.random(s) < 0.3] = 0.0
        if s[ax] and chance(rng, 0.7):
            with np.errstate(invalid="ignore"):
                tot = v.sum(axis=ax, keepdims=True)
                v = np.where(tot > 0, v / np.where(tot > 0, tot, 1), v)
        if chance(rng, 0.15) and v.size:  # specials in the targets
            sp = pick(rng, ["nan", "neg", "big", "inf"], [3, 3, 3, 1])
            m = rng.random(s) < 0.1
            v[m] = {"nan": np.nan, "neg": -0.5, "big": 3.0, "inf": np.inf}[sp]
        return cast(v, tdt)

    ta = make_input(rng, shape, tgen)
    return ta, as_f64(ta)


def gen_cross_entropy(c, rng, func="cross_entropy"):
    c.func = func
    shape, axis, ax, row_shape, big = rows_layout(rng, [1, 2, 3, 4], [15, 60, 15, 10])
    ndim, C = len(shape), shape[ax]
    if func == "nll_loss":
        dt = logits_dtype(rng, allow_int=chance(rng, 0.3))
        if chance(rng, 0.6) and dt.kind == "f":
            def gen(s):
                v = float_values(rng, s, dt)
                with np.errstate(all="ignore"):
                    lp = R.ref_log_softmax(v, axis=ax) if s[ax] else v
                return cast(lp, dt)
        else:
            def gen(s):
                return logits_values(rng, s, dt)
    else:
        dt = logits_dtype(rng)

        def gen(s):
            return logits_values(rng, s, dt)
    comp = comp_dtype(dt)
    return_grad = func == "cross_entropy" and chance(rng, 0.4)
    grad_inplace = return_grad and chance(rng, 0.15) and is_float(dt) and np.dtype(dt) == comp
    x = make_input(rng, shape, gen, writable=True if grad_inplace else None)
    name = "log_probs" if func == "nll_loss" else "logits"
    c.args = [maybe_list(rng, x)]
    if axis != -1 or chance(rng, 0.3):
        c.kwargs["axis"] = axis
    prob = func == "cross_entropy" and chance(rng, 0.3)
    if prob:
        ta, t_ref = prob_targets(rng, shape, ax)
        keep = None
        ignore_index = -100
        if chance(rng, 0.2):
            c.kwargs["ignore_index"] = pick(rng, [-100, 0, 3, -1])
        c.facts["prob"] = True
        c.facts["inf_mass"] = bool(np.isposinf(t_ref).any())
    else:
        ta, t_ref, keep, ignore_index = _index_targets(rng, c, row_shape, C)
        if ignore_index != -100 or chance(rng, 0.2):
            c.kwargs["ignore_index"] = ignore_index
    c.args.append(maybe_list(rng, ta))
    weight = w_ref = None
    if func != "focal_loss" and chance(rng, 0.4):
        weight, w_ref = _weights(rng, C)
        c.kwargs["weight"] = weight
    reduction = pick(rng, REDUCTIONS)
    if reduction != "mean" or chance(rng, 0.5):
        c.kwargs["reduction"] = reduction
    eps_ls = z = 0.0
    gamma, alpha, alpha_ref = 2.0, None, None
    if func == "cross_entropy":
        if chance(rng, 0.4):
            eps_ls = pick(rng, [0.0, 0.1, float(rng.random()), 1.0, np.float32(0.25)])
            c.kwargs["label_smoothing"] = eps_ls
            eps_ls = float(eps_ls)
        if chance(rng, 0.3):
            z = pick(rng, [0.0, 1e-4, float(rng.random()), 1, np.float64(2.5)])
            c.kwargs["z_loss"] = z
            z = float(z)
        if return_grad:
            set_grad_out(rng, c, x, grad_inplace, shape, comp)
    if func == "focal_loss":
        if chance(rng, 0.5):
            gamma = pick(rng, [0.0, 0.5, 1.0, 2.0, 3.7, 1])
            c.kwargs["gamma"] = gamma
            gamma = float(gamma)
        r = rng.random()
        if r < 0.3:
            alpha = alpha_ref = pick(rng, [0.25, 1.0, 0.0, 2, np.float32(0.5)])
            alpha_ref = float(alpha)
            c.kwargs["alpha"] = alpha
        elif r < 0.6:
            alpha, alpha_ref = _weights(rng, C)
            c.kwargs["alpha"] = alpha
    c.facts.update(func=func, C=C, z=z, eps=eps_ls, reduction=reduction, comp=comp,
                   weight=w_ref, alpha=alpha_ref, ignore_index=ignore_index,
                   nan_logits=bool(np.isnan(as_f64(x)).any()) if is_float(np.asarray(x).dtype) else False)
    c.determinism = big and not c.outputs
    _ce_facts(c, x, ax, t_ref, keep, w_ref, prob)

    if chance(rng, 0.22):
        muts = ["reduction", "axis", "dtype", "tshape", "weight", "ignore_index"]
        if not prob and C >= 0:
            muts += ["index", "index"]
        if prob or func != "cross_entropy":
            muts.append("ttype")
        if func == "cross_entropy":
            muts += ["label_smoothing", "z_loss"]
            if return_grad:
                muts.append("grad_out")
            else:
                muts.append("grad_out_no_grad")
        if func == "focal_loss":
            muts += ["gamma", "alpha"]
        if func != "cross_entropy" or not prob:
            muts.append("ignore_big")
        m = pick(rng, muts)
        _mutate_multiclass(rng, c, m, name, shape, row_shape, ax, C, ta, ignore_index, comp, prob)
        if c.error is not None:
            return

    if prob:
        keep_r = None
    else:
        keep_r = keep
    if func == "cross_entropy":
        loss_ref, grad_ref = R.cross_entropy(_snapshot(x), ax, t_ref, keep_r, w_ref, eps_ls, z,
                                             reduction, comp, prob)
    elif func == "nll_loss":
        loss_ref = R.nll_loss(_snapshot(x), ax, t_ref, keep_r, w_ref, reduction, comp)
        grad_ref = None
    else:
        loss_ref = R.focal_loss(_snapshot(x), ax, t_ref, keep_r, gamma, alpha_ref, reduction, comp)
        grad_ref = None
    c.check = loss_grad_check(loss_ref, grad_ref, reduction, comp, row_shape, shape, return_grad,
                              c.kwargs.get("grad_out"))


def _ce_facts(c, x, ax, t_ref, keep, w_ref, prob):
    """Facts about NaN rows for the KNOWN table."""
    xa = as_f64(x)
    c.facts["x_inf"] = bool(np.isinf(xa).any())
    if xa.size == 0 or xa.ndim == 0:
        return
    X = np.moveaxis(xa, ax, -1).reshape(-1, xa.shape[ax])
    nan_rows = np.isnan(X).any(axis=1)
    dead_rows = (X == -np.inf).all(axis=1) & (X.shape[1] > 0)
    if not (nan_rows.any() or dead_rows.any()):
        return
    C = X.shape[1]
    w = np.ones(C) if w_ref is None else w_ref
    if prob:
        T = np.moveaxis(t_ref, ax, -1).reshape(-1, C)
        with np.errstate(invalid="ignore"):
            coef = (1 - c.facts["eps"]) * T * w + c.facts["eps"] / C * w
        zero = (coef == 0).all(axis=1)
    else:
        k = keep.reshape(-1)
        tc = t_ref.reshape(-1)
        zero = k & (w[tc] == 0) if C else np.zeros_like(nan_rows)
        if c.facts["eps"] > 0:
            zero &= (w == 0).all()
    c.facts["nan_row_zero_weight"] = bool((nan_rows & zero).any())
    c.facts["dead_row_zero_weight"] = bool((dead_rows & zero).any())


def _mutate_multiclass(rng, c, m, name, shape, row_shape, ax, C, ta, ignore_index, comp, prob):
    func = c.func
    if m == "reduction":
        _mut_reduction(rng, c)
    elif m == "axis":
        _mut_axis(rng, c, len(shape))
    elif m == "dtype":
        _mut_dtype(rng, c, 0, name, shape)
    elif m == "tshape":
        s = list(row_shape if not prob else shape)
        if s and chance(rng, 0.6):
            j = int(rng.integers(len(s)))
            s[j] += 1
        else:
            s.append(2)
        dt = np.asarray(ta).dtype
        t = np.zeros(s, dtype=dt)
        c.args[1] = t
        c.expect_error((ValueError,), r"\btarget\b", re.escape(str(tuple(s))), mutation=f"target shape {tuple(s)}")
    elif m == "ttype":
        if prob or func != "cross_entropy":
            t = np.zeros(shape if prob else row_shape, dtype=pick(rng, [F32, F64, bool, np.complex64]))
            if t.dtype == bool or t.dtype.kind == "c" or func != "cross_entropy":
                c.args[1] = t
                c.expect_error((TypeError,), r"\btarget\b", mutation=f"target of dtype {t.dtype}")
    elif m == "index":
        mut_bad_index(rng, c, np.asarray(ta), C, ignore_index)
    elif m == "weight":
        key = "alpha" if func == "focal_loss" else "weight"
        if chance(rng, 0.7):
            shapes = [(C + 1,), (C, 2), (1, C)] + ([(C - 1,)] if C > 0 else []) + ([(1,)] if C != 1 else [])
            if key == "weight":
                shapes.append(())
            bad = np.ones(pick(rng, shapes))
            c.kwargs[key] = bad
            c.expect_error((ValueError,), rf"\b{key}\b", mutation=f"{key} of shape {bad.shape}")
        else:
            c.kwargs[key] = bad_array_dtype(rng, (C,))
            c.expect_error((TypeError,), rf"\b{key}\b", mutation=f"{key} of dtype {c.kwargs[key].dtype}")
    elif m == "ignore_index":
        _mut_scalar(rng, c, "ignore_index", [(1.5, TypeError), ("-100", TypeError), (True, TypeError),
                                             (None, TypeError), (np.float64(-100.0), TypeError)])
    elif m == "ignore_big":
        v = pick(rng, [2**70, -(2**70), 2**63, -(2**63) - 1])
        c.kwargs["ignore_index"] = v
        c.facts["ignore_big"] = True
        c.expect_error((ValueError,), r"\bignore_index\b", mutation=f"ignore_index={v} outside int64")
    elif m == "label_smoothing":
        _mut_scalar(rng, c, "label_smoothing", [(-0.1, ValueError), (1.5, ValueError), (np.nan, ValueError),
                                                (np.inf, ValueError), ("0.1", TypeError), (1j, TypeError)])
    elif m == "z_loss":
        _mut_scalar(rng, c, "z_loss", [(-1e-3, ValueError), (np.nan, ValueError), (np.inf, ValueError),
                                       ("1", TypeError), ([0.1], TypeError)])
    elif m == "gamma":
        _mut_scalar(rng, c, "gamma", [(-1.0, ValueError), (np.nan, ValueError), (np.inf, ValueError),
                                      ("2", TypeError)])
    elif m == "alpha":
        _mut_scalar(rng, c, "alpha", [(np.nan, ValueError), ("0.25", TypeError)])
    elif m in ("grad_out", "grad_out_no_grad"):
        mut_grad_out(rng, c, shape, comp, m == "grad_out")


def gen_nll(c, rng):
    gen_cross_entropy(c, rng, "nll_loss")


def gen_focal(c, rng):
    gen_cross_entropy(c, rng, "focal_loss")


def _bcast_shape(rng, shape):
    """A shape that broadcasts to ``shape``."""
    nd = int(rng.integers(0, len(shape) + 1))
    tail = list(shape[len(shape) - nd:])
    for i in range(len(tail)):
        if chance(rng, 0.4):
            tail[i] = 1
    return tuple(tail)


def _not_bcast_shape(rng, shape):
    s = list(shape)
    if s and chance(rng, 0.6):
        j = int(rng.integers(len(s)))
        s[j] = 2 if s[j] == 1 else s[j] + 2 if s[j] == 0 else s[j] + 1
        return tuple(s[j:]) if chance(rng, 0.5) else tuple(s)
    return tuple([2, 3] + s) if not s else tuple([s[0] + 2] + s)


def gen_bce_logits(c, rng):
    c.func = "binary_cross_entropy_with_logits"
    ndim = pick(rng, [0, 1, 2, 3, 4], [5, 30, 40, 15, 10])
    shape = rand_shape(rng, ndim, 48000 if chance(rng, 0.03) else 6000)
    dt = logits_dtype(rng)
    comp = comp_dtype(dt)
    return_grad = chance(rng, 0.45)
    inplace = return_grad and chance(rng, 0.15) and is_float(dt) and np.dtype(dt) == comp and ndim
    x = make_input(rng, shape, lambda s: logits_values(rng, s, dt), writable=True if inplace else None)
    tdt = pick(rng, [comp, F32, F64, F16, np.dtype("i1"), np.dtype(bool)], [6, 2, 2, 1, 1, 1])

    def tgen(s):
        v = np.array(rng.random(s))
        if chance(rng, 0.5) and v.size:
            v = np.where(rng.random(s) < 0.5, np.round(v), v)
        if chance(rng, 0.1) and v.size:
            v[rng.random(s) < 0.1] = pick(rng, [np.nan, 1.5, -0.5])
        return cast(v, tdt)

    y = make_input(rng, shape, tgen)
    c.args = [maybe_list(rng, x), maybe_list(rng, y)]
    w_ref = pw_ref = 1.0
    if chance(rng, 0.35):
        ws = _bcast_shape(rng, shape)
        wdt = pick(rng, [F32, F64, F16, np.dtype("i4")])
        wv = cast(rng.uniform(0, 2, size=ws) * (rng.random(ws) > 0.2), wdt)
        w = make_input(rng, ws, lambda s: wv[tuple(slice(0, n) for n in s)])
        c.kwargs["weight"] = w
        w_ref = np.broadcast_to(as_f64(w), shape)
    if chance(rng, 0.35):
        ps = pick(rng, [(), shape[-1:], _bcast_shape(rng, shape)])
        pdt = pick(rng, [F32, F64, np.dtype("i4")])
        pv = cast(rng.uniform(0, 4, size=ps), pdt)
        pw = make_input(rng, ps, lambda s: pv[tuple(slice(0, n) for n in s)])
        c.kwargs["pos_weight"] = maybe_list(rng, pw, 0.2)
        pw_ref = np.broadcast_to(as_f64(pw), shape)
    reduction = pick(rng, REDUCTIONS)
    c.kwargs["reduction"] = reduction
    gout = set_grad_out(rng, c, x, inplace, shape, comp) if return_grad else None
    c.facts.update(comp=comp, reduction=reduction)

    if chance(rng, 0.22):
        m = pick(rng, ["reduction", "dtype", "tdtype", "tshape", "weight", "pos_weight", "grad_out"])
        if m == "reduction":
            _mut_reduction(rng, c)
        elif m == "dtype":
            _mut_dtype(rng, c, 0, "logits", shape)
        elif m == "tdtype":
            _mut_dtype(rng, c, 1, "target", shape)
        elif m == "tshape":
            s = _not_bcast_shape(rng, shape) if chance(rng, 0.5) else tuple(list(shape) + [1])
            c.args[1] = np.zeros(s)
            c.expect_error((ValueError,), r"\btarget\b", re.escape(str(tuple(s))), re.escape(str(shape)),
                           mutation=f"target shape {s}")
        elif m in ("weight", "pos_weight"):
            s = _not_bcast_shape(rng, shape)
            c.kwargs[m] = np.ones(s)
            c.expect_error((ValueError,), rf"\b{m}\b", mutation=f"{m} of shape {s}")
        else:
            mut_grad_out(rng, c, shape, comp, return_grad)
        return

    loss_ref, grad_ref = R.bce_with_logits(_snapshot(x), _snapshot(y), np.array(w_ref),
                                           np.array(pw_ref), reduction, comp)
    c.check = loss_grad_check(loss_ref, grad_ref, reduction, comp, shape, shape, return_grad, gout)


def gen_bce(c, rng):
    c.func = "binary_cross_entropy"
    ndim = pick(rng, [0, 1, 2, 3], [5, 35, 45, 15])
    shape = rand_shape(rng, ndim)
    dt = logits_dtype(rng)
    if np.dtype(dt).kind in "iub":
        dt = np.dtype(bool) if chance(rng, 0.5) else np.dtype("u1")
    comp = comp_dtype(dt)

    def pgen(s):
        if np.dtype(dt).kind in "ub":
            return (rng.random(s) < 0.5).astype(dt)
        v = np.array(rng.random(s))
        if chance(rng, 0.3) and v.size:
            v[rng.random(s) < 0.2] = pick(rng, [0.0, 1.0, 1e-30, 1 - 1e-7])
        return cast(v, dt)

    p = make_input(rng, shape, pgen)
    tdt = pick(rng, [comp, F32, F64, F16])
    y = make_input(rng, shape, lambda s: cast(np.where(rng.random(s) < 0.5, rng.random(s), rng.random(s) < 0.5), tdt))
    c.args = [maybe_list(rng, p), maybe_list(rng, y)]
    w_ref = 1.0
    if chance(rng, 0.35):
        ws = _bcast_shape(rng, shape)
        wv = rng.uniform(0, 2, size=ws)
        w = make_input(rng, ws, lambda s: wv[tuple(slice(0, n) for n in s)])
        c.kwargs["weight"] = w
        w_ref = np.broadcast_to(as_f64(w), shape)
    reduction = pick(rng, REDUCTIONS)
    c.kwargs["reduction"] = reduction

    if chance(rng, 0.25):
        m = pick(rng, ["reduction", "dtype", "range_p", "range_y", "tshape", "weight"])
        if m == "reduction":
            _mut_reduction(rng, c)
        elif m == "dtype":
            _mut_dtype(rng, c, 0, "probs", shape)
        elif m in ("range_p", "range_y") and math.prod(shape) > 0:
            pos = 0 if m == "range_p" else 1
            a = np.array(as_f64(c.args[pos]), order="C")
            flat = a.reshape(-1)
            badv = pick(rng, [1.5, -0.25, np.nan, np.inf, -1e-3, 2.0])
            idx = sorted(set(int(i) for i in rng.integers(0, flat.size, size=int(rng.integers(1, 3)))))
            for i in idx:
                flat[i] = badv
            dt2 = np.asarray(c.args[pos]).dtype if np.asarray(c.args[pos]).dtype.kind == "f" else F64
            a2, _ = place(rng, cast(a, dt2))
            c.args[pos] = a2
            nm = "probs" if pos == 0 else "target"
            index = tuple(int(i) for i in np.unravel_index(idx[0], shape))
            pats = [rf"\b{nm}\b", _pos_pattern(index, idx[0])]
            c.expect_error((ValueError,), *pats, mutation=f"{nm}[{index}] = {badv}")
        elif m == "tshape":
            s = tuple(list(shape) + [2])
            c.args[1] = np.zeros(s)
            c.expect_error((ValueError,), r"\btarget\b", re.escape(str(s)), mutation=f"target shape {s}")
        elif m == "weight":
            s = _not_bcast_shape(rng, shape)
            c.kwargs["weight"] = np.ones(s)
            c.expect_error((ValueError,), r"\bweight\b", mutation=f"weight of shape {s}")
        if c.error is not None:
            return

    ref = R.bce(_snapshot(p), _snapshot(y), np.array(w_ref), reduction, comp)
    c.check = lambda res: check_loss_result(res, ref, reduction, comp, shape)


def gen_kl_div(c, rng):
    c.func = "kl_div"
    ndim = pick(rng, [0, 1, 2, 3], [5, 30, 45, 20])
    shape = rand_shape(rng, ndim)
    dt = logits_dtype(rng)
    comp = comp_dtype(dt)
    log_target = chance(rng, 0.4)

    def qgen(s):
        v = float_values(rng, s, dt)
        with np.errstate(all="ignore"):
            v = -np.abs(v)  # log-probabilities are <= 0 (not required)
        return cast(v, dt) if is_float(dt) else logits_values(rng, s, dt)

    q = make_input(rng, shape, qgen)
    tdt = pick(rng, [comp, F32, F64, F16])

    def tgen(s):
        v = np.array(rng.random(s))
        if v.size and chance(rng, 0.4):
            v[rng.random(s) < 0.3] = 0.0
        if v.size and chance(rng, 0.1):
            v[rng.random(s) < 0.1] = pick(rng, [np.nan, -0.5, 2.0])
        if log_target:
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.log(v)
        return cast(v, tdt)

    t = make_input(rng, shape, tgen)
    c.args = [maybe_list(rng, q), maybe_list(rng, t)]
    reduction = pick(rng, REDUCTIONS + ("batchmean",))
    if reduction != "mean" or chance(rng, 0.5):
        c.kwargs["reduction"] = reduction
    if log_target or chance(rng, 0.3):
        c.kwargs["log_target"] = log_target
    if chance(rng, 0.2):
        m = pick(rng, ["reduction", "shape", "dtype", "tdtype"])
        if m == "reduction":
            _mut_reduction(rng, c, REDUCTIONS + ("batchmean",))
        elif m == "shape":
            s = _not_bcast_shape(rng, shape) if chance(rng, 0.5) else tuple(list(shape) + [1])
            c.args[1] = np.zeros(s)
            c.expect_error((ValueError,), r"\btarget\b", re.escape(str(s)), re.escape(str(shape)),
                           mutation=f"target shape {s}")
        elif m == "dtype":
            _mut_dtype(rng, c, 0, "input", shape)
        else:
            _mut_dtype(rng, c, 1, "target", shape)
        return
    ref = R.kl_div(_snapshot(q), _snapshot(t), reduction, log_target, comp)
    c.check = lambda res: check_loss_result(res, ref, reduction, comp, shape)


def gen_kl_divergence(c, rng):
    c.func = "kl_divergence"
    shape, axis, ax, row_shape, big = rows_layout(rng, [1, 2, 3, 4], [20, 55, 15, 10])
    ndim = len(shape)
    dp = logits_dtype(rng)
    dq = dp if chance(rng, 0.7) else logits_dtype(rng)
    comp = np.result_type(comp_dtype(dp), comp_dtype(dq))
    T = pick(rng, [1.0, 1.0, 2.0, 0.5, 0.05, 20.0, 3, np.float32(1.5)])
    return_grad = chance(rng, 0.4)
    inplace = return_grad and chance(rng, 0.15) and is_float(dq) and np.dtype(dq) == comp

    def gen_for(dt):
        def gen(s):
            v = logits_values(rng, s, dt, scale=pick(rng, [0.3, 1.0, 3.0, 10.0]))
            return v
        return gen

    p_out = return_grad and chance(rng, 0.1) and is_float(dp) and np.dtype(dp) == comp
    p = make_input(rng, shape, gen_for(dp), writable=True if p_out else None)
    q = make_input(rng, shape, gen_for(dq), writable=True if inplace else None)
    c.args = [maybe_list(rng, p), maybe_list(rng, q)]
    if axis != -1 or chance(rng, 0.3):
        c.kwargs["axis"] = axis
    if T != 1.0 or chance(rng, 0.3):
        c.kwargs["temperature"] = T
    reduction = pick(rng, REDUCTIONS)
    c.kwargs["reduction"] = reduction
    gout = None
    if p_out:
        c.kwargs["return_grad"] = True  # the gradient written over the teacher's logits
        gout = alias_of(rng, c, p)
        if gout is not None:
            c.kwargs["grad_out"] = gout
            c.outputs.append(gout)
    elif return_grad:
        gout = set_grad_out(rng, c, q, inplace, shape, comp)
    c.determinism = big and not c.outputs
    c.facts["comp"] = comp
    if chance(rng, 0.22):
        m = pick(rng, ["reduction", "axis", "shape", "temperature", "dtype", "grad_out"])
        if m == "reduction":
            _mut_reduction(rng, c)
        elif m == "axis":
            _mut_axis(rng, c, ndim)
        elif m == "shape":
            s = list(shape)
            j = int(rng.integers(len(s)))
            s[j] += 1
            c.args[1] = np.zeros(s)
            c.outputs = []
            c.kwargs.pop("grad_out", None)
            c.expect_error((ValueError,), r"\bq_logits\b", r"\bp_logits\b", re.escape(str(tuple(s))),
                           re.escape(str(shape)), mutation=f"q_logits shape {tuple(s)}")
        elif m == "temperature":
            _mut_scalar(rng, c, "temperature", [(0.0, ValueError), (-1.0, ValueError), (np.nan, ValueError),
                                                (np.inf, ValueError), ("2", TypeError), (None, TypeError)])
        elif m == "dtype":
            pos = int(rng.integers(2))
            _mut_dtype(rng, c, pos, ["p_logits", "q_logits"][pos], shape)
            c.outputs = []
            c.kwargs.pop("grad_out", None)
        else:
            mut_grad_out(rng, c, shape, comp, return_grad)
        return
    loss_ref, grad_ref = R.kl_divergence(_snapshot(p), _snapshot(q), ax, float(T), reduction, comp)
    with np.errstate(all="ignore"):  # teacher probabilities below the normal range
        P = R.ref_softmax(R.rows(p, ax)[0] / float(T))
    c.facts["p_subnormal"] = bool(((P > 0) & (P < finfo(comp).smallest_normal)).any())
    c.check = loss_grad_check(loss_ref, grad_ref, reduction, comp, row_shape, shape, return_grad, gout)


def gen_entropy(c, rng):
    c.func = "entropy"
    shape, axis, ax, row_shape, big = rows_layout(rng, [1, 2, 3, 4], [25, 50, 15, 10])
    ndim = len(shape)
    dt = logits_dtype(rng)
    comp = comp_dtype(dt)
    x = make_input(rng, shape, lambda s: logits_values(rng, s, dt))
    c.args = [maybe_list(rng, x)]
    c.facts["C"] = shape[ax]
    if axis != -1 or chance(rng, 0.3):
        c.kwargs["axis"] = axis
    base = None
    if chance(rng, 0.4):
        base = pick(rng, [2, 2.0, 10.0, math.e, 0.5, np.float32(3.0)])
        c.kwargs["base"] = base
    c.determinism = big
    if chance(rng, 0.2):
        m = pick(rng, ["axis", "base", "dtype"])
        if m == "axis":
            _mut_axis(rng, c, ndim)
        elif m == "base":
            _mut_scalar(rng, c, "base", [(1.0, ValueError), (1, ValueError), (0.0, ValueError), (-2.0, ValueError),
                                         (np.nan, ValueError), (np.inf, ValueError), ("2", TypeError)])
        else:
            _mut_dtype(rng, c, 0, "logits", shape)
        return
    ref = R.entropy(_snapshot(x), ax, base, comp)
    c.check = lambda res: check_loss_result(res, ref, "none", comp, row_shape, "entropy")


# ---------------------------------------------------------------------------
# from hidden states: linear_cross_entropy, evaluate(linear_weight=)
# ---------------------------------------------------------------------------

# No "huge" among the hidden states' and weights' specials: products of huge values
# overflow float32 sums in an order a float64 reference cannot follow; large logits
# come from the scales instead.
HIDDEN_SPECIALS = ("inf", "-inf", "nan", "tiny", "-tiny", "zero", "negzero")
GRAD_NAMES = ("input", "linear_weight", "linear_bias")
# The budget of one case's products (N·C·D), so the float64 references stay cheap.
LINEAR_WORK = 50_000


def hidden_values(rng, shape, dt):
    """Values of hidden states, classifier weights or biases of dtype ``dt``: a few
    specials (inf, NaN, subnormal, signed zeros) at a low rate, since one spreads over
    a whole row or column of logits."""
    dt = np.dtype(dt)
    if dt.kind in "biu":
        return logits_values(rng, shape, dt)
    specials = [s for s in HIDDEN_SPECIALS if chance(rng, 0.4)] if chance(rng, 0.3) else []
    v = float_values(rng, shape, dt, specials=specials, p_special=pick(rng, [0.01, 0.03, 0.1]),
                     scale=pick(rng, [0.1, 0.5, 1.0, 3.0, 10.0], [1, 3, 4, 2, 1]))
    return cast(v, dt)


def linear_layout(rng):
    """(lead shape, D, C, big) of hidden states (lead + (D,)) and a (C, D) weight,
    N·C·D within LINEAR_WORK (4e5 for a "big" case: several threads' work)."""
    if chance(rng, 0.03):
        C = pick(rng, [700, 1025, 2100, 4097])
        D = pick(rng, [8, 16, 33])
        return (max(1, 400_000 // (C * D)),), D, C, True
    nlead = pick(rng, [0, 1, 2, 3], [8, 55, 30, 7])
    lead = list(rand_shape(rng, nlead, 3000))
    D = pick(rng, [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33, 64],
             [1, 4, 4, 4, 6, 4, 4, 6, 3, 4, 3, 2, 2, 2])
    C = pick(rng, SIMD_C[:-2]) if chance(rng, 0.4) else max(one_dim(rng), 1 if chance(rng, 0.9) else 0)
    while math.prod(lead) * max(C, 1) * max(D, 1) > LINEAR_WORK:
        if lead and max(lead) > 1:
            j = int(np.argmax(lead))
            lead[j] = max(1, lead[j] // 2)
        elif C > 1:
            C = max(1, C // 2)
        else:
            D = max(1, D // 2)
    return tuple(lead), D, C, False


def head_inputs(rng, c, D, C, comp_x):
    """(W, float64 W, bias or None, its float64 copy rounded as xent rounds it,
    softcap or None, computation dtype) of a classifier layer for hidden states
    computed in ``comp_x``; sets the keyword arguments (`linear_bias`, `softcap`)."""
    wdt = logits_dtype(rng, allow_int=chance(rng, 0.2))
    W = make_input(rng, (C, D), lambda s: hidden_values(rng, s, wdt))
    comp = F64 if F64 in (np.dtype(comp_x), comp_dtype(wdt)) else F32
    b = b_ref = None
    if chance(rng, 0.5):
        bdt = pick(rng, [comp, F32, F64, F16, np.dtype("i4")], [4, 2, 2, 1, 1])
        b = make_input(rng, (C,), lambda s: hidden_values(rng, s, bdt))
        c.kwargs["linear_bias"] = maybe_list(rng, b)
        b_ref = as_f64(as_f64(b).astype(comp))  # xent rounds the bias to comp
    softcap = None
    if chance(rng, 0.35):
        softcap = pick(rng, [1.0, 5.0, 30.0, 0.5, 2, np.float32(2.5), 1e-3])
        c.kwargs["softcap"] = softcap
    c.facts.update(comp=comp, C=C, D=D, softcap=softcap, bias=b is not None)
    return W, as_f64(W), b, b_ref, softcap, comp


def _hidden_targets(rng, c, x_full, lead, C, next_token):
    """Index targets for hidden states: (target, int64 copy, keep, ignore_index); for a
    next-token view ``hidden[:, :-1]`` the targets are ``target[:, 1:]`` of an array
    of the whole hidden states' lead shape."""
    if not next_token:
        return _index_targets(rng, c, lead, C)
    ta, t_ref, keep, ignore_index = _index_targets(rng, c, x_full.shape[:-1], C)
    return ta[:, 1:], t_ref[:, 1:], keep[:, 1:], ignore_index


def _hidden_states(rng, lead, D, dt):
    """(hidden states, the array they are a view of): sometimes ``full[:, :-1]`` of a
    (B, T + 1, D) array (next-token prediction), else any layout of make_input."""
    if len(lead) == 2 and chance(rng, 0.15):
        full = make_input(rng, (lead[0], lead[1] + 1, D), lambda s: hidden_values(rng, s, dt))
        return full[:, :-1], full
    x = make_input(rng, lead + (D,), lambda s: hidden_values(rng, s, dt))
    return x, None


def _grad_names(return_grad):
    """(the names of the gradients asked for, whether the result is a (loss, grads)
    pair): ``()`` asks for none but still returns the pair."""
    if return_grad is False or return_grad is None:
        return (), False
    if isinstance(return_grad, (bool, np.bool_)):
        return (GRAD_NAMES, True) if return_grad else ((), False)
    names = (return_grad,) if isinstance(return_grad, str) else tuple(return_grad)
    return tuple(n for n in GRAD_NAMES if n in names), True


def gen_linear_cross_entropy(c, rng):
    c.func = "linear_cross_entropy"
    lead, D, C, big = linear_layout(rng)
    dt = logits_dtype(rng)
    x, full = _hidden_states(rng, lead, D, dt)
    W, W64, b, b_ref, softcap, comp = head_inputs(rng, c, D, C, comp_dtype(dt))
    shape = lead + (C,)  # the logits'
    prob = chance(rng, 0.25)
    if prob:
        ta, t_ref = prob_targets(rng, shape, -1)
        keep = None
        ignore_index = -100
        if chance(rng, 0.2):
            c.kwargs["ignore_index"] = pick(rng, [-100, 0, 3, -1])
        c.facts["prob"] = True
    else:
        ta, t_ref, keep, ignore_index = _hidden_targets(rng, c, full, lead, C, full is not None)
        if ignore_index != -100 or chance(rng, 0.2):
            c.kwargs["ignore_index"] = ignore_index
    c.args = [maybe_list(rng, x), maybe_list(rng, W), maybe_list(rng, ta)]
    c.facts["next_token"] = full is not None
    w_ref = None
    if chance(rng, 0.35):
        weight, w_ref = _weights(rng, C)
        c.kwargs["weight"] = weight
    reduction = pick(rng, REDUCTIONS)
    if reduction != "mean" or chance(rng, 0.5):
        c.kwargs["reduction"] = reduction
    eps_ls = zl = 0.0
    if chance(rng, 0.35):
        eps_ls = pick(rng, [0.0, 0.1, float(rng.random()), 1.0, np.float32(0.25)])
        c.kwargs["label_smoothing"] = eps_ls
        eps_ls = float(eps_ls)
    if chance(rng, 0.3):
        zl = pick(rng, [0.0, 1e-4, float(rng.random()), 1, np.float64(2.5)])
        c.kwargs["z_loss"] = zl
        zl = float(zl)
    return_grad = False
    if chance(rng, 0.5):
        return_grad = pick(rng, [True, ("input",), ("linear_weight",), ("linear_bias",),
                                 ("input", "linear_weight"), ["linear_bias", "input"], "input",
                                 ("linear_bias", "linear_weight", "input"), False, np.True_, ()],
                           [6, 3, 2, 2, 2, 1, 1, 1, 1, 1, 1])
        c.kwargs["return_grad"] = return_grad
    asked, pair = _grad_names(return_grad)
    c.facts.update(reduction=reduction, eps=eps_ls, z=zl, weight=w_ref, ignore_index=ignore_index,
                   return_grad=return_grad, grads=asked)
    c.determinism = big

    if chance(rng, 0.22):
        muts = ["D", "wndim", "bias_shape", "dtype", "tshape", "softcap", "return_grad",
                "reduction", "weight", "ignore_index", "label_smoothing", "z_loss"]
        if not prob:
            muts += ["index", "index", "ignore_big"]
        else:
            muts.append("ttype")
        _mutate_linear(rng, c, pick(rng, muts), lead, D, C, ta, ignore_index, comp, prob)
        if c.error is not None:
            return

    n = math.prod(lead)
    x64 = as_f64(x).reshape(n, D)
    z, err = R.linear_logits(x64, W64, b_ref, softcap, comp)
    loss_ref, g = R.cross_entropy(z.reshape(shape), -1, t_ref, keep, w_ref, eps_ls, zl,
                                  reduction, comp, prob, logit_err=err)
    refs = {}
    if asked:
        free = None if g.free is None else g.free.reshape(n, C)
        grads = R.linear_grads(R.Ref(g.value.reshape(n, C), g.tol.reshape(n, C), free),
                               x64, W64, z, softcap, err, comp,
                               ignored=None if keep is None else ~keep.reshape(-1))
        dx, dw, db = grads
        refs = {"input": (R.Ref(dx.value.reshape(lead + (D,)), dx.tol.reshape(lead + (D,)),
                                dx.free.reshape(lead + (D,))), lead + (D,)),
                "linear_weight": (dw, (C, D)), "linear_bias": (db, (C,))}

    def check(res):
        import xent

        if not pair:
            check_loss_result(res, loss_ref, reduction, comp, lead)
            return
        assert isinstance(res, tuple) and len(res) == 2, f"expected (loss, grads), got {type(res)}"
        loss, grads = res
        check_loss_result(loss, loss_ref, reduction, comp, lead)
        assert isinstance(grads, xent.LinearGrads), f"grads: {type(grads).__name__}"
        for name in GRAD_NAMES:
            got = getattr(grads, name)
            if name not in asked:
                assert got is None, f"grads.{name}: not asked for, got {type(got).__name__}"
            else:
                ref, gshape = refs[name]
                check_array_result(got, ref, gshape, comp, comp, f"grads.{name}")

    c.check = check


def _mutate_linear(rng, c, m, lead, D, C, ta, ignore_index, comp, prob):
    """One illegal change of a linear_cross_entropy call (or evaluate from hidden
    states when ``c.func`` is not linear_cross_entropy: arguments in c.args[0:2] are
    the hidden states and the target, the weight a keyword)."""
    linear = c.func == "linear_cross_entropy"
    x_shape = lead + (D,)
    t_pos = 2 if linear else 1

    def set_weight(v):
        if linear:
            c.args[1] = v
        else:
            c.kwargs["linear_weight"] = v

    if m == "D":
        D2 = D + int(rng.integers(1, 3)) if D == 0 or chance(rng, 0.6) else D - 1
        if chance(rng, 0.5):
            set_weight(np.ones((C, D2), F32))
            ws, xs = (C, D2), x_shape
        else:
            c.args[0] = np.ones(lead + (D2,), F32)
            ws, xs = (C, D), lead + (D2,)
        xname = "input" if linear else "logits"
        c.expect_error((ValueError,), rf"\b{xname}\b", r"\blinear_weight\b", re.escape(str(xs)),
                       re.escape(str(ws)), mutation=f"{xname} of shape {xs}, linear_weight {ws}")
    elif m == "wndim":
        s = pick(rng, [(C * D,), (C, D, 1), (1, C, D)])
        set_weight(np.ones(s, F32))
        c.expect_error((ValueError,), r"\blinear_weight\b", re.escape(str(s)),
                       mutation=f"linear_weight of shape {s}")
    elif m == "bias_shape":
        shapes = [(C + 1,), (C, 1), (1, C), ()] + ([(1,)] if C != 1 else []) + ([(C - 1,)] if C else [])
        s = pick(rng, shapes)
        c.kwargs["linear_bias"] = np.ones(s)
        c.expect_error((ValueError,), r"\blinear_bias\b", re.escape(str(s)),
                       mutation=f"linear_bias of shape {s}")
    elif m == "dtype":
        what = pick(rng, ["x", "linear_weight", "linear_bias"])
        if what == "x":
            _mut_dtype(rng, c, 0, "input" if linear else "logits", x_shape)
        else:
            bad = bad_array_dtype(rng, (C, D) if what == "linear_weight" else (C,))
            if what == "linear_weight":
                set_weight(bad)
            else:
                c.kwargs["linear_bias"] = bad
            c.expect_error((TypeError,), rf"\b{what}\b", f"{re.escape(str(bad.dtype))}|{re.escape(bad.dtype.name)}",
                           mutation=f"{what} of dtype {bad.dtype}")
    elif m == "tshape":
        s = list(lead + (C,) if prob else lead)
        if s and chance(rng, 0.6):
            j = int(rng.integers(len(s)))
            s[j] += 1
        else:
            s.append(2)
        c.args[t_pos] = np.zeros(s, dtype=np.asarray(ta).dtype)
        c.expect_error((ValueError,), r"\btarget\b", re.escape(str(tuple(s))), mutation=f"target shape {tuple(s)}")
    elif m == "ttype":
        t = np.zeros(lead + (C,) if prob else lead, dtype=pick(rng, [bool, np.complex64]))
        c.args[t_pos] = t
        c.expect_error((TypeError,), r"\btarget\b", mutation=f"target of dtype {t.dtype}")
    elif m == "index":
        mut_bad_index(rng, c, np.asarray(ta), C, ignore_index, pos_arg=t_pos)
    elif m == "softcap":
        _mut_scalar(rng, c, "softcap", [(0.0, ValueError), (-1.0, ValueError), (0, ValueError),
                                        (np.nan, ValueError), (np.inf, ValueError), (-np.inf, ValueError),
                                        ("2", TypeError), (True, TypeError), ([1.0], TypeError)])
    elif m == "return_grad":
        bad = pick(rng, [("bias",), "weight", ("input", "grad_input"), ("input", 3), ["linear_weight", "b"],
                         1.5])
        c.kwargs["return_grad"] = bad
        pats = [r"\breturn_grad\b"]
        if isinstance(bad, (tuple, list, str)):
            wrong = next(v for v in ((bad,) if isinstance(bad, str) else bad) if v not in GRAD_NAMES)
            pats.append(re.escape(repr(wrong)))
        c.expect_error((ValueError, TypeError), *pats, mutation=f"return_grad={bad!r}")
    else:  # options shared with cross_entropy (keywords only)
        _mutate_multiclass(rng, c, m, "input", lead + (C,), lead, -1, C, ta, ignore_index, comp, prob)


def _eval_compare(res, ref, ks, what="evaluation"):
    from xent import Evaluation

    assert isinstance(res, Evaluation), f"{what}: got {type(res).__name__}"
    assert res.count == ref["count"], f"{what}: count {res.count}, expected {ref['count']}"
    assert type(res.count) is int
    assert list(res.accuracy) == list(ks), f"{what}: accuracy keys {list(res.accuracy)}, expected {list(ks)}"
    for k in ks:
        a, e = res.accuracy[k], ref["accuracy"][k]
        if "accuracy_range" in ref:  # logits the call computed: near-ties may go either way
            lo, hi = ref["accuracy_range"][k]
            assert lo <= a <= hi, f"{what}: top-{k} accuracy {a}, expected {e} (between {lo} and {hi})"
            continue
        assert (math.isnan(a) and math.isnan(e)) or a == e, f"{what}: top-{k} accuracy {a}, expected {e}"
    for key in ("loss", "perplexity"):
        a, e = res.as_dict()[key], ref[key]
        assert isinstance(a, float), f"{what}: {key} is {type(a).__name__}"
        if math.isnan(e) or math.isnan(a):
            assert math.isnan(e) and math.isnan(a), f"{what}: {key} {a}, expected {e}"
            continue
        if math.isinf(e) or math.isinf(a):
            if key == "perplexity" and math.isfinite(ref["loss"]) and ref["loss"] > 700:
                continue  # exp overflows around here
            assert a == e, f"{what}: {key} {a}, expected {e}"
            continue
        tol = ref["loss_tol"] if key == "loss" else abs(e) * (ref["loss_tol"] * 1.01 + 1e-12)
        assert abs(a - e) <= tol + 4e-16 * abs(e), f"{what}: {key} {a}, expected {e} (tol {tol:.3g})"


def gen_evaluate(c, rng):
    streaming = chance(rng, 0.4)
    if chance(rng, 0.3):
        return _gen_evaluate_hidden(c, rng, streaming)
    c.func = "Evaluator" if streaming else "evaluate"
    shape, axis, ax, row_shape, _ = rows_layout(rng, [1, 2, 3], [15, 70, 15], 0.3)
    ndim, C = len(shape), shape[ax]
    dt = logits_dtype(rng)
    comp = comp_dtype(dt)
    x = make_input(rng, shape, lambda s: logits_values(rng, s, dt))
    ta, t_ref, keep, ignore_index = _index_targets(rng, c, row_shape, C)
    k = pick(rng, [(1, 5), 1, 3, (1,), (2, 1), (1, 1, 2), [1, C + 1], (C or 1,), range(1, 4), np.int64(2)])
    ks = (int(k),) if isinstance(k, (int, np.integer)) else tuple(dict.fromkeys(int(v) for v in k))
    opts = {}
    if axis != -1 or chance(rng, 0.3):
        opts["axis"] = axis
    if ignore_index != -100 or chance(rng, 0.2):
        opts["ignore_index"] = ignore_index
    if not (isinstance(k, tuple) and k == (1, 5)) or chance(rng, 0.3):
        opts["k"] = k
    c.facts.update(comp=comp, C=C, ignore_index=ignore_index)
    if not streaming:
        c.args = [maybe_list(rng, x), maybe_list(rng, ta)]
        c.kwargs = opts
    else:
        c.kwargs = opts
        c.args = [x, ta]
        split_axis = next((i for i in range(ndim) if i != ax), None)
        n_split = shape[split_axis] if split_axis is not None else 1
        cuts = sorted(set(int(v) for v in rng.integers(0, n_split + 1, size=int(rng.integers(0, 4)))))
        if split_axis is None:
            cuts = []  # one row: one batch
        bounds = [0] + cuts + [n_split]
        batches = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
        n_first = int(rng.integers(0, len(batches) + 1))
        pickle_it = chance(rng, 0.2)
        c.facts.update(batches=batches, merge=n_first, pickle=pickle_it)

    def tsplit(a, lo, hi, split_axis):
        if split_axis is None:
            return a
        sl = [slice(None)] * a.ndim
        sl[split_axis] = slice(lo, hi)
        return a[tuple(sl)]

    def run_stream():
        import pickle

        import xent

        e1 = xent.Evaluator(**opts)
        e2 = xent.Evaluator(**opts)
        split_axis = next((i for i in range(ndim) if i != ax), None)
        t_axis = None if split_axis is None else (split_axis if split_axis < ax else split_axis - 1)
        for i, (lo, hi) in enumerate(c.facts["batches"]):
            ev = e1 if i < c.facts["merge"] else e2
            ev.update(tsplit(x, lo, hi, split_axis), tsplit(ta, lo, hi, t_axis))
        if c.facts["pickle"]:
            e2 = pickle.loads(pickle.dumps(e2))
        return e1.merge(e2).result()

    if streaming:
        c.call = run_stream

    if chance(rng, 0.22):
        muts = ["k", "axis", "index", "tshape", "ttype", "ignore", "ignore_big", "dtype"]
        m = pick(rng, muts + (["merge", "merge"] if streaming else []))
        if m == "k":
            _mut_scalar(rng, c, "k", [(0, ValueError), (-1, ValueError), ((1, 0), ValueError), ("1", TypeError),
                                      (1.5, TypeError), ((1, 2.5), TypeError), (True, TypeError), (None, TypeError)])
        elif m == "axis":
            bad = pick(rng, [ndim, -ndim - 1, 7])
            c.kwargs["axis"] = bad
            c.expect_error((ValueError,), r"\baxis\b", mutation=f"axis={bad}")
        elif m == "index":
            mut_bad_index(rng, c, np.asarray(ta), C, ignore_index)
        elif m == "tshape":
            s = tuple(list(row_shape) + [2])
            c.args[1] = np.zeros(s, np.int64)
            c.expect_error((ValueError,), r"\btarget\b", re.escape(str(s)), mutation=f"target shape {s}")
        elif m == "ttype":
            c.args[1] = np.zeros(row_shape, dtype=pick(rng, [F32, F64, bool]))
            c.expect_error((TypeError,), r"\btarget\b", mutation=f"target of dtype {c.args[1].dtype}")
        elif m == "ignore":
            _mut_scalar(rng, c, "ignore_index", [(1.5, TypeError), ("x", TypeError), (None, TypeError)])
        elif m == "ignore_big":
            v = pick(rng, [2**70, -(2**65)])
            c.kwargs["ignore_index"] = v
            c.facts["ignore_big"] = True
            c.expect_error((ValueError,), r"\bignore_index\b", mutation=f"ignore_index={v}")
        elif m == "merge":
            other = pick(rng, ["k", "axis", "ignore_index", "not"])
            if other == "not":
                c.expect_error((TypeError,), r"\bother\b", mutation="merge with a non-Evaluator")
            else:
                c.expect_error((ValueError,), r"\bother\b", mutation=f"merge with another {other}")
            c.facts["merge_other"] = other
        else:
            _mut_dtype(rng, c, 0, "logits", shape)
        if c.error is not None:
            if streaming:
                _streaming_error(c, opts, x, ta)
            return

    ref = R.evaluate(_snapshot(x), ax, t_ref, keep, ks, comp)
    c.check = lambda res: _eval_compare(res, ref, ks)
    if not streaming:
        return


def _gen_evaluate_hidden(c, rng, streaming):
    """evaluate / Evaluator from hidden states (linear_weight=, linear_bias=, softcap=):
    the logits are those of R.linear_logits, computed in the call's own precision, so
    a class whose logit is within rounding of the target's may rank either way
    (R.evaluate's accuracy_range)."""
    c.func = "Evaluator" if streaming else "evaluate"
    lead, D, C, _ = linear_layout(rng)
    dt = logits_dtype(rng)
    x, full = _hidden_states(rng, lead, D, dt)
    W, W64, b, b_ref, softcap, comp = head_inputs(rng, c, D, C, comp_dtype(dt))
    ta, t_ref, keep, ignore_index = _hidden_targets(rng, c, full, lead, C, full is not None)
    k = pick(rng, [(1, 5), 1, 3, (1,), (2, 1), [1, C + 1], (C or 1,), np.int64(2)])
    ks = (int(k),) if isinstance(k, (int, np.integer)) else tuple(dict.fromkeys(int(v) for v in k))
    opts = dict(c.kwargs, linear_weight=maybe_list(rng, W))
    if chance(rng, 0.15):
        opts["axis"] = -1
    if ignore_index != -100 or chance(rng, 0.2):
        opts["ignore_index"] = ignore_index
    if not (isinstance(k, tuple) and k == (1, 5)) or chance(rng, 0.3):
        opts["k"] = k
    c.kwargs = dict(opts)
    c.args = [x, ta] if streaming else [maybe_list(rng, x), maybe_list(rng, ta)]
    c.facts.update(ignore_index=ignore_index, hidden=True, next_token=full is not None)
    if streaming:
        cuts = sorted(set(int(v) for v in rng.integers(0, lead[0] + 1, size=int(rng.integers(0, 4))))) \
            if lead else []
        bounds = [0] + cuts + [lead[0] if lead else 1]
        c.facts.update(batches=[(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)],
                       merge=int(rng.integers(0, len(bounds))), pickle=chance(rng, 0.2))
        c.call = lambda: _stream_hidden(c, opts, x, ta)

    if chance(rng, 0.22):
        muts = ["k", "index", "index", "tshape", "ttype", "ignore_big", "D", "bias_shape", "softcap",
                "axis", "alone", "dtype"] + (["merge", "merge"] if streaming else [])
        m = pick(rng, muts)
        if m == "k":
            _mut_scalar(rng, c, "k", [(0, ValueError), ((1, 0), ValueError), ("1", TypeError), (None, TypeError)])
        elif m == "ignore_big":
            v = pick(rng, [2**70, -(2**65)])
            c.kwargs["ignore_index"] = v
            c.facts["ignore_big"] = True
            c.expect_error((ValueError,), r"\bignore_index\b", mutation=f"ignore_index={v}")
        elif m == "axis":
            c.kwargs["axis"] = bad = pick(rng, [0, -2, 1])
            c.expect_error((ValueError,), r"\baxis\b", value_pattern(bad), mutation=f"axis={bad} with linear_weight")
        elif m == "alone":  # the head's options without linear_weight
            del c.kwargs["linear_weight"]
            if "linear_bias" not in c.kwargs and "softcap" not in c.kwargs:
                c.kwargs["softcap"] = 2.0
            name = "linear_bias" if "linear_bias" in c.kwargs else "softcap"
            c.expect_error((ValueError,), rf"\b{name}\b", r"\blinear_weight\b", mutation=f"{name} without linear_weight")
        elif m == "merge":
            other = pick(rng, ["softcap", "bias", "shape", "logits", "not"])
            c.facts["merge_other"] = other
            c.expect_error((TypeError,) if other == "not" else (ValueError,), r"\bother\b",
                           mutation=f"merge with {other} other")
        else:
            _mutate_linear(rng, c, m, lead, D, C, ta, ignore_index, comp, False)
        if c.error is not None:
            if streaming:
                c.call = lambda: _stream_hidden_error(c, opts, x, ta)
            return

    n = math.prod(lead)
    z, err = R.linear_logits(as_f64(x).reshape(n, D), W64, b_ref, softcap, comp)
    ref = R.evaluate(z.reshape(lead + (C,)), -1, t_ref, keep, ks, comp, logit_err=err)
    c.check = lambda res: _eval_compare(res, ref, ks)


def _stream_hidden(c, opts, x, ta):
    """Evaluators from hidden states fed c.facts["batches"] along the first lead axis,
    the first ``merge`` of them into one, the rest into another (pickled, sometimes),
    then merged."""
    import pickle

    import xent

    e1, e2 = xent.Evaluator(**opts), xent.Evaluator(**opts)
    for i, (lo, hi) in enumerate(c.facts["batches"]):
        ev = e1 if i < c.facts["merge"] else e2
        ev.update(x[lo:hi] if x.ndim > 1 else x, ta[lo:hi] if ta.ndim else ta)
    if c.facts["pickle"]:
        e2 = pickle.loads(pickle.dumps(e2))
    return e1.merge(e2).result()


def _stream_hidden_error(c, opts, x0, t0):
    """An illegal streaming case from hidden states: a bad option raises at
    construction; a bad batch at ``update`` (after a good one when only the batch is
    bad), a bad ``other`` at ``merge``; neither may change the evaluator's state."""
    import xent

    if c.facts.get("merge_other"):
        ev = xent.Evaluator(**opts)
        ev.update(x0, t0)
        what = c.facts["merge_other"]
        kw = dict(opts)
        if what == "softcap":
            kw["softcap"] = 7.0 if opts.get("softcap") != 7.0 else 3.0
        elif what == "bias":
            if "linear_bias" in kw:
                del kw["linear_bias"]
            else:
                kw["linear_bias"] = np.zeros(c.facts["C"])
        elif what == "shape":
            kw["linear_weight"] = np.zeros((c.facts["C"] + 1, c.facts["D"]))
            kw.pop("linear_bias", None)
        elif what == "logits":
            kw = {key: v for key, v in kw.items() if key not in ("linear_weight", "linear_bias", "softcap")}
        other = None if what == "not" else xent.Evaluator(**kw)
    else:
        ev = xent.Evaluator(**c.kwargs)  # a bad option raises here
        if all(key in opts and opts[key] is v for key, v in c.kwargs.items()) and len(c.kwargs) == len(opts):
            ev.update(x0, t0)  # only the batch is bad: a good batch first
    before = repr(ev.__getstate__())
    try:
        if c.facts.get("merge_other"):
            ev.merge(other)
        else:
            ev.update(*c.args)
    except Exception:
        assert repr(ev.__getstate__()) == before, "a failed update or merge changed the Evaluator"
        raise
    return ev.result()


def _streaming_error(c, opts, x0, t0):
    """An illegal Evaluator case.  A bad k or ignore_index raises at construction; a
    bad batch (or an axis the batch does not have) raises at ``update``, after a good
    batch, and must leave the evaluator's state as it was."""
    import xent

    m = c.mutation
    ctor = m.startswith(("k=", "ignore_index="))

    def run():
        if ctor:
            return xent.Evaluator(**c.kwargs)
        if m.startswith("merge"):
            ev = xent.Evaluator(**opts)
            ev.update(x0, t0)
            before = repr(ev.__getstate__())
            what = c.facts["merge_other"]
            if what == "not":
                other = pick(np.random.default_rng(0), [None, 3, {"k": (1,)}, xent.evaluate])
            else:
                kw = dict(opts)
                kw[what] = {"k": (7, 1), "axis": -2 if opts.get("axis", -1) != -2 else 0,
                            "ignore_index": 12345}[what]
                other = xent.Evaluator(**kw)
            try:
                ev.merge(other)
            except Exception:
                assert repr(ev.__getstate__()) == before, "a failed merge changed the Evaluator"
                raise
            return ev.result()
        if m.startswith("axis"):
            ev = xent.Evaluator(**c.kwargs)  # the axis is checked against a batch
        else:
            ev = xent.Evaluator(**opts)
            ev.update(x0, t0)
        before = repr(ev.__getstate__())
        try:
            ev.update(*c.args)
        except Exception:
            assert repr(ev.__getstate__()) == before, "a failed update changed the Evaluator"
            raise
        return ev.result()

    c.call = run


def _same_dict(a, b):
    return repr(a) == repr(b)


def gen_threads(c, rng):
    """set_num_threads with legal and illegal counts (restored by the runner)."""
    import xent

    c.func = "set_num_threads"
    v, exc = pick(rng, [(1, None), (2, None), (0, ValueError), (-1, ValueError), (10**6, ValueError),
                        (2**70, ValueError), (1.5, TypeError), ("2", TypeError), (True, TypeError),
                        (None, TypeError), (np.int64(1), None)])
    c.args = [v]
    c.facts["threads"] = True
    if exc is not None:
        c.expect_error((exc,), r"\bn\b", mutation=f"n={v!r}")
        return

    def check(res):
        assert res is None
        assert xent.get_num_threads() == int(v)

    c.check = check


FAMILIES = [
    ("normalizers", gen_normalizer, 20),
    ("cross_entropy", gen_cross_entropy, 24),
    ("nll_loss", gen_nll, 7),
    ("focal_loss", gen_focal, 7),
    ("bce_with_logits", gen_bce_logits, 10),
    ("bce", gen_bce, 6),
    ("kl_div", gen_kl_div, 6),
    ("kl_divergence", gen_kl_divergence, 9),
    ("entropy", gen_entropy, 5),
    ("evaluate", gen_evaluate, 9),
    ("linear_cross_entropy", gen_linear_cross_entropy, 5),
    ("threads", gen_threads, 1),
]
_FAMILY_P = np.array([f[2] for f in FAMILIES], float) / sum(f[2] for f in FAMILIES)


def family_of(seed, k):
    rng = np.random.default_rng([seed, k])
    return FAMILIES[int(rng.choice(len(FAMILIES), p=_FAMILY_P))][0]


def make_case(seed, k):
    """Case ``k`` of ``seed``: rebuilt from its own generator alone."""
    rng = np.random.default_rng([seed, k])
    i = int(rng.choice(len(FAMILIES), p=_FAMILY_P))
    name, gen, _ = FAMILIES[i]
    c = Case(k, seed, name, rng)
    gen(c, rng)
    return c
