"""evaluate / Evaluator / Evaluation (SPEC "Evaluation") against a plain NumPy reference.

The reference ranks classes with NumPy comparisons on the float64 values of the
inputs (exact for float16/bfloat16/float32), and takes -log p_t from the
independent log-softmax of references.py (which implements the non-finite rules).
"""

import functools
import math
import pickle

import numpy as np
import pytest
from helpers import assert_same_bits_for_thread_counts, with_layout
from references import BFLOAT16, as_f64, ref_log_softmax

import xent
from xent._api.evaluate import Evaluation, Evaluator, evaluate

# ---------------------------------------------------------------------------
# reference
# ---------------------------------------------------------------------------


def ref_rows(logits, target, axis=-1, ignore_index=-100):
    """float64 (n, C) non-ignored rows, their targets (int64), and -log p_t."""
    x = np.moveaxis(as_f64(logits), axis, -1)
    C = x.shape[-1]
    x = x.reshape(-1, C)
    t = np.asarray(target).reshape(-1).astype(np.int64)
    keep = t != ignore_index
    x, t = x[keep], t[keep]
    idx = np.arange(t.size)
    nll = -ref_log_softmax(x, axis=-1)[idx, t] if t.size else np.zeros(0)
    return x, t, nll


def ref_rank(x, t):
    """Classes ranking above the target: x_c > x_t, or x_c == x_t and c < t."""
    xt = x[np.arange(t.size), t][:, None]
    c = np.arange(x.shape[1])[None, :]
    return ((x > xt) | ((x == xt) & (c < t[:, None]))).sum(axis=1)


def ref_evaluate(logits, target, axis=-1, ignore_index=-100, k=(1, 5)):
    """(loss, perplexity, {k: accuracy}, count) from the definitions."""
    x, t, nll = ref_rows(logits, target, axis, ignore_index)
    n = t.size
    if n == 0:
        return math.nan, math.nan, {kk: math.nan for kk in k}, 0
    xt = x[np.arange(n), t]
    rank = ref_rank(x, t)
    loss = float(np.sum(nll)) / n  # NaN / inf propagate as in any mean
    with np.errstate(over="ignore"):
        ppl = float(np.exp(loss))
    acc = {kk: float(np.sum((rank < kk) & ~np.isnan(xt))) / n for kk in k}
    return loss, ppl, acc, n


def check(result, logits, target, axis=-1, ignore_index=-100, k=(1, 5), rtol=None):
    """Compare an Evaluation with the reference (accuracies and count exactly)."""
    loss, ppl, acc, n = ref_evaluate(logits, target, axis, ignore_index, k)
    assert isinstance(result, Evaluation)
    assert result.count == n
    assert list(result.accuracy) == list(k)
    for kk in k:
        a, b = result.accuracy[kk], acc[kk]
        assert (math.isnan(a) and math.isnan(b)) or a == b, (kk, a, b)
    if rtol is None:
        comp = np.float64 if np.asarray(logits).dtype == np.float64 else np.float32
        rtol = 1e-12 if comp == np.float64 else 2e-6
    for got, want in ((result.loss, loss), (result.perplexity, ppl)):
        if math.isnan(want) or math.isinf(want):
            assert got == want or (math.isnan(got) and math.isnan(want)), (got, want)
        else:
            assert got == pytest.approx(want, rel=rtol, abs=rtol), (got, want)


def random_case(rng, shape, axis=-1, dtype=np.float32, ignore_frac=0.1, scale=3.0):
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    C = shape[axis]
    tshape = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    t = rng.integers(0, C, size=tshape)
    t[rng.random(tshape) < ignore_frac] = -100
    return x, t


DTYPES = [np.float16, np.float32, np.float64] + ([BFLOAT16] if BFLOAT16 is not None else [])


