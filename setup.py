"""Build script for xent's compiled kernels.

Everything about *how* the extensions are compiled lives here, in one place:

* OpenMP is probed by compiling, linking and running a tiny OpenMP program with
  the compiler setuptools will use.  If it works, the kernels are built with
  ``-fopenmp``; if not, they are built serially and a loud warning is printed.
* Environment switches (all read at build time):

  ``XENT_DISABLE_OPENMP=1``  build without OpenMP even if the compiler has it.
  ``XENT_REQUIRE_OPENMP=1``  make a missing OpenMP a build error instead of a warning.
  ``XENT_DEBUG_BUILD=1``     Cython bounds/wraparound/initialized checks on, ``-O0 -g``;
                             used to run the whole test suite against checked kernels.

* Optimisation is ``-O3`` plus the narrow flags auto-vectorisation needs
  (``-fno-math-errno``, ``-fno-trapping-math``, ``-fopenmp-simd``).  Never
  ``-ffast-math``/``-Ofast``: they break the ``-inf`` rules the kernels rely on and can
  switch the whole process to flush-to-zero.
"""

import glob
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


DISABLE_OPENMP = _env_flag("XENT_DISABLE_OPENMP")
REQUIRE_OPENMP = _env_flag("XENT_REQUIRE_OPENMP")
DEBUG_BUILD = _env_flag("XENT_DEBUG_BUILD")

