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
  ``XENT_BUILD_JOBS=N``      compile N extensions at once (default: one per CPU this
                             process may use; ``build_ext -j N`` wins over it).

* Optimisation is ``-O3`` plus the narrow flags auto-vectorisation needs
  (``-fno-math-errno``, ``-fno-trapping-math``, ``-fopenmp-simd``).  Never
  ``-ffast-math``/``-Ofast``: they break the ``-inf`` rules the kernels rely on and can
  switch the whole process to flush-to-zero.  Release builds add ``-g0`` (no debug
  information in the shipped ``.so`` files) unless ``CFLAGS`` asks for ``-g``.
* Cython writes its C files into the build directory (``<build_temp>/cython``), never
  next to the sources, and only when a ``.pyx``/``.pxi``/``.pxd`` of xent, the Cython
  version or the directives changed; an extension is recompiled only when its C file,
  a header or its compile options changed.  So a second ``pip install .`` (which builds
  in the source tree's ``build/``) reuses the first one's work, although each pip build
  runs in a fresh isolated environment whose Cython/NumPy files are all newer.
* The extensions compile in parallel (``XENT_BUILD_JOBS``).
"""

import glob
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap

import numpy as np
from Cython import __version__ as CYTHON_VERSION
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError


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
    """build_ext that adds OpenMP and optimisation flags after probing the compiler.

    It also runs Cython itself (into the build directory, only for stale modules),
    recompiles an extension only when its C file, headers or options changed, and
    builds the extensions in parallel by default (see the module docstring).
    """

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:  # no -j/--parallel on the command line
            self.parallel = _default_build_jobs()

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
            # -g0 last on the line: Python's own CFLAGS carry -g (10 MB of DWARF in the wheel)
            release = ["-O3"] if _cflags_ask_for_debug_info() else ["-O3", "-g0"]
            cflags = (["-O0", "-g"] if DEBUG_BUILD else release) + [
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

        if hasattr(compiler, "compiler_so"):
            # the compiler, not a launcher in front of it (CC="ccache gcc")
            words = list(compiler.compiler_so)
            while len(words) > 1 and os.path.basename(words[0]) in _LAUNCHERS:
                words.pop(0)
            compiler_name = words[0]
        else:
            compiler_name = compiler.compiler_type
        for ext in self.extensions:
            ext.extra_compile_args = list(ext.extra_compile_args or []) + cflags
            ext.extra_link_args = list(ext.extra_link_args or []) + ldflags
            ext.define_macros = list(ext.define_macros or []) + [
                ("XENT_BUILD_OPENMP", "1" if use_openmp else "0"),
                ("XENT_BUILD_COMPILER", '"%s"' % _compiler_version(compiler_name).replace('"', "'")),
            ]
        self.extensions = [e for e in self.extensions if _compiler_accepts(compiler, SIMD_FLAGS.get(e.name, []))]
        # the big kernel modules first, so that the parallel build ends together
        self.extensions.sort(key=lambda e: e.name == "xent._runtime.xent_openmp")
        for ext in self.extensions:  # the .pyx (sources become the C file when built)
            ext.xent_pyx = getattr(ext, "xent_pyx", None) or ext.sources[0]
        cython_deps = _cython_dependencies([e.xent_pyx for e in self.extensions])
        for ext in self.extensions:
            ext.cython_deps = cython_deps[ext.xent_pyx]
            # a change to any .pyx/.pxi/.pxd/.h it reads rebuilds it
            ext.depends = sorted(set(ext.depends) | set(ext.cython_deps))
        super().build_extensions()

    def build_extension(self, ext):
        """Cythonize `ext` if stale, then compile it if its C file, headers or options changed.

        Runs in build_ext's thread pool, one call per extension.
        """
        ext.sources = [self._cythonize(ext)]
        fingerprint = _fingerprint(
            sources=ext.sources,
            compiler=getattr(self.compiler, "compiler_so", self.compiler.compiler_type),
            linker=getattr(self.compiler, "linker_so", None),
            compile_args=ext.extra_compile_args,
            link_args=ext.extra_link_args,
            macros=ext.define_macros,
            numpy=np.__version__,  # not its path: pip's isolated environments move it
        )
        ext_path = self.get_ext_fullpath(ext.name)
        stamp = os.path.join(
            self.build_temp,
            "xent-stamps",
            "%s-%s.json" % (ext.name, hashlib.sha1(os.path.abspath(ext_path).encode()).hexdigest()[:12]),
        )
        if os.path.exists(ext_path) and _read_text(stamp) != fingerprint:
            os.remove(ext_path)  # built with other flags (e.g. XENT_DEBUG_BUILD): rebuild
        super().build_extension(ext)
        _write_text(stamp, fingerprint)

    def _cythonize(self, ext):
        """Path of `ext`'s C file under build_temp, running Cython when it is stale."""
        pyx = ext.xent_pyx
        c_file = os.path.join(self.build_temp, "cython", *ext.name.split(".")) + ".c"
        stamp = c_file + ".json"
        directives = [f"{key}={value}" for key, value in sorted(CYTHON_DIRECTIVES.items())]
        # numpy: `cimport numpy` reads NumPy's own .pxd
        fingerprint = _fingerprint(
            cython=CYTHON_VERSION, numpy=np.__version__, directives=directives, source=pyx
        )
        if (
            not self.force
            and os.path.exists(c_file)
            and _read_text(stamp) == fingerprint
            # mtimes of xent's own files only: Cython's and NumPy's .pxd are new in
            # every isolated build environment, and their versions are fingerprinted
            and all(os.path.getmtime(d) <= os.path.getmtime(c_file) for d in ext.cython_deps)
        ):
            return c_file
        os.makedirs(os.path.dirname(c_file), exist_ok=True)
        cmd = [sys.executable, "-m", "cython", "--module-name", ext.name, "-I", "src"]
        for directive in directives:
            cmd += ["-X", directive]
        cmd += ["-o", c_file, pyx]
        print(f"xent: cythonizing {pyx} -> {c_file}")
        proc = subprocess.run(cmd, capture_output=True, text=True)  # in parallel, one per extension
        output = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0:
            if os.path.exists(c_file):
                os.remove(c_file)
            raise CompileError(f"Cython failed on {pyx}:\n{output}")
        if output:
            print(output)
        _write_text(stamp, fingerprint)
        return c_file


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


_LAUNCHERS = {"ccache", "sccache", "distcc"}


def _cflags_ask_for_debug_info():
    """True if the user's CFLAGS ask for debug information (e.g. a sanitizer build)."""
    flags = shlex.split(os.environ.get("CFLAGS", ""))
    return any(f.startswith("-g") and f != "-g0" for f in flags)


def _default_build_jobs():
    """XENT_BUILD_JOBS, else the number of CPUs this process may run on."""
    value = os.environ.get("XENT_BUILD_JOBS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"XENT_BUILD_JOBS must be a positive integer, got {value!r}")
        return int(value)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _cython_dependencies(pyx_files):
    """{pyx: the files of this project that Cython reads for it (.pyx/.pxi/.pxd)}."""
    project = os.path.abspath("src") + os.sep
    try:
        from Cython.Build.Dependencies import create_dependency_tree
        from Cython.Compiler.Main import Context
        from Cython.Compiler.Options import CompilationOptions, default_options

        options = CompilationOptions(default_options, include_path=["src"])
        tree = create_dependency_tree(Context.from_options(options), quiet=True)
        deps = {pyx: tree.all_dependencies(pyx) for pyx in pyx_files}
    except Exception as exc:  # an older/newer Cython API: assume every file matters
        print(f"xent: Cython dependency scan failed ({exc!r}); every .pyx/.pxi/.pxd counts")
        every = {
            f for pattern in ("*.pyx", "*.pxi", "*.pxd") for f in glob.glob("src/xent/**/" + pattern, recursive=True)
        }
        deps = {pyx: every | {pyx} for pyx in pyx_files}
    return {
        pyx: sorted(os.path.relpath(d) for d in files if os.path.abspath(d).startswith(project))
        for pyx, files in deps.items()
    }


def _fingerprint(**fields):
    return json.dumps(fields, sort_keys=True, default=str)


def _read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


# Extension name -> the -march flags of its SIMD variant ([] for portable code).
SIMD_FLAGS = {}


def _extension(name, sources, simd_flags=()):
    SIMD_FLAGS[name] = list(simd_flags)  # probed in XentBuildExt
    return Extension(
        name,
        sources=sources,
        include_dirs=[np.get_include(), "src/xent/include"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
        extra_compile_args=list(simd_flags),
        # the C block is in headers: rebuild when any of them changes (XentBuildExt
        # adds the .pyx/.pxi/.pxd that Cython reads)
        depends=sorted(glob.glob("src/xent/include/**/*.h", recursive=True)),
    )


def _is_x86_64():
    return platform.machine().lower() in {"x86_64", "amd64"}


# The kernels are built once per SIMD level; _runtime/dispatch.py picks one at import
# from the CPU's features (override: XENT_SIMD=baseline|avx2|avx512).  The
# baseline module is the portable build for any architecture.
EXTENSIONS = [
    _extension("xent._runtime.xent_openmp", ["src/xent/_runtime/xent_openmp.pyx"]),
    _extension("xent._kernels", ["src/xent/_kernels.pyx"]),
]
if _is_x86_64() and not _env_flag("XENT_BASELINE_ONLY"):
    EXTENSIONS += [
        _extension("xent._kernels_avx2", ["src/xent/_kernels.pyx"], ["-march=x86-64-v3"]),
        _extension("xent._kernels_avx512", ["src/xent/_kernels.pyx"], ["-march=x86-64-v4"]),
    ]

# The sources stay .pyx: XentBuildExt runs Cython at build time, into the build
# directory (an sdist or egg_info never runs it).
setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": XentBuildExt})