# ---------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("C", [1, 3, 10, 257, 3000, 5000])
def test_random_against_reference(rng, dtype, C, num_threads):
    x, t = random_case(rng, (301, C), dtype=dtype)
    check(evaluate(x, t, k=(1, 2, 5, 10)), x, t, k=(1, 2, 5, 10))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_ties_follow_the_rank_rule_and_argmax(rng, dtype):
    # small integers: many exact ties, the target often tied with the max
    x = rng.integers(-2, 3, size=(2000, 7)).astype(dtype)
    t = rng.integers(0, 7, size=2000)
    r = evaluate(x, t, k=(1, 2, 3, 7))
    check(r, x, t, k=(1, 2, 3, 7))
    assert r.accuracy[1] == np.mean(np.argmax(x, axis=1) == t)
    assert r.accuracy[7] == 1.0
    # every class tied: the row is top-k correct exactly when t < k
    flat = np.zeros((6, 6), dtype)
    r = evaluate(flat, np.arange(6), k=(1, 2, 6))
    assert r.accuracy == {1: 1 / 6, 2: 2 / 6, 6: 1.0}


def test_nan_target_is_never_correct_nan_elsewhere_ranks_nowhere():
    nan, inf = np.nan, np.inf
    x = np.array([
        [nan, 0.0, 1.0],   # target 0 is NaN: never correct, loss NaN
        [2.0, nan, 1.0],   # NaN non-target: does not rank above the target
        [0.0, 1.0, 2.0],
    ])
    t = np.array([0, 0, 2])
    r = evaluate(x, t, k=(1, 3, 10))
    assert r.accuracy == {1: 2 / 3, 3: 2 / 3, 10: 2 / 3}
    assert math.isnan(r.loss) and math.isnan(r.perplexity) and r.count == 3
    check(r, x, t, k=(1, 3, 10))
    # NaN target, even in a row that is otherwise -inf
    r = evaluate(np.array([[nan, -inf, -inf]]), np.array([0]), k=(1, 3))
    assert r.accuracy == {1: 0.0, 3: 0.0}


def test_ignored_rows_count_for_nothing_whatever_their_logits():
    x = np.array([[np.nan, 1.0], [np.inf, -np.inf], [1.0, 2.0], [3.0, 0.0]])
    t = np.array([-100, -100, 1, 0])
    r = evaluate(x, t, k=1)
    assert r.count == 2 and r.accuracy == {1: 1.0}
    assert math.isfinite(r.loss)
    check(r, x, t, k=(1,))
    # a custom ignore_index in range: those rows are left out, not out of range
    t2 = np.array([1, 1, 0, 0])
    r = evaluate(np.array([[0.0, 5.0]] * 4), t2, ignore_index=1, k=1)
    assert r.count == 2 and r.accuracy == {1: 0.0}
    check(r, np.array([[0.0, 5.0]] * 4), t2, ignore_index=1, k=(1,))


def test_nothing_to_evaluate_is_nan():
    for x, t in [
        (np.zeros((0, 5), np.float32), np.zeros(0, np.int64)),
        (np.ones((3, 5)), np.full(3, -100)),
        (np.ones((3, 0)), np.full(3, -100)),  # no classes, every row ignored
    ]:
        r = evaluate(x, t, k=(1, 5))
        assert r.count == 0
        assert math.isnan(r.loss) and math.isnan(r.perplexity)
        assert all(math.isnan(v) for v in r.accuracy.values())


