/*
 * <tidepool/sweeper.h> — the background sweeper and the process-wide stats.
 * (Included by <tidepool/gc.h>.)
 *
 * The sweeper is one background thread (all signals blocked) that wakes
 * every interval_ms and gives memory back to the OS on its own, without
 * touching any fast path:
 *  - CPU caches of every pool nobody has used for decay_ms are drained to
 *    their slabs (rseq caches are taken over with a membarrier fence against
 *    the CPU's in-flight sequences; the fallback takes them with a CAS);
 *  - depot batches parked for decay_ms go back to their slabs, and the
 *    pages of empty batch buffers beyond a few go back to the OS;
 *  - slabs with no object out, unused for decay_ms, are unmapped (the dtor
 *    runs first), except the most recently used retain_bytes, kept mapped so
 *    the next burst does not pay for mmap and page faults again. Slabs of
 *    pools used with tp_pool_retire are unmapped only after a grace period.
 *  - arena chunks sit in chunk pools (tp_pool), so the same rules return
 *    them.
 * What was used within decay_ms stays: decay, not a cliff.
 *
 * Thread safety: every function here is safe to call concurrently.
 * tp_sweeper_start/stop serialize with each other; tp_sweep_now runs one
 * pass on the calling thread (passes never overlap). fork(): the child has
 * no sweeper thread (tp_sweeper_running() is 0 there); call
 * tp_sweeper_start() again in the child if it should have one.
 */
#ifndef TIDEPOOL_SWEEPER_H
#define TIDEPOOL_SWEEPER_H

#include <tidepool/common.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tp_sweeper_config {
  unsigned interval_ms; /* how often it wakes; 0 = default 50; max 60000 */
  unsigned decay_ms;    /* memory unused this long goes back; 0 = default
                           1000; max 3600000 */
  size_t retain_bytes;  /* empty slab memory kept mapped across all pools;
                           0 = keep none; SIZE_MAX = default (4 MiB) */
} tp_sweeper_config;

/* The default configuration, for callers that change one field. */
#define TP_SWEEPER_CONFIG_DEFAULT {50, 1000, (size_t)-1}

/* Process-wide memory view (like Go's runtime.MemStats), read without
 * stopping any thread: each field is exact on its own; the set is not a
 * snapshot while other threads run. */
typedef struct tp_stats {
  uint64_t bytes_mapped;   /* address space tidepool has mapped */
  uint64_t bytes_resident; /* of that, touched and not given back */
  uint64_t bytes_in_use;   /* in objects held by the application */
  uint64_t bytes_cached;   /* in free objects in CPU caches and depots */
  uint64_t bytes_returned; /* given back to the OS, ever */
  uint64_t sweeps;         /* sweeper passes, ever */
  uint64_t slabs_freed;    /* slabs given back, ever */
  uint64_t caches_drained; /* idle CPU caches drained, ever */
  uint64_t pools;          /* pools alive */
} tp_stats;

/* Starts the sweeper (NULL = defaults). Idempotent: a running sweeper takes
 * the new configuration. 0; -EINVAL (errno) on a bad config; -EAGAIN/-ENOMEM
 * if the thread cannot start. */
TP_API int tp_sweeper_start(const tp_sweeper_config *cfg);

/* Stops the sweeper and joins its thread. Nothing is lost: whatever was
 * cached stays cached and usable. No-op if it is not running. */
TP_API void tp_sweeper_stop(void);

/* 1 if the sweeper thread runs in this process, else 0. */
TP_API int tp_sweeper_running(void);

/* One synchronous pass with the current (or default) configuration.
 * Returns the bytes given back to the OS. */
TP_API size_t tp_sweep_now(void);

/* Like tp_sweep_now, but treats everything unused as decayed (decay 0) and
 * keeps no retained memory: gives back all that can go now (also the
 * retire-queue segments the epoch layer holds for reuse). */
TP_API size_t tp_sweep_all(void);

/* Fills *out. 0, or -EINVAL (errno) for NULL. Lock-free for get/put. */
TP_API int tp_read_stats(tp_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* TIDEPOOL_SWEEPER_H */
