"""xent's thread count beside other processes: does the default hold up?

Times xent on two cases (logsumexp of 256 x 50257 float32, cross_entropy of
2048 x 50257 float32) with three thread settings, each measurement in a
process of its own (OpenMP's thread pool and wait policy are per process):

* ``default``: what a user gets (xent's default count, wait policy and
  team sizing);
* ``1 thread``: ``set_num_threads(1)``;
* ``all threads``: ``set_num_threads(len(os.sched_getaffinity(0)))``, the team
  forced to that size (``XENT_DYNAMIC_THREADS=0``): xent's default before
  issue 17;
* with ``--passive``, two more: ``passive, def`` and ``passive, all``, the same
  with ``OMP_WAIT_POLICY=passive`` (OpenMP threads sleep at once when idle
  instead of spinning some milliseconds, libgomp's default);

in three scenarios: a quiet machine (nothing else started; other load on the
machine is not controlled, so run it on a quiet one), beside a second process
that loops xent calls (as two dask workers on one machine), and beside a
process that busy-loops on one core.  ``--torch`` adds a scenario beside a
process looping ``torch.logsumexp`` with PyTorch's own OpenMP.

For each scenario and case it prints the median milliseconds per call of each
setting (all calls of all rounds pooled; settings interleaved round by round)
and the verdict: the default's median over the better of ``1 thread`` and
``all threads`` must be at most 1.3.

    python bench/load.py [--rounds 5] [--quick] [--torch] [--passive]
"""

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time

BOUND = 1.3
CASES = {
    "logsumexp 256x50257": ("logsumexp", 256, 50257),
    "cross_entropy 2048x50257": ("cross_entropy", 2048, 50257),
}
SETTINGS = ("default", "1 thread", "all threads")
PASSIVE = ("passive, def", "passive, all")

# One measurement: build the input, settle (at least two of xent's load windows,
# so the default has seen the other processes), then time `calls` calls.
CHILD = r"""
import json, sys, time
import numpy as np
import xent
from xent._runtime import threads as _threading
func, rows, cols, threads, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if threads:
    xent.set_num_threads(threads)
block = np.random.default_rng(0).standard_normal((64, cols), dtype=np.float32)
x = np.tile(block, (rows // 64, 1))
t = np.random.default_rng(1).integers(0, cols, rows)
f = (lambda: xent.logsumexp(x, axis=-1)) if func == "logsumexp" else (lambda: xent.cross_entropy(x, t))
end = time.perf_counter() + 3 * _threading.LOAD_WINDOW
f()
while time.perf_counter() < end:
    f()
times, teams = [], []
for _ in range(calls):
    t0 = time.perf_counter()
    f()
    times.append(time.perf_counter() - t0)
    teams.append(_threading.threads_for(x.size))
print(json.dumps({"times": times, "team": max(set(teams), key=teams.count)}))
"""

XENT_LOOP = r"""
import numpy as np, xent
x = np.random.default_rng(2).standard_normal((256, 50257), dtype=np.float32)
while True:
    xent.logsumexp(x, axis=-1)
"""

BUSY_LOOP = "while True: pass"

TORCH_LOOP = r"""
import torch
x = torch.randn(256, 50257)
while True:
    torch.logsumexp(x, dim=-1)
"""


def child_env(setting):
    env = os.environ.copy()
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    if os.path.isdir(os.path.join(src, "xent")):  # run from a checkout: use its build
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for name in ("XENT_NUM_THREADS", "XENT_DYNAMIC_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        env.pop(name, None)
    if setting.endswith("all threads") or setting.endswith(", all"):
        env["XENT_DYNAMIC_THREADS"] = "0"
    if setting.startswith("passive"):
        env["OMP_WAIT_POLICY"] = "passive"
    return env


def measure(case, setting, calls):
    func, rows, cols = CASES[case]
    threads = {"default": 0, "1 thread": 1, "passive, def": 0}.get(setting, len(os.sched_getaffinity(0)))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, func, str(rows), str(cols), str(threads), str(calls)],
        env=child_env(setting), capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def start_competitor(code):
    proc = subprocess.Popen([sys.executable, "-c", code], env=child_env("default"),
                            start_new_session=True)
    time.sleep(2.0)  # imported and looping
    return proc


def stop(proc):
    if proc is not None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="processes per setting (default 5)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, fewer calls")
    parser.add_argument("--torch", action="store_true", help="also beside a PyTorch loop")
    parser.add_argument("--passive", action="store_true",
                        help="also time OMP_WAIT_POLICY=passive (default and all threads)")
    parser.add_argument("--json", help="write every time measured to this file")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    ALL = SETTINGS + (PASSIVE if args.passive else ())
    scenarios = [("quiet", None), ("beside xent", XENT_LOOP), ("beside busy loop", BUSY_LOOP)]
    if args.torch:
        scenarios.append(("beside torch", TORCH_LOOP))
    cpus = len(os.sched_getaffinity(0))
    print(f"{cpus} CPUs, load average {os.getloadavg()[0]:.2f} at the start; "
          f"median ms per call, {rounds} processes per setting")
    print(f"{'scenario':<18}{'case':<26}" + "".join(f"{s:>13}" for s in ALL)
          + f"{'default/best':>14}  verdict")
    rng = random.Random(0)
    record, failed = {}, 0
    for scenario, code in scenarios:
        proc = start_competitor(code) if code else None
        try:
            for case in CASES:
                calls = (20 if args.quick else 60) if case.startswith("logsumexp") else (
                    4 if args.quick else 10)
                times = {s: [] for s in ALL}
                teams = {s: [] for s in ALL}
                for _ in range(rounds):
                    order = list(ALL)
                    rng.shuffle(order)  # interleave, so drifting load hits every setting
                    for setting in order:
                        result = measure(case, setting, calls)
                        times[setting] += result["times"]
                        teams[setting].append(result["team"])
                med = {s: 1e3 * statistics.median(times[s]) for s in ALL}
                ratio = med["default"] / min(med["1 thread"], med["all threads"])
                ok = ratio <= BOUND
                failed += not ok
                team = max(set(teams["default"]), key=teams["default"].count)
                print(f"{scenario:<18}{case:<26}" + "".join(f"{med[s]:>13.2f}" for s in ALL)
                      + f"{ratio:>14.2f}  {'ok' if ok else 'OVER ' + str(BOUND)}"
                      + f" (default team {team})", flush=True)
                record[f"{scenario} / {case}"] = {"times": times, "teams": teams}
        finally:
            stop(proc)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print("verdict: " + ("the default is within %.1fx of the best everywhere" % BOUND if not failed
                         else f"{failed} case(s) over {BOUND}x"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
