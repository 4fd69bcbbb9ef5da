"""evaluate / Evaluator from hidden states (SPEC "Losses from hidden states"):
``linear_weight=``, ``linear_bias=``, ``softcap=``.

The independent references are the materialized logits ``h @ W.T + b`` (capped as
``softcap·tanh(z/softcap)``) evaluated by the logits path, and the float64 NumPy
definitions of test_evaluate.py (ranks by comparison, -log p_t from references.py).
Most cases use integer-valued hidden states and weights: their logits are exact in
float32 and float64 whatever the order of the sums, so ties are real ties and the
accuracies must match the references exactly.
"""

import math
import pickle

import numpy as np
import pytest
from helpers import assert_same_bits_for_thread_counts
from test_evaluate import check, ref_evaluate

import xent
from xent._api import linear
from xent._api.evaluate import Evaluator, evaluate

KS = (1, 2, 5)


def int_case(rng, lead=(37,), D=16, C=50, dtype=np.float32, bias=False, ignore_frac=0.15):
    """Integer-valued hidden states, weight, bias (exact logits) and targets."""
    h = rng.integers(-3, 4, lead + (D,)).astype(dtype)
    W = rng.integers(-2, 3, (C, D)).astype(dtype)
    b = rng.integers(-4, 5, C).astype(dtype) if bias else None
    t = rng.integers(0, C, lead)
    t[rng.random(lead) < ignore_frac] = -100
    return h, W, b, t


def logits_of(h, W, b=None, softcap=None, dtype=None):
    """The materialized logits, computed in `dtype` (default: h's)."""
    dtype = np.dtype(dtype or h.dtype)
    z = np.asarray(h, dtype) @ np.asarray(W, dtype).T
    if b is not None:
        z = z + np.asarray(b, dtype)
    if softcap is not None:
        cap = dtype.type(softcap)
        z = cap * np.tanh(z / cap)
    return np.asarray(z, dtype)


def same_evaluation(got, want, rel):
    assert got.count == want.count
    assert got.accuracy == want.accuracy or all(
        math.isnan(a) and math.isnan(b) for a, b in zip(got.accuracy.values(), want.accuracy.values())
    ), (got.accuracy, want.accuracy)
    if math.isnan(want.loss):
        assert math.isnan(got.loss)
    else:
        assert got.loss == pytest.approx(want.loss, rel=rel, abs=rel)


