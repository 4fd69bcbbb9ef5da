"""What the sdist and the wheel hold (MANIFEST.in, pyproject.toml's package-data).

* In a git checkout: every file git tracks is matched by MANIFEST.in (so the sdist can
  build xent and run its tests, examples and benchmarks), and no generated file is.
* The wheel's header list (pyproject.toml) is exactly the set of headers that
  ``xent_kernels.h`` includes, directly or not: what ``cimport xent`` users compile.
* In an installed xent (not the source tree): only what runs is there, plus
  ``__init__.pxd`` and that header set; no Cython sources, no generated C.

``.ci/packaging.sh`` builds the real sdist and wheel and checks them further (the
repaired wheel's libraries, debug sections); it sets ``XENT_TEST_EXPECT_XENT_IN`` so
that the suite checks it runs against the installed package.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import xent

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(xent.__file__).resolve().parent
FROM_SOURCE_TREE = PACKAGE == ROOT / "src" / "xent"
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)
# what the build makes next to, or from, the sources: never in the sdist
GENERATED = re.compile(r"(^src/.*\.c$)|(\.(so|pyd|o)$)|(__pycache__/)|(^build/)|(\.egg-info/)")


def _header_closure(directory, root="xent_kernels.h"):
    """The headers `root` includes (with quotes), directly or not, itself included, as
    paths relative to `directory`.  A quoted include is looked up as the compiler does:
    beside the including header first, then in the include folder (xent.get_include())."""
    directory = Path(directory)
    include_dir = directory / "include"
    seen, todo = set(), [directory / root]
    while todo:
        path = todo.pop()
        name = path.relative_to(directory).as_posix()
        if name in seen:
            continue
        seen.add(name)
        assert path.is_file(), f"{name} (included from the kernels' headers) is not in {directory}"
        for included in INCLUDE.findall(path.read_text(encoding="utf-8")):
            beside = (path.parent / included).resolve()
            todo.append(beside if beside.is_file() else (include_dir / included).resolve())
    return seen


def _git_tracked_files():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        pytest.skip(f"git ls-files failed: {proc.stderr.strip()}")
    return {f for f in proc.stdout.split("\0") if f}


def test_manifest_covers_every_tracked_file(monkeypatch):
    tracked = _git_tracked_files()
    if not (ROOT / "MANIFEST.in").is_file():
        pytest.fail("MANIFEST.in is missing: the sdist would lack the Cython sources and tests")
    filelist_module = pytest.importorskip("setuptools.command.egg_info")
    files = filelist_module.FileList()
    monkeypatch.chdir(ROOT)
    for line in (ROOT / "MANIFEST.in").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            files.process_template_line(line)
    included = {Path(f).as_posix() for f in files.files}
    missing = sorted(tracked - included)
    assert not missing, f"git tracks files that MANIFEST.in leaves out of the sdist: {missing}"
    generated = sorted(f for f in included if GENERATED.search(f))
    assert not generated, f"MANIFEST.in takes generated files into the sdist: {generated}"


def test_wheel_headers_are_what_xent_kernels_h_includes():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    if not (ROOT / "pyproject.toml").is_file() or not (ROOT / "src" / "xent").is_dir():
        pytest.skip("not run from a source tree (no pyproject.toml, src/xent)")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_data = config["tool"]["setuptools"]["package-data"]["xent"]
    assert config["tool"]["setuptools"]["include-package-data"] is False, (
        "include-package-data would put every sdist file of src/xent (.pyx, .pxi) in the wheel"
    )
    shipped = {name for name in package_data if name.endswith(".h")}
    assert not any("*" in name for name in shipped), "list the shipped headers by name"
    assert shipped == _header_closure(ROOT / "src" / "xent")
    assert "__init__.pxd" in package_data  # `cimport xent`


def test_installed_package_holds_only_what_runs():
    if FROM_SOURCE_TREE or not (PACKAGE / "__init__.py").is_file():
        pytest.skip(f"xent is imported from the source tree ({PACKAGE}), not an installation")
    files = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*") if p.is_file()}
    sources = sorted(f for f in files if re.search(r"\.(c|cpp|pyx|pxi)$", f))
    assert not sources, f"the installed package holds build sources: {sources}"
    pxd = sorted(f for f in files if f.endswith(".pxd"))
    assert pxd == ["__init__.pxd"], pxd
    headers = {f for f in files if f.endswith(".h")}
    assert headers == _header_closure(PACKAGE), "headers shipped besides the kernels' own"
    assert {"py.typed", "__init__.pyi"} <= files
    extensions = {f.split(".")[0] for f in files if re.search(r"\.(so|pyd)$", f)}
    assert {"_runtime/xent_openmp", "_kernels"} <= extensions, sorted(files)


@pytest.mark.skipif(
    not os.environ.get("XENT_TEST_EXPECT_XENT_IN"),
    reason="set XENT_TEST_EXPECT_XENT_IN=<dir> to check which xent the suite imports",
)
def test_xent_is_imported_from_the_expected_installation():
    expected = Path(os.environ["XENT_TEST_EXPECT_XENT_IN"]).resolve()
    assert expected in PACKAGE.parents, f"xent imported from {PACKAGE}, expected under {expected}"
