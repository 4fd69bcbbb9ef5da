"""Seeded property/fuzz test over every public function of xent (issue 17).

Each case (tests/fuzz_cases.py) is one random call -- legal or illegal -- of a public
function: random shapes, dtypes, layouts (unaligned, negative and zero strides,
read-only, memory-mapped), values (±inf, NaN, huge, subnormal), class indices of every
integer dtype (in and out of range), options and ``out=``/``grad_out=`` buffers.  A legal
call is judged against float64 references written from the SPEC's formulas
(tests/fuzz_refs.py): values within rounding tolerances of the computation dtype, NaN
and infinities exactly where the SPEC's non-finite rules put them, result types and
dtypes.  An illegal call must raise the SPEC's exception, with a message naming the
argument (and the offending value or shapes), and leave every input and output buffer
untouched.  No call may leak a warning, and a legal call modifies only its outputs.

Environment:

* ``XENT_FUZZ_SEED``: the seed (default 20250117);
* ``XENT_FUZZ_CASES``: how many cases (default 40000: about 50 s of CPU, a minute on two quiet cores;
  ``XENT_FUZZ_CASES=100000`` for the long run);
* ``XENT_FUZZ_CASE``: run only this case (prints its description and raises its
  failure with the full traceback).

A failure prints each failing case's number, seed, description and a one-line repro.
``KNOWN`` lists the cases that hit open findings (of issues 17 and 19): they are
reported, not failed, until the fix lands (then the entry is deleted).
"""

import os
import sys
import traceback
import warnings

import numpy as np
import pytest

import xent
from fuzz_cases import FAMILIES, family_of, make_case, narrower
from helpers import assert_same_bits_for_thread_counts

SEED = int(os.environ.get("XENT_FUZZ_SEED", "20250117"))
N_CASES = int(os.environ.get("XENT_FUZZ_CASES", "40000"))
ONLY = os.environ.get("XENT_FUZZ_CASE")
MAX_REPORTED = 10


def _f(case, key, default=None):
    return case.facts.get(key, default)


# (name, predicate(case, failure message) -> bool): open findings that a case may
# hit.  Each entry is as narrow as the finding; the lead deletes an entry
# when its fix is merged (a case that passes is never a problem).
KNOWN = []


class Failure(AssertionError):
    pass


def _snapshot(arrays):
    return [(name, a, np.array(a, copy=True)) for name, a in arrays]


def _same(a, saved):
    return a.dtype == saved.dtype and a.shape == saved.shape and (
        np.array(a, copy=True).tobytes() == saved.tobytes())


def _unchanged(snap, skip=()):
    """Every snapshotted array as it was, except those in the memory of an output."""
    for name, a, saved in snap:
        if any(np.may_share_memory(a, s) for s in skip):
            continue
        if not _same(a, saved):
            raise Failure(f"{name} was modified")


def _result_bytes(res):
    if isinstance(res, tuple):
        return tuple(_result_bytes(r) for r in res)
    if isinstance(res, (np.ndarray, np.generic)):
        return (str(res.dtype), np.shape(res), np.asarray(res).tobytes())
    if hasattr(res, "as_dict"):
        return repr(res.as_dict())
    return repr(res)


def _call(case):
    if case.call is not None:
        return case.call()
    return getattr(xent, case.func)(*case.args, **case.kwargs)


def run_case(case):
    """Run one case; raise Failure (with the reason) when it does not hold."""
    snap = _snapshot(case.arrays())
    threads = xent.get_num_threads()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = _call(case)
                exc = None
            except Exception as e:  # judged below
                res, exc = None, e
        leaked = [f"{w.category.__name__}: {w.message}" for w in caught]
        if case.error is not None:
            types, patterns = case.error
            if exc is None:
                raise Failure(f"expected {'/'.join(t.__name__ for t in types)} "
                              f"({case.mutation}), but the call returned {type(res).__name__}")
            if not isinstance(exc, types):
                raise Failure(f"expected {'/'.join(t.__name__ for t in types)} ({case.mutation}), "
                              f"got {type(exc).__name__}: {exc}")
            import re

            for pat in patterns:
                if not re.search(pat, str(exc)):
                    raise Failure(f"{type(exc).__name__} message {str(exc)!r} does not match {pat!r} "
                                  f"({case.mutation})")
            _unchanged(snap)  # nothing written on error: inputs and out buffers
        else:
            if exc is not None:
                if isinstance(exc, AssertionError):
                    raise Failure(f"{exc}")
                raise Failure(f"legal call raised {type(exc).__name__}: {exc}") from exc
            _unchanged(snap, skip=case.outputs)
            case.check(res)
            if case.determinism:
                with warnings.catch_warnings():  # (judged above)
                    warnings.simplefilter("ignore")
                    try:
                        bits = assert_same_bits_for_thread_counts(
                            lambda: _result_bytes(_call(case)), (1, 2)
                        )
                    except AssertionError:
                        raise Failure("results differ between 1 and 2 threads") from None
                # the GIL is released while kernels run: two concurrent calls, same bits
                from concurrent.futures import ThreadPoolExecutor

                xent.set_num_threads(2)
                with warnings.catch_warnings(), ThreadPoolExecutor(2) as pool:
                    warnings.simplefilter("ignore")
                    futures = [pool.submit(_call, case) for _ in range(2)]
                    both = [_result_bytes(f.result()) for f in futures]
                if both[0] != bits or both[1] != bits:
                    raise Failure("concurrent calls from two Python threads give other results")
        if leaked:
            raise Failure("leaked warning(s): " + "; ".join(leaked))
    finally:
        if xent.get_num_threads() != threads:
            xent.set_num_threads(threads)


