/*
 * Epochs: tp_epoch_check, the validity check of every retire queue and of
 * the thread registry (debug builds run it after each reclaim cycle).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include "epoch/epoch_state_internal.h"
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* ---- validity check ------------------------------------------------------------ */

static int check_report(const char *what, const void *at) {
  fprintf(stderr, "tidepool: tp_epoch_check: %s (%p)\n", what, at);
  errno = EINVAL;
  return -EINVAL;
}

/* One retire queue (caller holds consume_lock, so head, chead and cidx are
 * stable; the tail is read with acquire, so the entries below it are
 * visible): head <= tail, and the entries [head, tail) are reachable from
 * the consumer's segment through published next links, each with a
 * callback. */
static int queue_check(const struct tp__epoch_queue *q) {
  uint64_t tail = __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE);
  uint64_t head = __atomic_load_n(&q->head, __ATOMIC_RELAXED);
  if (head > tail) return check_report("retire queue: head past tail", q);
  if (!q->chead) return check_report("retire queue: no consumer segment", q);
  if (q->cidx > SEG_CAP) return check_report("retire queue: consumer index past its segment", q);
  const struct tp__epoch_seg *sg = q->chead;
  uint32_t idx = q->cidx;
  for (uint64_t n = head; n < tail; n++) {
    if (idx == SEG_CAP) {
      sg = __atomic_load_n(&sg->next, __ATOMIC_ACQUIRE);
      if (!sg) return check_report("retire queue: published entry past the last segment", q);
      idx = 0;
    }
    if (!sg->e[idx].fn) return check_report("retire queue: entry without a callback", &sg->e[idx]);
    idx++;
  }
  return 0;
}

/* Every retire queue and the thread registry. Not from a retire callback
 * (consume_lock is held there). */
int tp__epoch_check_all(void) {
  int rc = 0;
  pthread_mutex_lock(&tp__epoch_consume_lock);
  pthread_mutex_lock(&tp__epoch_registry_lock);
  uint64_t n = 0;
  const struct tp__epoch_thread *prev = NULL;
  for (const struct tp__epoch_thread *t = tp__epoch_threads; t && !rc; prev = t, t = t->next) {
    if (t->prev != prev) rc = check_report("thread registry: prev link broken", t);
    else if (++n > tp__epoch_nthreads) rc = check_report("thread registry longer than nthreads", t);
  }
  if (!rc && n != tp__epoch_nthreads) rc = check_report("thread registry shorter than nthreads", tp__epoch_threads);
  for (const struct tp__epoch_queue *q = tp__epoch_queues; q && !rc; q = q->next) rc = queue_check(q);
  pthread_mutex_unlock(&tp__epoch_registry_lock);
  pthread_mutex_unlock(&tp__epoch_consume_lock);
  return rc;
}

int tp_epoch_check(void) {
  tp__epoch_init();
  if (tp__epoch_self.in_callback) {
    errno = EDEADLK;
    return -EDEADLK;
  }
  return tp__epoch_check_all();
}
