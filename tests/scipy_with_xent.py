"""pytest plugin: SciPy's own tests of logsumexp/softmax/log_softmax, run on xent.

Loaded with ``-p scipy_with_xent`` (``tests/`` on ``sys.path``) by
``tests/test_scipy_own_tests.py``, in a pytest process of its own that runs the
installed ``scipy.special.tests.test_logsumexp``.  When pytest imports this
plugin -- before it collects, so before the test module runs
``from scipy.special import log_softmax, logsumexp, softmax`` -- the three
names in ``scipy.special`` become xent's functions, called with SciPy's
signature (the mapping of the README's "Coming from SciPy"):

- ``logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False)``
  -> ``xent.logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=...)``;
- ``softmax(x, axis=None)`` -> ``xent.softmax(x, axis=axis)``, same for
  ``log_softmax``.

SciPy's default is ``axis=None`` (the whole array), xent's ``-1``: that default is
the only thing these wrappers supply; inputs and results pass through untouched.

Tests that need complex input are deselected (xent refuses complex input on
purpose, SPEC "Normalizers"): those named in ``COMPLEX_ONLY_TESTS`` and the
parametrized cases with a complex parameter (a complex number, or the name of a
complex dtype).  Each outcome, the deselected ids and whether the test module
really saw xent's functions go to the JSON file named by ``XENT_SCIPY_RESULTS``.
"""

import json
import os
import sys

import scipy.special
from scipy._lib._array_api import xp_capabilities_table

import xent

# Tests whose every case takes complex input (no real-valued case to keep).
COMPLEX_ONLY_TESTS = ("test_logsumexp_complex_sign", "test_gh21709_small_imaginary")
TEST_MODULE = "scipy.special.tests.test_logsumexp"


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """`scipy.special.logsumexp`'s signature on `xent.logsumexp`."""
    kwargs = {}
    if b is not None:
        kwargs["b"] = b
    if return_sign:
        kwargs["return_sign"] = True
    return xent.logsumexp(a, axis=axis, keepdims=keepdims, **kwargs)


def softmax(x, axis=None):
    """`scipy.special.softmax`'s signature on `xent.softmax`."""
    return xent.softmax(x, axis=axis)


def log_softmax(x, axis=None):
    """`scipy.special.log_softmax`'s signature on `xent.log_softmax`."""
    return xent.log_softmax(x, axis=axis)


REPLACEMENTS = {"logsumexp": logsumexp, "softmax": softmax, "log_softmax": log_softmax}

for _name, _replacement in REPLACEMENTS.items():
    # SciPy's test decorators read each function's array-API capabilities
    # (backends to skip or xfail) from this table: xent's stand-in takes SciPy's.
    xp_capabilities_table[_replacement] = xp_capabilities_table[getattr(scipy.special, _name)]
    setattr(scipy.special, _name, _replacement)


def _is_complex(value):
    return isinstance(value, complex) or (isinstance(value, str) and value.startswith("complex"))


def _needs_complex(item):
    if getattr(item, "originalname", item.name) in COMPLEX_ONLY_TESTS:
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and any(_is_complex(v) for v in callspec.params.values())


_results = {"outcomes": {}, "errors": {}, "deselected": [], "saw_xent": None}


def pytest_collection_modifyitems(config, items):
    complex_items = [item for item in items if _needs_complex(item)]
    if complex_items:
        config.hook.pytest_deselected(items=complex_items)
        items[:] = [item for item in items if item not in complex_items]
    _results["deselected"] = [item.nodeid for item in complex_items]
    module = sys.modules.get(TEST_MODULE)
    _results["saw_xent"] = module is not None and all(
        getattr(module, name) is fn for name, fn in REPLACEMENTS.items())


def pytest_runtest_logreport(report):
    outcomes = _results["outcomes"]
    if report.when == "call" or report.outcome != "passed":
        if report.nodeid not in outcomes or outcomes[report.nodeid] == "passed":
            outcomes[report.nodeid] = report.outcome
        if report.failed:
            message = getattr(report.longrepr, "reprcrash", None)
            text = message.message if message is not None else str(report.longrepr)
            _results["errors"][report.nodeid] = text.strip().splitlines()[0][:300]


def pytest_sessionfinish(session):
    path = os.environ.get("XENT_SCIPY_RESULTS")
    if path:
        with open(path, "w") as f:
            json.dump(_results, f, indent=1)
