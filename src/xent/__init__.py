"""xent: fast, exact softmax, cross-entropy and related losses for NumPy arrays.

The kernels are typed Cython loops over rows, threaded with OpenMP, with the
arithmetic of each row in a small vectorised C block.  See ``show_config()``.

Every public function returns its results in the caller's array type (a torch
tensor in, torch tensors out; Dask arrays go to `xent.dask`): the functions of
``xent._api`` compute on NumPy arrays and are wrapped here, in one place, by
``xent._runtime.namespaces``.
"""

__version__ = "0.1.0"

from xent._api import binary as _binary
from xent._api import divergences as _divergences
from xent._api import kl_div as _kl_div
from xent._api import linear as _linear
from xent._api import multiclass as _multiclass
from xent._api import normalizers as _normalizers
from xent._api.evaluate import Evaluation, Evaluator
from xent._api.evaluate import evaluate as _evaluate
from xent._api.linear import LinearGrads
from xent._runtime.config import show_config
from xent._runtime.include import get_include
from xent._runtime.namespaces import follow_caller_namespace as _follow_caller_namespace
from xent._runtime.threads import get_num_threads, set_num_threads


def _public(func):
    """`func` in the caller's namespace, importable (and picklable) as xent.NAME."""
    wrapper = _follow_caller_namespace(func)
    wrapper.__module__ = __name__
    return wrapper


binary_cross_entropy = _public(_binary.binary_cross_entropy)
binary_cross_entropy_with_logits = _public(_binary.binary_cross_entropy_with_logits)
cross_entropy = _public(_multiclass.cross_entropy)
focal_loss = _public(_multiclass.focal_loss)
nll_loss = _public(_multiclass.nll_loss)
entropy = _public(_divergences.entropy)
kl_divergence = _public(_divergences.kl_divergence)
evaluate = _public(_evaluate)
kl_div = _public(_kl_div.kl_div)
linear_cross_entropy = _public(_linear.linear_cross_entropy)
log_softmax = _public(_normalizers.log_softmax)
logsumexp = _public(_normalizers.logsumexp)
softmax = _public(_normalizers.softmax)
# (the constructor too: its linear_weight/linear_bias are read as the functions' are)
Evaluator.__init__ = _follow_caller_namespace(Evaluator.__init__, method=True)
Evaluator.update = _follow_caller_namespace(Evaluator.update, method=True)

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