# ---------------------------------------------------------------------------
# evaluate(..., linear_weight=)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("softcap", [None, 30.0], ids=["nocap", "cap30"])
@pytest.mark.parametrize("lead", [(37,), (3, 13)], ids=["N", "BT"])
def test_matches_materialized_logits_and_float64_reference(rng, dtype, bias, softcap, lead):
    h, W, b, t = int_case(rng, lead, dtype=dtype, bias=bias)
    got = evaluate(h, t, k=KS, linear_weight=W, linear_bias=b, softcap=softcap)
    # the logits path on the logits held whole, in the same precision
    held = evaluate(logits_of(h, W, b, softcap), t, k=KS)
    same_evaluation(got, held, rel=2e-6 if dtype == np.float32 else 1e-13)
    # the float64 definitions (exact ranks: integer logits, well separated once capped)
    check(got, logits_of(h, W, b, softcap, np.float64), t, k=KS,
          rtol=2e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_random_hidden_states(rng, dtype, num_threads):
    h = rng.standard_normal((300, 64)).astype(dtype)
    W = (rng.standard_normal((500, 64)) * 0.3).astype(dtype)
    b = rng.standard_normal(500).astype(dtype)
    t = rng.integers(0, 500, 300)
    got = evaluate(h, t, k=(1, 5, 50), linear_weight=W, linear_bias=b, softcap=5.0)
    same_evaluation(got, evaluate(logits_of(h, W, b, 5.0), t, k=(1, 5, 50)),
                    rel=1e-5 if dtype == np.float32 else 1e-12)
    loss64, _, _, _ = ref_evaluate(logits_of(h, W, b, 5.0, np.float64), t)
    assert got.loss == pytest.approx(loss64, rel=1e-4 if dtype == np.float32 else 1e-10)


def test_top_k_ties_follow_the_rank_rule(rng):
    """Duplicated classes tie exactly: the lower class index ranks first."""
    h, W, _, t = int_case(rng, (200,), D=4, C=12, ignore_frac=0.0)
    W[6:] = W[:6]  # classes c and c + 6 have equal logits in every row
    z = logits_of(h, W, dtype=np.float64)
    got = evaluate(h, t, k=(1, 2, 3, 7), linear_weight=W)
    check(got, z, t, k=(1, 2, 3, 7), rtol=2e-6)
    assert got.accuracy[1] == np.mean(np.argmax(z, axis=1) == t)
    # a target c + 6 always has its twin c above it: never top-1
    twins = t >= 6
    assert twins.any() and evaluate(h[twins], t[twins], linear_weight=W).accuracy[1] == 0.0
    assert evaluate(h[~twins], t[~twins], linear_weight=W).accuracy[1] > 0.1


def test_ignored_rows_count_for_nothing_whatever_they_hold(rng):
    h, W, b, t = int_case(rng, (40,), bias=True, ignore_frac=0.0)
    t[::3] = 7  # the ignore_index of this call
    h[::3] = np.nan  # NaN logits in the ignored rows only
    got = evaluate(h, t, ignore_index=7, k=KS, linear_weight=W, linear_bias=b)
    keep = t != 7
    want = evaluate(logits_of(h[keep], W, b), t[keep], ignore_index=7, k=KS)
    assert math.isfinite(got.loss) and got.count == keep.sum()
    same_evaluation(got, want, rel=2e-6)


def test_nan_hidden_state_in_a_counted_row_is_nan_and_never_correct(rng):
    h, W, _, t = int_case(rng, (10,), ignore_frac=0.0)
    h[4, 0] = np.nan
    got = evaluate(h, t, k=(1, 50), linear_weight=W)
    assert math.isnan(got.loss)
    assert got.accuracy[50] == 0.9  # every row but the NaN one is top-50 of 50 classes


def test_strided_views_are_read_in_place(rng):
    """hidden[:, :-1] with target[:, 1:] (next-token), a non-unit feature stride,
    weights with contiguous columns or neither axis contiguous: all equal to the
    contiguous copies."""
    h, W, b, t = int_case(rng, (4, 21), D=32, bias=True)
    want = evaluate(logits_of(h[:, :-1], W, b), t[:, 1:], k=KS)
    same_evaluation(evaluate(h[:, :-1], t[:, 1:], k=KS, linear_weight=W, linear_bias=b),
                    want, rel=2e-6)
    h2 = np.repeat(h, 2, axis=-1)[..., ::2]  # feature stride of two items
    same_evaluation(evaluate(h2[:, :-1], t[:, 1:], k=KS, linear_weight=W, linear_bias=b),
                    want, rel=2e-6)
    for w in (np.asfortranarray(W), np.repeat(W, 2, axis=1)[:, ::2], W.T.copy().T):
        same_evaluation(evaluate(h[:, :-1], t[:, 1:], k=KS, linear_weight=w, linear_bias=b),
                        want, rel=2e-6)
    ro = h.copy()
    ro.flags.writeable = False
    same_evaluation(evaluate(ro[:, :-1], t[:, 1:], k=KS, linear_weight=W, linear_bias=b),
                    want, rel=2e-6)


def _unaligned(a):
    """A copy of `a` at an odd address (as buffers from a network frame may be)."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    u = np.frombuffer(buf[1:].data, a.dtype).reshape(a.shape)
    u[...] = a
    assert not u.flags.aligned
    return u


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_unaligned_hidden_states_weight_and_bias(rng, dtype):
    h, W, b, t = int_case(rng, (3, 11), dtype=dtype, bias=True)
    want = evaluate(h, t, k=KS, linear_weight=W, linear_bias=b, softcap=9.0)
    got = evaluate(_unaligned(h), t, k=KS, linear_weight=_unaligned(W),
                   linear_bias=_unaligned(b), softcap=9.0)
    same_evaluation(got, want, rel=0)


def test_many_blocks_equal_one(rng, monkeypatch):
    h, W, b, t = int_case(rng, (150,), C=40, bias=True)
    one = evaluate(h, t, k=KS, linear_weight=W, linear_bias=b, softcap=20.0)
    monkeypatch.setattr(linear, "BLOCK_BYTES", 16 * 40 * 4)  # blocks of 16 rows
    assert linear.block_rows(40, 4) == 16
    many = evaluate(h, t, k=KS, linear_weight=W, linear_bias=b, softcap=20.0)
    same_evaluation(many, one, rel=1e-12)
    check(many, logits_of(h, W, b, 20.0, np.float64), t, k=KS, rtol=2e-5)


def test_dtypes_of_the_computation(rng):
    h, W, b, t = int_case(rng, (30,), bias=True)
    z64 = logits_of(h, W, b, dtype=np.float64)
    # float16 hidden states and weight: float32 (integers are exact in float16)
    check(evaluate(h.astype(np.float16), t, k=KS, linear_weight=W.astype(np.float16),
                   linear_bias=b), z64, t, k=KS, rtol=2e-6)
    # float32 hidden states, float64 weight (or the reverse): float64, like linear_cross_entropy
    hr = rng.standard_normal(h.shape).astype(np.float32)
    zr = logits_of(hr, W, b, dtype=np.float64)
    loss64 = ref_evaluate(zr, t)[0]
    for hh, ww in ((hr, W.astype(np.float64)), (hr.astype(np.float64), W)):
        assert evaluate(hh, t, linear_weight=ww, linear_bias=b).loss == pytest.approx(loss64, rel=1e-12)
    assert evaluate(hr, t, linear_weight=W, linear_bias=b).loss == pytest.approx(loss64, rel=1e-5)
    # integer hidden states: float64
    hi = h.astype(np.int16)
    check(evaluate(hi, t, k=KS, linear_weight=W.astype(np.float64), linear_bias=b), z64, t,
          k=KS, rtol=1e-12)


def test_bitwise_identical_for_any_thread_count(rng):
    h = rng.standard_normal((700, 48)).astype(np.float32)
    W = rng.standard_normal((900, 48)).astype(np.float32)
    t = rng.integers(0, 900, 700)
    assert_same_bits_for_thread_counts(
        lambda: evaluate(h, t, linear_weight=W, softcap=10.0).as_dict(), (1, 2, 3))


def test_no_rows_and_one_class(rng):
    W = np.ones((5, 3), np.float32)
    e = evaluate(np.zeros((0, 3), np.float32), np.zeros(0, np.int64), linear_weight=W)
    assert e.count == 0 and math.isnan(e.loss)
    e = evaluate(np.zeros((4, 0, 3)), np.zeros((4, 0), np.int64), linear_weight=W)
    assert e.count == 0
    e = evaluate(rng.standard_normal((6, 3)), np.zeros(6, np.int64), k=(1, 2),
                 linear_weight=np.ones((1, 3)))
    assert e.loss == 0.0 and e.accuracy == {1: 1.0, 2: 1.0}


# ---------------------------------------------------------------------------
# errors: raised before any product
# ---------------------------------------------------------------------------


def test_bad_arguments(rng):
    h, W, b, t = int_case(rng, (8,), D=6, C=9, bias=True)
    with pytest.raises(ValueError, match=r"\(8, 6\).*\(9, 5\)"):
        evaluate(h, t, linear_weight=W[:, :5])
    with pytest.raises(ValueError, match=r"target has shape \(7,\).*\(8,\)"):
        evaluate(h, t[:7], linear_weight=W)
    with pytest.raises(ValueError, match=r"linear_bias.*\(8,\)"):
        evaluate(h, t, linear_weight=W, linear_bias=b[:8])
    for cap in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="softcap"):
            evaluate(h, t, linear_weight=W, softcap=cap)
    with pytest.raises(ValueError, match="axis"):
        evaluate(h, t, axis=0, linear_weight=W)
    with pytest.raises(ValueError, match="linear_bias.*without linear_weight"):
        evaluate(h, t, linear_bias=b)
    with pytest.raises(ValueError, match="softcap.*without linear_weight"):
        evaluate(h, t, softcap=3.0)
    with pytest.raises(ValueError, match="linear_weight.*2-D"):
        evaluate(h, t, linear_weight=W[0])
    with pytest.raises(ValueError, match="scalar"):
        evaluate(np.float32(1), t, linear_weight=W)
    with pytest.raises(TypeError, match="target"):
        evaluate(h, t.astype(np.float32), linear_weight=W)
    with pytest.raises(TypeError, match="linear_weight"):
        evaluate(h, t, linear_weight=W.astype(complex))
    bad = t.copy()
    bad[5] = 9
    with pytest.raises(IndexError, match=r"9 at position \(5,\)"):
        evaluate(h, bad, linear_weight=W)


def test_evaluator_checks_the_head_at_construction(rng):
    W = np.ones((4, 3))
    with pytest.raises(ValueError, match="softcap"):
        Evaluator(linear_weight=W, softcap=0)
    with pytest.raises(ValueError, match="axis"):
        Evaluator(axis=0, linear_weight=W)
    with pytest.raises(ValueError, match="linear_bias"):
        Evaluator(linear_weight=W, linear_bias=np.ones(3))
    with pytest.raises(ValueError, match="softcap.*without linear_weight"):
        Evaluator(softcap=1.0)


def test_failed_update_counts_nothing(rng):
    h, W, _, t = int_case(rng, (8,), D=6, C=9)
    ev = Evaluator(linear_weight=W)
    ev.update(h, t)
    bad = t.copy()
    bad[2] = 99
    for args in ((h, bad), (h[:, :5], t), (h, t[:3])):
        with pytest.raises((IndexError, ValueError)):
            ev.update(*args)
    assert ev.count == (t != -100).sum()
    same_evaluation(ev.result(), evaluate(h, t, linear_weight=W), rel=0)


# ---------------------------------------------------------------------------
# Evaluator(linear_weight=)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_evaluator_batches_and_merges_equal_one_evaluate(rng, dtype):
    h, W, b, t = int_case(rng, (120,), dtype=dtype, bias=True)
    kw = dict(k=KS, linear_weight=W, linear_bias=b, softcap=25.0)
    whole = evaluate(h, t, **kw)
    ev = Evaluator(**kw)
    parts = [Evaluator(**kw) for _ in range(3)]
    cuts = [0, 1, 1, 50, 97, 120]  # an empty batch and a one-row batch too
    for i, (a, c) in enumerate(zip(cuts[:-1], cuts[1:])):
        ev.update(h[a:c], t[a:c])
        parts[i % 3].update(h[a:c], t[a:c])
    same_evaluation(ev.result(), whole, rel=1e-12)
    merged = parts[0].merge(parts[1]).merge(pickle.loads(pickle.dumps(parts[2])))
    same_evaluation(merged.result(), whole, rel=1e-12)
    check(whole, logits_of(h, W, b, 25.0, np.float64), t, k=KS,
          rtol=2e-5 if dtype == np.float32 else 1e-12)


def test_pickled_evaluator_keeps_its_head(rng):
    h, W, b, t = int_case(rng, (60,), bias=True)
    ev = Evaluator(k=KS, linear_weight=W, linear_bias=b, softcap=12.0)
    ev.update(h[:30], t[:30])
    copy = pickle.loads(pickle.dumps(ev))
    copy.update(h[30:], t[30:])
    same_evaluation(copy.result(), evaluate(h, t, k=KS, linear_weight=W, linear_bias=b,
                                            softcap=12.0), rel=1e-12)
    assert "linear_weight of shape (50, 16)" in repr(copy) and "softcap=12.0" in repr(copy)


def test_merge_refuses_another_head(rng):
    W = np.ones((5, 3))
    base = Evaluator(linear_weight=W, softcap=2.0)
    others = [
        Evaluator(),  # logits
        Evaluator(linear_weight=np.ones((6, 3)), softcap=2.0),
        Evaluator(linear_weight=np.ones((5, 4)), softcap=2.0),
        Evaluator(linear_weight=W, linear_bias=np.zeros(5), softcap=2.0),
        Evaluator(linear_weight=W),
        Evaluator(linear_weight=W, softcap=3.0),
    ]
    for other in others:
        with pytest.raises(ValueError, match="classifier layers"):
            base.merge(other)
        with pytest.raises(ValueError, match="classifier layers"):
            other.merge(base)
    # same shape, bias and cap: merged (the values are not compared, see merge's Notes)
    base.merge(Evaluator(linear_weight=np.zeros((5, 3), np.float32), softcap=2.0))


def test_old_pickles_of_logit_evaluators_still_load():
    ev = Evaluator(k=(1, 3))
    ev.update(np.array([[1.0, 2.0, 0.0]]), np.array([1]))
    state = ev.__getstate__()
    del state["_head"]  # what an Evaluator pickled before linear_weight= holds
    old = Evaluator.__new__(Evaluator)
    old.__setstate__(state)
    assert old.result() == ev.result()
    old.merge(Evaluator(k=(1, 3)))


def test_public_names():
    assert xent.evaluate.__wrapped__ is evaluate and xent.Evaluator is Evaluator
