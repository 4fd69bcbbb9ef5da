"""Process-wide state of xent: which compiled variant runs, with how many threads.

dispatch  picks the kernel module for this CPU at import (XENT_SIMD overrides)
threads   set_num_threads/get_num_threads, the thread count of each call
config    show_config()
include   get_include(), the C headers for extensions that cimport xent
integers  as_integer(), the integer check of every count, axis and index argument
xent_openmp  (compiled) the OpenMP runtime and CPU feature probes
"""
