/*
 * Region arenas: tp_arena_check, the validity check of an arena's chunk
 * lists, large list and bump pointer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include "arena/arena_state_internal.h"
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* ---- validity check ------------------------------------------------------------- */

static int check_report(const char *what, const void *at) {
  fprintf(stderr, "tidepool: tp_arena_check: %s (%p)\n", what, at);
  errno = EINVAL;
  return -EINVAL;
}

/* The chunk list runs from cur through older chunks to first, whose next is
 * NULL; with the spares it holds nchunks chunks; each older chunk used no
 * more than it had; a plain arena's bump pointer lies in the current chunk;
 * the large list holds nlarge records. Concurrent arenas: under their lock. */
static int arena_check_locked(tp_arena *a) {
  size_t listed = 0, spares = 0, large = 0;
  const struct tp__arena_chunk *c = a->cur;
  for (; c; c = c->next) {
    if (++listed > a->nchunks) return check_report("chunk list longer than nchunks (cycle?)", c);
    if (c != a->cur && c->used > a->chunk_size - CHUNK_HDR)
      return check_report("chunk used past its end", c);
    if (c == a->first) break;
  }
  if (c != a->first) return check_report("chunk list does not end at the first chunk", a->cur);
  if (a->first->next) return check_report("first chunk has an older one", a->first);
  for (c = a->spare; c; c = c->next)
    if (++spares > a->nchunks) return check_report("spare list longer than nchunks", c);
  if (listed + spares != a->nchunks) return check_report("nchunks != chunks listed + spares", a);
  for (const struct tp__arena_large *l = a->large; l; l = l->next)
    if (++large > a->nlarge) return check_report("large list longer than nlarge", l);
  if (large != a->nlarge) return check_report("large list shorter than nlarge", a);
  if (!(a->flags & TP_ARENA_CONCURRENT)) {
    char *p = *tp__arena_bump_ptr(a), *end = *tp__arena_bump_end(a);
    if (end != tp__arena_chunk_end(a, a->cur))
      return check_report("bump end is not the current chunk's", end);
    if (p < tp__arena_alloc_start(a, a->cur) || p > end)
      return check_report("bump pointer outside the current chunk", p);
  }
  return 0;
}

int tp_arena_check(tp_arena *a) {
  if (!a) {
    errno = EINVAL;
    return -EINVAL;
  }
  bool conc = a->flags & TP_ARENA_CONCURRENT;
  if (conc) pthread_mutex_lock(&a->lock);
  int rc = arena_check_locked(a);
  if (conc) pthread_mutex_unlock(&a->lock);
  return rc;
}
