/* bench/alloc_glibc.h — glibc malloc/free, and malloc + free-all as an arena. */
#include <gnu/libc-version.h>
#include <stdlib.h>

#define BENCH_HAVE_POOL 1
#define BENCH_HAVE_ARENA 1

BENCH_MALLOC_POOL("glibc", malloc, free)

/* "malloc + free-all": every allocation is a malloc whose pointer is
 * recorded; reset frees them all (what a program without arenas does). */
typedef struct glibc_freeall {
  void **ptr;
  size_t n, cap;
} glibc_freeall;

static inline void *glibc_arena_create(void) { return calloc(1, sizeof(glibc_freeall)); }
static inline void glibc_arena_reset(void *arena) {
  glibc_freeall *a = arena;
  for (size_t i = 0; i < a->n; i++) free(a->ptr[i]);
  a->n = 0;
}
static inline void glibc_arena_destroy(void *arena) {
  glibc_freeall *a = arena;
  glibc_arena_reset(a);
  free(a->ptr);
  free(a);
}
static __attribute__((noinline)) int glibc_arena_grow(glibc_freeall *a) {
  size_t cap = a->cap ? a->cap * 2 : 1024;
  void **v = realloc(a->ptr, cap * sizeof *v);
  if (!v) return -1;
  a->ptr = v;
  a->cap = cap;
  return 0;
}
static inline void *glibc_arena_alloc(void *arena, size_t size) {
  glibc_freeall *a = arena;
  if (BENCH_UNLIKELY(a->n == a->cap) && glibc_arena_grow(a)) return NULL;
  void *p = malloc(size);
  if (p) a->ptr[a->n++] = p;
  return p;
}

BENCH_IMPL bench_arena_ops bench_arena_impl = {
    .name = "glibc",
    .create = glibc_arena_create,
    .destroy = glibc_arena_destroy,
    .alloc = glibc_arena_alloc,
    .reset = glibc_arena_reset,
};

static inline void bench_impl_describe(void) { bench_info("glibc", gnu_get_libc_version()); }
