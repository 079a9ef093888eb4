/*
 * Internal: the arenas' chunk pools, one per chunk size (arena/arena_chunks.c),
 * for tp_stats_print.
 */
#ifndef TIDEPOOL_CHUNK_POOLS_INTERNAL_H
#define TIDEPOOL_CHUNK_POOLS_INTERNAL_H

#include <tidepool/pool.h>
#include <stddef.h>

/* Copies up to max chunk pools and their chunk sizes into pools[] and
 * sizes[]; returns how many there are. Chunk pools live until the process
 * ends, so the pointers stay valid. Safe to call concurrently. */
size_t tp__arena_chunk_pools(tp_pool **pools, size_t *sizes, size_t max);

#endif /* TIDEPOOL_CHUNK_POOLS_INTERNAL_H */
