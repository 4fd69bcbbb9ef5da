"""PyTorch autograd functions backed by xent's fused kernels (CPU tensors).

``import xent.torch`` (needs PyTorch; ``pip install xent[torch]``) gives drop-in
replacements for four losses, differentiable with ``torch.autograd``:

* `cross_entropy` -- ``torch.nn.functional.cross_entropy``'s arguments, plus ``z_loss``;
* `binary_cross_entropy_with_logits` -- ``F.binary_cross_entropy_with_logits``'s;
* `kl_divergence` -- distillation KL between teacher and student logits;
* `linear_cross_entropy` -- ``F.linear_cross_entropy``'s arguments (PyTorch >= 2.13),
  plus ``z_loss`` and ``softcap``: the classifier layer fused in, the logits never
  held whole (see its docstring: it differentiates the hidden states, the weight and
  the bias, and reads float16/bfloat16 too).

How it works
------------
The tensors are handed to xent as NumPy views (``tensor.detach().numpy()``: no
copy, any strides).  When the differentiated input requires grad, the forward
pass computes the loss *and* its gradient in one pass over the logits (xent's
``return_grad=True``), into one fresh buffer (a NumPy array shared with a tensor);
the backward pass only scales that buffer by the incoming gradient, in place
(nothing at all for the usual ``loss.backward()``, whose incoming gradient is 1).
The buffer is handed over to autograd by the first backward, so
``logits.grad`` can be that very buffer; a second backward through a retained
graph recomputes it from the saved inputs.  For ``reduction="none"`` the incoming
gradient has one entry per row and scales that row: row ``i``'s gradient only
depends on row ``i``'s loss.  The backward is not itself differentiable:
``create_graph=True`` (double backward, gradient penalties) raises rather than
silently giving a zero second-order term.

Gradients flow to the logits only (``input`` / ``q_logits``; for
`linear_cross_entropy`, to ``input``, ``linear_weight`` and ``linear_bias``).
``target``, ``weight``, ``pos_weight`` and the teacher's ``p_logits`` are
constants; passing one that requires grad (with grad mode on) raises
``NotImplementedError`` rather than silently dropping its gradient -- detach it.

Supported tensors: dense CPU tensors of dtype float32 or float64 (integer class
indices for class targets; `linear_cross_entropy` also takes float16 and
bfloat16).  Other devices raise ``ValueError``, other dtypes ``TypeError``, both
naming the argument.  Values and gradients equal PyTorch's up
to rounding, except where xent documents a deliberate difference at non-finite
logits (e.g. a lone ``+inf`` at the target gives loss 0 where PyTorch gives NaN).
xent's kernels use ``xent.get_num_threads()`` threads, not ``torch.get_num_threads()``.
"""

import warnings

import numpy as np
import torch

import xent
from xent._api import linear as _linear

__all__ = [
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "kl_divergence",
    "linear_cross_entropy",
]

_FLOATS = (torch.float32, torch.float64)
# Read as they are by linear_cross_entropy (computed in float32, tile by tile).
_WITH_HALVES = _FLOATS + (torch.float16, torch.bfloat16)


# ---- argument checks (all before any kernel runs) --------------------------------


def _tensor(t, name, fn, kinds="float", floats=_FLOATS):
    """`t` as a NumPy view (no copy) after checking type, device, layout and dtype.

    `floats` are the float dtypes accepted (`_WITH_HALVES` where xent reads
    float16/bfloat16)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(
            f"{fn}: {name} is on device {t.device}; xent.torch computes on CPU tensors only "
            f"(use torch.nn.functional on {t.device.type}, or move it with .cpu())"
        )
    if t.layout != torch.strided:
        raise TypeError(f"{fn}: {name} must be a dense tensor, got layout {t.layout}")
    names = "/".join(str(f).removeprefix("torch.") for f in floats)
    if kinds == "float" and t.dtype not in floats:
        raise TypeError(
            f"{fn}: {name} has dtype {t.dtype}; xent.torch supports {names} here "
            "(convert with .float() or .double())"
        )
    if kinds == "index-or-float" and t.dtype not in floats and (
        t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool
    ):
        raise TypeError(
            f"{fn}: {name} has dtype {t.dtype}; expected integer class indices or "
            f"{names} class probabilities"
        )
    return _numpy_view(t.detach().resolve_neg(), name, fn)


def _numpy_view(t, name, fn):
    """The tensor's memory as a NumPy array (any strides, no copy); bfloat16, which
    NumPy lacks, through ml_dtypes' bfloat16 (the same 2-byte layout)."""
    if t.dtype != torch.bfloat16:
        return t.numpy()
    try:
        import ml_dtypes
    except ImportError:
        raise TypeError(
            f"{fn}: {name} is bfloat16, which xent reads through the ml_dtypes package: "
            "pip install ml_dtypes, or convert with .float()"
        ) from None
    return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)