def test_k_at_least_C_makes_every_row_correct(rng):
    x, t = random_case(rng, (50, 4), ignore_frac=0)
    r = evaluate(x, t, k=(4, 5, 1000, 2**70))
    assert r.accuracy == {4: 1.0, 5: 1.0, 1000: 1.0, 2**70: 1.0}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_rows_follow_the_spec(dtype):
    inf = np.inf
    x = np.array([
        [inf, 0.0, inf],     # target among 2 +inf: log 2
        [inf, 0.0, 1.0],     # target not +inf while one is: inf
        [-inf, 0.0, 1.0],    # target -inf: probability 0, inf loss
        [-inf, -inf, -inf],  # no probability at all: NaN
        [1e30, -1e30, 0.0],  # huge but finite: exact 0 / 1e30
    ], dtype)
    t = np.array([2, 1, 0, 1, 0])
    for rows in ([0], [1], [2], [3], [4], [0, 4], [2, 4]):
        r = evaluate(x[rows], t[rows], k=(1, 2))
        check(r, x[rows], t[rows], k=(1, 2))
    assert evaluate(x[[0]], t[[0]]).loss == pytest.approx(math.log(2))
    assert evaluate(x[[4]], t[[4]]).loss == 0.0
    assert evaluate(x[[2, 4]], t[[2, 4]]).loss == math.inf
    assert evaluate(x[[2, 4]], t[[2, 4]]).perplexity == math.inf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_rows_are_merged_across_chunks(dtype):
    """Rows longer than the kernel's chunk (2048 values): the max, the specials and the
    target in different chunks."""
    C = 5000
    rng = np.random.default_rng(5)
    base = rng.standard_normal((12, C)).astype(dtype)
    x = base.copy()
    t = np.array([10, 4000, 2047, 2048, 4999, 0, 3000, 100, 4100, 2500, 1, 2])
    x[0, 4500] = 40.0                          # max in the last chunk, target in the first
    x[1, 10] = 40.0                            # max in the first chunk, target in the last
    x[2, :] = -np.inf; x[2, 2047] = 0.0        # only the target has probability
    x[3, :2048] = -np.inf                      # a whole chunk of -inf
    x[4, 2100] = np.inf                        # +inf in the middle chunk
    x[5, :2048] = -np.inf; x[5, 100] = np.nan  # NaN among -inf: NaN loss
    x[6, 3000] = x[6].max() + 1; x[6, 10] = x[6, 3000]  # tie with the max, earlier class
    x[7, 4096:] = np.inf                       # several +inf in the last chunk
    x[8, 4100] = np.inf; x[8, 5] = np.inf      # the target shares +inf with a first-chunk class
    x[9, :] = 1.0                              # all tied
    x[10, 4000] = np.nan                       # NaN far from the target
    x[11, :] = -np.inf                         # no probability: NaN
    for i in range(12):
        check(evaluate(x[[i]], t[[i]], k=(1, 2, 3, 600)), x[[i]], t[[i]], k=(1, 2, 3, 600))
    check(evaluate(x, t, k=(1, 2, 3, 600)), x, t, k=(1, 2, 3, 600))
    assert evaluate(x[[2]], t[[2]]).loss == 0.0
    assert evaluate(x[[8]], t[[8]]).loss == pytest.approx(math.log(2))


@pytest.mark.parametrize("shape,axis", [((40, 6, 9), 1), ((6, 40), 0), ((5, 4, 3, 8), -2), ((7,), 0)])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_any_axis_and_layout(rng, shape, axis, layout):
    x, t = random_case(rng, shape, axis=axis, dtype=np.float64)
    xl = with_layout(x, layout, readonly=True)
    check(evaluate(xl, t, axis=axis, k=(1, 3)), x, t, axis=axis, k=(1, 3))
    # the same numbers as with the class axis moved last
    moved = evaluate(np.moveaxis(x, axis, -1), t, k=(1, 3))
    got = evaluate(xl, t, axis=axis, k=(1, 3))
    assert got.count == moved.count and got.accuracy == moved.accuracy
    assert got.loss == pytest.approx(moved.loss, rel=1e-14)


@pytest.mark.parametrize("tdtype", [np.int8, np.uint8, np.int16, np.int32, np.uint32, np.int64, np.uint64])
def test_any_integer_target_dtype(rng, tdtype):
    x, t = random_case(rng, (100, 5), ignore_frac=0)
    r = evaluate(x, t.astype(tdtype))
    check(r, x, t)


def test_integer_and_bool_logits_are_float64():
    x = np.array([[3, 1, 2], [0, 5, 5]])
    t = np.array([0, 2])
    r = evaluate(x, t, k=1)
    check(r, x.astype(np.float64), t, k=(1,))
    assert r.accuracy == {1: 0.5}  # row 1: class 1 ties with 2 and comes first
    check(evaluate(x > 1, t, k=1), (x > 1).astype(np.float64), t, k=(1,))


