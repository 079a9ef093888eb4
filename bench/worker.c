/* bench/worker.c — per-worker glue: reports the implementation's versions
 * and modes once (bench_impl_describe in bench/alloc_<name>.h), and which
 * library this process's malloc comes from (peers replace it). */
#include "bench/alloc.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

__attribute__((constructor)) static void bench_worker_describe(void) {
  bench_impl_describe();
  Dl_info info;
  void *(*volatile m)(size_t) = malloc;
  if (dladdr((void *)m, &info) && info.dli_fname) {
    const char *base = strrchr(info.dli_fname, '/');
    bench_info("malloc_from", base ? base + 1 : info.dli_fname);
  }
}
