"""kl_div: a drop-in for ``torch.nn.functional.kl_div`` on NumPy arrays."""

import math

import numpy as np

from xent._api import pointwise as _pointwise
from xent._runtime.dispatch import kernels as _kernels
from xent._api.validation import as_logits, as_real_array, check_reduction, check_same_shape

KL_REDUCTIONS = ("none", "mean", "sum", "batchmean")


def kl_div(input, target, *, reduction="mean", log_target=False):  # noqa: A002 (torch's name)
    """Pointwise Kullback-Leibler divergence terms, as ``torch.nn.functional.kl_div``.

    `input` holds log-probabilities ``log q`` and `target` holds probabilities
    ``p`` (or ``log p`` with ``log_target=True``).  Per element, as in PyTorch::

        log_target=False:  l = xlogy(p, p) - p * input
        log_target=True:   l = exp(t) * (t - input)

    so that ``sum(l)`` over a distribution is ``KL(p || q)``.

    Parameters
    ----------
    input : array_like
        ``log q``, any shape.  float32 and float64 are computed in their own
        precision; float16/bfloat16 are read as they are and computed in float32;
        integer and bool inputs are converted to float64.
    target : array_like
        ``p`` (or ``log p``), with exactly the shape of `input` (no
        broadcasting).  Converted to the computation dtype when it has another
        dtype (a copy of the target).
    reduction : {"mean", "batchmean", "sum", "none"}, optional
        ``"mean"`` (default, as PyTorch) divides the sum by the number of
        elements; ``"batchmean"`` divides it by ``input.shape[0]`` (the sum
        itself for a 0-d input, as PyTorch), which is the mathematical KL
        divergence per sample; ``"sum"`` adds the terms; ``"none"`` returns them.
        A zero denominator gives NaN.
    log_target : bool, optional
        Whether `target` holds log-probabilities.

    Returns
    -------
    numpy scalar or ndarray
        A NumPy scalar of the computation dtype (float32 for float32/16-bit
        input, else float64) for the reductions, accumulated in float64 in an
        order independent of the number of threads; an array of the input's
        shape for ``"none"``.

    Raises
    ------
    TypeError
        Complex, object or string `input` or `target`.
    ValueError
        `target` not of the shape of `input`; unknown `reduction`.

    Notes
    -----
    Where the target probability is exactly zero (``p == 0``, or ``t == -inf``
    with ``log_target=True``) the term is 0 whatever `input` is (``0 log 0 = 0``
    and the limit of ``p * input``), unless `input` is NaN, which propagates.
    PyTorch returns NaN there when `input` or ``t`` is infinite (it computes
    ``0 * inf``); everywhere else the values are PyTorch's.  Negative or NaN
    probabilities give NaN, as in PyTorch.

    Examples
    --------
    >>> import numpy as np, xent
    >>> p = np.array([[0.5, 0.5, 0.0]])
    >>> log_q = np.log(np.array([[0.25, 0.25, 0.5]]))
    >>> float(xent.kl_div(log_q, p, reduction="batchmean"))  # KL(p || q) = log 2
    0.6931471805599453
    >>> log_p = np.array([[np.log(0.5), np.log(0.5), -np.inf]])
    >>> xent.kl_div(log_q, log_p, reduction="none", log_target=True)
    array([[0.34657359, 0.34657359, 0.        ]])
    """
    lg = as_logits(input, "input")
    q = lg.array
    compute = lg.compute
    t = as_real_array(target, "target")
    check_same_shape(q, t, "input", "target")  # PyTorch broadcasts; the SPEC does not
    check_reduction(reduction, KL_REDUCTIONS)
    log_target = bool(log_target)

    shape = q.shape
    q_k, half = _pointwise.half_code(lg)
    t_k = _pointwise.kernel_operand(t, compute)
    loss = np.empty(shape, compute) if reduction == "none" else None
    kind = _kernels.KL_DIV_LOG_TARGET if log_target else _kernels.KL_DIV
    total, _, _ = _pointwise.run(kind, shape, (q_k, t_k, None, None, loss, None), half)

    if reduction == "none":
        return loss
    if reduction == "batchmean":
        # torch: reduced = sum / input.size(0), or the sum for a 0-d input.
        if not shape:
            return _pointwise.finish(total, "sum", 1, compute)
        return _pointwise.finish(total, "mean", shape[0], compute)
    return _pointwise.finish(total, reduction, math.prod(shape), compute)

