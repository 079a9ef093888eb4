/*
 * <tidepool/arena.h> — region arenas: allocate many small things fast,
 * free them all at once.
 *
 * An arena bump-allocates from chunks it takes from a chunk pool shared by
 * every arena with the same chunk size (a tp_pool), so reset and destroy
 * hand chunks back for the next request instead of unmapping them; the
 * sweeper returns chunks that stay unused to the OS. The arena's own
 * header lives in its first chunk.
 *
 *   tp_arena *a = tp_arena_create(NULL);        // per request
 *   struct req *r = tp_arena_alloc(a, sizeof *r);
 *   r->path = tp_arena_strdup(a, path);
 *   tp_arena_on_reset(a, close_fd, (void *)(intptr_t)fd);
 *   ...
 *   tp_arena_reset(a);                          // next request reuses it
 *
 * Allocations are 16-byte aligned. tp_arena_alloc(a, 0) returns a unique,
 * valid pointer to zero usable bytes (it takes 16 bytes of the arena).
 * Allocations over a quarter chunk that do not fit in the rest of the
 * current chunk (in a concurrent arena: all of them) get their own mapping
 * and leave the current chunk alone: they never waste it. The mapping is the
 * size rounded up to a page — never more than 2x what was asked (their
 * bookkeeping lives elsewhere, not in the mapping).
 * Failures return NULL with errno (EINVAL, ENOMEM) and leave the arena
 * fully usable.
 *
 * Thread safety. A plain arena is not thread-safe: one thread at a time.
 * A TP_ARENA_CONCURRENT arena allocates from per-CPU bump regions (rseq,
 * the pool's per-CPU machinery; no shared atomic on the fast path):
 *
 *   operation                     | concurrent arena may run it alongside
 *   ------------------------------+-----------------------------------------
 *   alloc, alloc_aligned, calloc, | each other, from any number of threads
 *   strdup, on_reset, read_stats  |
 *   save, rewind, reset, destroy, | nothing: the caller must make sure no
 *   retire                        | other thread uses the arena
 *
 * tp_arena_retire destroys the arena after a grace period, so threads
 * inside tp_epoch read sections may keep reading its memory (the
 * configuration-snapshot pattern: build the new config in a fresh arena,
 * tp_publish it, retire the old arena).
 *
 * Under AddressSanitizer, the unallocated parts of chunks and memory given
 * up by reset or rewind are poisoned: reading reset memory is reported.
 */
#ifndef TIDEPOOL_ARENA_H
#define TIDEPOOL_ARENA_H

#include <tidepool/common.h>
#include <tidepool/detail/rseq.h> /* the inline fast paths */
#include <tidepool/percpu.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tp_arena tp_arena;

/* Many threads may allocate at once (see the table above). */
#define TP_ARENA_CONCURRENT 1u

typedef struct tp_arena_config {
  size_t chunk_size; /* 0 = 64 KiB; else 8 KiB .. 1 MiB (rounded up to 64 B) */
  size_t max_bytes;  /* 0 = unlimited; chunks + large mappings held: past it
                        allocations return NULL, errno ENOMEM */
  size_t keep_bytes; /* chunk bytes a reset keeps for reuse (the first chunk
                        is always kept); the rest goes back to the chunk pool */
  unsigned flags;    /* TP_ARENA_CONCURRENT */
} tp_arena_config;

/* A position to rewind to (plain arenas). Treat as opaque. */
typedef struct tp_arena_mark {
  void *chunk;
  char *ptr;
  void *large;
  void *cleanup;
  uint64_t generation;
} tp_arena_mark;

typedef struct tp_arena_stats {
  size_t allocated;  /* bytes handed out since the last reset (16-rounded) */
  size_t chunks;     /* chunks held */
  size_t large;      /* large mappings held */
  size_t bytes_held; /* chunk and large bytes held */
  size_t wasted;     /* chunk tails skipped when moving to a new chunk */
  size_t high_water; /* most bytes_held at any time */
  uint64_t resets;
} tp_arena_stats;

/* NULL config = defaults. NULL + errno EINVAL (bad config) or ENOMEM.
 * Safe to call concurrently. */
TP_API tp_arena *tp_arena_create(const tp_arena_config *cfg);

/* Runs the cleanups (last in, first out), gives every chunk back. NULL is
 * a no-op. */
TP_API void tp_arena_destroy(tp_arena *a);

/* Destroys the arena after a grace period (see <tidepool/epoch.h>).
 * 0, or -errno (EINVAL; EDEADLK over the retire cap inside a read section:
 * the arena is then still the caller's). */
TP_API int tp_arena_retire(tp_arena *a);

TP_API void *tp_arena_alloc_aligned(tp_arena *a, size_t size, size_t align);
TP_API void *tp_arena_calloc(tp_arena *a, size_t n, size_t size);
TP_API char *tp_arena_strdup(tp_arena *a, const char *s);

/* Registers fn(arg) to run when the arena is reset or destroyed, or rewound
 * to a mark taken before this call. Last registered runs first. 0, or
 * -errno (EINVAL, ENOMEM). */
TP_API int tp_arena_on_reset(tp_arena *a, void (*fn)(void *arg), void *arg);

/* Marks (plain arenas; a concurrent arena returns a mark that rewinds to
 * nothing). Rewinding frees everything allocated after the mark and runs
 * the cleanups registered after it; a mark is valid until the arena is
 * reset or rewound to an earlier mark (invalid marks are ignored, and abort
 * in debug builds). Marks from before a reset, from another arena (also a
 * destroyed one whose memory a new arena reuses), or past
 * the arena's current end are always caught; one made invalid by a rewind
 * to an earlier mark is caught only while the arena has not grown past its
 * position again (it then rewinds to that position: still safe). */
