/*
 * Internal: the per-CPU machinery behind <tidepool/percpu.h> and the inline
 * sequences of <tidepool/detail/rseq.h>.
 *
 * Synchronization table for one pool's blocks (rseq mode):
 *
 *   operation            | may run concurrently with
 *   ---------------------+-------------------------------------------------
 *   pop / push (inline)  | everything below, from any thread
 *   pop_n / push_n       | everything below, from any thread
 *   drain(cpu)           | everything, from any thread (a drain that finds
 *                        | the block locked by another drains nothing)
 *   peek(cpu)            | everything (a relaxed read of the commit word)
 *
 * In the fallback (percpu-cas) mode the same table holds; the operations
 * take the block of sched_getcpu() and use CAS on the commit word, and
 * drain is a CAS loop that needs no lock against itself.
 */
#ifndef TIDEPOOL_PERCPU_INTERNAL_H
#define TIDEPOOL_PERCPU_INTERNAL_H

#include <tidepool/detail/rseq.h>
#include <tidepool/percpu.h>
#include <stdbool.h>
#include <sys/rseq.h>

struct tp__percpu_info {
  unsigned ncpu;       /* blocks per region: the number of possible CPUs */
  bool rseq;           /* rseq mode (else percpu-cas) */
  bool fence;          /* membarrier(PRIVATE_EXPEDITED_RSEQ, FLAG_CPU) works */
};
/* Initialized once, on first use of anything per-CPU (pthread_once). */
const struct tp__percpu_info *tp__percpu(void);

/* The read-only all-zero region (every operation on it misses), mapped on
 * first call; NULL + ENOMEM if it cannot be (a later call tries again).
 * Safe to call concurrently. */
char *tp__pcache_zero_base(void);

/* Maps a region of blocks for ncpu CPUs (plus the sentinels), every block
 * with bounds for `limit` objects. Returns the base (block 0) or NULL+errno. */
char *tp__pcache_region_new(unsigned limit);
void tp__pcache_region_free(char *base);
size_t tp__pcache_region_bytes(void);
/* Of that, what a new region makes resident (the pages the bounds are on). */
size_t tp__pcache_region_resident(void);

/* Fallback only: the block is held by a thread (bit 15 of the count field;
 * counts never exceed TP__PCACHE_SLOTS < 2^15). */
#define TP__PCACHE_BUSY (1ull << 15)

static inline tp__pcache *tp__pcache_at(char *base, unsigned cpu) {
  return (tp__pcache *)(base + ((size_t)cpu << TP__PCACHE_SHIFT));
}
static inline unsigned tp__pcache_count(uint64_t word) {
  return (unsigned)(word & TP__PCACHE_COUNT_MASK);
}

/* The calling thread's rseq cpu_id from glibc's struct rseq (negative when
 * rseq is not registered for the thread). */
static inline int32_t tp__rseq_cpu_id(void) {
  const volatile struct rseq *rs =
      (const volatile struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
  return (int32_t)rs->cpu_id;
}

/* The calling thread's CPU for the fallback, in [0, ncpu). */
unsigned tp__current_cpu(void);

/* Moves up to n objects between the caller's buffer and the calling CPU's
 * block, in one rseq sequence (rseq mode) or one CAS (fallback). They return
 * how many moved: fewer when the block is full/empty/locked.
 * Safe to call concurrently from any number of threads. */
unsigned tp__pcache_pop_n(char *base, void **out, unsigned n);
unsigned tp__pcache_push_n(char *base, void *const *in, unsigned n);

/* Takes every object out of CPU cpu's block into out (room for the block's
 * limit). Returns how many (0 if another thread holds the block), or
 * -ENOSYS when rseq mode has no membarrier fence to make that safe.
 * Safe to call concurrently. */
int tp__pcache_drain(char *base, unsigned cpu, void **out);

/* A relaxed read of CPU cpu's commit word (idle detection, stats). */
static inline uint64_t tp__pcache_peek(char *base, unsigned cpu) {
  return __atomic_load_n(&tp__pcache_at(base, cpu)->word, __ATOMIC_RELAXED);
}

#endif /* TIDEPOOL_PERCPU_INTERNAL_H */
