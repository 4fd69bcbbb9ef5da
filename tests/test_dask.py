"""xent.dask (SPEC "For other libraries"): exact reductions on a dask.distributed cluster.

The data are laid out so that a mean of per-chunk means is wrong (chunks of very
different sizes, with different numbers of ignored rows and different class
weights); each test checks that the naive answer really differs from the
float64 reference, and that xent.dask's equals it.
"""

import logging
import math
import os
import pickle

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from references import ref_cross_entropy  # noqa: E402
from test_evaluate import ref_evaluate  # noqa: E402

import xent  # noqa: E402
import xent.dask as xd  # noqa: E402
from xent._api.evaluate import evaluate  # noqa: E402

N, C = 1200, 16
CHUNKS = (100, 500, 600)  # the first chunk: few rows, mostly ignored, heavy classes


@pytest.fixture(scope="module")
def client():
    """A real two-process cluster on this machine (one thread per worker).

    distributed's nanny writes OMP_NUM_THREADS=1 (and the like) into this
    process's os.environ for its workers; the environment is restored afterwards
    so that libraries initialised later in the session (e.g. PyTorch's OpenMP)
    do not inherit a one-thread limit."""
    saved = dict(os.environ)
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, silence_logs=logging.ERROR,
    )
    try:
        with distributed.Client(cluster) as c:
            yield c
    finally:
        cluster.close()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    x = rng.standard_normal((N, C)) * 3
    weight = np.linspace(0.1, 10.0, C)
    t = rng.integers(0, C, N)
    t[:100] = rng.integers(C - 3, C, 100)  # heavy classes in the small chunk ...
    t[:100:10] = rng.integers(0, 2, 10)  # ... except a few light ones
    t[10:100][(np.arange(90) % 10) != 0] = -100  # ... and most of it ignored
    t[100:][rng.random(N - 100) < 0.05] = -100
    x[:100, :] *= 4  # a different loss level in the small chunk
    return x, t, weight


def _blocks(t):
    starts = np.cumsum((0,) + CHUNKS)
    return [slice(a, b) for a, b in zip(starts[:-1], starts[1:])]


def _ran_on_cluster(client, fn):
    """Run fn() and return the set of workers that executed its tasks."""
    with distributed.get_task_stream(client) as ts:
        result = fn()
    return result, {task["worker"] for task in ts.data}


@pytest.mark.parametrize("smoothing,z", [(0.0, 0.0), (0.1, 1e-3)])
def test_cross_entropy_mean_is_exact_not_a_mean_of_means(client, data, smoothing, z):
    x, t, w = data
    kw = dict(weight=w, label_smoothing=smoothing, z_loss=z)
    ref, _ = ref_cross_entropy(x, t, **kw)
    naive = np.mean([ref_cross_entropy(x[s], t[s], **kw)[0] for s in _blocks(t)])
    assert abs(naive - ref) > 1e-2 * abs(ref), "the data must make a mean of means fail"

    X = da.from_array(x, chunks=(CHUNKS, 5))  # the class axis split too: merged
    T = da.from_array(t, chunks=(CHUNKS,))
    lazy = xd.cross_entropy(X, T, **kw)
    assert isinstance(lazy, da.Array) and lazy.shape == ()
    got, workers = _ran_on_cluster(client, lazy.compute)
    assert workers and all(wk in client.scheduler_info()["workers"] for wk in workers)
    assert isinstance(got, np.float64)
    assert got == pytest.approx(ref, rel=1e-12)
    assert got == pytest.approx(float(xent.cross_entropy(x, t, **kw)), rel=1e-13)


