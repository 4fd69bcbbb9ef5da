"""xent: fast, exact softmax, cross-entropy and related losses for NumPy arrays.

The kernels are typed Cython loops over rows, threaded with OpenMP, with the
arithmetic of each row in a small vectorised C block.  See ``show_config()``.
"""

__version__ = "0.1.0"

from xent._api.binary import binary_cross_entropy, binary_cross_entropy_with_logits
from xent._runtime.config import show_config
from xent._api.multiclass import cross_entropy, focal_loss, nll_loss
from xent._api.divergences import entropy, kl_divergence
from xent._api.evaluate import Evaluation, Evaluator, evaluate
from xent._runtime.include import get_include
from xent._api.kl_div import kl_div
from xent._api.linear import LinearGrads, linear_cross_entropy
from xent._api.normalizers import log_softmax, logsumexp, softmax
from xent._runtime.threads import get_num_threads, set_num_threads

__all__ = [
    "__version__",
    "Evaluation",
    "Evaluator",
    "evaluate",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "entropy",
    "focal_loss",
    "get_include",
    "kl_div",
    "kl_divergence",
    "LinearGrads",
    "linear_cross_entropy",
    "nll_loss",
    "get_num_threads",
    "log_softmax",
    "logsumexp",
    "set_num_threads",
    "show_config",
    "softmax",
]
