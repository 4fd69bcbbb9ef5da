"""The constants shared by C and Python are defined once (in C) and exported.

The storage codes (XENT_KIND_* / XENT_INDEX_*, include/xent/rows.h) reach the
Python layer only through the kernel module's FLOAT_KINDS and INDEX_CODES; these
tests pin their names and values, and check that every kernel variant this CPU
can run exports the same constants and thresholds.
"""

import importlib

import numpy as np
import pytest

from xent._api import validation
from xent._runtime import dispatch
from xent._runtime.dispatch import kernels

FLOAT_NAMES = {"float32", "float64", "float16", "bfloat16"}
INDEX_NAMES = {f"{u}int{bits}" for u in ("", "u") for bits in (8, 16, 32, 64)}


def test_storage_codes_have_the_names_the_python_layer_needs():
    assert set(kernels.FLOAT_KINDS) == FLOAT_NAMES
    assert set(kernels.INDEX_CODES) == INDEX_NAMES
    # distinct codes: a dtype is never read as another
    assert len(set(kernels.FLOAT_KINDS.values())) == len(FLOAT_NAMES)
    assert len(set(kernels.INDEX_CODES.values())) == len(INDEX_NAMES)


def test_storage_codes_are_pinned():
    # The values of include/xent/rows.h; a change there is an ABI change for
    # code that cimports xent, so it shows up here.
    assert kernels.FLOAT_KINDS == {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}
    assert kernels.INDEX_CODES == {
        "int8": 0, "uint8": 1, "int16": 2, "uint16": 3,
        "int32": 4, "uint32": 5, "int64": 6, "uint64": 7,
    }


def test_validation_uses_the_exported_codes():
    assert validation._FLOAT_KINDS is kernels.FLOAT_KINDS
    assert validation._INDEX_CODES is kernels.INDEX_CODES
    for name, code in kernels.FLOAT_KINDS.items():
        if name != "bfloat16":
            assert validation.float_kind(np.zeros(1, name)) == code
    for name, code in kernels.INDEX_CODES.items():
        assert validation.index_storage(np.zeros(1, name))[1] == code
        # byte-swapped and platform-named integers get their native code
        swapped = np.zeros(1, np.dtype(name).newbyteorder(">" if np.little_endian else "<"))
        assert validation.index_storage(swapped)[1] == code


@pytest.mark.parametrize("tdtype", sorted(INDEX_NAMES))
def test_small_call_reads_every_index_storage(tdtype):
    # cross_entropy_small maps NumPy's integer types to the codes itself
    # (_native_index_code): the right rows for every storage.
    from xent._api import multiclass

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    t = rng.integers(0, 5, 40)
    ignore = 0 if tdtype.startswith("u") else -100
    t[::7] = ignore
    fast = multiclass._cross_entropy_small(
        x, t.astype(tdtype), axis=-1, ignore_index=ignore, reduction="sum",
        label_smoothing=0.0, z_loss=0.0, threads_for=multiclass.threads_for,
    )
    x64 = x.astype(np.float64)
    logp = x64 - np.log(np.sum(np.exp(x64), axis=1, keepdims=True))
    kept = t != ignore
    ref = -np.sum(logp[np.arange(40), np.where(kept, t, 0)][kept])
    assert fast is not None
    np.testing.assert_allclose(fast, ref, rtol=1e-5)


def _variants():
    """Every kernel module this CPU can run and this build has."""
    modules = {}
    for level in dispatch.cpu_levels:
        try:
            modules[level] = importlib.import_module(dispatch._MODULES[level])
        except ImportError:
            pass
    return modules


def test_every_variant_exports_the_same_constants():
    variants = _variants()
    assert dispatch.level in variants
    for level, module in variants.items():
        for name in ("FLOAT_KINDS", "INDEX_CODES", "THRESHOLDS", "NORMALIZE_PATHS",
                     "CROSS_ENTROPY_PATHS", "LOGSUMEXP", "LOG_SOFTMAX", "SOFTMAX",
                     "BCE_WITH_LOGITS", "BCE", "KL_DIV", "KL_DIV_LOG_TARGET",
                     "POINTWISE_TASK", "NEVER"):
            assert getattr(module, name) == getattr(kernels, name), (level, name)
