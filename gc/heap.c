/*
 * A heap's life: tp_heap_create and tp_heap_destroy (finalizers of every
 * object still allocated, weak references cleared, thread records
 * orphaned or freed, memory given back), the process-wide registry of
 * heaps and its fork() handlers, and tp_heap_read_stats. The other parts
 * of the collector are one concept per file in gc/ (docs/ARCHITECTURE.md);
 * the layout of regions and objects is described in gc/heap_internal.h.
 */
#define _GNU_SOURCE
#include "gc/heap_internal.h"

#include "core/debug_internal.h"
#include "core/fault_internal.h"
#include "core/fork_internal.h"
#include "core/options_internal.h"
#include "core/os_internal.h"
#include "pool/pool_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* What an orphaned record's heap field points at: never a real heap, and
 * never NULL (so a NULL heap argument cannot match an orphan). */
static char orphan_marker;
#define ORPHAN_HEAP ((tp_heap *)(void *)&orphan_marker)

static pthread_once_t gc_once = PTHREAD_ONCE_INIT;

static void heap_fork_lock(struct tp__reg_link *l);
static void heap_fork_unlock(struct tp__reg_link *l);
static void heap_fork_child(struct tp__reg_link *l);
static const struct tp__registry_ops heap_fork_ops = {heap_fork_lock, heap_fork_unlock,
                                                      heap_fork_child};
static struct tp__registry heaps =
    TP__REGISTRY_INIT(TP__FORK_RANK_HEAPS, "heap registry lock", &heap_fork_ops);

static void gc_init_once(void) {
  tp__mut_init_once();
  tp__registry_init(&heaps);
}

static void init_conds(tp_heap *h) {
  tp__cond_init_monotonic(&h->cv_parked);
  tp__cond_init_monotonic(&h->cv_resume);
  tp__cond_init_monotonic(&h->cv_marker);
  tp__cond_init_monotonic(&h->cv_cycle);
  tp__cond_init_monotonic(&h->cv_satb);
}

/* ---- create / destroy ------------------------------------------------------- */

tp_heap *tp_heap_create(const tp_heap_config *cfg) {
  pthread_once(&gc_once, gc_init_once);
  tp_heap_config c = cfg ? *cfg : (tp_heap_config){.trigger_percent = 100};
  size_t rs = c.region_size ? c.region_size : TP__REGION_DEFAULT;
  if (!tp__is_pow2(rs) || rs < TP__REGION_MIN || rs > TP__REGION_MAX ||
      c.gray_stack_entries > ((size_t)1 << 30) || c.markers > TP__MARKERS_MAX) {
    errno = EINVAL;
    return NULL;
  }
  tp_heap *h = tp__zalloc_aligned(TP_CACHELINE, sizeof *h);
  if (!h) return NULL;
  h->region_size = rs;
  h->region_mask = ~(uintptr_t)(rs - 1);
  h->region_shift = (unsigned)__builtin_ctzll(rs);
  h->nwords = (uint32_t)(rs >> (TP__GRAN_SHIFT + 6));
  h->nlines = (uint32_t)(rs >> TP__LINE_SHIFT);
  h->bits_off = tp__round_up(sizeof(struct tp__region), 16);
  h->pend_off = h->bits_off + (size_t)h->nwords * sizeof(struct tp__bitpair);
  h->lines_off = h->pend_off + (size_t)h->nwords * sizeof(uint64_t);
  h->data_off = tp__round_up(h->lines_off + h->nlines, TP__LINE);
  h->first_line = (uint32_t)(h->data_off >> TP__LINE_SHIFT);
  h->first_word = (uint32_t)(h->data_off >> (TP__GRAN_SHIFT + 6));
  h->small_max = rs / 4;
  h->trigger_percent = c.trigger_percent;
  h->min_heap = c.min_heap_bytes ? c.min_heap_bytes : TP__MIN_HEAP_DEFAULT;
  h->memory_limit = c.memory_limit;
  h->gray_cap = c.gray_stack_entries ? c.gray_stack_entries : TP__GRAY_DEFAULT;
  h->checkmark = tp__options()->gc_checkmark; /* TIDEPOOL_GC_CHECKMARK */
  h->nobarrier = tp__options()->gc_nobarrier; /* TIDEPOOL_GC_NOBARRIER */
  h->mark_epoch = 1;
  if (c.markers) {
    h->markers = c.markers;
  } else { /* one per online CPU */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    h->markers = cpus < 1 ? 1 : cpus > (long)TP__MARKERS_MAX ? TP__MARKERS_MAX : (unsigned)cpus;
  }

  tp_pool_config pc = {.name = "gc-regions", .obj_size = rs, .align = rs};
  h->pool = tp__pool_create(&pc, rs, 0);
  unsigned l1bits = TP__USER_ADDR_BITS - h->region_shift - TP__MAP_L2_BITS;
  h->map_l1_n = (size_t)1 << l1bits;
  h->map_l1_bytes = tp__round_up(h->map_l1_n * sizeof(void *), tp__os_page_size());
  h->map_l1 = h->pool ? tp__os_map(h->map_l1_bytes, 0) : NULL;
  if (!h->pool || !h->map_l1) {
    if (h->pool) tp_pool_destroy(h->pool);
    free(h);
    errno = ENOMEM;
    return NULL;
  }
  tp__counter_add(&h->meta_bytes, (int64_t)h->map_l1_bytes);
  pthread_mutex_init(&h->lock, NULL);
  pthread_mutex_init(&h->sp_lock, NULL);
  pthread_mutex_init(&h->satb_lock, NULL);
  init_conds(h);
  tp__markwork_init(h);
  tp__gc_pace(h);
  h->magic = TP__HEAP_MAGIC;

  tp__registry_link(&heaps, &h->reg);
  return h;
}

