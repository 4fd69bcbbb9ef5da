"""The ``xent`` command line: ``python -m xent bench`` end to end, and its errors."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

import xent
from xent._cli import bench
from xent._cli.main import main

RESULT_KEYS = {
    "case", "id", "shape", "dtype", "impl", "median_s", "gbps", "x_floor", "speedup",
    "threads", "repeat",
}
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def run_xent(*args, timeout=120):
    """``python -m xent ARGS`` in a subprocess with this environment (PYTHONPATH kept)."""
    return subprocess.run(
        [sys.executable, "-m", "xent", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``xent bench --quick --repeat 1 --threads 1 --json F [--plot P]`` run shared
    by the tests (``--plot`` when matplotlib is installed)."""
    directory = tmp_path_factory.mktemp("bench")
    path, png = directory / "bench.json", directory / "bench.png"
    args = ["bench", "--quick", "--repeat", "1", "--threads", "1", "--json", str(path)]
    if HAVE_MATPLOTLIB:
        args += ["--plot", str(png)]
    proc = run_xent(*args)
    return proc, path, png


def _table_rows(out):
    """``(function, shape, dtype, impl)`` of each table line of ``xent bench``."""
    return {tuple(line.split()[:4]) for line in out.splitlines()}


def test_bench_quick_exits_0_and_prints_table(quick_run):
    proc, _, _ = quick_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert f"xent {xent.__version__}" in out
    header = ("function", "shape", "dtype", "impl", "time", "GB/s", "x floor", "speed-up")
    assert all(column in out for column in header)
    rows = _table_rows(out)
    names = ("log_softmax", "softmax", "logsumexp", "cross_entropy", "cross_entropy+grad")
    for name in names:
        for shape in bench.QUICK_SHAPES:
            assert (name, "x".join(map(str, shape)), "float32", "numpy") in rows, (name, shape)
            assert (name, "x".join(map(str, shape)), "float32", "floor") in rows, (name, shape)
            if HAVE_TORCH:
                assert (name, "x".join(map(str, shape)), "float32", "torch") in rows
    assert ("cross_entropy", "256x50257", "float16", "xent") in rows
    assert ("cross_entropy", "256x10", "float32", "xent") in rows
    # the binary loss is timed, or shown as skipped while xent lacks it
    assert any(r[:3] == ("binary_cross_entropy_with_logits", "2000000", "float32") for r in rows)


def test_bench_quick_writes_json(quick_run):
    proc, path, _ = quick_run
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(path.read_text())
    assert doc["xent_version"] == xent.__version__
    assert doc["machine"]["numpy"]
    assert doc["settings"] == {"quick": True, "repeat": 1, "threads": 1}
    results = doc["results"]
    assert len(results) >= 3 * len(bench.QUICK_SHAPES) * 3  # xent, numpy, floor at least
    for row in results:
        assert RESULT_KEYS <= row.keys()
        assert row["median_s"] > 0
        assert row["threads"] == 1
        assert row["dtype"] == ("float16" if row["id"] == "cross_entropy:float16" else "float32")
        small = row["id"] == "cross_entropy:small"
        assert row["repeat"] == (bench.SMALL_CALL_REPEAT if small else 1)
    ids = {r["id"] for r in results}
    assert {"cross_entropy", "cross_entropy+grad", "cross_entropy:float16",
            "cross_entropy:small"} <= ids
    assert {r["impl"] for r in results if r["id"] == "cross_entropy:float16"} == {"xent", "floor"}
    impls = {r["impl"] for r in results}
    assert {"xent", "numpy", "floor"} <= impls
    if importlib.util.find_spec("scipy") is not None:
        assert "scipy" in impls
    if HAVE_TORCH:
        assert "torch" in impls
    for row in results:
        if row["impl"] == "xent":
            assert row["speedup"] == pytest.approx(1.0)
        if row["impl"] == "floor":
            assert row["x_floor"] == pytest.approx(1.0)


def test_bench_quick_compares_float16_with_float32(quick_run):
    """The float16 row is compared with the float32 row of the same shape: the
    ratio of the two medians written to the JSON, as a throughput multiple."""
    proc, path, _ = quick_run
    assert proc.returncode == 0, proc.stderr
    medians = {
        r["dtype"]: r["median_s"]
        for r in json.loads(path.read_text())["results"]
        if r["impl"] == "xent" and r["case"] == "cross_entropy" and r["shape"] == [256, 50257]
    }
    lines = [line for line in proc.stdout.splitlines()
             if line.startswith("float16 cross_entropy 256x50257: ")]
    assert len(lines) == 1, proc.stdout
    ratio = float(lines[0].split(": ")[1].split("x the float32 throughput")[0])
    assert ratio == pytest.approx(medians["float32"] / medians["float16"], abs=0.006)


def test_dtype_comparisons_needs_a_float32_xent_row_of_the_same_case_and_shape():
    def row(case, shape, dtype, impl, t):
        return {"case": case, "shape": list(shape), "dtype": dtype, "impl": impl, "median_s": t}

    rows = [
        row("cross_entropy", (4, 5), "float32", "xent", 0.004),
        row("cross_entropy", (4, 5), "float32", "torch", 0.001),  # not xent: ignored
        row("cross_entropy", (4, 5), "float16", "xent", 0.005),
        row("cross_entropy", (4, 5), "float16", "floor", 0.001),
        row("cross_entropy", (9, 5), "float16", "xent", 0.001),  # no float32 of that shape
        row("softmax", (4, 5), "bfloat16", "xent", 0.002),  # no float32 softmax
    ]
    assert bench.dtype_comparisons(rows) == [
        "float16 cross_entropy 4x5: 0.80x the float32 throughput (5.000 ms against 4.000 ms)"
    ]
    assert bench.dtype_comparisons(rows[:2]) == []


def test_bench_restores_thread_count(restore_threads):
    before = xent.get_num_threads()
    other = 1 if before != 1 else 2
    rows = bench.run(threads=other, repeat=1, cases=[bench.Case("softmax", (8, 5))])
    assert len({r["threads"] for r in rows}) == 1
    assert xent.get_num_threads() == before


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "--threads", "0"],
        ["bench", "--repeat", "x"],
        ["bench", "--no-such-option"],
        ["no-such-command"],
        [],
    ],
    ids=["threads0", "repeat-x", "bad-option", "bad-command", "no-command"],
)
def test_bad_arguments_one_line_exit_2(args, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("xent")


def test_bad_argument_subprocess_no_traceback():
    proc = run_xent("bench", "--threads", "-3")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "--threads" in proc.stderr
    assert proc.stdout == ""


def test_json_into_missing_directory_fails_before_running(tmp_path, capsys):
    assert main(["bench", "--quick", "--json", str(tmp_path / "missing" / "b.json")]) == 2
    captured = capsys.readouterr()
    assert "does not exist" in captured.err
    assert captured.out == ""  # refused before anything ran


def test_plot_without_matplotlib_says_how_to_install():
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from xent._cli.main import main\n"
        "sys.exit(main(['bench', '--quick', '--plot', 'never-written.png']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
    )
    assert proc.returncode == 2
    assert "pip install matplotlib" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="needs matplotlib")
def test_plot(quick_run):
    proc, _, png = quick_run
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in proc.stdout


def test_help_exits_0(capsys):
    assert main(["bench", "--help"]) == 0
    assert "--quick" in capsys.readouterr().out