def test_cross_entropy_sum_and_none(client, data):
    x, t, w = data
    X = da.from_array(x, chunks=(CHUNKS, C))
    T = da.from_array(t, chunks=(CHUNKS,))
    ref_sum, _ = ref_cross_entropy(x, t, weight=w, reduction="sum", z_loss=1e-3)
    assert xd.cross_entropy(X, T, weight=w, reduction="sum", z_loss=1e-3).compute() == \
        pytest.approx(ref_sum, rel=1e-12)
    ref_none, _ = ref_cross_entropy(x, t, weight=w, reduction="none")
    none = xd.cross_entropy(X, T, weight=w, reduction="none")
    assert none.chunks == (CHUNKS,)
    np.testing.assert_allclose(none.compute(), ref_none, rtol=1e-12, atol=1e-12)


def test_cross_entropy_probability_targets_float32(client, data):
    x, _, w = data
    rng = np.random.default_rng(3)
    p = rng.random((N, C))
    p /= p.sum(axis=1, keepdims=True)
    x32 = x.astype(np.float32)
    X = da.from_array(x32, chunks=(CHUNKS, C))
    P = da.from_array(p, chunks=(200, 8))  # rechunked to the logits' chunks
    got = xd.cross_entropy(X, P, weight=w, z_loss=1e-3).compute()
    ref, _ = ref_cross_entropy(x32, p, weight=w, z_loss=1e-3)
    assert got.dtype == np.float32
    assert float(got) == pytest.approx(ref, rel=1e-5)


def test_evaluate_is_exact_not_a_mean_of_means(client, data):
    x, t, _ = data
    ks = (1, 3, 5)
    loss, ppl, acc, count = ref_evaluate(x, t, k=ks)
    naive_loss = np.mean([ref_evaluate(x[s], t[s], k=ks)[0] for s in _blocks(t)])
    naive_acc = np.mean([ref_evaluate(x[s], t[s], k=ks)[2][1] for s in _blocks(t)])
    assert abs(naive_loss - loss) > 1e-2 * loss and abs(naive_acc - acc[1]) > 1e-3

    X = da.from_array(x.astype(np.float32), chunks=(CHUNKS, 7))
    T = da.from_array(t, chunks=(CHUNKS,))
    lazy = xd.evaluate(X, T, k=ks)
    result, workers = _ran_on_cluster(client, lazy.compute)
    assert workers
    whole = evaluate(x.astype(np.float32), t, k=ks)
    assert result.count == count == whole.count
    assert result.accuracy == whole.accuracy
    assert result.accuracy == acc
    assert result.loss == pytest.approx(loss, rel=2e-6)
    assert result.loss == pytest.approx(whole.loss, rel=1e-13)
    assert result.perplexity == pytest.approx(ppl, rel=1e-5)


def test_out_of_range_index_names_its_global_position(client, data):
    x, t, _ = data
    bad = t.copy()
    bad[777] = C  # in the last chunk
    X = da.from_array(x, chunks=(CHUNKS, C))
    T = da.from_array(bad, chunks=(CHUNKS,))
    with pytest.raises(IndexError, match=r"16 at position \(777,\)"):
        xd.evaluate(X, T).compute()
    with pytest.raises(IndexError, match=r"16 at position \(777,\)"):
        xd.cross_entropy(X, T).compute()


# ---- the rest with the local scheduler (fast) ----------------------------------------


@pytest.fixture
def sync():
    import dask

    with dask.config.set(scheduler="synchronous"):
        yield


def test_normalizers_match_xent(sync):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 9, 6)).astype(np.float32)
    x[3, :, 2] = -np.inf
    x[5, 1, 1] = np.inf
    X = da.from_array(x, chunks=(7, 4, 6))
    # (blocks of another size may take another vectorised path: equal to rounding)
    same = dict(rtol=1e-6, atol=1e-6)
    for axis in (1, -1, 0):
        lsm = xd.log_softmax(X, axis=axis)
        assert lsm.dtype == np.float32 and lsm.shape == x.shape
        np.testing.assert_allclose(lsm.compute(), xent.log_softmax(x, axis=axis), **same)
        np.testing.assert_allclose(xd.logsumexp(X, axis=axis).compute(),
                                   xent.logsumexp(x, axis=axis), **same)
        kd = xd.logsumexp(X, axis=axis, keepdims=True)
        np.testing.assert_allclose(kd.compute(), xent.logsumexp(x, axis=axis, keepdims=True), **same)
    finite = np.where(np.isfinite(x), x, 0)
    whole = xd.logsumexp(da.from_array(finite, chunks=5), axis=None).compute()
    assert float(whole) == pytest.approx(float(xent.logsumexp(finite, axis=None)), rel=1e-6)
    assert xd.logsumexp(X, axis=None).compute() == np.inf
    assert xd.logsumexp(X, axis=None, keepdims=True).shape == (1, 1, 1)


