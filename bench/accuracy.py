"""Measure the float32 accuracy of xent's vectorised exp and log exhaustively.

Compiles bench/accuracy.c against src/xent/include/xent/kernels.h (the same code the kernels
use) with the same narrow flags as setup.py, runs it, and prints the largest
error in ulps; it does it again for the x86-64-v3 build (AVX2, which adds the
hand-vectorised exp of its row loops) and, on a CPU with AVX-512, for the
x86-64-v4 build (which adds its own).  Takes a few minutes.

    python bench/accuracy.py
"""

import pathlib
import subprocess
import sys
import sysconfig
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
SRC = HERE.parent / "src" / "xent" / "include"


def _cpu_has(*features):
    try:
        flags = pathlib.Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return all(f in flags for f in features)


def main():
    cc = sysconfig.get_config_var("CC").split()[0] or "cc"
    # The portable build (the baseline kernels) and, where the CPU has them, the
    # x86-64-v3 and x86-64-v4 builds, which add their hand-vectorised exps.
    variants = [("portable C", [])]
    if _cpu_has("avx2", "fma", "f16c"):
        variants.append(("x86-64-v3 build", ["-march=x86-64-v3"]))
    if _cpu_has("avx512f", "avx512dq", "avx512bw", "avx512vl"):
        variants.append(("x86-64-v4 build", ["-march=x86-64-v4"]))
    rc = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in variants:
            print(f"-- {name}", flush=True)
            exe = pathlib.Path(tmp) / "accuracy"
            cmd = [cc, "-O2", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd",
                   "-Wno-unused-function", *flags, f"-I{SRC}", str(HERE / "accuracy.c"),
                   "-o", str(exe), "-lm"]
            subprocess.run(cmd, check=True)
            rc |= subprocess.run([str(exe)]).returncode
    return rc


if __name__ == "__main__":
    sys.exit(main())
