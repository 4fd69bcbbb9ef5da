"""`cimport xent` from another package: the shipped .pxd/headers and xent.get_include().

The example in ``examples/cython_downstream`` is a separate package with one .pyx
that cimports xent and calls its row kernels without the GIL.  It is copied to a
temporary directory, built there in place against the xent this test imports, and
its ``check.py`` (which compares it with xent's Python API) is run in a
subprocess.  Nothing is installed.  Needs Cython, setuptools and a C compiler;
skipped cleanly without the first two.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import xent

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cython_downstream"
PACKAGE = Path(xent.__file__).resolve().parent


def _env_with(*paths):
    """The environment for a subprocess that must import this very xent (and `paths`)."""
    env = dict(os.environ)
    xent_parent = str(Path(xent.__file__).resolve().parents[1])
    # keep the caller's entries, made absolute: the subprocess runs elsewhere
    inherited = [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), xent_parent, *inherited])
    return env


def _run(cmd, cwd, env, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed ({proc.returncode})\n"
        f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    )
    return proc


def test_get_include_holds_the_public_headers():
    include = Path(xent.get_include())
    assert include.is_absolute()
    # the include folder of the xent package actually imported (source tree or site-packages)
    assert include == PACKAGE / "include"
    assert (include / "xent_kernels.h").is_file()
    assert (PACKAGE / "__init__.pxd").is_file()  # found by Cython through sys.path
    # the forwarding header of the old location (one release)
    assert (PACKAGE / "xent_kernels.h").is_file()


@pytest.mark.parametrize("include_dir", ["get_include", "package (forwarding header)"])
def test_header_is_plain_c_with_include_guards(tmp_path, include_dir):
    """xent_kernels.h needs no Python.h, survives a double include, and works as C,
    from xent.get_include() and from the package folder (the forwarding header)."""
    include = xent.get_include() if include_dir == "get_include" else str(PACKAGE)
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    if shutil.which(cc[0]) is None:
        pytest.skip(f"no C compiler ({cc[0]!r} not found)")
    src = tmp_path / "probe.c"
    src.write_text(
        "#include \"xent_kernels.h\"\n"
        "#include \"xent_kernels.h\"\n"
        "#include <math.h>\n"
        "#include <stdio.h>\n"
        "int main(void) {\n"
        "    float x[3] = {1.0f, 2.0f, 3.0f}, g[3];\n"
        "    double y[2] = {0.0, 0.0};\n"
        "    double ce = xent_cross_entropy_row_f32(x, 3, 2, 1.0f, g);\n"
        "    int sums_to_0 = fabs(g[0] + g[1] + g[2]) < 1e-6;\n"
        "    printf(\"%.6f %.6f %d %.6f %d\\n\", ce, xent_logsumexp_row_f64(y, 2), sums_to_0,\n"
        "           g[2], XENT_KERNELS_API_VERSION);\n"
        "    return 0;\n"
        "}\n"
    )
    exe = tmp_path / "probe"
    build = subprocess.run(
        [*cc, "-O2", "-Wall", "-I", include, str(src), "-o", str(exe), "-lm"],
        capture_output=True, text=True, timeout=120,
    )
    assert build.returncode == 0, build.stderr
    assert "warning" not in build.stderr, build.stderr  # -Wall stays quiet downstream
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60).stdout.split()
    # -log softmax([1,2,3])[2] = log(1 + e^-1 + e^-2); logsumexp([0,0]) = log 2;
    # the gradient softmax - onehot sums to 0, and is p_2 - 1 at the target.
    assert out == ["0.407606", "0.693147", "1", "-0.334759", "1"]


def test_cython_downstream_example_builds_and_matches(tmp_path):
    pytest.importorskip("Cython", reason="building the cimport-xent example needs Cython")
    pytest.importorskip("setuptools", reason="building the cimport-xent example needs setuptools")
    if not EXAMPLE.is_dir():
        pytest.skip(f"the example is not here ({EXAMPLE}); run from a source checkout")
    work = tmp_path / "cython_downstream"
    shutil.copytree(
        EXAMPLE, work, ignore=shutil.ignore_patterns("build", "*.so", "*.pyd", "*.c", "__pycache__")
    )
    env = _env_with(work)
    _run([sys.executable, "setup.py", "build_ext", "--inplace"], work, env)
    proc = _run([sys.executable, "check.py"], work, env, timeout=300)
    assert "xent_downstream: OK" in proc.stdout
