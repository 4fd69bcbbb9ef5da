"""SciPy's own tests of logsumexp/softmax/log_softmax, with xent in place of SciPy.

Runs the installed ``scipy.special.tests.test_logsumexp`` (SciPy's file, not a
copy) in a pytest subprocess with the plugin ``scipy_with_xent`` (tests/), which
makes ``scipy.special.logsumexp``/``softmax``/``log_softmax`` xent's before the
test module imports them.  Twice: with NumPy arrays, and in SciPy's array-API
mode with PyTorch as the namespace (``SCIPY_ARRAY_API='["torch"]'``: the JSON
list selects the backends of SciPy's ``xp`` fixture, scipy/conftest.py).

Every test must pass except those that need complex input, which xent refuses
on purpose (SPEC, "Normalizers"); the plugin deselects them and says which.
Skipped when SciPy's tests are not installed, and the PyTorch run without torch.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("scipy")

TEST_MODULE = "scipy.special.tests.test_logsumexp"
TESTS_DIR = Path(__file__).resolve().parent
# What the plugin deselects in SciPy 1.17.1's file (407 tests):
# test_logsumexp_complex_sign, test_gh21709_small_imaginary; complex64/complex128 in
# test_dtypes_a (2), test_dtypes_ab (20), test_gh21610 (2); test_device[1j];
# test_gh22601_infinite_elements with a complex infinity (320 of 324 pairs).
DESELECTED_IN_1_17_1 = 2 + 2 + 20 + 2 + 1 + 320


def _has_scipy_tests():
    try:
        return importlib.util.find_spec(TEST_MODULE) is not None
    except ImportError:
        return False


def run_scipy_tests(backend, workdir):
    """Run SciPy's test module on xent; return the plugin's results (a dict)."""
    import xent

    results = Path(workdir) / f"scipy-{backend}.json"
    env = dict(os.environ, XENT_SCIPY_RESULTS=str(results))
    env.pop("SCIPY_ARRAY_API", None)
    if backend != "numpy":
        env["SCIPY_ARRAY_API"] = json.dumps([backend])
    xent_root = str(Path(xent.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR), xent_root] + [p for p in [env.get("PYTHONPATH")] if p])
    command = [sys.executable, "-m", "pytest", "--pyargs", TEST_MODULE, "-p", "scipy_with_xent",
               "-p", "no:cacheprovider", "-q", "-o", "addopts=", "-W",
               "ignore::pytest.PytestUnknownMarkWarning"]
    proc = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=600)
    if not results.exists():
        raise AssertionError(f"SciPy's tests did not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    data = json.loads(results.read_text())
    data["summary"] = (proc.stdout.strip().splitlines() or [""])[-1]
    return data


def _report(data):
    counts = {}
    for outcome in data["outcomes"].values():
        counts[outcome] = counts.get(outcome, 0) + 1
    failures = "\n".join(f"  {k}: {v}" for k, v in sorted(data["errors"].items()))
    return f"{counts}, deselected {len(data['deselected'])}\n{failures}"


@pytest.mark.skipif(not _has_scipy_tests(), reason="SciPy's tests are not installed")
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_scipy_own_tests_pass_on_xent(backend, tmp_path):
    if backend == "torch":
        pytest.importorskip("torch")
    data = run_scipy_tests(backend, tmp_path)
    assert data["saw_xent"], "SciPy's test module did not import xent's functions"
    import scipy

    if scipy.__version__ == "1.17.1":  # the rule deselects nothing real-valued
        assert len(data["deselected"]) == DESELECTED_IN_1_17_1, data["deselected"]
    failed = [k for k, v in data["outcomes"].items() if v == "failed"]
    assert data["outcomes"] and not failed, _report(data)


if __name__ == "__main__":
    import tempfile

    for name in sys.argv[1:] or ["numpy", "torch"]:
        with tempfile.TemporaryDirectory() as tmp:
            print(name, _report(run_scipy_tests(name, tmp)))
