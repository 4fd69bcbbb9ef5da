"""``xent eval`` (SPEC "Command line") end to end, on generated .npy files.

The command runs in a subprocess (``python -m xent eval ...``); its numbers are
compared with ``evaluate`` on the same arrays in memory, and with the plain NumPy
reference of test_evaluate.py.  Errors must be one line on stderr, exit status
non-zero, never a traceback.  The memory test streams a 1 GiB file and samples the
subprocess's anonymous resident memory while it runs.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from test_evaluate import ref_evaluate

from xent._cli.eval import _batch_axis, evaluate_npy
from xent._api.evaluate import evaluate
from xent._cli.main import main


def run_xent(*args, timeout=120):
    """``python -m xent ARGS`` in a subprocess with this environment (PYTHONPATH kept)."""
    return subprocess.run(
        [sys.executable, "-m", "xent", *map(str, args)],
        capture_output=True, text=True, env=dict(os.environ), timeout=timeout,
    )


def assert_fails_cleanly(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("xent eval: error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert proc.stdout == ""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((500, 13)) * 2).astype(np.float32)
    x[::9, 4] = x[::9, 2]  # some ties
    t = rng.integers(0, 13, 500)
    t[::11] = -100
    paths = {"x": d / "logits.npy", "t": d / "target.npy"}
    np.save(paths["x"], x)
    np.save(paths["t"], t)
    return d, x, t, paths


def _same(result_json, expected, rel=1e-12):
    assert result_json["count"] == expected.count
    assert result_json["accuracy"] == {str(k): v for k, v in expected.accuracy.items()}
    assert result_json["loss"] == pytest.approx(expected.loss, rel=rel)
    assert result_json["perplexity"] == pytest.approx(expected.perplexity, rel=rel)


def test_json_output_matches_evaluate_and_reference(files):
    _, x, t, p = files
    proc = run_xent("eval", p["x"], p["t"], "--json", "-k", 1, 3, 20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal
    out = json.loads(proc.stdout)
    assert set(out) == {"loss", "perplexity", "accuracy", "count"}
    _same(out, evaluate(x, t, k=(1, 3, 20)))
    loss, _, acc, count = ref_evaluate(x, t, k=(1, 3, 20))
    assert out["count"] == count and out["accuracy"] == {str(k): v for k, v in acc.items()}
    assert out["loss"] == pytest.approx(loss, rel=2e-6)


def test_plain_output_is_readable(files):
    _, x, t, p = files
    proc = run_xent("eval", p["x"], p["t"])
    assert proc.returncode == 0, proc.stderr
    e = evaluate(x, t)
    lines = dict(line.split(None, 1) for line in proc.stdout.strip().splitlines())
    assert list(lines) == ["loss", "perplexity", "top-1", "top-5", "count"]
    assert float(lines["loss"]) == pytest.approx(e.loss, abs=1e-6)
    assert float(lines["perplexity"]) == pytest.approx(e.perplexity, rel=1e-6)
    assert float(lines["top-1"].split()[0]) == pytest.approx(e.accuracy[1], abs=1e-6)
    assert int(lines["count"]) == e.count


@pytest.mark.parametrize("batch_rows", [1, 7, 499, 10_000])
def test_batches_do_not_change_the_result(files, batch_rows):
    _, x, t, p = files
    r = evaluate_npy(p["x"], p["t"], k=(1, 2), batch_rows=batch_rows)
    e = evaluate(x, t, k=(1, 2))
    assert r.count == e.count and r.accuracy == e.accuracy
    assert r.loss == pytest.approx(e.loss, rel=1e-13)


@pytest.mark.parametrize(
    "case", ["axis1", "axis0", "fortran", "float16", "one_row", "int8_target", "leading_1"]
)
def test_layouts_and_dtypes(tmp_path, case):
    rng = np.random.default_rng(11)
    axis = -1
    if case == "axis1":
        x, axis = rng.standard_normal((20, 5, 9)), 1
    elif case == "axis0":  # the class axis first: batches along axis 1
        x, axis = rng.standard_normal((6, 40)), 0
    elif case == "fortran":  # batches along the last axis (the largest stride)
        x = np.asfortranarray(rng.standard_normal((50, 8)))
    elif case == "float16":
        x = rng.standard_normal((64, 300)).astype(np.float16)
    elif case == "one_row":
        x = rng.standard_normal(17)
    elif case == "leading_1":  # (1, N, C): batches along N, not along the length-1 axis
        x = rng.standard_normal((1, 40, 6))
    else:
        x = rng.standard_normal((30, 4))
    tshape = tuple(s for i, s in enumerate(x.shape) if i != axis % x.ndim)
    t = rng.integers(0, x.shape[axis], tshape).astype(np.int8 if case == "int8_target" else np.int64)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "t.npy", t)
    r = evaluate_npy(tmp_path / "x.npy", tmp_path / "t.npy", axis=axis, k=(1, 3), batch_rows=3)
    e = evaluate(x, t, axis=axis, k=(1, 3))
    assert r.count == e.count and r.accuracy == e.accuracy
    assert r.loss == pytest.approx(e.loss, rel=1e-12)


def test_batch_axis_is_the_outermost_one_in_memory():
    assert _batch_axis(np.zeros((8, 5)), 1) == 0
    assert _batch_axis(np.zeros((8, 5)), 0) == 1
    assert _batch_axis(np.zeros((1, 8, 5)), 2) == 1
    assert _batch_axis(np.zeros((8, 6, 5), order="F"), 0) == 2
    assert _batch_axis(np.zeros(5), 0) is None


def test_in_process_main_and_non_finite_json(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.array([[0.0, -np.inf], [1.0, 2.0]]))
    np.save(tmp_path / "t.npy", np.array([1, -1]))
    assert main(["eval", str(tmp_path / "x.npy"), str(tmp_path / "t.npy"), "--json",
                 "--ignore-index", "-1", "-k", "1"]) == 0
    out = json.loads(capsys.readouterr().out)  # strict JSON: inf is null
    assert out == {"loss": None, "perplexity": None, "accuracy": {"1": 0.0}, "count": 1}


def test_no_row_to_evaluate_warns_on_stderr_and_exits_0(tmp_path, capsys):
    # Every target ignored: undefined results (nan), count 0, and a one-line
    # warning saying why; exit status 0 (documented in `xent eval --help`).
    np.save(tmp_path / "x.npy", np.array([[0.0, -np.inf], [1.0, 2.0]]))
    np.save(tmp_path / "t.npy", np.array([-1, -1]))
    assert main(["eval", str(tmp_path / "x.npy"), str(tmp_path / "t.npy"),
                 "--ignore-index", "-1"]) == 0
    captured = capsys.readouterr()
    assert "nan" in captured.out and "count       0" in captured.out
    assert captured.err.splitlines() == [
        "xent eval: warning: no row to evaluate: every target in TARGET equals "
        "--ignore-index -1; loss, perplexity and accuracy are undefined (nan), count is 0"
    ]
    # Empty files, in a subprocess, with --json: stdout stays one strict JSON object.
    np.save(tmp_path / "x0.npy", np.zeros((0, 7), np.float32))
    np.save(tmp_path / "t0.npy", np.zeros(0, np.int64))
    proc = run_xent("eval", tmp_path / "x0.npy", tmp_path / "t0.npy", "--json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == {
        "loss": None, "perplexity": None, "accuracy": {"1": None, "5": None}, "count": 0,
    }
    assert proc.stderr.splitlines() == [
        "xent eval: warning: no row to evaluate: the files have no rows (TARGET has shape "
        "(0,)); loss, perplexity and accuracy are undefined (nan), count is 0"
    ]


def test_eval_help_documents_the_no_row_case(capsys):
    assert main(["eval", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "When no row counts" in text and "the exit status is still 0" in text


def test_a_normal_run_prints_no_warning(files):
    _, _, _, p = files
    proc = run_xent("eval", p["x"], p["t"])
    assert proc.returncode == 0 and proc.stderr == ""


def test_errors_are_one_line_without_traceback(tmp_path, files):
    _, x, t, p = files
    d = tmp_path
    missing = d / "missing.npy"
    np.save(d / "short.npy", t[:-1])
    np.save(d / "strings.npy", np.array([["a", "b"]] * 3))
    np.save(d / "float_t.npy", t.astype(np.float64))
    bad = t.copy()
    bad[433] = 13
    np.save(d / "bad.npy", bad)
    (d / "text.npy").write_text("not an array\n")
    np.savez(d / "archive.npz", x=x)

    assert_fails_cleanly(run_xent("eval", missing, p["t"]), "LOGITS", "no such file")
    assert_fails_cleanly(run_xent("eval", p["x"], missing), "TARGET", "no such file")
    assert_fails_cleanly(run_xent("eval", p["x"], d / "short.npy"), "(499,)", "(500, 13)")
    assert_fails_cleanly(run_xent("eval", d / "strings.npy", d / "short.npy"), "LOGITS", "<U1")
    assert_fails_cleanly(run_xent("eval", p["x"], d / "float_t.npy"), "TARGET", "float64")
    # a label out of range in a later batch: named with its position in the file
    assert_fails_cleanly(run_xent("eval", p["x"], d / "bad.npy", "--batch-rows", 100),
                         "class index 13 at position (433,)")
    assert_fails_cleanly(run_xent("eval", d / "text.npy", p["t"]), "not a .npy file")
    assert_fails_cleanly(run_xent("eval", d / "archive.npz", p["t"]), "not a .npy file")
    assert_fails_cleanly(run_xent("eval", p["x"], p["t"], "--axis", 2), "axis")
    assert_fails_cleanly(run_xent("eval", p["x"], p["t"], "-k", 0), "-k")
    assert_fails_cleanly(run_xent("eval", p["x"], p["t"], "--batch-rows", "many"), "--batch-rows")
    assert_fails_cleanly(run_xent("eval", p["x"]), "TARGET")


# ---------------------------------------------------------------------------
# memory: a 1 GiB file with bounded anonymous memory
# ---------------------------------------------------------------------------

MEM_ROWS, MEM_C = 1 << 20, 512  # float16: exactly 1 GiB of logits
BASE_ROWS = 4096
ANON_LIMIT = 400 << 20


def _status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_a_1gib_file_streams_with_bounded_anonymous_memory(tmp_path):
    if shutil.disk_usage(tmp_path).free < 3 * (MEM_ROWS * MEM_C * 2):
        pytest.skip("not enough free disk space for the 1 GiB file")
    rng = np.random.default_rng(3)
    base = (rng.standard_normal((BASE_ROWS, MEM_C)) * 2).astype(np.float16)
    base_t = rng.integers(0, MEM_C, BASE_ROWS)
    base_t[::5] = -100
    lpath, tpath = tmp_path / "big_logits.npy", tmp_path / "big_target.npy"
    try:
        # written in chunks: the test itself never holds more than one base block
        x = np.lib.format.open_memmap(lpath, mode="w+", dtype=np.float16, shape=(MEM_ROWS, MEM_C))
        for i in range(0, MEM_ROWS, BASE_ROWS):
            x[i : i + BASE_ROWS] = base
        x.flush()
        del x
        np.save(tpath, np.tile(base_t, MEM_ROWS // BASE_ROWS))
        assert os.path.getsize(lpath) >= 1 << 30

        proc = subprocess.Popen(
            [sys.executable, "-m", "xent", "eval", str(lpath), str(tpath), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
        )
        peak = {"RssAnon": 0, "RssFile": 0, "samples": 0}

        def sample():
            while proc.poll() is None:
                try:
                    for field in ("RssAnon", "RssFile"):
                        peak[field] = max(peak[field], _status_kib(proc.pid, field) << 10)
                    peak["samples"] += 1
                except (OSError, ValueError):
                    break
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, err = proc.communicate(timeout=120)
        sampler.join()
        assert proc.returncode == 0, err
        assert peak["samples"] >= 3, "the run was too short to be sampled"
        assert peak["RssAnon"] < ANON_LIMIT, (
            f"anonymous resident memory peaked at {peak['RssAnon'] / 2**20:.0f} MiB "
            f"(file-backed: {peak['RssFile'] / 2**20:.0f} MiB) for a 1 GiB file"
        )
        # every row was read: the file repeats one block, so it evaluates like the block
        got = json.loads(out)
        block = evaluate(base, base_t)
        reps = MEM_ROWS // BASE_ROWS
        assert got["count"] == reps * block.count
        assert got["accuracy"] == {str(k): v for k, v in block.accuracy.items()}
        assert math.isclose(got["loss"], block.loss, rel_tol=1e-9)
    finally:
        for path in (lpath, tpath):
            if os.path.exists(path):
                os.unlink(path)


# ---------------------------------------------------------------------------
# xent eval HIDDEN TARGET --linear-weight W.npy [--linear-bias B.npy] [--softcap S]
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hidden_files(tmp_path_factory):
    """Integer-valued hidden states (4, 30, 16), weight (40, 16), bias: exact logits."""
    d = tmp_path_factory.mktemp("hidden")
    rng = np.random.default_rng(19)
    arrays = {
        "h": rng.integers(-3, 4, (4, 30, 16)).astype(np.float32),
        "W": rng.integers(-2, 3, (40, 16)).astype(np.float32),
        "b": rng.integers(-4, 5, 40).astype(np.float32),
        "t": rng.integers(0, 40, (4, 30)),
    }
    arrays["t"][:, ::7] = -100
    paths = {name: d / f"{name}.npy" for name in arrays}
    for name, a in arrays.items():
        np.save(paths[name], a)
    return arrays, paths


def _capped_logits(h, W, b, softcap):
    z = h @ W.T + b
    return z if softcap is None else np.float32(softcap) * np.tanh(z / np.float32(softcap))


def test_hidden_states_json_matches_evaluate_of_the_logits(hidden_files):
    a, p = hidden_files
    proc = run_xent("eval", p["h"], p["t"], "--linear-weight", p["W"], "--linear-bias", p["b"],
                    "--softcap", 20, "--json", "-k", 1, 3)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = json.loads(proc.stdout)
    z = _capped_logits(a["h"], a["W"], a["b"], 20.0)
    _same(out, evaluate(z, a["t"], k=(1, 3)), rel=2e-6)
    loss, _, acc, count = ref_evaluate(z.astype(np.float64), a["t"], k=(1, 3))
    assert out["count"] == count and out["accuracy"] == {str(k): v for k, v in acc.items()}
    assert out["loss"] == pytest.approx(loss, rel=2e-6)


@pytest.mark.parametrize("batch_rows", [None, 1, 3])
@pytest.mark.parametrize("softcap", [None, 5.0])
def test_hidden_states_in_batches_equal_one_evaluate(hidden_files, batch_rows, softcap):
    a, p = hidden_files
    r = evaluate_npy(p["h"], p["t"], k=(1, 2), batch_rows=batch_rows,
                     linear_weight_path=p["W"], softcap=softcap)
    e = evaluate(a["h"], a["t"], k=(1, 2), linear_weight=a["W"], softcap=softcap)
    assert r.count == e.count and r.accuracy == e.accuracy
    assert r.loss == pytest.approx(e.loss, rel=1e-12)
    held = evaluate(_capped_logits(a["h"], a["W"], 0, softcap), a["t"], k=(1, 2))
    assert r.accuracy == held.accuracy and r.loss == pytest.approx(held.loss, rel=2e-6)


@pytest.mark.parametrize("case", ["float16", "float64_weight", "fortran", "one_row"])
def test_hidden_states_layouts_and_dtypes(tmp_path, case):
    rng = np.random.default_rng(5)
    h = rng.standard_normal((50, 12)).astype(np.float32)
    W = rng.standard_normal((30, 12)).astype(np.float32)
    if case == "float16":
        h = h.astype(np.float16)
    elif case == "float64_weight":
        W = W.astype(np.float64)
    elif case == "fortran":  # batches along axis 0 still (the last axis is the features)
        h = np.asfortranarray(h)
    else:
        h = h[0]
    t = rng.integers(0, 30, h.shape[:-1])
    np.save(tmp_path / "h.npy", h)
    np.save(tmp_path / "W.npy", W)
    np.save(tmp_path / "t.npy", t)
    r = evaluate_npy(tmp_path / "h.npy", tmp_path / "t.npy", k=(1, 3), batch_rows=7,
                     linear_weight_path=tmp_path / "W.npy")
    e = evaluate(h, t, k=(1, 3), linear_weight=W)
    assert r.count == e.count and r.accuracy == e.accuracy
    assert r.loss == pytest.approx(e.loss, rel=1e-12)


def test_hidden_default_batches_are_whole_blocks_of_the_head():
    from xent._cli.eval import HIDDEN_BATCH_BYTES, _hidden_batch_rows

    x = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (100_000, 1024), (0, 0))
    rows = _hidden_batch_rows(x, 0, 256)
    assert rows % 256 == 0 and rows * 1024 * 4 <= HIDDEN_BATCH_BYTES
    assert _hidden_batch_rows(x, 0, 10_000) == 10_000  # at least one block
    x3 = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (64, 512, 1024), (0, 0, 0))
    assert _hidden_batch_rows(x3, 0, 256) * 512 == rows  # entries of the batch axis


def test_hidden_states_errors_are_one_line(tmp_path, hidden_files, capsys):
    a, p = hidden_files
    d = tmp_path
    np.save(d / "W15.npy", a["W"][:, :15])
    np.save(d / "b39.npy", a["b"][:39])
    np.save(d / "t_short.npy", a["t"][:, :-1])
    bad = a["t"].copy()
    bad[3, 17] = 40
    np.save(d / "bad.npy", bad)
    h, t, W = p["h"], p["t"], p["W"]
    cases = [
        ((h, t, "--linear-weight", d / "W15.npy"), ["HIDDEN", "(4, 30, 16)", "(40, 15)"]),
        ((h, t, "--linear-weight", W, "--linear-bias", d / "b39.npy"),
         ["--linear-bias", "(39,)", "(40,)"]),
        ((h, t, "--linear-weight", W, "--softcap", 0), ["--softcap", "0"]),
        ((h, t, "--linear-bias", p["b"]), ["--linear-bias", "without --linear-weight"]),
        ((h, t, "--softcap", 2), ["--softcap", "without --linear-weight"]),
        ((h, t, "--linear-weight", W, "--axis", 0), ["axis", "-1"]),
        ((h, d / "t_short.npy", "--linear-weight", W), ["TARGET", "(4, 29)", "(4, 30)"]),
        ((h, t, "--linear-weight", d / "missing.npy"), ["--linear-weight", "missing.npy"]),
    ]
    assert_fails_cleanly(run_xent("eval", *cases[0][0]), *cases[0][1])  # the real command
    for args, fragments in cases[1:]:  # the rest in this process (faster)
        status = main(["eval", *map(str, args)])
        captured = capsys.readouterr()
        assert_fails_cleanly(subprocess.CompletedProcess(args, status, captured.out,
                                                         captured.err), *fragments)
    # an index out of range in a later batch: its position in the whole file
    with pytest.raises(IndexError, match=r"40 at position \(3, 17\)"):
        evaluate_npy(h, d / "bad.npy", linear_weight_path=W, batch_rows=1)