def _optional(t, name, fn, floats=_FLOATS):
    return None if t is None else _tensor(t, name, fn, floats=floats)


def _constants(fn, grad_wrt, **tensors):
    """Raise if a tensor we do not differentiate would need a gradient."""
    if not torch.is_grad_enabled():
        return
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.requires_grad:
            raise NotImplementedError(
                f"{fn}: {name} requires grad, but xent.torch differentiates only with "
                f"respect to {grad_wrt}; pass {name}.detach()"
            )


def _reduction(size_average, reduce, reduction):
    """torch's legacy size_average/reduce arguments, as F.* interprets them."""
    if size_average is None and reduce is None:
        return reduction
    warnings.warn(
        "size_average and reduce args will be deprecated, please use reduction instead.",
        UserWarning,
        stacklevel=3,
    )
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def _wants_grad(t):
    return torch.is_grad_enabled() and t.requires_grad


# ---- the autograd function shared by the three losses ----------------------------


class _Loss:
    """One loss call: runs xent on NumPy views and scales its gradient for backward.

    Subclasses define ``run(wrt_array, grad_array_or_None) -> loss`` and
    ``rows(grad_output)``: how a "none" incoming gradient broadcasts over the
    gradient buffer.
    """

    reduction = "mean"

    def compute(self, wrt, need_grad):
        x = wrt.detach().numpy()
        grad = None
        if need_grad:
            # Allocated by NumPy, which asks for transparent huge pages on Linux:
            # first-touch page faults on a fresh N x C buffer cost as much as the
            # kernel itself with 4 KiB pages (torch.empty_like gets those).
            grad = np.empty(x.shape, x.dtype)
        loss = self.run(x, grad)
        return torch.from_numpy(np.asarray(loss)), None if grad is None else torch.from_numpy(grad)

    def scale(self, grad, grad_output):
        """grad * d(outer)/d(loss), in place in the buffer we own."""
        if self.reduction == "none":
            return grad.mul_(self.rows(grad_output))
        if grad_output.item() != 1.0:  # loss.backward() passes exactly 1: nothing to do
            grad.mul_(grad_output)
        return grad


class _FusedLossFunction(torch.autograd.Function):
    """Forward: the loss and its gradient in one xent call.  Backward: scale it.

    Applied only when `wrt` (the differentiated tensor) needs a gradient.
    `others` are saved so that autograd checks, should a second backward through a
    retained graph have to recompute the gradient, that nothing was modified in
    place in between.
    """

    @staticmethod
    def forward(ctx, loss, wrt, *others):
        out, ctx.grad = loss.compute(wrt, True)
        ctx.loss = loss
        ctx.n_others = len(others)
        ctx.save_for_backward(wrt, *others)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        # Not differentiable itself.  With create_graph=True the engine runs this in
        # grad mode; the buffer has no graph, so a second-order term would silently be
        # zero (as under once_differentiable, when grad_output needs no grad): refuse.
        if torch.is_grad_enabled():
            raise RuntimeError(
                "xent.torch: the backward of this loss is not differentiable (no "
                "create_graph=True / double backward); use torch.nn.functional for that"
            )
        grad, ctx.grad = ctx.grad, None  # handed over: autograd may keep it as .grad
        if grad is None:  # an earlier backward took the buffer (retain_graph=True)
            wrt = ctx.saved_tensors[0]  # (checks that no input was modified in place)
            _, grad = ctx.loss.compute(wrt, True)
        grad = ctx.loss.scale(grad, grad_output)
        return (None, grad) + (None,) * ctx.n_others