TP_API tp_arena_mark tp_arena_save(tp_arena *a);
TP_API void tp_arena_rewind(tp_arena *a, tp_arena_mark m);

/* Runs the cleanups, keeps up to keep_bytes of chunks (and always the
 * first), gives the rest back to the chunk pool. */
TP_API void tp_arena_reset(tp_arena *a);

/* Checks the arena's structures: its chunk list (current to first), its
 * spares and chunk count, each chunk's recorded use, a plain arena's bump
 * pointer, its large-allocation list. 0, or -EINVAL (errno) with a message
 * on stderr naming what is broken, also for NULL. For tests and debugging;
 * not concurrently with allocations (a concurrent arena's shared state is
 * read under its lock). Debug builds run it at every reset. */
TP_API int tp_arena_check(tp_arena *a);

/* 0, or -EINVAL (errno). */
TP_API int tp_arena_read_stats(const tp_arena *a, tp_arena_stats *out);

/* Slow path of tp_arena_alloc (not API). */
TP_API void *tp__arena_alloc_slow(tp_arena *a, size_t size);

/* The part of struct tp_arena the inline fast paths read (not API).
 * A plain arena bumps {ptr, end}. A concurrent arena leaves them NULL and
 * bumps the calling CPU's region in `regions` (region c at regions +
 * (c << TP__ARENA_REGION_SHIFT), its first two words {ptr, end}) for sizes
 * 1..inline_max. inline_max is 0 for a plain arena, without rseq (the
 * percpu-cas fallback) and in ASan builds of the library (which poison
 * unallocated memory), so those allocations take the slow path. */
struct tp__arena_head {
  char *ptr;
  char *end;
  char *regions;
  size_t inline_max;
};
#define TP__ARENA_REGION_SHIFT 7

/*
 * Bumps the calling CPU's region at `regions` by n (a multiple of 16) in one
 * rseq sequence: 10 instructions from arming rseq_cs to the commit
 * (objdump), one branch, no atomic. NULL when the
 * region has no room (an empty region, end == 0, has none; so do the
 * sentinels below region 0 that an unregistered thread's cpu_id -1/-2
 * lands on). Linearization point: the commit store of ptr. Safe to call
 * concurrently from any number of threads (see <tidepool/detail/rseq.h> for why
 * a sequence that commits had the region to itself).
 */
TP_INLINE char *tp__arena_region_bump(char *regions, size_t n) {
  char *p;
  __asm__ volatile goto(TP__RSEQ_CS_DESCRIPTOR TP__RSEQ_ENTER
               TP__RSEQ_BLOCK_AT(TP__ARENA_REGION_SHIFT)
               "movq (%%rax), %[p]\n\t"       /* ptr */
               "leaq (%[p],%[n]), %%rcx\n\t"  /* ptr + n */
               "cmpq 8(%%rax), %%rcx\n\t"
               "ja %l[miss]\n\t"              /* past end (end 0: refused) */
               "movq %%rcx, (%%rax)\n\t"      /* commit */
               "2:\n\t" TP__RSEQ_ABORT_HANDLER
               /* early clobber: an abort after p is written restarts at 0,
                * which must still find n intact */
               : [p] "=&r"(p)
               : [rseq] "r"(__rseq_offset), [base] "r"(regions), [n] "r"(n)
               : "rax", "rcx", "memory", "cc"
               : miss);
  return p;
miss:
  return NULL;
}

/* What tp_arena_alloc does when the plain bump misses: a concurrent
 * arena's region bump, else the slow path (not API). */
TP_INLINE void *tp__arena_alloc_miss(tp_arena *a, size_t size) {
  struct tp__arena_head *h = (struct tp__arena_head *)a;
  char *p;
  if (a != NULL && size - 1 < h->inline_max &&
      (p = tp__arena_region_bump(h->regions, (size + 15) & ~(size_t)15)) != NULL)
    return p;
  return tp__arena_alloc_slow(a, size);
}

/*
 * Allocates size bytes, 16-byte aligned. NULL + errno (EINVAL for a NULL
 * arena, ENOMEM). Size 0 (and everything that does not fit) takes the slow
 * path.
 * Plain arena (gcc 12 -O2, objdump, as a function of its own, ret
 * included): 13 instructions for a variable size, 10 for a constant one;
 * two branches (NULL arena, room), no atomic.
 * Concurrent arena: those, then one size test and the region bump
 * (10 instructions from arming rseq_cs to the commit, one branch, no
 * atomic; see tp__arena_region_bump).
 * Safe to call concurrently on a TP_ARENA_CONCURRENT arena only.
 */
TP_INLINE void *tp_arena_alloc(tp_arena *a, size_t size) {
  struct tp__arena_head *h = (struct tp__arena_head *)a;
  char *p;
  /* size - 1 < room  <=>  1 <= size <= room; room is a multiple of 16, so
   * the rounded size fits as well. */
  if (TP_UNLIKELY(a == NULL) ||
      TP_UNLIKELY(size - 1 >= (size_t)(h->end - (p = h->ptr))))
    return tp__arena_alloc_miss(a, size);
  h->ptr = p + ((size + 15) & ~(size_t)15);
  return p;
}

#ifdef __cplusplus
}
#endif

#endif /* TIDEPOOL_ARENA_H */
