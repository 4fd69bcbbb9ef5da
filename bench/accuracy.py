"""Measure the float32 accuracy of xent's vectorised exp and log exhaustively.

Compiles bench/accuracy.c against src/xent/_rows.h (the same code the kernels
use) with the same narrow flags as setup.py, runs it, and prints the largest
error in ulps.  Takes a minute or two on one core.

    python bench/accuracy.py
"""

import pathlib
import subprocess
import sys
import sysconfig
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
SRC = HERE.parent / "src" / "xent"


def main():
    cc = sysconfig.get_config_var("CC").split()[0] or "cc"
    with tempfile.TemporaryDirectory() as tmp:
        exe = pathlib.Path(tmp) / "accuracy"
        cmd = [cc, "-O2", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd",
               "-Wno-unused-function", f"-I{SRC}", str(HERE / "accuracy.c"), "-o", str(exe), "-lm"]
        subprocess.run(cmd, check=True)
        return subprocess.run([str(exe)]).returncode


if __name__ == "__main__":
    sys.exit(main())
