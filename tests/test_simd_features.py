"""Each kernel variant has exactly the hand-written SIMD paths of its level.

xent/select.h chooses, per build, between the hand-written loops of
include/xent/x86_64_v4/, x86_64_v3/ and their portable twins, and lists what it
chose; each kernel module reports that list as simd_features().  A variant whose
hand-written code silently fell back to the portable twins (a changed compiler
flag, a macro the selector no longer sees) would still pass every other test:
this one fails.  The suite runs at every level (.ci/run: XENT_SIMD=avx512, avx2,
baseline) and under AVX-512 emulation (.ci/avx512_emulated.sh), so each level's
list is asserted in CI.
"""

import platform

from xent._runtime import dispatch

X86_64_V4 = (
    "avx512_rows",  # sums of exps (one pass with the max), x86_64_v4/rows.h
    "avx512_f16_rows",  # float16 rows read in place
    "avx512_half_loads",  # float16 -> float32, 16 per instruction, x86_64_v4/half.h
    "f16c_f16_log_softmax",  # float16 log-softmax read in place, x86_64_v3/half.h
    "avx512_bce_logits",  # x86_64_v4/pointwise.h
    "avx512_tiles",  # few-class groups transposed in registers, x86_64_v4/tiles.h
    "fma_exp",  # the portable exp with fused multiply-adds (select.h)
)
X86_64_V3 = (
    "avx2_rows",  # max and sums of exps, x86_64_v3/rows.h
    "avx2_f16_rows",
    "f16c_half_loads",  # x86_64_v3/half.h
    "f16c_f16_log_softmax",
    "avx2_bce_logits",  # x86_64_v3/pointwise.h
    "avx2_tiles",  # x86_64_v3/tiles.h
    "fma_exp",
)


def _is_x86_64():
    return platform.machine().lower() in {"x86_64", "amd64"}


def test_the_variant_in_use_has_the_paths_of_its_level():
    features = dispatch.kernels.simd_features()
    assert isinstance(features, tuple) and all(isinstance(f, str) for f in features)
    if dispatch.level == "avx512":
        assert features == X86_64_V4
    elif dispatch.level == "avx2":
        assert features == X86_64_V3
    elif _is_x86_64():
        assert features == ()  # the x86-64 baseline: SSE2, no FMA, no F16C
    else:  # other architectures: portable loops, possibly the fused exp
        assert set(features) <= {"fma_exp"}


def test_show_config_names_the_paths():
    from xent._runtime.config import config_lines

    line = [x for x in config_lines() if x.startswith("hand-written SIMD paths: ")]
    assert len(line) == 1
    assert line[0].endswith(", ".join(dispatch.kernels.simd_features()) or "none")