void tp_heap_destroy(tp_heap *h) {
  if (!h || h->magic != TP__HEAP_MAGIC) return;
  /* 0. The marker thread (none starts again; an interrupted mark turns
   *    the barrier off): the finalizers below collect stop-the-world. */
  tp__gc_stop_marker(h);
  /* 1. Finalizers: the queued ones, then those of every object still
   *    allocated, each exactly once. */
  int was_in = tp__tls_in_finalizers;
  tp__tls_in_finalizers = 0;
  tp_heap_run_finalizers(h);
  tp__tls_in_finalizers = was_in;
  h->destroying = true;
  pthread_mutex_lock(&h->lock);
  void **fin = h->fin_objs;
  size_t nfin = h->nfin;
  h->fin_objs = NULL;
  h->nfin = h->fin_cap = 0;
  pthread_mutex_unlock(&h->lock);
  for (size_t i = 0; i < nfin; i++) {
    const tp_type *t = tp__hdr_type(*(uintptr_t *)((char *)fin[i] - 8));
    t->finalize(fin[i]);
    tp__counter_add(&h->fin_run, 1);
  }
  free(fin);

  tp__registry_unlink(&heaps, &h->reg);
  tp__heap_arenas_destroy(h); /* registered arenas keep no observer of h */

  /* 2. Weak references read NULL from now on. */
  pthread_mutex_lock(&h->lock);
  for (tp_weak *w = h->weaks, *next; w; w = next) {
    next = w->next;
    __atomic_store_n(&w->target, NULL, __ATOMIC_RELEASE);
    __atomic_store_n(&w->heap, NULL, __ATOMIC_RELAXED);
    w->prev = w->next = NULL;
  }
  h->weaks = NULL;

  /* 3. Thread records: ours are freed, other threads' are orphaned (or
   *    freed if their thread is gone). */
  pthread_mutex_lock(&h->sp_lock);
  tp__mut *mine = NULL;
  for (tp__mut *m = h->muts, *next; m; m = next) {
    next = m->next;
    if (pthread_equal(m->tid, pthread_self())) {
      m->next = mine;
      mine = m;
      continue;
    }
    uint32_t expect = TP__OWNER_ALIVE;
    /* acq_rel: on success the owner thread reads our stores after seeing
     * HEAP_GONE; on failure we free what the exiting thread wrote. */
    if (__atomic_compare_exchange_n(&m->owner, &expect, TP__OWNER_HEAP_GONE, false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
      __atomic_store_n(&m->heap, ORPHAN_HEAP, __ATOMIC_RELAXED);
    } else {
      tp__mut_free(m);
    }
  }
  h->muts = NULL;
  pthread_mutex_unlock(&h->sp_lock);

  /* 4. Memory. Regions go back to the pool (outside h->lock: the pool's
   *    locks rank below the heap's), then the pool goes. */
  struct tp__region *regions = h->regions;
  h->regions = h->recyclable = NULL;
  struct tp__large *large = h->large;
  h->large = NULL;
  /* An interrupted concurrent sweep: what it had not swept yet. */
  for (struct tp__region *r = h->sweep_regions, *next; r; r = next) {
    next = r->next;
    r->next = regions;
    regions = r;
  }
  for (struct tp__large *l = h->sweep_large, *next; l; l = next) {
    next = l->next;
    l->next = large;
    large = l;
  }
  h->sweep_regions = NULL;
  h->sweep_large = NULL;
  tp__satb_free_all(h);
  pthread_mutex_unlock(&h->lock);
  for (tp__mut *m = mine, *next; m; m = next) {
    next = m->next;
    tp__mut_free_own(m);
  }
  for (struct tp__region *r = regions, *next; r; r = next) {
    next = r->next;
    TP_UNPOISON(r, h->region_size);
    tp_pool_put(h->pool, r);
  }
  tp_pool_destroy(h->pool);
  for (struct tp__large *l = large, *next; l; l = next) {
    next = l->next;
    tp__os_unmap(l, l->map_bytes);
  }
  const size_t l2bytes = sizeof(void *) << TP__MAP_L2_BITS;
  for (size_t i = 0; i < h->map_l1_n; i++)
    if (h->map_l1[i]) tp__os_unmap(h->map_l1[i], l2bytes);
  tp__os_unmap(h->map_l1, h->map_l1_bytes);
  if (h->gray) tp__os_unmap(h->gray, tp__round_up(h->gray_cap * sizeof(void *), tp__os_page_size()));
  if (h->marker_stack) tp__os_unmap(h->marker_stack, TP__MARKER_STACK);
  tp__ptrset_free(&h->roots);
  free(h->ranges);
  free(h->finq);
  pthread_mutex_destroy(&h->lock);
  pthread_mutex_destroy(&h->sp_lock);
  pthread_mutex_destroy(&h->satb_lock);
  tp__markwork_destroy(h);
  pthread_cond_destroy(&h->cv_parked);
  pthread_cond_destroy(&h->cv_resume);
  pthread_cond_destroy(&h->cv_marker);
  pthread_cond_destroy(&h->cv_cycle);
  pthread_cond_destroy(&h->cv_satb);
  h->magic = 0;
  free(h);
}

/* ---- stats -------------------------------------------------------------------------------- */

int tp_heap_read_stats(const tp_heap *h, tp_heap_stats *out) {
  if (!h || !out || h->magic != TP__HEAP_MAGIC) {
    errno = EINVAL;
    return -EINVAL;
  }
  memset(out, 0, sizeof *out);
  out->heap_live = tp__counter_get(&h->live_bytes);
  out->heap_alloc = tp__heap_alloc_now(h);
  out->heap_sys = tp__gc_heap_sys(h);
  out->regions = tp__counter_get(&h->nregions);
  out->large_objects = tp__counter_get(&h->nlarge);
  out->heap_inuse = out->regions * h->region_size + tp__counter_get(&h->large_map_bytes);
  out->num_gc = tp__counter_get(&h->num_gc);
  out->pause_total_ns = tp__counter_get(&h->pause_total);
  out->pause_max_ns = tp__counter_get(&h->pause_max);
  out->last_pause_ns = tp__counter_get(&h->last_pause);
  out->objects_live = tp__counter_get(&h->live_objs);
  out->objects_alloc = tp__counter_get(&h->objs_alloc);
  out->objects_freed = tp__counter_get(&h->objs_freed);
  out->total_alloc = tp__counter_get(&h->total_alloc);
  out->finalizers_run = tp__counter_get(&h->fin_run);
  out->finalizers_pending = tp__counter_get(&h->fin_pending);
  out->mark_ns = tp__counter_get(&h->mark_ns);
  out->sweep_ns = tp__counter_get(&h->sweep_ns);
  out->next_gc = tp__counter_get(&h->next_gc);
  out->gray_overflows = tp__counter_get(&h->overflows);
  out->regions_released = tp__counter_get(&h->regions_released);
  out->threads = tp__counter_get(&h->nthreads);
  out->checkmark = h->checkmark;
  out->region_size = (uint32_t)h->region_size;
  tp__gc_read_metrics(h, out);
  return 0;
}

/* ---- fork ----------------------------------------------------------------------------------- */

/* Fork holds every heap's locks (core/registry.c): its lock, handshake
 * lock, SATB lock and mark-work lock. */
static void heap_fork_lock(struct tp__reg_link *l) {
  tp_heap *h = TP__REG_OBJ(l, tp_heap, reg);
  pthread_mutex_lock(&h->lock);
  pthread_mutex_lock(&h->sp_lock);
  pthread_mutex_lock(&h->satb_lock);
  tp__markwork_fork_prepare(h);
}

static void heap_fork_unlock(struct tp__reg_link *l) {
  tp_heap *h = TP__REG_OBJ(l, tp_heap, reg);
  tp__markwork_fork_parent(h);
  pthread_mutex_unlock(&h->satb_lock);
  pthread_mutex_unlock(&h->sp_lock);
  pthread_mutex_unlock(&h->lock);
}

/* A concurrent mark the fork interrupted (the child has no marker
 * thread): every mark and pend bit goes back to clear, as outside a mark;
 * the lines regions were born with keep that mark's epoch, which the next
 * sweep frees unless live objects are found on them again. */
static void abandon_mark(tp_heap *h) {
  for (struct tp__region *r = h->regions; r; r = r->next) {
    struct tp__bitpair *bits = tp__region_bits(h, r);
    for (size_t w = 0; w < h->nwords; w++) bits[w].mark = 0;
    memset(tp__region_pend(h, r), 0, (size_t)h->nwords * sizeof(uint64_t));
    r->overflow = 0;
  }
  for (struct tp__large *l = h->large; l; l = l->next) l->marked = l->overflow = 0;
  h->mk.top = h->mk.bot = 0;
  h->mk.par = false;
}

/* The child has one thread: records of the others go (their allocation
 * buffers are retired first), no collection is in progress (a concurrent
 * mark is abandoned; an unfinished sweep is finished by the next cycle),
 * no marker thread exists (the next collection starts one; in a TSan
 * build, after a multi-threaded fork, it collects stop-the-world:
 * core/fork_internal.h), and finalizers other threads were running count
 * as run. The registry's child handler runs this on every heap with its
 * locks held, then heap_fork_unlock. */
static void heap_fork_child(struct tp__reg_link *l) {
  tp_heap *h = TP__REG_OBJ(l, tp_heap, reg);
  pthread_t self = pthread_self();
  for (tp__mut *m = h->muts, *next; m; m = next) {
    next = m->next;
    if (pthread_equal(m->tid, self)) continue;
    if (m->attach_depth) tp__counter_add(&h->nthreads, -1);
    tp__gc_retire_tlab(h, m);
    tp__mut_unlink(h, m);
    tp__mut_free(m);
  }
  for (struct tp__finrun **pp = &h->running; *pp;) {
    if (!pthread_equal((*pp)->tid, self)) {
      *pp = (*pp)->next;
      tp__counter_add(&h->fin_run, 1);
    } else {
      pp = &(*pp)->next;
    }
  }
  __atomic_store_n(&h->flags, 0, __ATOMIC_RELAXED);
  if (h->phase == TP__PH_MARK) abandon_mark(h);
  h->phase = TP__PH_IDLE; /* the only thread: plain */
  h->marker_running = h->marker_stop = false;
  if (h->marker_stack) { /* no thread runs on it here */
    tp__os_unmap(h->marker_stack, TP__MARKER_STACK);
    h->marker_stack = NULL;
  }
  h->cycles_done = h->cycles_req = h->cycles_started;
  for (struct tp__satb *c = h->satb_full, *next; c; c = next) {
    next = c->next;
    free(c);
  }
  h->satb_full = NULL;
  if (h->satb_shared) h->satb_shared->n = 0;
  for (tp__mut *m = h->muts; m; m = m->next)
    if (m->satb) m->satb->n = 0;
  h->satb_throttle = false; /* no store assist waits here */
  h->satb_waiters = 0;
  init_conds(h);
  tp__markwork_fork_child(h); /* its lock stays held: heap_fork_unlock */
}

/* ---- stats ------------------------------------------------------------------ */

struct heap_visit {
  void (*fn)(const tp_heap *, void *);
  void *arg;
};

static void heap_visit(struct tp__reg_link *l, void *arg) {
  const struct heap_visit *v = arg;
  v->fn(TP__REG_OBJ(l, tp_heap, reg), v->arg);
}

size_t tp__heap_foreach(void (*fn)(const tp_heap *, void *), void *arg) {
  return tp__registry_foreach(&heaps, heap_visit, &(struct heap_visit){fn, arg});
}
