"""Thread control: get/set_num_threads, XENT_NUM_THREADS, threadpoolctl, show_config."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import xent
from helpers import assert_close, finite_scale, tolerances
from references import ref_log_softmax, ref_logsumexp


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


# --- counts the machine cannot run (issue 17) ---------------------------------

def _run_in_subprocess(code, **extra):
    """Run `code` in a fresh interpreter (a crash there must not take pytest down)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=_subprocess_env(**extra),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_set_num_threads_refuses_a_million_naming_argument_and_value(restore_threads):
    xent.set_num_threads(2)
    with pytest.raises(ValueError, match=r"\bn\b.*1000000"):
        xent.set_num_threads(10**6)
    assert xent.get_num_threads() == 2  # unchanged after the failed call


def test_set_num_threads_cap_is_eight_per_cpu(restore_threads):
    cap = 8 * os.cpu_count()
    xent.set_num_threads(cap)  # oversubscribing a few times is legal
    assert xent.get_num_threads() == cap
    with pytest.raises(ValueError, match=str(cap + 1)):
        xent.set_num_threads(cap + 1)
    assert xent.get_num_threads() == cap


# 2**20 rows of evaluate: the row loop takes as many threads as it is given
# (libgomp segfaulted with 10**6 before the cap).
_EVALUATE_MANY_ROWS = """
import numpy as np, xent
x = np.zeros((1 << 20, 2), np.float32)
r = xent.evaluate(x, np.zeros(1 << 20, np.int64))
print(xent.get_num_threads(), r.loss)
"""


def test_set_num_threads_million_then_threaded_call_does_not_crash():
    code = ("import xent\ntry:\n    xent.set_num_threads(10**6)\nexcept ValueError:\n    pass\n"
            + _EVALUATE_MANY_ROWS)
    proc = _run_in_subprocess(code, XENT_DYNAMIC_THREADS="0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    n, loss = proc.stdout.split()
    assert int(n) <= 8 * os.cpu_count()
    assert float(loss) == pytest.approx(np.log(2.0))


@pytest.mark.parametrize("value", ["1000000", "100000"])
def test_env_var_too_large_warns_and_falls_back_to_default(value):
    proc = _run_in_subprocess(_EVALUATE_MANY_ROWS, XENT_NUM_THREADS=value,
                              XENT_DYNAMIC_THREADS="0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "XENT_NUM_THREADS" in proc.stderr and value in proc.stderr, proc.stderr
    n = int(proc.stdout.split()[0])
    assert n == _threads_in_subprocess()  # the default, as without the variable


def test_omp_num_threads_too_large_is_capped_with_a_warning():
    proc = _run_in_subprocess(_EVALUATE_MANY_ROWS, OMP_NUM_THREADS="1000000",
                              XENT_DYNAMIC_THREADS="0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[0]) <= 8 * os.cpu_count()


def test_omp_thread_limit_caps_set_num_threads(capsys):
    if not _openmp_enabled(capsys):
        pytest.skip("serial build: no OpenMP thread limit")
    code = """
import xent
xent.set_num_threads(3)
try:
    xent.set_num_threads(4)
except ValueError as e:
    print("refused", e)
print(xent.get_num_threads())
"""
    proc = _run_in_subprocess(code, OMP_THREAD_LIMIT="3")
    assert proc.returncode == 0, proc.stderr
    assert "refused" in proc.stdout and "4" in proc.stdout
    assert proc.stdout.split()[-1] == "3"


def test_threadpoolctl_limit_above_the_cap_is_no_limit(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    xent.set_num_threads(2)
    with threadpoolctl.threadpool_limits(10**6, user_api="openmp"):
        assert 1 <= xent.get_num_threads() <= 8 * os.cpu_count()
    assert xent.get_num_threads() == 2


# --- under load (issue 17) -----------------------------------------------------

def _fake_load(monkeypatch, samples):
    """Feed xent's load monitor these (time, busy s, own s, cpus) samples."""
    from xent._runtime import threads as _threading

    load = _threading._OtherLoad()
    it = iter(samples)
    monkeypatch.setattr(load, "_sample", lambda: next(it))
    load.enabled, load.start = True, next(it)
    monkeypatch.setattr(_threading, "_load", load)
    return load


@pytest.mark.parametrize(
    "busy, own, expected",
    [
        (0.05, 0.0, 4),   # quiet: every CPU
        (0.5, 0.45, 4),   # only this process busy: every CPU
        (0.5, 0.0, 3),    # one CPU held by another process
        (0.9, 0.4, 3),
        (0.2, 0.0, 4),    # 0.4 CPU: rounds to none
        (2.0, 0.0, 1),    # all of them: still one thread
    ],
)
def test_team_leaves_cpus_that_other_processes_use(monkeypatch, restore_threads, busy, own,
                                                   expected):
    from xent._runtime import threads as _threading

    # a window of 0.5 s on 4 CPUs; busy and own are CPU seconds in it
    _fake_load(monkeypatch, [(0.0, 100.0, 10.0, 4), (0.5, 100.0 + busy, 10.0 + own, 4)])
    xent.set_num_threads(4)
    monkeypatch.setattr(_threading.time, "monotonic", lambda: 1.0)
    assert _threading.threads_for(1 << 20) == expected
    assert _threading.threads_for(100) == 1  # small inputs: one thread as before
    assert xent.get_num_threads() == 4  # the count set is unchanged


def test_dynamic_threads_off_keeps_the_count_set():
    code = ("import xent\nfrom xent._runtime import threads as _threading\nxent.set_num_threads(3)\n"
            "print(_threading._load.enabled, _threading.threads_for(1 << 20))")
    proc = _run_in_subprocess(code, XENT_DYNAMIC_THREADS="0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "3"]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two CPUs")
def test_team_shrinks_beside_a_busy_process():
    """A real busy loop on the same CPUs takes one thread off xent's team."""
    cpus = len(os.sched_getaffinity(0))
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        code = f"""
import time, xent
from xent._runtime import threads as _threading
xent.set_num_threads({cpus})
teams = []
for _ in range(8):
    time.sleep(_threading.LOAD_WINDOW)
    teams.append(_threading.threads_for(1 << 20))
print(min(teams[2:]), max(teams[2:]))
"""
        proc = _run_in_subprocess(code, XENT_DYNAMIC_THREADS="1")
    finally:
        busy.kill()
        busy.wait()
    assert proc.returncode == 0, proc.stderr
    low, high = map(int, proc.stdout.split())
    assert 1 <= low and high <= cpus - 1
