"""setup.py's OpenMP probe builds its test program with the user's CFLAGS/LDFLAGS.

The extensions are compiled with the environment's CFLAGS and linked with its
LDFLAGS (and CFLAGS); the probe that decides whether they get OpenMP must be
built the same way.  Linked without them, a probe whose object needs a runtime
(``--coverage``: gcov's; ``-fsanitize=...``: the sanitizer's) failed to link,
and xent was silently built without OpenMP, the message blaming the compiler.

The probe function is taken from setup.py (which runs setup() when executed,
so only the definitions it needs are executed here) and called with a compiler
configured as setuptools configures it.  Needs a source checkout and a C
compiler with OpenMP; skipped otherwise.
"""

import ast
import os
import shutil
import sysconfig
from pathlib import Path

import pytest

SETUP_PY = Path(__file__).resolve().parents[1] / "setup.py"


def _probe_function():
    """_probe_openmp from setup.py, with what it uses (not the rest of setup.py)."""
    if not SETUP_PY.is_file():
        pytest.skip("no setup.py here (not a source checkout)")
    tree = ast.parse(SETUP_PY.read_text())
    keep = [node for node in tree.body
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not _imports_build_tools(node)
            or isinstance(node, ast.FunctionDef) and node.name in ("_probe_openmp", "_openmp_flags")
            or isinstance(node, ast.Assign) and any(
                getattr(t, "id", None) == "OPENMP_PROBE" for t in node.targets)]
    namespace = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(SETUP_PY), "exec"), namespace)
    return namespace["_probe_openmp"]


def _imports_build_tools(node):
    names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
    return any(n.split(".")[0] in ("numpy", "Cython", "setuptools") for n in names)


def _compiler(monkeypatch, cflags, ldflags):
    """A C compiler configured by setuptools from the environment, as for build_ext."""
    pytest.importorskip("setuptools")
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    if shutil.which(cc[-1]) is None:
        pytest.skip(f"no C compiler ({cc[-1]!r} not found)")
    monkeypatch.setenv("CFLAGS", cflags)
    monkeypatch.setenv("LDFLAGS", ldflags)
    compiler = new_compiler()
    customize_compiler(compiler)
    if compiler.compiler_type != "unix":
        pytest.skip("the flags tested are GCC/Clang flags")
    return compiler


def test_probe_links_with_the_users_flags(monkeypatch, capsys):
    probe = _probe_function()
    if not probe(_compiler(monkeypatch, "", "")):
        pytest.skip("this compiler has no OpenMP even without extra flags")
    # --coverage objects need gcov's runtime, which only the link flags bring
    assert probe(_compiler(monkeypatch, "--coverage", "--coverage")), capsys.readouterr().out
