"""Binary cross-entropy, from logits and from probabilities.

Semantics are PyTorch's ``torch.nn.functional.binary_cross_entropy_with_logits``
and ``binary_cross_entropy``, formula for formula, with the SPEC's rules for
non-finite inputs (the loss returns its limit at infinite logits).  Every check
runs before any kernel, so a call that raises has written nothing.
"""

import math

import numpy as np

from xent._api import pointwise as _pointwise
from xent._runtime.dispatch import kernels as _kernels
from xent._api.validation import (
    as_logits,
    as_real_array,
    check_grad_out,
    check_reduction,
    check_same_shape,
    copy_rounded,
)


def binary_cross_entropy_with_logits(
    logits,
    target,
    *,
    weight=None,
    pos_weight=None,
    reduction="mean",
    return_grad=False,
    grad_out=None,
):
    """Binary cross-entropy between targets and ``sigmoid(logits)``, computed stably.

    Per element, as in PyTorch's ``binary_cross_entropy_with_logits``::

        l = w * [(1 - y) * x - (1 + (pw - 1) * y) * log(sigmoid(x))]
          = w * [pw * y * softplus(-x) + (1 - y) * softplus(x)]

    with ``softplus(z) = max(z, 0) + log1p(exp(-|z|))``, which neither overflows
    nor loses digits to cancellation.  One pass over the data gives the loss and,
    optionally, its gradient; no temporary the size of the input is allocated.

    Parameters
    ----------
    logits : array_like
        Logits ``x``, any shape.  float32 and float64 are computed in their own
        precision; float16/bfloat16 are read as they are and computed in float32;
        integer and bool inputs are converted to float64.
    target : array_like
        Targets ``y`` (usually in [0, 1]; soft targets allowed), with exactly the
        shape of `logits`.  A target of another dtype than the computation dtype
        is converted to it (a copy of the target).
    weight : array_like, optional
        Element weights ``w``, broadcast to the shape of `logits` (read through a
        zero-stride view, never expanded in memory).
    pos_weight : array_like, optional
        Weight ``pw`` of the positive term, broadcast along the last axis: a
        scalar or an array of length ``logits.shape[-1]`` (any shape that
        broadcasts to the logits' shape is accepted).
    reduction : {"mean", "sum", "none"}, optional
        ``"mean"`` (default) divides the sum by the number of elements (NaN for an
        empty input); ``"sum"`` adds the losses; ``"none"`` returns them.
    return_grad : bool, optional
        Also return ``d loss / d logits`` for the chosen reduction (for
        ``"none"``: the gradient of the sum), ``w * (sigmoid(x) * (1 - y + pw*y)
        - pw*y)``, divided by the number of elements for ``"mean"``.
    grad_out : ndarray, optional
        Array of the logits' shape for the gradient (needs ``return_grad=True``):
        any floating dtype, ``ml_dtypes.bfloat16`` included (the gradient is
        rounded to it when it is not the computation dtype), with no two
        elements sharing memory.  It may be `logits` itself, which is then
        overwritten in place.

    Returns
    -------
    loss : numpy scalar or ndarray
        A NumPy scalar of the computation dtype (float32 for float32/16-bit
        logits, else float64) for ``"mean"``/``"sum"``; an array of the logits'
        shape for ``"none"``.  Sums are accumulated in float64, in an order that
        does not depend on the number of threads.
    grad : ndarray
        Only with ``return_grad=True``: the gradient, of the logits' shape and
        computation dtype (or `grad_out`).

    Raises
    ------
    TypeError
        Complex, object or string `logits`, `target`, `weight` or `pos_weight`;
        a `grad_out` that is not a floating NumPy array.
    ValueError
        `target` not of the logits' shape; `weight` or `pos_weight` that do not
        broadcast to it; unknown `reduction`; `grad_out` of the wrong shape,
        read-only, self-overlapping, or given without ``return_grad=True``.

    Notes
    -----
    A term whose coefficient is exactly zero contributes zero even where its
    softplus is infinite, so the loss is its limit at infinite logits:
    ``x = +inf, y = 1`` and ``x = -inf, y = 0`` give 0, ``x = +inf, y = 0``
    gives ``+inf`` (PyTorch computes ``0 * inf`` there and returns NaN).  The
    gradient at ``x = +inf`` is ``w * (1 - y)`` and at ``x = -inf`` is
    ``-w * pw * y``.  A NaN logit gives a NaN loss and gradient.

    Examples
    --------
    >>> import numpy as np, xent
    >>> x = np.array([[2.0, -1.0], [0.0, 3.0]])
    >>> y = np.array([[1.0, 0.0], [1.0, 1.0]])
    >>> round(float(xent.binary_cross_entropy_with_logits(x, y)), 6)
    0.295481
    >>> loss, grad = xent.binary_cross_entropy_with_logits(
    ...     x, y, pos_weight=np.array([2.0, 1.0]), reduction="sum", return_grad=True)
    >>> np.round(grad, 4)
    array([[-0.2384,  0.2689],
           [-1.    , -0.0474]])
    """
    lg, y, w = _check_args(logits, "logits", "the logits' shape", target, weight, reduction)
    x = lg.array
    compute = lg.compute
    # PyTorch: pos_weight is broadcast with the target along the class (last) axis.
    pw = _pointwise.broadcast_shape_check(pos_weight, "pos_weight", x.shape, "the logits' shape")
    return_grad = bool(return_grad)
    check_grad_out(grad_out, x.shape, return_grad)
    # ---- everything is valid: nothing below raises on user input ----

    shape = x.shape
    numel = math.prod(shape)
    x_k, half = _pointwise.half_code(lg)
    y_k = _pointwise.kernel_operand(y, compute)
    w_k = _pointwise.broadcast_operand(w, shape, compute)
    pw_k = _pointwise.broadcast_operand(pw, shape, compute)

    loss = np.empty(shape, compute) if reduction == "none" else None
    grad = grad_direct = None
    if return_grad:
        if grad_out is not None:
            grad_direct = _pointwise.direct_output(
                grad_out, compute, (x_k, y_k, w_k, pw_k), inplace_of=x_k
            )
        grad = grad_direct if grad_direct is not None else np.empty(shape, compute)
    # "mean": d(sum/numel)/dx, the 1/numel applied per element in the same pass.
    scale = 1.0 / numel if reduction == "mean" and numel else 1.0

    total, _, _ = _pointwise.run(
        _kernels.BCE_WITH_LOGITS, shape, (x_k, y_k, w_k, pw_k, loss, grad), half, scale
    )

    result = loss if reduction == "none" else _pointwise.finish(total, reduction, numel, compute)
    if not return_grad:
        return result
    if grad_out is not None and grad_direct is None:
        copy_rounded(grad_out, grad)
        grad = grad_out
    return result, grad


