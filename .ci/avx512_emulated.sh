#!/usr/bin/env bash
# The whole test suite on xent's AVX-512 variant, on a CPU that cannot run it:
# setup.py builds the variant, with its usual flags but for x86-64-v3, its
# AVX-512 intrinsics emulated by SIMDe (.ci/avx512_simde.h), and it is loaded
# through XENT_SIMD=avx512 in a copy of the tree whose dispatch is told the CPU
# has AVX-512.  It checks the logic of
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
rm -rf build; find src -name "*.so" -delete

# The kernels built by setup.py as usual, with its own flags, through a compiler
# wrapper that compiles the AVX-512 variant (the one file built with
# -march=x86-64-v4) for x86-64-v3 with the emulation force-included.
python -m pip install -q "Cython>=3" "setuptools>=77"
cat > "$work/cc" <<CC
#!/usr/bin/env bash
args=()
for a in "\$@"; do
    if [ "\$a" = -march=x86-64-v4 ]; then
        args+=(-march=x86-64-v3 -include "$repo/.ci/avx512_simde.h" -Wno-psabi
               -Werror=implicit-function-declaration)
    else
        args+=("\$a")
    fi
done
exec ${CC:-gcc} "\${args[@]}"
CC
chmod +x "$work/cc"
CC="$work/cc" env -u XENT_BASELINE_ONLY python setup.py -q build_ext --inplace -j 2 >/dev/null

# Tell this copy's dispatch that the CPU has AVX-512 (never done to a real install).
python - <<'PY'
path = "src/xent/_runtime/dispatch.py"
text = open(path).read()
line = "    supported = _xent_runtime.cpu_simd_levels()\n"
assert line in text, "the dispatch changed: update .ci/avx512_emulated.sh"
open(path, "w").write(text.replace(line, line + '    supported = ("avx512",) + tuple(supported)\n'))
PY

export PYTHONPATH="$work/src" XENT_SIMD=avx512 XENT_TEST_EMULATED_SIMD=avx512  # golden outputs skip
python -c "
import xent
from xent._runtime import dispatch as _dispatch
assert xent.__file__.startswith('$work'), xent.__file__
assert _dispatch.level == 'avx512', _dispatch.level
"
echo "== tests with XENT_SIMD=avx512, emulated"
python -m pytest -q -x -p no:cacheprovider tests