# ---- cross-entropy ---------------------------------------------------------------


class _CrossEntropy(_Loss):
    def __init__(self, target, weight, axis, ignore_index, reduction, label_smoothing, z_loss):
        self.target, self.weight, self.axis = target, weight, axis
        self.ignore_index, self.reduction = ignore_index, reduction
        self.label_smoothing, self.z_loss = label_smoothing, z_loss

    def run(self, x, grad):
        kw = dict(
            axis=self.axis, weight=self.weight, ignore_index=self.ignore_index,
            reduction=self.reduction, label_smoothing=self.label_smoothing, z_loss=self.z_loss,
        )
        if grad is None:
            return xent.cross_entropy(x, self.target, **kw)
        return xent.cross_entropy(x, self.target, return_grad=True, grad_out=grad, **kw)[0]

    def rows(self, grad_output):
        # "none" gives one loss per row: the input's shape without the class dim
        return grad_output.unsqueeze(self.axis) if grad_output.dim() else grad_output


def cross_entropy(
    input,
    target,
    weight=None,
    size_average=None,
    ignore_index=-100,
    reduce=None,
    reduction="mean",
    label_smoothing=0.0,
    *,
    z_loss=0.0,
):
    """Cross-entropy of logits and targets, ``torch.nn.functional.cross_entropy``'s drop-in.

    Same arguments, shapes and semantics as ``F.cross_entropy`` (the class
    dimension is dim 1 for inputs of 2 or more dimensions, dim 0 for a single
    unbatched row), computed by `xent.cross_entropy`: one pass over the logits
    gives the loss and, when `input` requires grad, its gradient; backward only
    scales that gradient.

    Parameters
    ----------
    input : torch.Tensor
        Logits, ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``; float32 or float64,
        on the CPU, any strides.  The only argument gradients flow to.
    target : torch.Tensor
        Class indices (integer tensor with `input`'s shape without dim 1), or
        class probabilities (floating, `input`'s shape).
    weight : torch.Tensor, optional
        Class weights, shape ``(C,)``.
    size_average, reduce : bool, optional
        Deprecated, as in PyTorch: use `reduction`.
    ignore_index : int, optional
        Class-index targets equal to it contribute exactly 0 (default -100).
    reduction : {"mean", "sum", "none"}, optional
        As PyTorch: "mean" divides by the summed weight of the non-ignored
        targets (the number of rows for probability targets).
    label_smoothing : float in [0, 1], optional
        As PyTorch (Szegedy et al. 2016).
    z_loss : float >= 0, keyword-only, optional
        xent's extra: adds ``z_loss * logsumexp(row)**2`` per non-ignored row
        (PaLM); under "mean" divided by the number of non-ignored rows.  Finite:
        ``inf`` and NaN raise `ValueError`.

    Returns
    -------
    torch.Tensor
        0-d for "mean"/"sum", the target's (row) shape for "none"; `input`'s dtype.

    Raises
    ------
    TypeError
        An argument that is not a tensor, or of an unsupported dtype or layout.
    ValueError
        A tensor that is not on the CPU; shape mismatches, unknown `reduction`,
        bad `label_smoothing`, `weight` (from xent, naming the argument).
    IndexError
        A class index outside ``[0, C)`` that is not `ignore_index`.
    NotImplementedError
        `target` or `weight` requires grad (only `input` is differentiated).

    Examples
    --------
    >>> import torch, xent.torch
    >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], requires_grad=True)
    >>> loss = xent.torch.cross_entropy(logits, torch.tensor([0, 1]))
    >>> loss.backward()
    >>> round(loss.item(), 4), abs(logits.grad.sum().item()) < 1e-6
    (0.3606, True)
    """
    fn = "cross_entropy"
    reduction = _reduction(size_average, reduce, reduction)
    x = _tensor(input, "input", fn)
    t = _tensor(target, "target", fn, kinds="index-or-float")
    w = _optional(weight, "weight", fn)
    _constants(fn, "input", target=target, weight=weight)
    if x.ndim == 0:
        raise ValueError(f"{fn}: input must have a class dimension, got a 0-d tensor")
    axis = 1 if x.ndim >= 2 else 0
    if t.dtype.kind == "f":
        expected = x.shape
    else:
        expected = x.shape[:axis] + x.shape[axis + 1 :]
    if t.shape != expected:
        kind = "class probabilities" if t.dtype.kind == "f" else "class indices"
        raise ValueError(
            f"{fn}: target has shape {tuple(t.shape)}, but {kind} for input of shape "
            f"{tuple(x.shape)} must have shape {tuple(expected)}"
        )
    loss = _CrossEntropy(t, w, axis, ignore_index, reduction, label_smoothing, z_loss)
    need_grad = _wants_grad(input)
    if not need_grad:  # plain call, no graph: validation and loss from xent alone
        return loss.compute(input, False)[0]
    return _FusedLossFunction.apply(loss, input, target, weight)


