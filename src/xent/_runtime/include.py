"""Where xent's C headers and Cython declarations live, for building other extensions."""

import os


def get_include():
    """Directory holding xent's C headers, for building extensions that ``cimport xent``.

    ``cimport xent`` (declared in ``xent/__init__.pxd``) makes Cython include
    ``xent_kernels.h``; its row kernels are header-only (static inline C, no
    exported symbols), so they are compiled into the downstream extension, which
    needs this directory among its include directories (as NumPy's headers need
    ``numpy.get_include()``).  It is the directory of the installed package, or of
    the source tree when xent is run from it: its ``include`` folder.

    Returns
    -------
    str
        Absolute path of the directory that contains ``xent_kernels.h``.

    Examples
    --------
    In a downstream ``setup.py``::

        import numpy, xent
        from setuptools import Extension
        ext = Extension("mypkg._loss", ["mypkg/_loss.pyx"],
                        include_dirs=[xent.get_include(), numpy.get_include()])

    >>> import os, xent
    >>> os.path.isfile(os.path.join(xent.get_include(), "xent_kernels.h"))
    True
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(package, "include")
