"""Thread control: get/set_num_threads, XENT_NUM_THREADS, threadpoolctl, show_config."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import xent
from conftest import assert_close, ref_log_softmax, ref_logsumexp, tolerances, finite_scale


def _show_config_text(capsys):
    capsys.readouterr()
    ret = xent.show_config()
    text = capsys.readouterr().out
    if not text and isinstance(ret, str):  # pragma: no cover - printing is the contract
        text = ret
    return text


def _openmp_enabled(capsys):
    return "OpenMP: enabled" in _show_config_text(capsys)


def _subprocess_env(**extra):
    env = os.environ.copy()
    src = os.path.dirname(os.path.dirname(os.path.abspath(xent.__file__)))
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("XENT_NUM_THREADS", None)
    env.update(extra)
    return env


def _threads_in_subprocess(**extra):
    proc = subprocess.run(
        [sys.executable, "-c", "import xent; print(xent.get_num_threads())"],
        env=_subprocess_env(**extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip().splitlines()[-1])


def test_get_num_threads_is_positive_int():
    n = xent.get_num_threads()
    assert isinstance(n, int) and not isinstance(n, bool)
    assert n >= 1


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_set_then_get(n, restore_threads):
    xent.set_num_threads(n)
    assert xent.get_num_threads() == n


def test_set_accepts_numpy_integer(restore_threads):
    xent.set_num_threads(np.int64(2))
    assert xent.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, -8])
def test_set_rejects_non_positive(bad, restore_threads):
    xent.set_num_threads(2)
    with pytest.raises(ValueError):
        xent.set_num_threads(bad)
    assert xent.get_num_threads() == 2  # unchanged after the failed call


@pytest.mark.parametrize("bad", [1.5, 2.0, "2", None, [2]])
def test_set_rejects_non_integers(bad, restore_threads):
    xent.set_num_threads(2)
    with pytest.raises((TypeError, ValueError)):
        xent.set_num_threads(bad)
    assert xent.get_num_threads() == 2


def test_env_var_sets_default_in_subprocess():
    assert _threads_in_subprocess(XENT_NUM_THREADS="1") == 1


def test_env_var_overrides_omp_num_threads():
    assert _threads_in_subprocess(XENT_NUM_THREADS="1", OMP_NUM_THREADS="3") == 1


def test_env_var_two_threads_when_openmp(capsys):
    if not _openmp_enabled(capsys):
        pytest.skip("serial build")
    assert _threads_in_subprocess(XENT_NUM_THREADS="2") == 2


def test_threadpoolctl_limits_xent(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    xent.set_num_threads(2)
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert xent.get_num_threads() == 1
        # still correct under the limit
        x = np.random.default_rng(0).standard_normal((4096, 64))
        lsm = xent.log_softmax(x)
        rtol, atol = tolerances("log_softmax", np.float64, np.float64, finite_scale(x))
        assert_close(lsm, ref_log_softmax(x), rtol, atol)
    assert xent.get_num_threads() == 2


def test_threadpoolctl_reports_xent_openmp(capsys):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not _openmp_enabled(capsys):
        pytest.skip("serial build")
    info = threadpoolctl.threadpool_info()
    assert any(i.get("user_api") == "openmp" for i in info), info


def test_show_config(capsys):
    text = _show_config_text(capsys)
    assert xent.__version__ in text
    assert "OpenMP" in text
    assert "SIMD" in text
    assert ("OpenMP: enabled" in text) != ("OpenMP: disabled" in text), text


@pytest.mark.skipif(
    os.environ.get("XENT_EXPECT_OPENMP") != "1", reason="set XENT_EXPECT_OPENMP=1 to require OpenMP"
)
def test_openmp_enabled_when_expected(capsys):
    text = _show_config_text(capsys)
    assert "OpenMP: enabled" in text, text


def test_version_string():
    assert isinstance(xent.__version__, str) and xent.__version__


def test_concurrent_python_threads():
    """Kernels release the GIL; concurrent calls from Python threads give correct results."""
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal((2048, 128)) * (i + 1) for i in range(6)]
    results = [None] * len(inputs)
    errors = []

    def work(i):
        try:
            for _ in range(3):
                results[i] = (xent.logsumexp(inputs[i]), xent.log_softmax(inputs[i], axis=0))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for x, (lse, lsm) in zip(inputs, results):
        scale = finite_scale(x)
        assert_close(lse, ref_logsumexp(x), *tolerances("lse", np.float64, np.float64, scale))
        assert_close(
            lsm,
            ref_log_softmax(x, axis=0),
            *tolerances("log_softmax", np.float64, np.float64, scale),
        )