def test_class_axis_not_last(sync):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 5, 8))
    t = rng.integers(0, 5, (30, 8))
    t[::4, ::3] = -100
    X = da.from_array(x, chunks=(7, 2, 3))
    T = da.from_array(t, chunks=(11, 5))
    w = np.arange(1.0, 6.0)
    ref, _ = ref_cross_entropy(x, t, axis=1, weight=w)
    assert xd.cross_entropy(X, T, axis=1, weight=w).compute() == pytest.approx(ref, rel=1e-12)
    r = xd.evaluate(X, T, axis=1, k=(1, 2)).compute()
    loss, _, acc, count = ref_evaluate(x, t, axis=1, k=(1, 2))
    assert r.count == count and r.accuracy == acc and r.loss == pytest.approx(loss, rel=1e-12)


def test_nothing_to_average_is_nan(sync):
    X = da.zeros((10, 3), chunks=4)
    T = da.full(10, -100, chunks=4)
    assert math.isnan(xd.cross_entropy(X, T).compute())
    assert xd.cross_entropy(X, T, reduction="sum").compute() == 0
    assert xd.evaluate(X, T).compute().count == 0


def test_argument_errors_are_raised_when_building_the_graph():
    X = da.zeros((10, 3), chunks=4)
    T = da.zeros(10, dtype=np.int64, chunks=4)
    with pytest.raises(ValueError, match=r"\(9,\)"):
        xd.cross_entropy(X, T[:9])
    with pytest.raises(ValueError, match="reduction"):
        xd.cross_entropy(X, T, reduction="avg")
    with pytest.raises(ValueError, match="weight"):
        xd.cross_entropy(X, T, weight=np.ones(4))
    with pytest.raises(ValueError, match="axis"):
        xd.evaluate(X, T, axis=2)
    with pytest.raises(TypeError, match="target"):
        xd.evaluate(X, T.astype(np.float64))
    with pytest.raises(TypeError, match="logits"):
        xd.evaluate(X.astype(complex), T)
    with pytest.raises(ValueError, match="k"):
        xd.evaluate(X, T, k=0)
    with pytest.raises(ValueError, match="axis"):
        xd.log_softmax(X, axis=None)


def test_workers_import_this_xent(client):
    """The worker processes run the xent under test (same PYTHONPATH)."""
    paths = client.run(lambda: __import__("xent").__file__)
    assert set(paths.values()) == {xent.__file__}
    assert all(pid != os.getpid() for pid in client.run(os.getpid).values())


