# Types for NumPy callers.  At run time every function also takes CPU arrays of
# another array-API namespace (a torch tensor, a JAX or array_api_strict array) and
# returns its array results in that namespace (README, "Coming from SciPy / PyTorch");
# a static checker sees those calls through `npt.ArrayLike` (such arrays have
# ``__array__``) and the NumPy result types declared here.
from collections.abc import Iterable
from typing import Any, Literal, NamedTuple, overload

import numpy as np
import numpy.typing as npt

__version__: str

_Axis = int | tuple[int, ...] | None
_Array = npt.NDArray[np.floating]

@overload
def logsumexp(
    x: npt.ArrayLike,
    axis: _Axis = -1,
    *,
    b: npt.ArrayLike | None = None,
    keepdims: bool = False,
    return_sign: Literal[False] = False,
    dtype: npt.DTypeLike | None = None,
    out: _Array | None = None,
) -> np.floating | _Array: ...
@overload
def logsumexp(
    x: npt.ArrayLike,
    axis: _Axis = -1,
    *,
    b: npt.ArrayLike | None = None,
    keepdims: bool = False,
    return_sign: Literal[True],
    dtype: npt.DTypeLike | None = None,
    out: _Array | None = None,
) -> tuple[np.floating | _Array, np.floating | _Array]: ...
def log_softmax(
    x: npt.ArrayLike,
    axis: _Axis = -1,
    *,
    dtype: npt.DTypeLike | None = None,
    out: _Array | None = None,
) -> np.floating | _Array: ...
def softmax(
    x: npt.ArrayLike,
    axis: _Axis = -1,
    *,
    dtype: npt.DTypeLike | None = None,
    out: _Array | None = None,
) -> np.floating | _Array: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def show_config() -> None: ...
def get_include() -> str: ...

_Reduction = Literal["none", "mean", "sum"]
_Loss = np.floating | npt.NDArray[np.floating]

@overload
def cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: int = -1,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    return_grad: Literal[False] = False,
    grad_out: None = None,
) -> _Loss: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: int = -1,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    return_grad: Literal[True],
    grad_out: npt.NDArray[np.floating] | None = None,
) -> tuple[_Loss, npt.NDArray[np.floating]]: ...
class LinearGrads(NamedTuple):
    input: npt.NDArray[np.floating] | None
    linear_weight: npt.NDArray[np.floating] | None
    linear_bias: npt.NDArray[np.floating] | None

_GradName = Literal["input", "linear_weight", "linear_bias"]

@overload
def linear_cross_entropy(
    input: npt.ArrayLike,
    linear_weight: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    linear_bias: npt.ArrayLike | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_grad: Literal[False] = False,
) -> _Loss: ...
@overload
def linear_cross_entropy(
    input: npt.ArrayLike,
    linear_weight: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    linear_bias: npt.ArrayLike | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_grad: Literal[True] | _GradName | tuple[_GradName, ...],
) -> tuple[_Loss, LinearGrads]: ...
def nll_loss(
    log_probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: int = -1,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Reduction = "mean",
) -> _Loss: ...
def focal_loss(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: int = -1,
    gamma: float = 2.0,
    alpha: float | npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Reduction = "mean",
) -> _Loss: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None,
    reduction: _Reduction = "mean",
    return_grad: Literal[False] = False,
    grad_out: None = None,
) -> _Loss: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None,
    reduction: _Reduction = "mean",
    return_grad: Literal[True],
    grad_out: npt.NDArray[np.floating] | None = None,
) -> tuple[_Loss, npt.NDArray[np.floating]]: ...
def binary_cross_entropy(
    probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    reduction: _Reduction = "mean",
) -> _Loss: ...
def kl_div(
    input: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    reduction: Literal["none", "mean", "sum", "batchmean"] = "mean",
    log_target: bool = False,
) -> _Loss: ...
@overload
def kl_divergence(
    p_logits: npt.ArrayLike,
    q_logits: npt.ArrayLike,
    *,
    axis: int = -1,
    temperature: float = 1.0,
    reduction: _Reduction = "mean",
    return_grad: Literal[False] = False,
    grad_out: None = None,
) -> _Loss: ...
@overload
def kl_divergence(
    p_logits: npt.ArrayLike,
    q_logits: npt.ArrayLike,
    *,
    axis: int = -1,
    temperature: float = 1.0,
    reduction: _Reduction = "mean",
    return_grad: Literal[True],
    grad_out: npt.NDArray[np.floating] | None = None,
) -> tuple[_Loss, npt.NDArray[np.floating]]: ...
def entropy(
    logits: npt.ArrayLike, *, axis: int = -1, base: float | None = None
) -> _Loss: ...

class Evaluation:
    loss: float
    perplexity: float
    accuracy: dict[int, float]
    count: int
    def __init__(
        self, loss: float, perplexity: float, accuracy: dict[int, float], count: int
    ) -> None: ...
    def as_dict(self) -> dict[str, Any]: ...

class Evaluator:
    def __init__(
        self,
        *,
        axis: int = -1,
        ignore_index: int = -100,
        k: int | Iterable[int] = (1, 5),
        linear_weight: npt.ArrayLike | None = None,
        linear_bias: npt.ArrayLike | None = None,
        softcap: float | None = None,
    ) -> None: ...
    @property
    def axis(self) -> int: ...
    @property
    def ignore_index(self) -> int: ...
    @property
    def k(self) -> tuple[int, ...]: ...
    @property
    def count(self) -> int: ...
    def update(self, logits: npt.ArrayLike, target: npt.ArrayLike) -> None: ...
    def merge(self, other: Evaluator) -> Evaluator: ...
    def result(self) -> Evaluation: ...
    def reset(self) -> None: ...

def evaluate(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: int = -1,
    ignore_index: int = -100,
    k: int | Iterable[int] = (1, 5),
    linear_weight: npt.ArrayLike | None = None,
    linear_bias: npt.ArrayLike | None = None,
    softcap: float | None = None,
) -> Evaluation: ...