def test_results_are_python_numbers():
    r = evaluate(np.array([[1.0, 2.0]], np.float32), np.array([1]))
    assert type(r.loss) is float and type(r.perplexity) is float and type(r.count) is int
    assert all(type(v) is float for v in r.accuracy.values())
    assert r.as_dict() == {"loss": r.loss, "perplexity": r.perplexity,
                           "accuracy": r.accuracy, "count": 1}
    assert r.as_dict()["accuracy"] is not r.accuracy
    with pytest.raises(AttributeError):
        r.loss = 0.0  # frozen
    hash(r)
    assert pickle.loads(pickle.dumps(r)) == r


def test_bitwise_identical_for_any_thread_count(rng):
    x, t = random_case(rng, (3000, 700))
    assert_same_bits_for_thread_counts(lambda: evaluate(x, t).as_dict(), (1, 2))


# ---------------------------------------------------------------------------
# errors: raised before anything is counted
# ---------------------------------------------------------------------------


def test_out_of_range_index_names_value_and_position():
    x = np.zeros((3, 4, 5), np.float32)
    t = np.zeros((3, 5), np.int64)
    t[2, 3] = 4
    with pytest.raises(IndexError, match=r"4 at position \(2, 3\)"):
        evaluate(x, t, axis=1)
    t[2, 3] = -1
    with pytest.raises(IndexError, match=r"-1 at position \(2, 3\)"):
        evaluate(x, t, axis=1)


def test_bad_arguments():
    x = np.zeros((4, 3))
    t = np.zeros(4, np.int64)
    with pytest.raises(ValueError, match=r"\(5,\).*\(4, 3\)"):
        evaluate(x, np.zeros(5, np.int64))
    with pytest.raises(TypeError, match="target"):
        evaluate(x, np.zeros(4))
    with pytest.raises(TypeError, match="logits"):
        evaluate(np.zeros((4, 3), complex), t)
    with pytest.raises(TypeError, match="logits"):
        evaluate(np.array([["a", "b"]]), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="axis"):
        evaluate(x, t, axis=2)
    with pytest.raises(ValueError, match="k"):
        evaluate(x, t, k=0)
    with pytest.raises(ValueError, match="k"):
        evaluate(x, t, k=(1, -5))
    with pytest.raises(TypeError, match="k"):
        evaluate(x, t, k=1.5)
    with pytest.raises(TypeError, match="k"):
        evaluate(x, t, k=(True,))
    with pytest.raises(TypeError, match="ignore_index"):
        evaluate(x, t, ignore_index=0.5)
    with pytest.raises(ValueError, match="scalar"):
        evaluate(np.float64(1.0), np.int64(0))


def test_k_forms():
    x = np.array([[1.0, 2.0, 3.0]])
    t = np.array([1])
    assert evaluate(x, t, k=2).accuracy == {2: 1.0}
    assert evaluate(x, t, k=[3, 1, 3, np.int64(2)]).accuracy == {3: 1.0, 1: 0.0, 2: 1.0}
    assert evaluate(x, t, k=()).accuracy == {}


# ---------------------------------------------------------------------------
# Evaluator
# ---------------------------------------------------------------------------


def _random_splits(rng, n, pieces):
    cuts = np.sort(rng.choice(np.arange(1, n), size=pieces - 1, replace=False))
    return np.split(np.arange(n), cuts)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_evaluator_any_batches_equal_one_shot(rng, dtype):
    x, t = random_case(rng, (1000, 37), dtype=dtype)
    t[::7] = -100
    whole = evaluate(x, t, k=(1, 5, 10))
    for pieces in (1, 2, 7, 50):
        ev = Evaluator(k=(1, 5, 10))
        for idx in _random_splits(rng, len(t), pieces):
            ev.update(x[idx], t[idx])
        r = ev.result()
        assert r.count == whole.count and r.accuracy == whole.accuracy
        assert r.loss == pytest.approx(whole.loss, rel=1e-14)
    # empty batches change nothing
    ev.update(x[:0], t[:0])
    assert ev.result().count == whole.count
    # ... and the per-batch results are the reference's
    check(whole, x, t, k=(1, 5, 10))