def test_block_sums_stay_float64_until_the_end(sync):
    """float32 logits over many blocks whose sums nearly cancel (class weights +1
    and -1, alternating from block to block): each block's float64 sum must reach
    the final division unrounded.  Rounding every block's sum to float32 first (a
    sum of per-block ``reduction="sum"`` results) is off by many units in the last
    place of the result; xent.dask must agree with xent on the whole array."""
    rows, n_pairs, C = 2048, 32, 40
    rng = np.random.default_rng(11)
    # small logits: every row's loss is close to log(C), so the block sums are large
    # next to what is left of them after the cancellation
    x = (rng.standard_normal((2 * n_pairs * rows + 64, C)) * 0.1).astype(np.float32)
    w = np.where(np.arange(C) % 2 == 0, 1.0, -1.0)
    plus, minus = np.arange(0, C, 2), np.arange(1, C, 2)
    t = np.concatenate(
        [rng.choice(minus if b % 2 else plus, rows) for b in range(2 * n_pairs)]
        + [rng.choice(plus, 64)]  # a small last block: the weight sum is 64
    )
    chunks = (rows,) * (2 * n_pairs) + (64,)
    X = da.from_array(x, chunks=(chunks, C))
    T = da.from_array(t, chunks=(chunks,))
    starts = np.cumsum((0,) + chunks)
    for reduction, denominator in (("sum", 1.0), ("mean", 64.0)):
        whole = xent.cross_entropy(x, t, weight=w, reduction=reduction)
        ulp = np.spacing(np.abs(whole))
        rounded = sum(
            np.float64(xent.cross_entropy(x[a:b], t[a:b], weight=w, reduction="sum"))
            for a, b in zip(starts[:-1], starts[1:])
        )
        assert abs(np.float32(rounded / denominator) - whole) > 8 * ulp  # the test can fail
        got = xd.cross_entropy(X, T, weight=w, reduction=reduction).compute()
        assert got.dtype == np.float32
        assert abs(got - whole) <= ulp, (reduction, got, whole)


# ---- from hidden states: linear_cross_entropy, evaluate(linear_weight=) ---------------

D = 8


@pytest.fixture(scope="module")
def hidden(data):
    """Hidden states whose logits h @ W.T + b have the layout of `data`: a mean of
    per-chunk means is wrong for them too."""
    _, t, weight = data
    rng = np.random.default_rng(43)
    h = rng.standard_normal((N, D)) * 1.5
    h[:100] *= 4  # a different loss level in the small chunk
    W = rng.standard_normal((C, D))
    b = rng.standard_normal(C)
    return h, W, b, t, weight


def _head_logits(h, W, b=None, softcap=None):
    """The materialized logits, in float64 (the independent reference's input)."""
    z = np.asarray(h, np.float64) @ np.asarray(W, np.float64).T
    if b is not None:
        z = z + np.asarray(b, np.float64)
    return z if softcap is None else softcap * np.tanh(z / softcap)


@pytest.mark.parametrize("smoothing,z,cap", [(0.0, 0.0, None), (0.1, 1e-3, 4.0)])
def test_linear_cross_entropy_mean_is_exact_not_a_mean_of_means(client, hidden, smoothing, z, cap):
    h, W, b, t, w = hidden
    kw = dict(weight=w, label_smoothing=smoothing, z_loss=z)
    logits = _head_logits(h, W, b, cap)
    ref, _ = ref_cross_entropy(logits, t, **kw)
    naive = np.mean([ref_cross_entropy(logits[s], t[s], **kw)[0] for s in _blocks(t)])
    assert abs(naive - ref) > 1e-2 * abs(ref), "the data must make a mean of means fail"

    H = da.from_array(h, chunks=(CHUNKS, 3))  # the feature axis split too: merged
    T = da.from_array(t, chunks=(CHUNKS,))
    lazy = xd.linear_cross_entropy(H, W, T, linear_bias=b, softcap=cap, **kw)
    assert isinstance(lazy, da.Array) and lazy.shape == ()
    got, workers = _ran_on_cluster(client, lazy.compute)
    assert workers and all(wk in client.scheduler_info()["workers"] for wk in workers)
    assert isinstance(got, np.float64)
    assert got == pytest.approx(ref, rel=1e-12)
    whole = xent.linear_cross_entropy(h, W, t, linear_bias=b, softcap=cap, **kw)
    assert got == pytest.approx(float(whole), rel=1e-13)


