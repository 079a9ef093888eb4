/*
 * <tidepool/stats.h> — every figure of the process in one report, like
 * jemalloc's malloc_stats_print and mimalloc's mi_stats_print.
 * (Included by <tidepool/tidepool.h>.)
 *
 *   tp_stats_print(stderr, NULL);     // a human-readable table
 *   tp_stats_print(f, "json");        // one JSON object (docs/options.md)
 *
 * TIDEPOOL_SHOW_STATS=1 in the environment prints the table to stderr when
 * the process exits (TIDEPOOL_SHOW_STATS=json: the JSON); see
 * docs/options.md for every TIDEPOOL_* option.
 */
#ifndef TIDEPOOL_STATS_H
#define TIDEPOOL_STATS_H

#include <tidepool/common.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Writes the process's statistics to `out`: the process-wide memory view,
 * every pool (arena chunk pools and the library's own pools included), the
 * arena chunk pools, the epoch reclaimer, the sweeper (configuration in
 * force and what it did) and every tp_heap's collector figures.
 *
 * opts: NULL or "" for the table; "json" for one JSON object (numbers are
 * bytes, counts or nanoseconds, as in the *_stats structs).
 *
 * Returns 0; -EINVAL (errno) for a NULL `out` or an unknown opts word;
 * -ENOMEM (errno) when the report's memory cannot be allocated; -EIO
 * (errno) when writing to `out` failed.
 *
 * Safe to call at any time from any thread, concurrently with everything
 * (inside a read section and from a retire callback too): it never stops
 * the world and never waits for a collection or a grace period, only for
 * the short internal locks that the individual *_read_stats functions
 * take. Figures are read one by one while other threads run, so the set is
 * not a snapshot. Not from a pool's ctor or dtor, a heap's trace callback
 * or a signal handler (it allocates and uses stdio). The report is written
 * with `out` locked (flockfile), so concurrent reports do not interleave.
 */
TP_API int tp_stats_print(FILE *out, const char *opts);

#ifdef __cplusplus
}
#endif

#endif /* TIDEPOOL_STATS_H */