def test_evaluator_class_axis_not_last(rng):
    x, t = random_case(rng, (30, 8, 11), axis=1)
    ev = Evaluator(axis=1, k=(1, 2))
    for idx in _random_splits(rng, 30, 4):
        ev.update(x[idx], t[idx])
    whole = evaluate(x, t, axis=1, k=(1, 2))
    assert ev.result().count == whole.count and ev.result().accuracy == whole.accuracy
    assert ev.result().loss == pytest.approx(whole.loss, rel=1e-14)


def test_merge_equals_concatenation(rng):
    x1, t1 = random_case(rng, (200, 12))
    x2, t2 = random_case(rng, (77, 12))
    x3, t3 = random_case(rng, (5, 12))
    a, b, c = (Evaluator(k=(1, 3)) for _ in range(3))
    a.update(x1, t1)
    b.update(x2, t2)
    b.update(x3, t3)
    assert a.merge(b) is a
    a.merge(c)  # an empty evaluator adds nothing
    whole = evaluate(np.concatenate([x1, x2, x3]), np.concatenate([t1, t2, t3]), k=(1, 3))
    r = a.result()
    assert r.count == whole.count == 282 - np.sum(np.concatenate([t1, t2, t3]) == -100)
    assert r.accuracy == whole.accuracy
    assert r.loss == pytest.approx(whole.loss, rel=1e-14)
    # merging survives pickling (evaluators travel between processes)
    d = pickle.loads(pickle.dumps(b))
    e = Evaluator(k=(1, 3))
    e.update(x2, t2)
    e.update(x3, t3)
    assert d.result() == e.result()


def test_merge_with_non_finite_losses():
    def ev(x, t):
        e = Evaluator(k=1)
        assert e.update(np.array(x), np.array(t)) is None
        return e

    inf = ev([[-np.inf, 0.0]], [0])
    other = ev([[0.0, 1.0]], [1])
    assert inf.merge(other).result().loss == math.inf
    assert math.isnan(other.merge(ev([[np.nan, 0.0]], [1])).result().loss)
    many = [ev([[0.0, 1.0]], [1]), ev([[1.0, 0.0]], [1]), ev([[0.0, 1.0]], [-100])]
    merged = functools.reduce(Evaluator.merge, many)
    assert merged.count == 2 and merged.result().accuracy == {1: 0.5}


def test_merge_rejects_other_settings():
    base = Evaluator(axis=-1, ignore_index=-100, k=(1, 5))
    for other in (Evaluator(k=(1,)), Evaluator(axis=0), Evaluator(ignore_index=0)):
        with pytest.raises(ValueError, match="settings"):
            base.merge(other)
    with pytest.raises(TypeError, match="Evaluator"):
        base.merge(evaluate(np.zeros((1, 2)), np.zeros(1, np.int64)))


def test_failed_update_counts_nothing():
    ev = Evaluator(k=1)
    ev.update(np.zeros((2, 3)), np.array([0, 1]))
    before = ev.result()
    with pytest.raises(IndexError):
        ev.update(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError):
        ev.update(np.zeros((2, 3)), np.array([0, 1, 2]))
    assert ev.result() == before and ev.count == 2
    ev.reset()
    assert ev.count == 0 and math.isnan(ev.result().loss)


def test_evaluator_fresh_is_nan_and_reports_settings():
    ev = Evaluator(axis=1, ignore_index=3, k=5)
    assert (ev.axis, ev.ignore_index, ev.k, ev.count) == (1, 3, (5,), 0)
    r = ev.result()
    assert r.count == 0 and math.isnan(r.loss) and math.isnan(r.accuracy[5])
    assert "Evaluator(" in repr(ev)
    with pytest.raises(TypeError, match="axis"):
        Evaluator(axis=None)


def test_perplexity_overflows_to_inf_quietly():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = evaluate(np.array([[0.0, -800.0]]), np.array([1]))
    assert r.loss == 800.0 and r.perplexity == math.inf