def binary_cross_entropy(probs, target, *, weight=None, reduction="mean"):
    """Binary cross-entropy between targets and probabilities.

    Per element, as in PyTorch's ``binary_cross_entropy``::

        l = -w * [y * max(log(p), -100) + (1 - y) * max(log(1 - p), -100)]

    Each log is clamped at -100 (PyTorch's convention), so ``p = 0`` or ``p = 1``
    give a finite loss.  ``log(1 - p)`` is computed as ``log1p(-p)``.

    Parameters
    ----------
    probs : array_like
        Probabilities ``p`` in [0, 1], any shape (dtype rules as for logits
        elsewhere: float16/bfloat16 computed in float32, integers in float64).
    target : array_like
        Targets ``y`` in [0, 1], with exactly the shape of `probs`; converted to
        the computation dtype when it has another dtype.
    weight : array_like, optional
        Element weights ``w``, broadcast to the shape of `probs` (zero-stride
        view, never expanded in memory).
    reduction : {"mean", "sum", "none"}, optional
        ``"mean"`` (default) divides the sum by the number of elements (NaN for an
        empty input); ``"sum"`` adds the losses; ``"none"`` returns them.

    Returns
    -------
    numpy scalar or ndarray
        A NumPy scalar of the computation dtype for ``"mean"``/``"sum"``
        (accumulated in float64, independent of the thread count); an array of
        the probabilities' shape for ``"none"``.

    Raises
    ------
    TypeError
        Complex, object or string `probs`, `target` or `weight`.
    ValueError
        `target` not of the shape of `probs`; `weight` that does not broadcast to
        it; unknown `reduction`; a probability or a target outside [0, 1] or NaN
        (as PyTorch, which rejects both); the message names the argument, the
        first offending value in C order and its index.

    Examples
    --------
    >>> import numpy as np, xent
    >>> p = np.array([0.9, 0.2, 0.0])
    >>> y = np.array([1.0, 0.0, 1.0])
    >>> xent.binary_cross_entropy(p, y, reduction="none")  # log(0) clamped at -100
    array([  0.10536052,   0.22314355, 100.        ])
    >>> xent.binary_cross_entropy(np.array([1.5]), np.array([1.0]))
    Traceback (most recent call last):
        ...
    ValueError: probs: expected probabilities in [0, 1], got 1.5 at index (0,)
    """
    lg, y, w = _check_args(probs, "probs", "the shape of probs", target, weight, reduction)
    p = lg.array
    compute = lg.compute

    shape = p.shape
    numel = math.prod(shape)
    p_k, half = _pointwise.half_code(lg)
    y_k = _pointwise.kernel_operand(y, compute)
    w_k = _pointwise.broadcast_operand(w, shape, compute)
    loss = np.empty(shape, compute) if reduction == "none" else None

    # The range check of p and y (PyTorch's "all elements of input/target should be
    # between 0 and 1") runs inside the same pass; on failure only `loss`, which
    # nobody else has seen, was written.
    total, bad_p, bad_y = _pointwise.run(_kernels.BCE, shape, (p_k, y_k, w_k, None, loss, None), half)
    if bad_p >= 0:
        _raise_out_of_range("probs", "probabilities", p, bad_p)
    if bad_y >= 0:
        _raise_out_of_range("target", "targets", y, bad_y)

    if reduction == "none":
        return loss
    return _pointwise.finish(total, reduction, numel, compute)


def _check_args(values, name, what, target, weight, reduction):
    """Validate what both losses take: (Logits of `values`, target array, weight
    array or None).  `name` is the argument `values` came in, `what` how errors
    call its shape."""
    lg = as_logits(values, name)
    y = as_real_array(target, "target")
    check_same_shape(lg.array, y, name, "target")
    check_reduction(reduction)
    return lg, y, _pointwise.broadcast_shape_check(weight, "weight", lg.array.shape, what)


def _raise_out_of_range(name, what, a, flat_index):
    index = tuple(int(i) for i in np.unravel_index(flat_index, a.shape))
    value = float(a[index])
    raise ValueError(f"{name}: expected {what} in [0, 1], got {value!r} at index {index}")
