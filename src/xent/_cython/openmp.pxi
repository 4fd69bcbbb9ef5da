# OpenMP entry points with stand-ins for a serial build, so every .pyx can cimport
# them unconditionally.  XENT_OPENMP_ENABLED tells which one was compiled.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define XENT_OPENMP_ENABLED 1
    #else
    #define XENT_OPENMP_ENABLED 0
    static inline int omp_get_max_threads(void) { return 1; }
    static inline int omp_get_thread_num(void) { return 0; }
    #endif
    """
    const bint XENT_OPENMP_ENABLED
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
