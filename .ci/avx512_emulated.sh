#!/usr/bin/env bash
# The whole test suite on xent's AVX-512 variant, on a CPU that cannot run it:
# the variant is compiled for x86-64-v3 with its AVX-512 intrinsics emulated by
# SIMDe (.ci/avx512_simde.h), and loaded through XENT_SIMD=avx512 in a copy of
# the tree whose dispatch is told the CPU has AVX-512.  It checks the logic of
# the AVX-512 loops (masks, tails, special values, transposes), not their speed.
#
# Usage: .ci/avx512_emulated.sh  (in a virtual environment with the test extras).
# Exits 0 with a message, testing nothing, where SIMDe cannot be had or the
# machine is not x86-64.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

case "$(uname -m)" in
    x86_64 | amd64) ;;
    *)
        echo "== emulated AVX-512 tests SKIPPED: not an x86-64 machine (no AVX-512 variant is built)"
        exit 0
        ;;
esac
if [ ! -f /usr/include/simde/x86/avx512.h ]; then
    apt-get install -y -q libsimde-dev >/dev/null 2>&1 || true
fi
if [ ! -f /usr/include/simde/x86/avx512.h ]; then
    echo "== emulated AVX-512 tests SKIPPED: SIMDe headers (Debian's libsimde-dev) not available"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$repo/src" "$repo/tests" "$repo/examples" "$repo/setup.py" "$repo/pyproject.toml" "$work/"
cd "$work"
rm -f src/xent/*.so src/xent/_kernels*.c src/xent/_xent_runtime.c

# All variants as usual (the baseline and runtime modules are needed too)...
python -m pip install -q "Cython>=3" "setuptools>=77"
env -u XENT_BASELINE_ONLY python setup.py -q build_ext --inplace -j 2 >/dev/null

# ...then the AVX-512 one again, from the same Cython output, for x86-64-v3 with
# the emulation force-included.
pyinc=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
npinc=$(python -c "import numpy; print(numpy.get_include())")
suffix=$(python -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
"${CC:-gcc}" -march=x86-64-v3 -O2 -fPIC -fopenmp -fopenmp-simd -fno-math-errno -fno-trapping-math \
    -Wno-unused-function -Wno-psabi -Werror=implicit-function-declaration \
    -include "$repo/.ci/avx512_simde.h" -I"$pyinc" -I"$npinc" -Isrc/xent \
    -DNPY_NO_DEPRECATED_API=NPY_2_0_API_VERSION -DXENT_BUILD_OPENMP=1 \
    '-DXENT_BUILD_COMPILER="gcc, AVX-512 emulated by SIMDe"' \
    -c src/xent/_kernels_avx512.c -o _kernels_avx512.o
"${CC:-gcc}" -shared -fopenmp _kernels_avx512.o -o "src/xent/_kernels_avx512$suffix"

# Tell this copy's dispatch that the CPU has AVX-512 (never done to a real install).
python - <<'PY'
path = "src/xent/_dispatch.py"
text = open(path).read()
line = "    supported = _xent_runtime.cpu_simd_levels()\n"
assert line in text, "the dispatch changed: update .ci/avx512_emulated.sh"
open(path, "w").write(text.replace(line, line + '    supported = ("avx512",) + tuple(supported)\n'))
PY

export PYTHONPATH="$work/src" XENT_SIMD=avx512
python -c "
import xent
from xent import _dispatch
assert xent.__file__.startswith('$work'), xent.__file__
assert _dispatch.level == 'avx512', _dispatch.level
"
echo "== tests with XENT_SIMD=avx512, emulated"
python -m pytest -q -x -p no:cacheprovider tests