# ---- binary cross-entropy with logits --------------------------------------------


class _BCEWithLogits(_Loss):
    def __init__(self, target, weight, pos_weight, reduction):
        self.target, self.weight, self.pos_weight = target, weight, pos_weight
        self.reduction = reduction

    def run(self, x, grad):
        kw = dict(weight=self.weight, pos_weight=self.pos_weight, reduction=self.reduction)
        if grad is None:
            return xent.binary_cross_entropy_with_logits(x, self.target, **kw)
        return xent.binary_cross_entropy_with_logits(
            x, self.target, return_grad=True, grad_out=grad, **kw
        )[0]

    def rows(self, grad_output):
        return grad_output  # elementwise loss: one incoming gradient per element


def binary_cross_entropy_with_logits(
    input,
    target,
    weight=None,
    size_average=None,
    reduce=None,
    reduction="mean",
    pos_weight=None,
):
    """Binary cross-entropy from logits, ``F.binary_cross_entropy_with_logits``'s drop-in.

    Same arguments and semantics as PyTorch's (stable ``softplus`` form,
    `weight` broadcast to `input`'s shape, `pos_weight` broadcast along the last
    dimension), computed by `xent.binary_cross_entropy_with_logits` with the
    gradient in the same pass.

    Parameters
    ----------
    input : torch.Tensor
        Logits, any shape; float32 or float64 on the CPU.  Gradients flow here only.
    target : torch.Tensor
        Targets in [0, 1] (soft targets allowed), `input`'s shape.
    weight : torch.Tensor, optional
        Element weights, broadcastable to `input`'s shape.
    size_average, reduce : bool, optional
        Deprecated, as in PyTorch: use `reduction`.
    reduction : {"mean", "sum", "none"}, optional
        "mean" divides by the number of elements.
    pos_weight : torch.Tensor, optional
        Weight of the positive term, broadcast along the last dimension.

    Returns
    -------
    torch.Tensor
        0-d for "mean"/"sum", `input`'s shape for "none"; `input`'s dtype.

    Raises
    ------
    TypeError, ValueError, NotImplementedError
        As for `cross_entropy` (`target`, `weight`, `pos_weight` are constants).

    Notes
    -----
    At infinite logits the loss is its limit (``x = +inf, y = 1`` gives 0, where
    PyTorch computes ``0 * inf`` and returns NaN).

    Examples
    --------
    >>> import torch, xent.torch
    >>> x = torch.tensor([[2.0, -1.0], [0.0, 3.0]], requires_grad=True)
    >>> y = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    >>> loss = xent.torch.binary_cross_entropy_with_logits(x, y)
    >>> loss.backward()
    >>> round(loss.item(), 6)
    0.295481
    """
    fn = "binary_cross_entropy_with_logits"
    reduction = _reduction(size_average, reduce, reduction)
    x = _tensor(input, "input", fn)
    y = _tensor(target, "target", fn)
    w = _optional(weight, "weight", fn)
    pw = _optional(pos_weight, "pos_weight", fn)
    _constants(fn, "input", target=target, weight=weight, pos_weight=pos_weight)
    if y.shape != x.shape:
        raise ValueError(
            f"{fn}: target has shape {tuple(y.shape)}, input {tuple(x.shape)}; they must match"
        )
    loss = _BCEWithLogits(y, w, pw, reduction)
    if not _wants_grad(input):
        return loss.compute(input, False)[0]
    return _FusedLossFunction.apply(loss, input, target, weight, pos_weight)