def test_linear_evaluate_is_exact_on_the_cluster(client, hidden):
    h, W, b, t, _ = hidden
    ks = (1, 3, 5)
    h32, W32 = h.astype(np.float32), W.astype(np.float32)
    H = da.from_array(h32, chunks=(CHUNKS, D))
    T = da.from_array(t, chunks=(CHUNKS,))
    lazy = xd.evaluate(H, T, k=ks, linear_weight=W32, linear_bias=b.astype(np.float32),
                       softcap=6.0)
    result, workers = _ran_on_cluster(client, lazy.compute)
    assert workers
    whole = evaluate(h32, t, k=ks, linear_weight=W32, linear_bias=b.astype(np.float32),
                     softcap=6.0)
    assert result.count == whole.count and result.accuracy == whole.accuracy
    assert result.loss == pytest.approx(whole.loss, rel=1e-13)
    loss, _, _, count = ref_evaluate(_head_logits(h32, W32, b.astype(np.float32), 6.0), t, k=ks)
    assert result.count == count and result.loss == pytest.approx(loss, rel=1e-5)
    naive = np.mean([evaluate(h32[s], t[s], linear_weight=W32).loss for s in _blocks(t)])
    assert abs(naive - evaluate(h32, t, linear_weight=W32).loss) > 1e-2


def test_the_weight_is_one_key_of_the_graph(client):
    """Twelve blocks, one copy of the weight in the graph, received once per worker."""
    rng = np.random.default_rng(7)
    h = rng.standard_normal((1200, 64))
    W = rng.standard_normal((500, 64))  # 256 KB
    t = rng.integers(0, 500, 1200)
    H = da.from_array(h, chunks=(100, 64))
    for lazy in (xd.linear_cross_entropy(H, W, t), xd.evaluate(H, t, linear_weight=W)):
        graph = dict(lazy.__dask_graph__())
        heads = [k for k, v in graph.items() if "LinearHead object" in repr(v)]
        assert len(heads) == 1  # one key holds the classifier layer (others may alias it)
        # the weight travels once (the hidden states' 12 chunks are 600 KB together)
        assert len(pickle.dumps(graph)) < h.nbytes + 1.5 * W.nbytes
    got = client.compute(xd.linear_cross_entropy(H, W, t)).result()
    assert got == pytest.approx(float(xent.linear_cross_entropy(h, W, t)), rel=1e-13)


def test_a_dask_weight_and_bias_become_one_task(sync):
    rng = np.random.default_rng(8)
    h = rng.standard_normal((3, 40, 10)).astype(np.float32)
    W = rng.standard_normal((30, 10)).astype(np.float32)
    b = rng.standard_normal(30)
    t = rng.integers(0, 30, (3, 40))
    H = da.from_array(h, chunks=(1, 15, 10))
    Wd, bd = da.from_array(W, chunks=(7, 4)), da.from_array(b, chunks=11)
    lazy = xd.linear_cross_entropy(H, Wd, t, linear_bias=bd, reduction="sum")
    heads = [k for k in dict(lazy.__dask_graph__()) if "LinearHead" in str(k)]
    assert len(heads) == 1
    # a float64 bias does not make the computation float64 (the weight and input decide)
    want = xent.linear_cross_entropy(h, W, t, linear_bias=b, reduction="sum")
    got = lazy.compute()
    assert got.dtype == np.float32 and got == pytest.approx(want, rel=2e-6)
    r = xd.evaluate(H, t, linear_weight=Wd, linear_bias=bd, k=(1, 4)).compute()
    e = evaluate(h, t, linear_weight=W, linear_bias=b, k=(1, 4))
    assert r.count == e.count and r.accuracy == e.accuracy
    assert r.loss == pytest.approx(e.loss, rel=1e-13)


