"""Every code block of README.md runs as written, and prints what the README shows.

* ```python blocks are executed, each in a fresh namespace (so each must define
  what it uses) and in a temporary directory; a block whose first line names a
  file (``# setup.py``) is a file to save and is only compiled.  Blocks that
  import torch, dask or threadpoolctl are skipped when those are missing.
* Blocks with ``>>>`` prompts run as doctests.
* ``print(...)  # value`` (or a ``# value`` line right after the print) is the
  output the README promises: it is compared with what the block prints.
* The ``$ xent eval`` console session runs on the files that the block before it
  makes, and its output is compared with the README's.

Two examples are large (a 4 GB file; 1.6 GB of Dask data on a two-process
cluster: minutes on a small machine).  By default they run scaled down and only
the shape of their output is checked; ``XENT_TEST_README_LARGE=1`` runs them as
written and compares the numbers (to 1e-7 relative where the README says that
the last digits depend on the SIMD level).
"""

import contextlib
import doctest
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import xent

README = Path(__file__).resolve().parents[1] / "README.md"
LARGE = os.environ.get("XENT_TEST_README_LARGE", "") not in ("", "0")

EVAL_SIZES = "N, C, B = 2_000_000, 1000, 100_000"
EVAL_SMALL = "N, C, B = 20_000, 1000, 10_000"
DASK_SMALL = {"400_000": "40_000", "50_000": "5_000"}
OPTIONAL = ("torch", "dask", "distributed", "threadpoolctl")


def _blocks():
    """(language, code, line number) of every fenced block, in order."""
    text = README.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```\s*$", text, flags=re.M | re.S):
        line = text.count("\n", 0, m.start()) + 1
        out.append((m.group(1), m.group(2), line))
    return out


BLOCKS = _blocks()
PYTHON = [(code, line) for lang, code, line in BLOCKS if lang == "python"]
# The block that makes the files of the `xent eval` session runs in test_xent_eval_session.
STANDALONE = [(code, line) for code, line in PYTHON if EVAL_SIZES not in code]


def _needs(code):
    return [m for m in OPTIONAL if re.search(rf"^\s*(import|from) {m}\b", code, flags=re.M)]


def _expected_prints(code):
    """The outputs the README promises: one list entry per print() call with a comment."""
    lines = code.splitlines()
    expected = []
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("print("):
            continue
        m = re.search(r"\)\s*#\s*(.*)$", line)
        if m:
            expected.append(m.group(1).strip())
        elif i + 1 < len(lines) and lines[i + 1].lstrip().startswith("#"):
            expected.append(lines[i + 1].lstrip()[1:].strip())
    return expected


def _is_file(code):
    first = code.splitlines()[0].strip()
    return re.fullmatch(r"#\s*\S+\.py", first) is not None


def _run_python(code, tmp_path):
    """exec `code` in a fresh namespace in `tmp_path`; its stdout."""
    buf = io.StringIO()
    cwd = os.getcwd()
    threads = xent.get_num_threads()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(code, str(README), "exec"), {"__name__": "readme_block"})
    finally:
        os.chdir(cwd)
        xent.set_num_threads(threads)  # the Threads block changes it
    return buf.getvalue()


def test_readme_has_the_blocks_this_test_knows():
    assert len(PYTHON) >= 8
    assert sum(EVAL_SIZES in code for code, _ in PYTHON) == 1
    assert sum("LocalCluster" in code for code, _ in PYTHON) == 1
    assert sum(">>>" in code for code, _ in PYTHON) == 1
    assert sum(code.startswith("$ xent eval") for lang, code, _ in BLOCKS if lang == "console") == 1


@pytest.mark.parametrize("code, line", STANDALONE, ids=[f"line{line}" for _, line in STANDALONE])
def test_python_block_runs(code, line, tmp_path):
    for module in _needs(code):
        pytest.importorskip(module)
    if _is_file(code):
        compile(code, f"{README}:{line}", "exec")
        return
    if ">>>" in code:
        _run_doctest(code, line)
        return
    if "LocalCluster" in code:
        _run_dask_example(code, tmp_path)
        return
    out = _run_python(code, tmp_path)
    expected = _expected_prints(code)
    if expected:
        assert out.splitlines() == expected


def _run_doctest(code, line):
    parser = doctest.DocTestParser()
    test = parser.get_doctest(code, {}, "README", str(README), line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0 and result.attempted > 5


def _run_dask_example(code, tmp_path):
    """The Dask block is a script (it starts a cluster under ``if __name__ == "__main__"``)."""
    expected = _expected_prints(code)
    assert len(expected) == 3
    if not LARGE:
        for old, new in DASK_SMALL.items():
            assert old in code
            code = code.replace(old, new)
    script = tmp_path / "dask_example.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=900, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert len(out) == 3
    if LARGE:
        assert out == expected
    else:
        loss = float(out[0])
        eval_loss, ppl = map(float, out[1].split())
        assert math.isclose(ppl, math.exp(eval_loss), rel_tol=1e-4)
        assert 6.5 < loss < 8.5 and 6.5 < eval_loss < 8.5  # random logits: about log(1000) + 0.5
        assert out[2].startswith("{1: ") and out[2].endswith(" 34285")  # 6/7 of 40000 rows


def _session(console):
    """[(command, expected output lines)] of a console block."""
    steps = []
    for line in console.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def _close_numbers(got, want, rel):
    """Lines equal up to numbers within `rel` (plus half a unit of the printed digits)."""
    num = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
    assert re.sub(num, "#", got) == re.sub(num, "#", want), (got, want)
    for g, w in zip(re.findall(num, got), re.findall(num, want)):
        digits = len(w.split(".")[1]) if "." in w and "e" not in w else 0
        assert math.isclose(float(g), float(w), rel_tol=rel, abs_tol=0.5 * 10.0**-digits), (g, w)


def test_xent_eval_session(tmp_path):
    gen = next(code for code, _ in PYTHON if EVAL_SIZES in code)
    console = next(code for lang, code, _ in BLOCKS if lang == "console"
                   and code.startswith("$ xent eval"))
    if not LARGE:
        gen = gen.replace(EVAL_SIZES, EVAL_SMALL)
    _run_python(gen, tmp_path)
    for command, expected in _session(console):
        args = command.split()
        assert args[:2] == ["xent", "eval"]
        proc = subprocess.run([sys.executable, "-m", "xent", *args[1:]], capture_output=True,
                              text=True, cwd=tmp_path, timeout=900, env=dict(os.environ))
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        got = proc.stdout.splitlines()
        if "--json" in args:
            (got_obj,), (want_obj,) = [json.loads(g) for g in got], [json.loads(w) for w in expected]
            assert got_obj.keys() == want_obj.keys()
            if LARGE:
                assert got_obj["count"] == want_obj["count"]
                assert got_obj["accuracy"] == want_obj["accuracy"]
                for key in ("loss", "perplexity"):
                    assert math.isclose(got_obj[key], want_obj[key], rel_tol=1e-7)
            else:
                assert got_obj["count"] == 19_600
        elif LARGE:
            assert len(got) == len(expected)
            for g, w in zip(got, expected):
                _close_numbers(g, w, rel=1e-7)
        else:
            assert [g.split()[0] for g in got] == [w.split()[0] for w in expected]
            assert got[-1] == "count       19600"