# ---- distillation KL -------------------------------------------------------------


class _KLDivergence(_Loss):
    def __init__(self, p, axis, temperature, reduction):
        self.p, self.axis, self.temperature, self.reduction = p, axis, temperature, reduction

    def run(self, q, grad):
        kw = dict(axis=self.axis, temperature=self.temperature, reduction=self.reduction)
        if grad is None:
            return xent.kl_divergence(self.p, q, **kw)
        return xent.kl_divergence(self.p, q, return_grad=True, grad_out=grad, **kw)[0]

    def rows(self, grad_output):
        return grad_output.unsqueeze(self.axis) if grad_output.dim() else grad_output


def kl_divergence(p_logits, q_logits, *, dim=-1, temperature=1.0, reduction="mean"):
    """``KL(softmax(p/T) || softmax(q/T))`` per row, differentiable in `q_logits`.

    The distillation loss of `xent.kl_divergence` as an autograd function:
    teacher logits `p_logits` (a constant), student logits `q_logits` (gets the
    gradient, computed in the same pass as the loss).  Equals
    ``F.kl_div(F.log_softmax(q / T, dim), F.log_softmax(p / T, dim),
    log_target=True, reduction="none").sum(dim)`` reduced over rows, without its
    N×C temporaries.

    Parameters
    ----------
    p_logits, q_logits : torch.Tensor
        Teacher and student logits of the same shape, float32 or float64 on the CPU.
    dim : int, optional
        The class dimension (default: last, as for language models' ``(B, T, V)``).
    temperature : float > 0, optional
        Both logit tensors are divided by it; the result is not multiplied by ``T**2``.
    reduction : {"mean", "sum", "none"}, optional
        "none": one value per row (the shape without `dim`); "mean": the average
        over rows; "sum": their sum.

    Returns
    -------
    torch.Tensor
        The student's dtype (float64 if either input is float64).

    Raises
    ------
    TypeError, ValueError
        As for `cross_entropy`.
    NotImplementedError
        `p_logits` requires grad: detach the teacher.

    Examples
    --------
    >>> import torch, xent.torch
    >>> p = torch.tensor([[1.0, 2.0, 3.0]])
    >>> q = torch.zeros(1, 3, requires_grad=True)
    >>> loss = xent.torch.kl_divergence(p, q, temperature=2.0)
    >>> loss.backward()
    >>> round(loss.item(), 4)
    0.0784
    """
    fn = "kl_divergence"
    p = _tensor(p_logits, "p_logits", fn)
    q = _tensor(q_logits, "q_logits", fn)
    _constants(fn, "q_logits", p_logits=p_logits)
    if p.shape != q.shape:
        raise ValueError(
            f"{fn}: p_logits has shape {tuple(p.shape)}, q_logits {tuple(q.shape)}; they must match"
        )
    if q.ndim == 0:
        raise ValueError(f"{fn}: q_logits must have a class dimension, got a 0-d tensor")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -q.ndim <= dim < q.ndim:
        raise ValueError(f"{fn}: dim={dim!r} is out of range for tensors of dimension {q.ndim}")
    if p.dtype != q.dtype:
        raise TypeError(
            f"{fn}: p_logits has dtype {p_logits.dtype}, q_logits {q_logits.dtype}; they must match"
        )
    loss = _KLDivergence(p, dim % q.ndim, temperature, reduction)
    if not _wants_grad(q_logits):
        return loss.compute(q_logits, False)[0]
    return _FusedLossFunction.apply(loss, q_logits, p_logits)


# ---- cross-entropy from hidden states --------------------------------------------

_LINEAR_GRADS = ("input", "linear_weight", "linear_bias")