def test_linear_reductions_leading_shapes_and_probabilities(sync):
    rng = np.random.default_rng(9)
    h = rng.standard_normal((4, 30, D)).astype(np.float32)
    W = rng.standard_normal((C, D)).astype(np.float32)
    t = rng.integers(0, C, (4, 30))
    t[:, ::4] = -100
    H = da.from_array(h, chunks=(3, 11, D))
    T = da.from_array(t, chunks=(2, 30))  # rechunked to the hidden states' chunks
    logits = _head_logits(h, W)
    none = xd.linear_cross_entropy(H, W, T, reduction="none", z_loss=1e-3)
    assert none.shape == (4, 30) and none.chunks == H.chunks[:2] and none.dtype == np.float32
    np.testing.assert_allclose(none.compute(), ref_cross_entropy(logits, t, reduction="none",
                                                                 z_loss=1e-3)[0], rtol=2e-5)
    total = xd.linear_cross_entropy(H, W, T, reduction="sum").compute()
    assert total == pytest.approx(float(xent.linear_cross_entropy(h, W, t, reduction="sum")),
                                  rel=1e-6)
    p = rng.random((4, 30, C))
    p /= p.sum(axis=-1, keepdims=True)
    P = da.from_array(p, chunks=(1, 7, 5))
    got = xd.linear_cross_entropy(H, W, P, label_smoothing=0.05).compute()
    assert got.dtype == np.float32
    assert float(got) == pytest.approx(ref_cross_entropy(logits, p, label_smoothing=0.05)[0],
                                       rel=1e-5)


def test_linear_out_of_range_index_names_its_global_position(sync, hidden):
    h, W, _, t, _ = hidden
    bad = t.copy()
    bad[777] = C
    H = da.from_array(h, chunks=(CHUNKS, D))
    T = da.from_array(bad, chunks=(CHUNKS,))
    with pytest.raises(IndexError, match=r"16 at position \(777,\)"):
        xd.linear_cross_entropy(H, W, T).compute()
    with pytest.raises(IndexError, match=r"16 at position \(777,\)"):
        xd.linear_cross_entropy(H, W, T, reduction="none").compute()
    with pytest.raises(IndexError, match=r"16 at position \(777,\)"):
        xd.evaluate(H, T, linear_weight=W).compute()


def test_linear_nothing_to_average_is_nan(sync):
    H = da.zeros((10, 3), chunks=4)
    T = da.full(10, -100, chunks=4)
    W = np.ones((5, 3))
    assert math.isnan(xd.linear_cross_entropy(H, W, T).compute())
    assert xd.linear_cross_entropy(H, W, T, reduction="sum").compute() == 0
    assert xd.evaluate(H, T, linear_weight=W).compute().count == 0


def test_linear_argument_errors_are_raised_when_building_the_graph():
    H = da.zeros((10, 3), chunks=4)
    T = da.zeros(10, dtype=np.int64, chunks=4)
    W = np.ones((5, 3))
    for weight in (W, da.from_array(W)):
        with pytest.raises(ValueError, match=r"\(10, 3\).*\(5, 2\)"):
            xd.linear_cross_entropy(H, weight[:, :2], T)
        with pytest.raises(ValueError, match=r"linear_bias.*\(4,\)"):
            xd.linear_cross_entropy(H, weight, T, linear_bias=np.ones(4))
        with pytest.raises(ValueError, match="2-D"):
            xd.evaluate(H, T, linear_weight=weight[0])
    with pytest.raises(ValueError, match=r"target has shape \(9,\)"):
        xd.linear_cross_entropy(H, W, T[:9])
    with pytest.raises(ValueError, match=r"\(10, 5\)"):
        xd.linear_cross_entropy(H, W, da.zeros((10, 4)))
    with pytest.raises(ValueError, match="softcap"):
        xd.linear_cross_entropy(H, W, T, softcap=0.0)
    with pytest.raises(ValueError, match="reduction"):
        xd.linear_cross_entropy(H, W, T, reduction="avg")
    with pytest.raises(ValueError, match="weight"):
        xd.linear_cross_entropy(H, W, T, weight=np.ones(4))
    with pytest.raises(ValueError, match="axis"):
        xd.evaluate(H, T, axis=0, linear_weight=W)
    with pytest.raises(ValueError, match="without linear_weight"):
        xd.evaluate(H, T, softcap=2.0)
    with pytest.raises(TypeError, match="target"):
        xd.evaluate(H, T.astype(np.float64), linear_weight=W)
    with pytest.raises(TypeError, match="linear_weight"):
        xd.linear_cross_entropy(H, W.astype(complex), T)


def test_docstring_examples_run(sync):
    import doctest

    result = doctest.testmod(xd, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
