"""bench_worker: one benchmark worker process per implementation (see README.md)."""

load("@rules_cc//cc:defs.bzl", "cc_binary")

# Warnings are errors on our code; _GNU_SOURCE for clocks, barriers, mmap.
# Every timed loop starts on a cache line, the same for every worker: where
# the linker happened to place it, liburcu's inline read pair measured
# 1.64 ns in one build of the driver and 0.98 in the next (read_pair).
BENCH_COPTS = [
    "-Wall",
    "-Wextra",
    "-Werror",
    "-D_GNU_SOURCE",
    "-falign-loops=64",
]

def bench_worker(name, copts = [], linkopts = [], deps = []):
    """bench_<name>: every workload, measured on bench/alloc_<name>.h.

    Every *_workloads.c file is compiled into every worker; each measures
    what the implementation provides (BENCH_HAVE_POOL, _ARENA, _GC, _EPOCH).

    Args:
      name: the implementation; bench/alloc_<name>.h must exist.
      copts: extra compiler options (include paths of the implementation).
      linkopts: its libraries (-ljemalloc, ...).
      deps: Bazel dependencies (//:tidepool).
    """
    cc_binary(
        name = "bench_" + name,
        srcs = native.glob(["*_workloads.c"]) + [
            "alloc.h",
            "gc_pauses.h",
            "alloc_%s.h" % name,
            "harness.c",
            "harness.h",
            "shim.cc",
            "median.h",
            "worker.c",
            "workloads.h",
        ],
        copts = BENCH_COPTS + copts,
        local_defines = ["BENCH_ALLOC=" + name],
        linkopts = linkopts + ["-lbenchmark", "-lpthread"],
        deps = deps,
    )