class _LinearCall:
    """One linear_cross_entropy call: NumPy views of the tensors and the options,
    run by xent's core; its gradients come back as tensors of the arguments' dtypes."""

    def __init__(self, x, w, b, target, weight, options, dtypes):
        self.x, self.w, self.b, self.target, self.weight = x, w, b, target, weight
        self.options = options  # ignore_index, reduction, label_smoothing, z_loss, softcap
        self.dtypes = dtypes  # of input, linear_weight, linear_bias: their gradients'
        self.reduction = options["reduction"]
        self.loss_dtype = torch.promote_types(dtypes[0], dtypes[1])

    def run(self, names=(), row_scale=None):
        """The loss (a tensor) and, for `names`, the gradient tensors (None for the
        others); `row_scale` multiplies each row's gradient ("none" backward)."""
        out = _linear._linear_cross_entropy(  # the core, plus per-row gradient factors
            self.x, self.w, self.target, linear_bias=self.b, weight=self.weight,
            return_grad=tuple(names) if names else False, grad_row_scale=row_scale,
            **self.options,
        )
        loss, grads = out if names else (out, None)
        loss = torch.from_numpy(np.asarray(loss)).to(self.loss_dtype)
        if grads is None:
            return loss, (None, None, None)
        tensors = tuple(
            None if g is None else torch.from_numpy(g).to(dt)  # no copy if same dtype
            for g, dt in zip(grads, self.dtypes)
        )
        return loss, tensors


class _LinearCrossEntropyFunction(torch.autograd.Function):
    """Forward: the loss, and for "mean"/"sum" the gradients of the tensors that
    require grad, in one xent call.  Backward: scale them by the (scalar) incoming
    gradient; for "none", one more xent call with the incoming gradient as per-row
    factors (the forward cannot know them)."""

    @staticmethod
    def forward(ctx, call, names, input, linear_weight, linear_bias, target, weight):
        ctx.call, ctx.names = call, names
        ctx.save_for_backward(input, linear_weight, linear_bias, target, weight)
        if call.reduction == "none":
            return call.run()[0]
        loss, ctx.grads = call.run(names)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        if torch.is_grad_enabled():  # create_graph=True: see _FusedLossFunction.backward
            raise RuntimeError(
                "xent.torch: the backward of this loss is not differentiable (no "
                "create_graph=True / double backward); use torch.nn.functional for that"
            )
        ctx.saved_tensors  # noqa: B018 -- raises if an input was modified in place
        call = ctx.call
        if call.reduction == "none":
            scale = grad_output.detach().to(torch.float64).numpy()
            grads = call.run(ctx.names, row_scale=scale)[1]
        else:
            grads, ctx.grads = ctx.grads, None  # handed over: autograd may keep them as .grad
            if grads is None:  # an earlier backward took them (retain_graph=True)
                grads = call.run(ctx.names)[1]
            if grad_output.item() != 1.0:  # loss.backward() passes exactly 1
                grads = tuple(None if g is None else g.mul_(grad_output) for g in grads)
        return (None, None) + tuple(grads) + (None, None)


