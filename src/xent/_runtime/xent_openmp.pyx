# Facts about this build and this CPU: whether OpenMP is on, which compiler
# built the extensions, OpenMP's default team size, and which x86-64 SIMD levels
# the CPU (and OS) support.  The file name is unique on purpose: threadpoolctl
# finds this extension among the loaded libraries by the prefix "_xent_runtime"
# (see _runtime/threads.py).
include "xent/_cython/openmp.pxi"

cdef extern from *:
    """
    #ifndef XENT_BUILD_COMPILER
    #define XENT_BUILD_COMPILER "unknown"
    #endif
    /* 0 = baseline only, 1 = x86-64-v3 (AVX2, FMA, F16C, BMI), 2 = x86-64-v4 (AVX-512). */
    static int xent_cpu_level(void)
    {
    #if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
        __builtin_cpu_init();
    #if !defined(__clang__) && __GNUC__ >= 12
        if (__builtin_cpu_supports("x86-64-v4")) return 2;
        if (__builtin_cpu_supports("x86-64-v3")) return 1;
    #else
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
            && __builtin_cpu_supports("bmi2"))
            return 2;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
            && __builtin_cpu_supports("bmi2"))
            return 1;
    #endif
    #endif
        return 0;
    }
    """
    const char *XENT_BUILD_COMPILER
    int xent_cpu_level()

cdef extern from *:
    """
    #include <limits.h>
    #ifdef _OPENMP
    #include <omp.h>
    static int xent_omp_thread_limit(void) { return omp_get_thread_limit(); }
    #else
    static int xent_omp_thread_limit(void) { return INT_MAX; }
    #endif
    """
    int xent_omp_thread_limit()


def openmp_enabled():
    """True if the kernels were compiled with OpenMP."""
    return bool(XENT_OPENMP_ENABLED)


def openmp_max_threads():
    """OpenMP's current default team size for the calling thread (1 without OpenMP)."""
    return omp_get_max_threads()


def openmp_thread_limit():
    """OpenMP's thread-limit-var (``OMP_THREAD_LIMIT``; INT_MAX when unset or serial)."""
    return xent_omp_thread_limit()


def compiler():
    """The compiler that built the extensions, as its ``--version`` reported it."""
    return XENT_BUILD_COMPILER.decode("utf-8", "replace")


def cpu_simd_levels():
    """SIMD kernel variants this CPU can run, best first (names as in dispatch.py)."""
    level = xent_cpu_level()
    return ("avx512", "avx2", "baseline")[2 - level:]
