"""Compare the example extension with xent's Python API; exit non-zero on a mismatch.

Run after building the extension (``pip install --no-build-isolation .`` or
``python setup.py build_ext --inplace``)::

    python check.py
"""

import sys

import numpy as np

import xent
import xent_downstream as xd

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


def main():
    failures = []

    def check(name, got, expected, dtype):
        try:
            np.testing.assert_allclose(got, expected, **TOL[dtype], err_msg=name)
        except AssertionError as exc:
            failures.append(f"{name} ({np.dtype(dtype).name}): {exc}")

    if xd.api_version() != 1:
        failures.append(f"XENT_KERNELS_API_VERSION is {xd.api_version()}, expected 1")

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for N, C in ((64, 10), (7, 1), (33, 3000)):
            x = (rng.standard_normal((N, C)) * 4).astype(dtype)
            t = rng.integers(0, C, N)
            loss, grad = xd.cross_entropy(x, t)
            ref_loss, ref_grad = xent.cross_entropy(x, t, return_grad=True)
            check(f"cross_entropy {N}x{C}", loss, ref_loss, dtype)
            check(f"cross_entropy grad {N}x{C}", grad, ref_grad, dtype)
            if grad.dtype != dtype:
                failures.append(f"grad dtype {grad.dtype}, expected {np.dtype(dtype)}")

            w = rng.uniform(0.1, 2.0, C).astype(dtype)
            t_ign = t.copy()
            t_ign[::3] = -100
            for eps, z in ((0.0, 0.0), (0.1, 0.0), (0.2, 1e-3)):
                loss, grad = xd.cross_entropy_weighted(x, t_ign, w, eps, z)
                ref_loss, ref_grad = xent.cross_entropy(
                    x, t_ign, weight=w, label_smoothing=eps, z_loss=z, return_grad=True
                )
                name = f"cross_entropy_weighted eps={eps} z={z} {N}x{C}"
                check(name, loss, ref_loss, dtype)
                check(name + " grad", grad, ref_grad, dtype)

            check(f"log_softmax {N}x{C}", xd.log_softmax(x), xent.log_softmax(x), dtype)
            check(f"logsumexp {N}x{C}", xd.logsumexp(x), xent.logsumexp(x, axis=-1), dtype)
            y = x.copy()
            xd.softmax_inplace(y)
            check(f"softmax (in place) {N}x{C}", y, xent.softmax(x), dtype)

        # xent's non-finite rules hold in the downstream build too
        special = np.array(
            [[0.0, -np.inf, 1.0], [np.inf, np.inf, 0.0], [-np.inf] * 3, [np.nan, 0.0, 1.0]],
            dtype,
        )
        with np.errstate(all="ignore"):
            for name in ("log_softmax", "logsumexp"):
                got, ref = getattr(xd, name)(special), getattr(xent, name)(special)
                check(f"{name} non-finite", got, ref, dtype)
        empty = np.empty((2, 0), dtype)
        check("logsumexp zero classes", xd.logsumexp(empty), [-np.inf] * 2, dtype)

    try:
        xd.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
        failures.append("an out-of-range label was not rejected")
    except IndexError:
        pass

    if failures:
        print("xent_downstream: MISMATCH\n" + "\n".join(failures), file=sys.stderr)
        return 1
    print(f"xent_downstream: OK (xent {xent.__version__}, kernels API {xd.api_version()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