def _known(case, msg):
    for name, pred in KNOWN:
        try:
            if pred(case, msg):
                return name
        except Exception:  # a predicate never turns a failure into an error
            continue
    return None


def _cases_of(family):
    if ONLY is not None:
        k = int(ONLY)
        return [k] if family_of(SEED, k) == family else []
    return [k for k in range(N_CASES) if family_of(SEED, k) == family]


class _Unbuilt:
    def __init__(self, k):
        self.k = k

    def describe(self):
        return f"case {self.k} (seed {SEED})"

    def repro(self):
        return (f"XENT_FUZZ_SEED={SEED} XENT_FUZZ_CASE={self.k} "
                "python -m pytest tests/test_fuzz.py -q -p no:cacheprovider")


@pytest.mark.parametrize("family", [f[0] for f in FAMILIES])
def test_fuzz(family, capsys):
    failures, known = [], {}
    ks = _cases_of(family)
    if not ks:
        pytest.skip(f"no {family} case among those selected")
    for k in ks:
        if ONLY is None:
            try:
                case = make_case(SEED, k)
            except Exception:  # a bug of the generator or the references
                failures.append((_Unbuilt(k), "the case could not be built", traceback.format_exc()))
                continue
        else:
            case = make_case(SEED, k)
        if ONLY is not None:
            with capsys.disabled():
                print("\n" + case.describe())
            run_case(case)  # the full traceback
            continue
        try:
            run_case(case)
        except AssertionError as e:
            msg = str(e)
            name = _known(case, msg)
            if name is not None:
                known[name] = known.get(name, 0) + 1
                continue
            failures.append((case, msg, traceback.format_exc(limit=3) if e.__cause__ else ""))
    if known:
        with capsys.disabled():
            print(f"\n[fuzz {family}] known findings hit (KNOWN table): "
                  + "; ".join(f"{n} x{c}" for n, c in known.items()))
    if failures:
        lines = [f"{len(failures)} of {len(ks)} {family} cases failed (seed {SEED}):"]
        for case, msg, tb in failures[:MAX_REPORTED]:
            lines += ["", case.describe(), f"  FAILED: {msg}", f"  repro: {case.repro()}"]
            if tb:
                lines.append(tb)
        if len(failures) > MAX_REPORTED:
            lines.append(f"... and {len(failures) - MAX_REPORTED} more: "
                         + ", ".join(str(c.k) for c, _, _ in failures[MAX_REPORTED:60]))
        pytest.fail("\n".join(lines), pytrace=False)


def test_cases_are_reproducible():
    """A case rebuilt from (seed, k) alone is the same case."""
    for k in (0, 1, 17, 1000):
        a, b = make_case(SEED, k), make_case(SEED, k)
        assert a.describe() == b.describe()
        assert a.family == family_of(SEED, k)


def test_generator_coverage():
    """The first cases already call every public function of xent (save the configuration
    ones), legally and illegally, with every layout, output aliasing and index dtype."""
    from fuzz_cases import INDEX_DTYPES, describe_value

    legal, illegal, seen = set(), set(), set()
    for k in range(1500):
        c = make_case(SEED, k)
        (illegal if c.error else legal).add(c.func)
        seen.update(key for key in ("inplace", "alias") if c.facts.get(key))
        for _, a in c.arrays():
            d = describe_value(a)
            seen.update(key for key in ("read-only", "unaligned", "memmap", "strides=(-",
                                        "non-native", "F)") if key in d)
            if a.size > 1 and 0 in a.strides:
                seen.add("zero-stride")
            seen.add(a.dtype)
    public = {n for n in xent.__all__ if callable(getattr(xent, n)) and n not in
              ("Evaluation", "LinearGrads", "show_config", "get_include", "get_num_threads")}
    assert public <= legal, sorted(public - legal)
    assert public <= illegal, sorted(public - illegal)
    wanted = {"inplace", "alias", "read-only", "unaligned", "memmap", "strides=(-",
              "non-native", "F)", "zero-stride"} | {np.dtype(d).newbyteorder("=") for d in INDEX_DTYPES}
    assert wanted <= seen, sorted(map(str, wanted - seen))


if __name__ == "__main__":  # python tests/test_fuzz.py K [K ...]: describe those cases
    for arg in sys.argv[1:]:
        print(make_case(SEED, int(arg)).describe())
