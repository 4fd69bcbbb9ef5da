"""Record (or check) the golden output hashes of tests/test_golden_outputs.py.

    python tests/golden/record_golden.py           # record: rewrites outputs.json
    python tests/golden/record_golden.py --check   # list the cases that differ, write nothing

Run it with xent importable (PYTHONPATH=src after an in-place build, or an
installed xent).  Record ONLY when a change is meant to change results (and say
so in the commit): the file is what proves that a refactoring changed no bit.

Each SIMD level runs in a process of its own (XENT_SIMD is read at import), with
the dynamic thread adjustment off, so "2 threads" means two.  A case must give
the same hash with 1 thread, 2 threads and the machine's own count, and again
once the heap has moved (other addresses, other alignments), or nothing is
written: the SPEC promises the same bits for any thread count, and a hash that
follows the addresses would make a flaky test.  A level the CPU cannot run is
left out of the file (the test then skips at that level).
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
LEVELS = ("avx512", "avx2", "baseline")


def worker():
    """In a child process: the hashes of every case at the level XENT_SIMD asks."""
    os.environ["XENT_DYNAMIC_THREADS"] = "0"  # before xent is imported
    sys.path.insert(0, str(TESTS))
    import test_golden_outputs as golden

    requested = os.environ["XENT_SIMD"]
    level = golden.active_simd_level()
    result = {"level": level, "fingerprint": golden.platform_fingerprint(), "hashes": {},
              "unstable": {}}
    if level != requested:
        print(json.dumps(result))
        return
    counts = sorted({1, 2, os.cpu_count() or 1})
    held = []  # buffers of odd sizes kept alive, so later arrays land elsewhere
    for i, name in enumerate(sorted(golden.CASES)):
        runs = {f"{n} threads": golden.run_case(name, n) for n in counts}
        held = held[-20:] + [bytearray(1 + 4099 * (i % 7)), bytearray(8 * 1024 + 24 * i)]
        runs["heap moved"] = golden.run_case(name, 1)
        if len(set(runs.values())) != 1:
            result["unstable"][name] = runs
        result["hashes"][name] = runs["1 threads"]
    print(json.dumps(result))


def record_level(level):
    env = dict(os.environ, XENT_SIMD=level)
    done = subprocess.run([sys.executable, __file__, "--worker"], env=env, check=True,
                          stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the recorded file instead of rewriting it")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return 0
    sys.path.insert(0, str(TESTS))
    import test_golden_outputs as golden

    levels, fingerprint, failed = {}, None, False
    for level in LEVELS:
        got = record_level(level)
        if got["level"] != level:
            print(f"{level}: not run here (xent runs at {got['level']!r} instead); left out")
            continue
        if fingerprint is not None and got["fingerprint"] != fingerprint:
            sys.exit(f"{level}: the platform fingerprint changed between levels: "
                     f"{got['fingerprint']} != {fingerprint}")
        fingerprint = got["fingerprint"]
        for name, runs in got["unstable"].items():
            print(f"{level}: {name}: the bits depend on the thread count or the heap: {runs}")
            failed = True
        levels[level] = got["hashes"]
        print(f"{level}: {len(got['hashes'])} cases")
    if failed:
        sys.exit("nothing written: some results depend on the thread count or the heap")
    if args.check:
        return _check(golden, fingerprint, levels)
    golden.GOLDEN_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(golden.GOLDEN_FILE, "w", encoding="utf-8") as f:
        json.dump({"fingerprint": fingerprint, "levels": levels}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {golden.GOLDEN_FILE}")
    return 0


def _check(golden, fingerprint, levels):
    recorded = golden.load_golden()
    if recorded["fingerprint"] != fingerprint:
        print(f"platform differs from the recording: {recorded['fingerprint']} != {fingerprint}")
    n_bad = 0
    for level, hashes in levels.items():
        old = recorded["levels"].get(level, {})
        changed = sorted(n for n in hashes if n in old and old[n] != hashes[n])
        new = sorted(set(hashes) - set(old))
        gone = sorted(set(old) - set(hashes))
        for what, names in (("changed", changed), ("not recorded", new), ("removed", gone)):
            for name in names:
                print(f"{level}: {what}: {name}")
        n_bad += len(changed) + len(new) + len(gone)
        same = len(hashes) - len(changed) - len(new)
        print(f"{level}: {same} of {len(hashes)} cases as recorded")
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