# The single place where Cython directives are chosen.
CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG_BUILD,
    "wraparound": DEBUG_BUILD,
    "initializedcheck": DEBUG_BUILD,
    "cdivision": not DEBUG_BUILD,
    "embedsignature": True,
    "freethreading_compatible": True,
}

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d\\n", n == omp_get_max_threads() ? 1 : 0);
        return n > 0 ? 0 : 1;
    }
    """
)


def _openmp_flags(compiler):
    """Compile/link flags for OpenMP with this compiler (GCC/Clang/ICC vs MSVC)."""
    if compiler.compiler_type == "msvc":
        return ["/openmp"], []
    return ["-fopenmp"], ["-fopenmp"]


def _probe_openmp(compiler):
    """Return True if a tiny OpenMP program compiles, links and runs.

    It is built with the flags the extensions get: compiled by the compiler
    setuptools uses (whose command holds the environment's CFLAGS), and linked
    with the flags of the extensions' link command (setuptools' linker_so: the
    environment's LDFLAGS and CFLAGS and Python's own, without ``-shared``).
    linker_exe, which link_executable uses, has none of them, so a probe linked
    by it alone failed under CFLAGS/LDFLAGS=-fsanitize=... or --coverage (the
    objects need the sanitizer's or gcov's runtime) and xent was built without
    OpenMP, blaming the compiler.
    """
    import shlex

    cflags, ldflags = _openmp_flags(compiler)
    exe_cmd = list(getattr(compiler, "linker_exe", None) or [])
    so_cmd = list(getattr(compiler, "linker_so", None) or [])
    if exe_cmd and so_cmd[: len(exe_cmd)] == exe_cmd:
        link_flags = [a for a in so_cmd[len(exe_cmd) :] if a not in ("-shared", "-bundle", "-dynamiclib")]
    else:  # another link command: the environment's flags, as setuptools adds them
        link_flags = shlex.split(os.environ.get("LDFLAGS", "")) + shlex.split(os.environ.get("CFLAGS", ""))
    tmp = tempfile.mkdtemp(prefix="xent-omp-probe-")
    cwd = os.getcwd()
    try:
        os.chdir(tmp)
        with open("probe.c", "w") as f:
            f.write(OPENMP_PROBE)
        objs = compiler.compile(["probe.c"], extra_postargs=cflags)
        compiler.link_executable(objs, "probe", extra_preargs=link_flags, extra_postargs=ldflags)
        exe = os.path.join(tmp, "probe" + (".exe" if sys.platform == "win32" else ""))
        out = subprocess.run([exe], capture_output=True, text=True, timeout=60)
        return out.returncode == 0 and out.stdout.strip() == "1"
    except Exception as exc:  # any compile/link/run failure means "no OpenMP"
        print(f"xent: OpenMP probe failed: {exc!r}")
        return False
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)


class XentBuildExt(build_ext):
    """build_ext that adds OpenMP and optimisation flags after probing the compiler."""

    def build_extensions(self):
        compiler = self.compiler
        use_openmp = False
        if DISABLE_OPENMP:
            print("xent: XENT_DISABLE_OPENMP is set; building the kernels without OpenMP.")
        else:
            use_openmp = _probe_openmp(compiler)
            if not use_openmp:
                message = (
                    "\n" + "*" * 78 + "\n"
                    "xent: the C compiler cannot build OpenMP programs.\n"
                    "xent will be built WITHOUT OpenMP: every kernel runs on ONE thread.\n"
                    "Install an OpenMP runtime (e.g. libgomp/libomp) to get threading,\n"
                    "or set XENT_REQUIRE_OPENMP=1 to make this an error.\n" + "*" * 78 + "\n"
                )
                if REQUIRE_OPENMP:
                    raise RuntimeError(message)
                print(message, file=sys.stderr)

        if compiler.compiler_type == "msvc":
            cflags = ["/O2"] if not DEBUG_BUILD else ["/Od", "/Zi"]
            ldflags = []
        else:
            cflags = (["-O0", "-g"] if DEBUG_BUILD else ["-O3"]) + [
                "-fno-math-errno",
                "-fno-trapping-math",
                "-fopenmp-simd",
                "-Wno-unused-function",
            ]
            ldflags = []
        if use_openmp:
            omp_c, omp_l = _openmp_flags(compiler)
            cflags += omp_c
            ldflags += omp_l

        compiler_name = " ".join(compiler.compiler_so[:1]) if hasattr(compiler, "compiler_so") else compiler.compiler_type
        for ext in self.extensions:
            ext.extra_compile_args = list(ext.extra_compile_args or []) + cflags
            ext.extra_link_args = list(ext.extra_link_args or []) + ldflags
            ext.define_macros = list(ext.define_macros or []) + [
                ("XENT_BUILD_OPENMP", "1" if use_openmp else "0"),
                ("XENT_BUILD_COMPILER", '"%s"' % _compiler_version(compiler_name).replace('"', "'")),
            ]
        self.extensions = [e for e in self.extensions if _compiler_accepts(compiler, SIMD_FLAGS.get(e.name, []))]
        super().build_extensions()


def _compiler_accepts(compiler, flags):
    """True if the compiler builds a trivial file with `flags` (e.g. -march=x86-64-v4)."""
    if not flags:
        return True
    if compiler.compiler_type == "msvc":
        return False
    tmp = tempfile.mkdtemp(prefix="xent-flag-probe-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("int xent_probe(int x) { return x + 1; }\n")
        compiler.compile([src], output_dir=tmp, extra_postargs=list(flags))
        return True
    except Exception:
        print(f"xent: the compiler does not accept {' '.join(flags)}; skipping that SIMD variant")
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _compiler_version(name):
    try:
        out = subprocess.run([name, "--version"], capture_output=True, text=True, timeout=30)
        line = out.stdout.splitlines()[0].strip()
        return line or name
    except Exception:
        return name


# Extension name -> the -march flags of its SIMD variant ([] for portable code).
SIMD_FLAGS = {}


def _extension(name, sources, simd_flags=()):
    SIMD_FLAGS[name] = list(simd_flags)  # probed in XentBuildExt
    return Extension(
        name,
        sources=sources,
        include_dirs=[np.get_include(), "src/xent"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
        extra_compile_args=list(simd_flags),
        # the C block is in headers: rebuild when any of them changes
        depends=sorted(glob.glob("src/xent/*.h")),
    )


def _is_x86_64():
    return platform.machine().lower() in {"x86_64", "amd64"}


# The kernels are built once per SIMD level; _dispatch.py picks one at import
# from the CPU's features (override: XENT_SIMD=baseline|avx2|avx512).  The
# baseline module is the portable build for any architecture.
EXTENSIONS = [
    _extension("xent._xent_runtime", ["src/xent/_xent_runtime.pyx"]),
    _extension("xent._kernels", ["src/xent/_kernels.pyx"]),
]
if _is_x86_64() and not _env_flag("XENT_BASELINE_ONLY"):
    EXTENSIONS += [
        _extension("xent._kernels_avx2", ["src/xent/_kernels_avx2.pyx"], ["-march=x86-64-v3"]),
        _extension("xent._kernels_avx512", ["src/xent/_kernels_avx512.pyx"], ["-march=x86-64-v4"]),
    ]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        compiler_directives=CYTHON_DIRECTIVES,
        include_path=["src"],
        annotate=False,
    ),
    cmdclass={"build_ext": XentBuildExt},
)
