"""xent.torch.linear_cross_entropy against PyTorch's F.linear_cross_entropy.

Values and the autograd gradients of input, linear_weight and linear_bias are
compared with PyTorch's own function on the same tensors (reduced outputs are
differentiated through a random weight, so backward's scaling is tested too);
z_loss and softcap, which PyTorch lacks, against the formula written with torch
ops.  A spy on xent's core checks that only the gradients of tensors requiring
grad are computed.  Skipped as a whole when PyTorch is not installed.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
if not hasattr(F, "linear_cross_entropy"):
    pytest.skip("F.linear_cross_entropy needs PyTorch >= 2.13", allow_module_level=True)

import xent._api.linear as core  # noqa: E402
import xent.torch as xt  # noqa: E402

DTYPES = [torch.float32, torch.float64]
REDUCTIONS = ["none", "mean", "sum"]
N, D, C = 13, 6, 9


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)


def _case(dtype, kind, seed, lead=(N,)):
    """input (lead + (D,)), weight, bias, target, class weights."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(lead + (D,), generator=g, dtype=dtype)
    w = torch.randn(C, D, generator=g, dtype=dtype)
    b = torch.randn(C, generator=g, dtype=dtype)
    if kind == "probs":
        t = torch.softmax(torch.randn(lead + (C,), generator=g, dtype=dtype) * 2, dim=-1)
    else:
        t = torch.randint(0, C, lead, generator=g)
        if kind == "ignore" and t.dim():
            t[torch.rand(lead, generator=g) < 0.3] = -100
            t.view(-1)[0] = 2  # at least one kept row
    cw = torch.rand(C, generator=g, dtype=dtype) + 0.2
    return x, w, b, t, cw


def _value_and_grads(fn, x, w, b, seed=0):
    """fn(x, w, b) and the gradients of sum(fn * r) for a fixed random r > 0."""
    x = x.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    b = None if b is None else b.detach().clone().requires_grad_(True)
    out = fn(x, w, b)
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(out.shape, generator=g, dtype=out.dtype) + 0.5
    (out * r).sum().backward()
    return out.detach(), x.grad, w.grad, None if b is None else b.grad


def _assert_same(fn_xent, fn_ref, x, w, b, dtype):
    got = _value_and_grads(fn_xent, x, w, b)
    ref = _value_and_grads(fn_ref, x, w, b)
    assert got[0].dtype == ref[0].dtype == dtype and got[0].shape == ref[0].shape
    for name, a, e in zip(("loss", "input", "linear_weight", "linear_bias"), got, ref):
        if e is None:
            assert a is None
            continue
        assert a.dtype == dtype and a.shape == e.shape, name
        torch.testing.assert_close(a, e, **_tol(dtype), msg=lambda m: f"{name}: {m}")


# ---- parity with F.linear_cross_entropy -------------------------------------------


