/*
 * Pools on epochs: tp_pool_retire (a put after a grace period), the
 * barrier tp_pool_destroy runs for a pool that was retired into, and the
 * sweeper's deferred slab frees (a slab of such a pool is unmapped only
 * after a grace period, since a reader may still hold one of its objects).
 *
 * The pool layer's glue to the epoch layer below it: epoch knows nothing of
 * pools; a retire is a callback that puts the object back.
 */
#include <tidepool/epoch.h>
#include <tidepool/pool.h>

#include "core/debug_internal.h"
#include "core/os_internal.h"
#include "epoch/epoch_internal.h"
#include "pool/pool_internal.h"

#include <errno.h>

static void pool_put_cb(void *obj, void *arg) { tp_pool_put(arg, obj); }

/* No shared atomic here: the pool is only marked once, the first time it is
 * retired into (tp_pool_destroy then waits with a barrier). */
int tp_pool_retire(tp_pool *p, void *obj) {
  if (!p || !obj) {
    errno = EINVAL;
    return -EINVAL;
  }
  tp__pool_check_owner(p, obj, "tp_pool_retire", NULL);
  if (TP_UNLIKELY(!__atomic_load_n(&p->epoch_used, __ATOMIC_RELAXED)))
    __atomic_store_n(&p->epoch_used, true, __ATOMIC_RELAXED);
  return tp_epoch_retire_sized(obj, p->stride, pool_put_cb, p);
}

void tp__pool_epoch_quiesce(tp_pool *p) {
  /* Every retire of p was issued before this call (destroy runs alone), so
   * one barrier runs them all, the sweeper's slab retires included. */
  if (tp_epoch_barrier() != 0)
    tp__fatal("tp_pool_destroy", p,
              "the pool was retired into and the caller is inside a read section "
              "or a retire callback: its retires cannot be waited for here");
}

static void slab_cb(void *obj, void *arg) {
  (void)arg;
  tp__pool_slab_retired(obj);
}

void tp__pool_retire_slab(tp_slab *s, size_t bytes) {
  /* Called by the sweeper under its pass lock: must not wait (lock order). */
  if (tp__epoch_retire_nowait(s, bytes, slab_cb, NULL) != 0) {
    /* Out of memory for the queue: give the pages back now and leave the
     * address range mapped (a reader may still touch it; it reads zeros). */
    tp__os_decommit(s, bytes);
  }
}
