"""``xent bench``'s hidden-state cases (xent._cli.bench_linear) on a tiny shape: the rows,
their columns and sane values, the peer processes, the table and the JSON.  No timing
assertions."""

import functools
import importlib.util
import json
import math

import numpy as np
import pytest

from helpers import sanitizer_loaded
from xent._cli import bench_linear, peak_memory
from xent._cli.main import main

HAVE_TORCH = importlib.util.find_spec("torch") is not None
N, D, C = 64, 32, 300
F32 = 4


@pytest.fixture(scope="module")
def rows():
    return bench_linear.run(shapes=[(N, D, C)], threads=1, repeat=1)


def _one(rows, impl, case, way=None):
    found = [r for r in rows if r["impl"] == impl and r["case"] == case
             and r.get("way") == way]
    assert len(found) == 1, (impl, case, way, rows)
    return found[0]


def test_rows_have_the_gemm_and_every_xent_case(rows):
    assert all(r["shape"] == [N, D, C] and r["dtype"] == "float32" for r in rows)
    gemm = _one(rows, "numpy", "GEMM")
    assert gemm["x_gemm"] == 1.0 and gemm["median_s"] > 0
    cases = {r["case"] for r in rows if r["impl"] == "xent"}
    assert cases == set(bench_linear.XENT_CASES)
    for r in rows:
        assert r["threads"] == 1 and r["repeat"] == 1
        assert "peer_error" not in r, r["peer_error"]


def test_xent_rows_have_finite_ratios_and_memory(rows):
    for case in bench_linear.XENT_CASES:
        r = _one(rows, "xent", case)
        if case == "evaluate" and not bench_linear.evaluate_takes_linear_weight():
            assert r["median_s"] is None and "linear_weight" in r["skipped"]
            continue
        assert r["median_s"] > 0 and len(r["times_s"]) == 1
        assert math.isfinite(r["x_gemm"]) and r["x_gemm"] > 0
        for key in ("peak_extra_tracemalloc_bytes", "peak_extra_rss_bytes"):
            assert isinstance(r[key], int), (case, key, r[key])
            if key.endswith("rss_bytes") and sanitizer_loaded() is not None:
                continue  # a sanitizer's shadow memory and quarantine count in the RSS
            assert 0 <= r[key] < 64 << 20, (case, key, r[key])  # the bound


def test_returned_bytes_are_the_loss_and_the_gradients_asked_for(rows):
    # Not counted as extra memory: a float32 loss (4 bytes) and the gradients.
    assert _one(rows, "xent", "loss")["returned_bytes"] == F32
    assert _one(rows, "xent", "loss+grad input")["returned_bytes"] == F32 + N * D * F32
    everything = F32 + (N * D + C * D + C) * F32
    assert _one(rows, "xent", "loss+all grads")["returned_bytes"] == everything


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch")
def test_torch_rows_in_every_way_and_pass(rows):
    for way, _ in bench_linear.TORCH_WAYS:
        for torch_pass, xent_case in bench_linear.TORCH_PASSES.items():
            r = _one(rows, "torch", torch_pass, way)
            assert r["median_s"] > 0 and math.isfinite(r["x_gemm"])
            assert math.isfinite(r["speedup"]) and r["speedup"] > 0
            assert r["peak_extra_tracemalloc_bytes"] is None  # torch's tensors are not traced
            assert isinstance(r["peak_extra_rss_bytes"], int) and r["peak_extra_rss_bytes"] >= 0
            grads = (N * D + C * D) * F32 if torch_pass == "forward+backward" else 0
            assert r["returned_bytes"] == F32 + grads
    # PyTorch's process times its own GEMM: the ratios are to it, the speed-up is the
    # ratio of the ratios.
    peer_gemm = _one(rows, "numpy", "GEMM", "PyTorch's process")
    assert peer_gemm["median_s"] > 0 and peer_gemm["x_gemm"] == 1.0
    for case in bench_linear.TORCH_PASSES.values():
        mine = _one(rows, "xent", case)
        best = min((r for r in rows
                    if r["impl"] == "torch" and bench_linear.TORCH_PASSES[r["case"]] == case),
                   key=lambda r: r["median_s"])
        assert best["x_gemm"] == pytest.approx(best["median_s"] / peer_gemm["median_s"])
        expected = best["x_gemm"] / mine["x_gemm"]
        assert mine["speedup_over_fastest_torch"] == pytest.approx(expected)


def test_table_shows_every_row_and_the_columns(rows):
    text = bench_linear.Table().render(rows)
    lines = text.splitlines()
    for column in bench_linear.Table.COLUMNS:
        assert column in lines[0]
    assert lines[2].startswith(f"{N}x{D}x{C} ")
    for label in ("GEMM alone: np.matmul", "xent loss ", "xent loss+grad input",
                  "xent loss+all grads"):
        assert any(label in line for line in lines), label
    assert "MiB" in text
    if HAVE_TORCH:
        assert "xent over the fastest PyTorch: forward " in text
        assert "torch forward+backward, batch_chunk_size=256" in text


def test_peak_memory_counts_a_temporary_and_not_the_result():
    size = 8 << 20
    m = peak_memory.measure(lambda: np.ones(size // 8).sum())
    assert size <= m.tracemalloc_bytes < size + (1 << 20)
    kept = peak_memory.measure(lambda: np.ones(size // 8))
    assert kept.returned_bytes == size and kept.tracemalloc_bytes < 1 << 20


def test_cli_only_hidden_writes_json(tmp_path, monkeypatch, capsys):
    # The command's plumbing; the peer processes are tested above (each takes seconds).
    monkeypatch.setattr(bench_linear, "QUICK_HIDDEN_SHAPES", ((N, D, C),))
    monkeypatch.setattr(bench_linear, "run", functools.partial(bench_linear.run, peer=False))
    path = tmp_path / "bench.json"
    args = ["bench", "--quick", "--only", "hidden", "--threads", "1", "--repeat", "1",
            "--json", str(path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Cross-entropy from hidden states" in out and "x GEMM" in out
    assert "function  shape" not in out  # no table of the cases on logits
    doc = json.loads(path.read_text())
    assert doc["results"] == []
    assert doc["settings"]["only"] == "hidden"
    hidden = doc["hidden_states"]
    assert {r["case"] for r in hidden if r["impl"] == "xent"} == set(bench_linear.XENT_CASES)
    assert all(r["shape"] == [N, D, C] for r in hidden)
