from typing import Literal, overload

import numpy as np
import numpy.typing as npt

__version__: str

def logsumexp(
    x: npt.ArrayLike,
    axis: int | None = -1,
    *,
    keepdims: bool = False,
    out: npt.NDArray[np.floating] | None = None,
) -> np.floating | npt.NDArray[np.floating]: ...
def log_softmax(
    x: npt.ArrayLike,
    axis: int | None = -1,
    *,
    out: npt.NDArray[np.floating] | None = None,
) -> npt.NDArray[np.floating]: ...
def softmax(
    x: npt.ArrayLike,
    axis: int | None = -1,
    *,
    out: npt.NDArray[np.floating] | None = None,
) -> npt.NDArray[np.floating]: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def show_config() -> None: ...
