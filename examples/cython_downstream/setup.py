"""Build the example extension against the installed xent.

The only xent-specific line is ``xent.get_include()`` in ``include_dirs``: the
kernels are header-only C, compiled into this extension.  ``-fopenmp-simd`` lets
the compiler vectorise the kernels' reductions; ``-fopenmp`` makes the
``prange`` loop parallel (without it, it simply runs serially).
"""

import sys

import xent
from Cython.Build import cythonize
from setuptools import Extension, setup

if sys.platform == "win32":
    compile_args, link_args = ["/O2", "/openmp"], []
elif sys.platform == "darwin":  # Apple clang has no OpenMP runtime by default
    compile_args, link_args = ["-O3", "-fopenmp-simd"], []
else:
    compile_args, link_args = ["-O3", "-fopenmp-simd", "-fopenmp"], ["-fopenmp"]

extension = Extension(
    "xent_downstream",
    ["xent_downstream.pyx"],
    include_dirs=[xent.get_include()],  # typed memoryviews need no NumPy headers
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

setup(ext_modules=cythonize([extension], compiler_directives={"language_level": 3}))