@pytest.mark.parametrize("kind", ["index", "ignore", "probs"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_torch_every_option(dtype, kind):
    x, w, b, t, cw = _case(dtype, kind, seed=3 + len(kind))
    for reduction in REDUCTIONS:
        for weight in (None, cw):
            for eps in (0.0, 0.15):
                for bias in (None, b):
                    kw = dict(weight=weight, reduction=reduction, label_smoothing=eps)
                    _assert_same(
                        lambda x, w, b: xt.linear_cross_entropy(x, w, t, linear_bias=b, **kw),
                        lambda x, w, b: F.linear_cross_entropy(x, w, t, linear_bias=b, **kw),
                        x, w, None if bias is None else b, dtype,
                    )


@pytest.mark.parametrize("ignore_index", [None, -100, 4])
def test_ignore_index_matches_torch(ignore_index):
    x, w, b, t, cw = _case(torch.float64, "index", seed=11)
    t[1::3] = -100 if ignore_index is None else ignore_index
    for reduction in REDUCTIONS:
        kw = dict(linear_bias=b, weight=cw, reduction=reduction, ignore_index=ignore_index)
        _assert_same(
            lambda x, w, b: xt.linear_cross_entropy(x, w, t, **kw),
            lambda x, w, b: F.linear_cross_entropy(x, w, t, **kw),
            x, w, None, torch.float64,
        )


@pytest.mark.parametrize("kind", ["index", "probs"])
def test_single_unbatched_row_matches_torch(kind):
    x, w, b, t, _ = _case(torch.float64, kind, seed=5, lead=())
    for reduction in REDUCTIONS:
        _assert_same(
            lambda x, w, b: xt.linear_cross_entropy(x, w, t, linear_bias=b, reduction=reduction),
            lambda x, w, b: F.linear_cross_entropy(x, w, t, linear_bias=b, reduction=reduction),
            x, w, b, torch.float64,
        )


def test_options_are_accepted_and_ignored():
    x, w, b, t, _ = _case(torch.float32, "index", seed=6)
    plain = xt.linear_cross_entropy(x, w, t, linear_bias=b)
    chunked = xt.linear_cross_entropy(
        x, w, t, linear_bias=b, options=torch.nn.LinearCrossEntropyOptions(batch_chunk_size=4)
    )
    assert torch.equal(plain, chunked)


# ---- leading shapes and strided views ---------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_next_token_view_matches_torch_and_is_not_copied(dtype, monkeypatch):
    B, T = 3, 6
    x, w, b, tokens, cw = _case(dtype, "index", seed=7, lead=(B, T))
    seen = []
    real = core._linear_cross_entropy

    def spy(input, *args, **kwargs):
        seen.append(input)
        return real(input, *args, **kwargs)

    monkeypatch.setattr(core, "_linear_cross_entropy", spy)
    for reduction in REDUCTIONS:
        kw = dict(weight=cw, reduction=reduction, label_smoothing=0.1)

        def ours(h, w, b):
            return xt.linear_cross_entropy(h[:, :-1], w, tokens[:, 1:], linear_bias=b, **kw)

        def theirs(h, w, b):
            loss = F.linear_cross_entropy(
                h[:, :-1].reshape(-1, D), w, tokens[:, 1:].reshape(-1), linear_bias=b, **kw
            )
            return loss.reshape(B, T - 1) if reduction == "none" else loss

        _assert_same(ours, theirs, x, w, b, dtype)
    # The core was handed the view itself (the strides of the whole (B, T, D)
    # tensor), not a compacted copy.
    view, item = seen[0], x.element_size()
    assert view.shape == (B, T - 1, D)
    assert view.strides == (T * D * item, D * item, item)


def test_leading_shape_matches_flattened_torch():
    x, w, b, t, cw = _case(torch.float64, "ignore", seed=8, lead=(2, 3, 4))
    for reduction in REDUCTIONS:
        kw = dict(weight=cw, reduction=reduction)

        def theirs(x, w, b):
            loss = F.linear_cross_entropy(x.reshape(-1, D), w, t.reshape(-1), linear_bias=b, **kw)
            return loss.reshape(2, 3, 4) if reduction == "none" else loss

        _assert_same(
            lambda x, w, b: xt.linear_cross_entropy(x, w, t, linear_bias=b, **kw),
            theirs, x, w, b, torch.float64,
        )


def test_tensors_are_read_in_place(monkeypatch):
    """No copy of input, weight, bias or target on the way to the core."""
    x, w, b, t, _ = _case(torch.float32, "index", seed=9)
    seen = {}
    real = core._linear_cross_entropy

    def spy(input, linear_weight, target, **kwargs):
        seen.update(input=input, linear_weight=linear_weight, target=target,
                    linear_bias=kwargs["linear_bias"])
        return real(input, linear_weight, target, **kwargs)

    monkeypatch.setattr(core, "_linear_cross_entropy", spy)
    xt.linear_cross_entropy(x, w, t, linear_bias=b)
    for name, tensor in dict(input=x, linear_weight=w, target=t, linear_bias=b).items():
        assert seen[name].__array_interface__["data"][0] == tensor.data_ptr(), name


# ---- z_loss and softcap against the formula ---------------------------------------


def _formula(x, w, t, b, weight, reduction, eps, z_loss, softcap, ignore_index=-100):
    """F.cross_entropy of the (capped) logits + z_loss * lse**2 over non-ignored rows."""
    z = F.linear(x, w, b)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    flat = z.reshape(-1, z.shape[-1])
    tt = t.reshape(-1) if not t.is_floating_point() else t.reshape(-1, z.shape[-1])
    ce = F.cross_entropy(flat, tt, weight=weight, reduction="none", label_smoothing=eps,
                         ignore_index=ignore_index)
    keep = (tt != ignore_index) if not t.is_floating_point() else torch.ones_like(ce, dtype=bool)
    zl = z_loss * torch.logsumexp(flat, dim=-1) ** 2 * keep
    if reduction == "none":
        return (ce + zl).reshape(z.shape[:-1])
    total = ce.sum() if reduction == "sum" else F.cross_entropy(
        flat, tt, weight=weight, label_smoothing=eps, ignore_index=ignore_index
    )
    return total + (zl.sum() if reduction == "sum" else zl.sum() / keep.sum())


@pytest.mark.parametrize("kind", ["ignore", "probs"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_z_loss_and_softcap_match_formula(dtype, kind):
    x, w, b, t, cw = _case(dtype, kind, seed=12 + len(kind))
    x = x * 3  # logits well into tanh's curve
    for reduction in REDUCTIONS:
        for z_loss, softcap in ((1e-2, None), (0.0, 2.5), (3e-2, 4.0)):
            kw = dict(weight=cw, reduction=reduction, label_smoothing=0.1)
            _assert_same(
                lambda x, w, b: xt.linear_cross_entropy(
                    x, w, t, linear_bias=b, z_loss=z_loss, softcap=softcap, **kw),
                lambda x, w, b: _formula(
                    x, w, t, b, cw, reduction, 0.1, z_loss, softcap),
                x, w, b, dtype,
            )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_float64(reduction):
    x, w, b, t, cw = _case(torch.float64, "ignore", seed=21, lead=(5,))
    x, w, b = (a.detach().clone().requires_grad_(True) for a in (x, w, b))

    def f(x, w, b):
        return xt.linear_cross_entropy(
            x, w, t, linear_bias=b, weight=cw, reduction=reduction, label_smoothing=0.1,
            z_loss=1e-2, softcap=1.5,
        )

    assert torch.autograd.gradcheck(f, (x, w, b), eps=1e-6, atol=1e-8)


def test_gradcheck_probability_targets_no_bias():
    x, w, _, t, _ = _case(torch.float64, "probs", seed=22, lead=(2, 3))
    x, w = (a.detach().clone().requires_grad_(True) for a in (x, w))
    assert torch.autograd.gradcheck(
        lambda x, w: xt.linear_cross_entropy(x, w, t, reduction="none", softcap=3.0),
        (x, w), eps=1e-6, atol=1e-8,
    )


# ---- only the gradients asked for -------------------------------------------------


@pytest.fixture
def core_calls(monkeypatch):
    """The return_grad and grad_row_scale of every call to xent's core."""
    calls = []
    real = core._linear_cross_entropy

    def spy(*args, **kwargs):
        calls.append((kwargs.get("return_grad"), kwargs.get("grad_row_scale")))
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "_linear_cross_entropy", spy)
    return calls


def test_frozen_weight_asks_only_for_input(core_calls):
    x, w, _, t, _ = _case(torch.float32, "index", seed=30)
    x.requires_grad_(True)
    loss = xt.linear_cross_entropy(x, w, t)
    loss.backward()
    assert [c[0] for c in core_calls] == [("input",)]
    assert x.grad is not None and not w.requires_grad and w.grad is None
    ref_x = x.detach().clone().requires_grad_(True)
    F.linear_cross_entropy(ref_x, w, t).backward()
    torch.testing.assert_close(x.grad, ref_x.grad, **_tol(torch.float32))


def test_frozen_features_ask_for_weight_and_bias(core_calls):
    x, w, b, t, _ = _case(torch.float32, "index", seed=31)
    w.requires_grad_(True)
    b.requires_grad_(True)
    (2.0 * xt.linear_cross_entropy(x, w, t, linear_bias=b, reduction="sum")).backward()
    assert [c[0] for c in core_calls] == [("linear_weight", "linear_bias")]
    rw, rb = w.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    (2.0 * F.linear_cross_entropy(x, rw, t, linear_bias=rb, reduction="sum")).backward()
    torch.testing.assert_close(w.grad, rw.grad, **_tol(torch.float32))
    torch.testing.assert_close(b.grad, rb.grad, **_tol(torch.float32))


def test_no_grad_computes_loss_only(core_calls):
    x, w, b, t, _ = _case(torch.float32, "index", seed=32)
    x.requires_grad_(True)
    with torch.no_grad():
        loss = xt.linear_cross_entropy(x, w, t, linear_bias=b)
    assert loss.grad_fn is None and [c[0] for c in core_calls] == [False]


def test_none_reduction_forward_loss_only_backward_with_row_scale(core_calls):
    x, w, b, t, _ = _case(torch.float64, "index", seed=33)
    x.requires_grad_(True)
    w.requires_grad_(True)
    losses = xt.linear_cross_entropy(x, w, t, linear_bias=b, reduction="none")
    assert [c[0] for c in core_calls] == [False]
    r = torch.linspace(0.5, 2.0, N, dtype=torch.float64)
    gx, gw = torch.autograd.grad((losses * r).sum(), [x, w])
    assert core_calls[1][0] == ("input", "linear_weight")  # not the bias: no grad
    np.testing.assert_array_equal(np.asarray(core_calls[1][1]).reshape(-1), r.numpy())
    ref_x = x.detach().clone().requires_grad_(True)
    ref_w = w.detach().clone().requires_grad_(True)
    (F.linear_cross_entropy(ref_x, ref_w, t, linear_bias=b, reduction="none") * r).sum().backward()
    torch.testing.assert_close(gx, ref_x.grad, **_tol(torch.float64))
    torch.testing.assert_close(gw, ref_w.grad, **_tol(torch.float64))


def test_retained_graph_backward_twice_accumulates():
    x, w, b, t, _ = _case(torch.float64, "index", seed=34)
    w.requires_grad_(True)
    loss = xt.linear_cross_entropy(x, w, t, linear_bias=b)
    loss.backward(retain_graph=True)
    first = w.grad.clone()
    loss.backward()
    torch.testing.assert_close(w.grad, 2 * first, rtol=1e-14, atol=0)


def test_logits_never_held_whole():
    """Forward and backward stay within xent's block budget plus the gradients: the
    128 MiB of logits (and of their gradient) never exist.  tracemalloc sees the
    arrays xent allocates through NumPy (the gradients handed to autograd are
    among them), not PyTorch's own allocator, which this path does not use."""
    import tracemalloc

    n, d, c = 512, 16, 65536
    g = torch.Generator().manual_seed(80)
    x = torch.randn(n, d, generator=g, requires_grad=True)
    w = (torch.randn(c, d, generator=g) * 0.1).requires_grad_(True)
    t = torch.randint(0, c, (n,), generator=g)
    tracemalloc.start()
    try:
        xt.linear_cross_entropy(x, w, t).backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    grads = (x.numel() + w.numel()) * 4
    assert peak < core.BLOCK_BYTES + grads + (12 << 20) < n * c * 4
    assert torch.isfinite(w.grad).all()


# ---- half precision ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_tensors_computed_in_float32(dtype):
    if dtype == torch.bfloat16:
        pytest.importorskip("ml_dtypes")
    x, w, b, t, _ = _case(torch.float32, "ignore", seed=40)
    x, w, b = (a.to(dtype) for a in (x, w, b))
    for reduction in ("mean", "none"):
        got = _value_and_grads(
            lambda x, w, b: xt.linear_cross_entropy(x, w, t, linear_bias=b, reduction=reduction),
            x, w, b,
        )
        # Reference: the same half values, computed in float32 by PyTorch.
        ref = _value_and_grads(
            lambda x, w, b: F.linear_cross_entropy(
                x.float(), w.float(), t, linear_bias=b.float(), reduction=reduction
            ).to(dtype),
            x, w, b,
        )
        for a, e in zip(got, ref):
            assert a.dtype == dtype
            torch.testing.assert_close(a.float(), e.float(), rtol=1e-2, atol=1e-2)


# ---- errors ------------------------------------------------------------------------


def test_errors_name_the_argument():
    x, w, b, t, cw = _case(torch.float32, "index", seed=50)
    fn = xt.linear_cross_entropy
    with pytest.raises(ValueError, match="input is on device meta"):
        fn(x.to("meta"), w, t)
    with pytest.raises(ValueError, match="linear_weight is on device meta"):
        fn(x, w.to("meta"), t)
    with pytest.raises(TypeError, match="linear_weight has dtype torch.int64"):
        fn(x, w.long(), t)
    with pytest.raises(TypeError, match="linear_bias must be a torch.Tensor"):
        fn(x, w, t, linear_bias=b.numpy())
    with pytest.raises(ValueError, match=r"input\.shape\[-1\] == 6"):
        fn(x[:, :5], w, t)
    with pytest.raises(ValueError, match="softcap"):
        fn(x, w, t, softcap=0.0)
    with pytest.raises(IndexError, match="target"):
        fn(x, w, torch.full_like(t, C))
    with pytest.raises(ValueError, match="linear_weight"):
        fn(x, w.reshape(C, 3, 2), t)  # PyTorch's K-dimensional weights
    with pytest.raises(NotImplementedError, match="weight requires grad"):
        fn(x, w, t, weight=cw.requires_grad_(True))
    probs = torch.softmax(torch.randn(N, C), -1).requires_grad_(True)
    with pytest.raises(NotImplementedError, match="target requires grad"):
        fn(x, w, probs)


def test_double_backward_raises():
    x, w, _, t, _ = _case(torch.float64, "index", seed=51)
    w.requires_grad_(True)
    loss = xt.linear_cross_entropy(x, w, t)
    with pytest.raises(RuntimeError, match="not differentiable"):
        torch.autograd.grad(loss, [w], create_graph=True)


# ---- training -----------------------------------------------------------------------


def _train(loss_fn, dtype, steps=50, lr=0.5):
    """Softmax regression on a fixed random feature map, plain SGD; the loss per step."""
    g = torch.Generator().manual_seed(60)
    raw = torch.randn(256, 10, generator=g, dtype=dtype)
    features = torch.tanh(raw @ torch.randn(10, 32, generator=g, dtype=dtype))  # fixed
    teacher = torch.randn(8, 32, generator=g, dtype=dtype) * 3
    labels = (features @ teacher.T).argmax(dim=1)  # separable by a linear head
    labels[::17] = -100
    w = torch.zeros(8, 32, dtype=dtype, requires_grad=True)
    b = torch.zeros(8, dtype=dtype, requires_grad=True)
    opt = torch.optim.SGD([w, b], lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(features, w, labels, linear_bias=b, label_smoothing=0.05)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.array(losses)


@pytest.fixture
def torch_one_thread():
    """Tiny steps: PyTorch's 2-thread pool only waits for busy cores (tens of ms)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_training_reaches_torchs_loss(dtype, torch_one_thread):
    ours = _train(xt.linear_cross_entropy, dtype)
    theirs = _train(F.linear_cross_entropy, dtype)
    assert ours[-1] < 0.5 * ours[0]  # it learns
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(ours, theirs, rtol=rtol)


def test_transposed_weight_view_matches_torch(monkeypatch):
    """A (C, D) weight stored as (D, C) (e.g. tied embeddings) is read in place."""
    x, w, b, t, _ = _case(torch.float32, "ignore", seed=70)
    stored = w.T.contiguous()  # (D, C) memory
    seen = []
    real = core._linear_cross_entropy

    def spy(input, linear_weight, *args, **kwargs):
        seen.append(linear_weight)
        return real(input, linear_weight, *args, **kwargs)

    monkeypatch.setattr(core, "_linear_cross_entropy", spy)
    for reduction in REDUCTIONS:
        _assert_same(
            lambda x, w, b: xt.linear_cross_entropy(x, w.T, t, linear_bias=b, reduction=reduction),
            lambda x, w, b: F.linear_cross_entropy(x, w.T, t, linear_bias=b, reduction=reduction),
            x, stored, b, torch.float32,
        )
    assert seen[0].shape == (C, D) and seen[0].strides == (4, C * 4)