def linear_cross_entropy(
    input,
    linear_weight,
    target,
    *,
    linear_bias=None,
    weight=None,
    reduction="mean",
    ignore_index=None,
    label_smoothing=0.0,
    options=None,
    z_loss=0.0,
    softcap=None,
):
    """Cross-entropy of ``input @ W.T + b``, ``F.linear_cross_entropy``'s drop-in.

    Same arguments and semantics as ``torch.nn.functional.linear_cross_entropy``
    (PyTorch >= 2.13), that is ``F.cross_entropy(F.linear(input, linear_weight,
    linear_bias), target, ...)``, computed by `xent.linear_cross_entropy`: the
    logits exist only one block of rows at a time (a few tens of MiB whatever N
    and C), and the forward pass computes, with the loss, the gradients of exactly
    those of `input`, `linear_weight` and `linear_bias` that require grad (a frozen
    classifier costs no weight-gradient product).  Backward only scales them.

    Parameters
    ----------
    input : torch.Tensor
        Hidden states ``(D,)``, ``(N, D)`` or -- beyond PyTorch, which takes only
        those two -- any leading shape ``(..., D)`` such as ``(B, T, D)``, any
        strides (``hidden[:, :-1]`` is read in place).  float32, float64, float16
        or bfloat16 (bfloat16 needs the ml_dtypes package), on the CPU.
    linear_weight : torch.Tensor
        ``(C, D)``.  PyTorch's K-dimensional weights ``(C, d1, ..., dK, D)`` are not
        supported (`ValueError`).
    target : torch.Tensor
        Class indices of shape ``input.shape[:-1]`` (integer tensor), or class
        probabilities of shape ``input.shape[:-1] + (C,)`` (floating).  A constant.
    linear_bias : torch.Tensor of shape (C,), optional
    weight : torch.Tensor of shape (C,), optional
        Class weights, a constant.
    reduction : {"mean", "sum", "none"}, optional
        As ``F.cross_entropy``.
    ignore_index : int or None, optional
        None (the default, as PyTorch's) means -100.
    label_smoothing : float in [0, 1], optional
    options : optional
        PyTorch's ``LinearCrossEntropyOptions`` (how its own implementation chunks
        the batch): accepted for compatibility and ignored -- xent always works
        block by block, with a fixed memory budget.
    z_loss : float >= 0, optional
        xent's extra: ``z_loss * logsumexp(row)**2`` per non-ignored row, as in
        `cross_entropy`.
    softcap : float > 0, optional
        xent's extra: the logits are capped as ``softcap * tanh(z / softcap)``
        (Gemma 2) before the loss; the gradients include its chain rule.

    Returns
    -------
    torch.Tensor
        0-d for "mean"/"sum", ``input.shape[:-1]`` for "none"; the dtype of
        ``input`` and ``linear_weight`` promoted together.

    Raises
    ------
    TypeError, ValueError, IndexError
        As for `cross_entropy`; also ``input.shape[-1] != linear_weight.shape[1]``,
        a bias that is not ``(C,)``, ``softcap <= 0`` (`ValueError`).
    NotImplementedError
        `target` or `weight` requires grad (they are constants).

    Notes
    -----
    ``reduction="none"``: the forward pass computes the loss only (one matrix
    product), since the per-row factors of the gradient arrive with backward;
    backward then runs the logits again with those factors applied -- one more
    product than for "mean"/"sum", and no N×C memory either way.

    float16/bfloat16 tensors are computed in float32 (the loss and gradients are
    rounded to the tensors' dtypes), float32 and float64 in their own precision.
    The matrix products use SciPy's BLAS with ``xent.get_num_threads()`` threads.
    Double backward (``create_graph=True``) raises.

    Examples
    --------
    >>> import torch, xent.torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> hidden = torch.randn(2, 5, 8)                      # (B, T, D)
    >>> head = torch.randn(11, 8, requires_grad=True)      # (C, D)
    >>> tokens = torch.randint(0, 11, (2, 5))
    >>> loss = xent.torch.linear_cross_entropy(hidden[:, :-1], head, tokens[:, 1:])
    >>> loss.backward()
    >>> ref = torch.nn.functional.cross_entropy(
    ...     (hidden[:, :-1] @ head.T).reshape(-1, 11), tokens[:, 1:].reshape(-1))
    >>> bool(torch.isclose(loss, ref)), head.grad.shape
    (True, torch.Size([11, 8]))
    """
    fn = "linear_cross_entropy"
    x = _tensor(input, "input", fn, floats=_WITH_HALVES)
    w = _tensor(linear_weight, "linear_weight", fn, floats=_WITH_HALVES)
    b = _optional(linear_bias, "linear_bias", fn, floats=_WITH_HALVES)
    t = _tensor(target, "target", fn, kinds="index-or-float", floats=_WITH_HALVES)
    cw = _optional(weight, "weight", fn, floats=_WITH_HALVES)
    _constants(fn, "input, linear_weight and linear_bias", target=target, weight=weight)
    kw = dict(
        ignore_index=-100 if ignore_index is None else ignore_index, reduction=reduction,
        label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
    )
    differentiable = (input, linear_weight, linear_bias)
    call = _LinearCall(x, w, b, t, cw, kw, tuple(getattr(a, "dtype", None) for a in differentiable))
    names = tuple(
        n for n, a in zip(_LINEAR_GRADS, differentiable) if a is not None and _wants_grad(a)
    )
    if not names:  # no graph: validation and loss from xent alone
        return call.run()[0]
    return _LinearCrossEntropyFunction.apply(
        call, names, input, linear_weight, linear_bias, target, weight
    )
