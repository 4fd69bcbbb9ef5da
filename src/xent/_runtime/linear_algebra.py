"""The matrix products of linear_cross_entropy, through SciPy's BLAS.

Every product goes through one BLAS library (SciPy's OpenBLAS) so that one thread pool
runs them, limited to xent's thread count while a call lasts (`blas_threads`).  SciPy's
``gemm`` takes Fortran-ordered operands without a copy, so a C-ordered (rows, C) block
is passed as its transpose, and accumulates into the weight gradient (``beta=1``)
without a C×D temporary, which NumPy's matmul cannot do.  Why BLAS through SciPy and not
NumPy: BENCHMARKS.md, "Cross-entropy from hidden states".
"""

from __future__ import annotations

import contextlib

import numpy as np


def _gemm(dtype):
    from scipy.linalg import blas  # imported on first use: `import xent` needs NumPy only

    return blas.sgemm if dtype == np.float32 else blas.dgemm


def _fortran_operand(a):
    """(matrix, transposed?) such that op(matrix) == a with `matrix` Fortran-ordered,
    so that BLAS reads `a` in place when its rows or its columns are contiguous."""
    if a.flags.f_contiguous:
        return a, False
    if a.flags.c_contiguous:
        return a.T, True
    return np.asfortranarray(a), False


class BlasProducts:
    """The four steps of a block of rows, for one computation dtype."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.gemm = _gemm(self.dtype)

    def logits(self, xb, w, bias, softcap, out):
        """out = softcap·tanh((xb @ w.T + bias)/softcap); out is C-ordered (rows, C)."""
        a, ta = _fortran_operand(w)  # out.T = w @ xb.T
        b, tb = _fortran_operand(xb.T)
        self.gemm(1.0, a, b, trans_a=ta, trans_b=tb, c=out.T, overwrite_c=True)
        if bias is not None:
            out += bias
        if softcap is not None:
            out /= softcap
            np.tanh(out, out=out)
            out *= softcap

    def softcap_chain(self, g, z, softcap):
        """g *= 1 - (z/softcap)²: the derivative of the cap, from the capped logits."""
        np.divide(z, softcap, out=z)
        np.square(z, out=z)
        np.subtract(1.0, z, out=z)
        g *= z

    def input_grad(self, g, w, out):
        """out = g @ w (rows, D), out C-ordered."""
        a, ta = _fortran_operand(w.T)  # out.T = w.T @ g.T
        b, tb = _fortran_operand(g.T)
        self.gemm(1.0, a, b, trans_a=ta, trans_b=tb, c=out.T, overwrite_c=True)

    def weight_grad(self, g, xb, out, *, accumulate):
        """out (+)= g.T @ xb, out C-ordered (C, D), accumulated in place (beta=1)."""
        a, ta = _fortran_operand(xb.T)  # out.T = xb.T @ g
        b, tb = _fortran_operand(g)
        self.gemm(1.0, a, b, beta=1.0 if accumulate else 0.0, trans_a=ta, trans_b=tb,
                  c=out.T, overwrite_c=True)


_PRODUCTS = {}


def blas_products(dtype):
    """The BlasProducts of `dtype` (float32 or float64), made once."""
    dt = np.dtype(dtype)
    if dt not in _PRODUCTS:
        _PRODUCTS[dt] = BlasProducts(dt)
    return _PRODUCTS[dt]


def blas_threads(n):
    """Context manager limiting BLAS to `n` threads (threadpoolctl) for a call."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")
