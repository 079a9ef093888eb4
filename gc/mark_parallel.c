/*
 * Parallel marking: the session in which several markers drain one mark,
 * the shared list of gray blocks they balance work through, the idle
 * protocol that ends a session, and the helper threads.
 *
 * A mark runs on one marker (the marker thread in a concurrent cycle, the
 * collecting thread in the stop-the-world fallback: its "leader") unless
 * the leader opens a session for `want` markers (tp__mark_drain): up to
 * want - 1 helper threads then join it, each with its own gray stack, and
 * each runs tp__mark_loop (gc/mark.c) with atomic mark bits. Work moves
 * between them in two ways only:
 *  - the shared list (h->mw.full, under h->mw.lock): a marker whose stack
 *    holds two or more entries and that sees a peer idle and the list
 *    empty (a relaxed hint, tested every 32 entries) gives entries from
 *    the bottom of its stack (the oldest: the biggest subtrees), one from
 *    a shallow stack, half of a deep one, as one block (see
 *    tp__markwork_share_stack); the rest of a large object
 *    being scanned goes there too. An idle marker takes a block.
 *  - the overflow pass: pend bits and flags any marker sets, claimed
 *    region by region by any marker (gc/mark.c, claim_pending).
 *
 * Termination. A marker goes idle (tp__markwork_idle) only with an empty
 * stack, after finding the list empty (tp__markwork_take) and nothing to
 * claim (ovf_pending 0). Under the lock it counts itself idle, then
 * leaves idle if a block or a pending flag exists, else ends the session
 * if every marker taking part is idle, else waits. Work is only created
 * by a marker that is not idle (a scan pushes, pends or shares), so once
 * every marker is idle with the list empty and ovf_pending 0 no work
 * exists and none can appear: every object marked was scanned. The last
 * marker to go idle sees both empty: every block was put on the list by
 * a marker that then passed through take and claim itself before going
 * idle, and ovf_pending is raised before a flag is set and lowered after
 * one is cleared, so 0 means no flag is set; a marker's own changes
 * precede its idle check, and the others' precede their own idle counts
 * under the same lock. The leader checks, when the session ends, that
 * nothing is left (tp__fatal otherwise). A marker that sets the first
 * flag (the count was 0) wakes the idle ones; a block is put on the list
 * under the lock with a broadcast: no idle marker sleeps through work.
 * Helpers join only while the session is open (until it ends) and while
 * fewer than `want` take part; the leader returns after every helper has
 * left and added its byte and object counts (under the lock: what the
 * helpers wrote happens before what the leader reads next).
 *
 * How many markers (docs/gc.md): h->markers (tp_heap_config.markers;
 * default one per online CPU). A cycle tp_heap_collect asked for marks on
 * all of them, and so do pause 2 and the stop-the-world fallback when
 * work is left; a cycle the pacer started marks beside the mutators on a
 * quarter of them (at least one: the marker thread alone on 2 CPUs),
 * like Go's 25 % background utilization.
 *
 * Lock: h->mw.lock (rank 46, after the heap's other locks: pause 2 holds
 * h->lock while it drains). Nothing else is taken under it.
 */
#define _GNU_SOURCE
#include "gc/mark_internal.h"

#include "core/debug_internal.h"
#include "core/fault_internal.h"
#include "core/os_internal.h"

#include <stdlib.h>
#include <string.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* ---- the shared list ------------------------------------------------------------ */

bool tp__markwork_share(struct tp__markwork *ws, const uintptr_t *v, size_t n) {
  pthread_mutex_lock(&ws->lock);
  struct tp__grayblk *b = ws->free;
  if (b)
    ws->free = b->next;
  else
    b = tp__malloc(sizeof *b);
  if (b) {
    memcpy(b->v, v, n * sizeof *v);
    b->n = n;
    b->next = ws->full;
    ws->full = b;
    __atomic_store_n(&ws->nfull, ws->nfull + 1, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&ws->cv);
  }
  pthread_mutex_unlock(&ws->lock);
  return b != NULL;
}

/* How much to give: a shallow stack is a depth-first path whose bottom
 * entry alone is about half of what is left (the older an entry, the
 * bigger its subtree: a binary tree's bottom entry is half of it, and
 * its bottom half nearly all of it), so one entry; a deep stack (roots,
 * a wide object's fields) holds entries of like size, so half, at most a
 * block. */
void tp__markwork_share_stack(struct tp__marker *mk) {
  size_t n = mk->top - mk->bot, k = n < 64 ? 1 : n / 2;
  if (k > TP__GRAYBLK_N) k = TP__GRAYBLK_N;
  if (k && tp__markwork_share(mk->ws, mk->st + mk->bot, k)) mk->bot += k;
}

bool tp__markwork_take(struct tp__marker *mk) {
  struct tp__markwork *ws = mk->ws;
  if (!__atomic_load_n(&ws->nfull, __ATOMIC_RELAXED)) return false;
  pthread_mutex_lock(&ws->lock);
  struct tp__grayblk *b = ws->full;
  if (b) {
    /* The stack is empty; a block larger than it (the leader's fallback
     * stack is small) gives what fits and stays. */
    size_t k = b->n < mk->cap ? b->n : mk->cap;
    b->n -= k;
    memcpy(mk->st, b->v + b->n, k * sizeof *b->v);
    mk->top = k;
    mk->bot = 0;
    if (!b->n) {
      ws->full = b->next;
      __atomic_store_n(&ws->nfull, ws->nfull - 1, __ATOMIC_RELAXED);
      b->next = ws->free;
      ws->free = b;
    }
  }
  pthread_mutex_unlock(&ws->lock);
  return b != NULL;
}

/* ---- the overflow pass ---------------------------------------------------------- */

/* Defers the object (its mark bit already set by this marker) to the
 * overflow pass: its pend bit (small) or overflow flag (large), and its
 * region's overflow flag; ws->ovf_pending counts the flags set. par:
 * other markers run (gc/mark.c's comment says what the seq_cst operations
 * order: a claimer that clears the flag sees the pend bit, or the setter
 * sees the flag clear and sets it again). */
void tp__mark_pend(struct tp__marker *mk, struct tp__region *r, struct tp__large *l, size_t g,
                   bool par) {
  struct tp__markwork *ws = mk->ws;
  uint8_t *flag = r ? &r->overflow : &l->overflow;
  if (r) {
    uint64_t *w = tp__region_pend(mk->h, r) + (g >> 6), bit = (uint64_t)1 << (g & 63);
    if (par)
      __atomic_fetch_or(w, bit, __ATOMIC_SEQ_CST);
    else
      *w |= bit;
  }
  if (!par) {
    if (__atomic_load_n(flag, __ATOMIC_RELAXED)) return;
    __atomic_store_n(flag, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&ws->ovf_pending, __atomic_load_n(&ws->ovf_pending, __ATOMIC_RELAXED) + 1,
                     __ATOMIC_RELAXED);
    return;
  }
  if (__atomic_load_n(flag, __ATOMIC_SEQ_CST)) return;
  /* Count first, then set: the count is never below the flags set, so a
   * count of 0 (termination) means no flag is set. */
  uint64_t before = __atomic_fetch_add(&ws->ovf_pending, 1, __ATOMIC_SEQ_CST);
  if (__atomic_exchange_n(flag, 1, __ATOMIC_SEQ_CST)) {
    __atomic_fetch_sub(&ws->ovf_pending, 1, __ATOMIC_SEQ_CST);
    return;
  }
  if (before == 0) tp__markwork_wake(ws); /* idle markers: work appeared */
}

/* Claims a region or large object whose overflow flag is set (the flag
 * cleared, the count lowered). The markers walk the region list, then the
 * large list, from shared cursors, each step taken by CAS so that no two
 * inspect the same one in a walk; at the end of both lists the next walk
 * starts from the heads. false when none was found in two walks (another
 * marker may be between clearing a flag and lowering the count). */
static bool claim_pending(struct tp__marker *mk, struct tp__region **rp, struct tp__large **lp) {
  struct tp__markwork *ws = mk->ws;
  for (int walk = 0; walk < 2; walk++) {
    if (!__atomic_load_n(&ws->ovf_pending, __ATOMIC_SEQ_CST)) return false;
    struct tp__region *r = __atomic_load_n(&ws->rcur, __ATOMIC_RELAXED);
    while (r) {
      if (!__atomic_compare_exchange_n(&ws->rcur, &r, r->next, false, __ATOMIC_RELAXED,
                                       __ATOMIC_RELAXED))
        continue; /* r is the cursor now */
      if (__atomic_load_n(&r->overflow, __ATOMIC_RELAXED) &&
          __atomic_exchange_n(&r->overflow, 0, __ATOMIC_SEQ_CST)) {
        __atomic_fetch_sub(&ws->ovf_pending, 1, __ATOMIC_SEQ_CST);
        *rp = r;
        *lp = NULL;
        return true;
      }
      r = __atomic_load_n(&ws->rcur, __ATOMIC_RELAXED);
    }
    struct tp__large *l = __atomic_load_n(&ws->lcur, __ATOMIC_RELAXED);
    while (l) {
      if (!__atomic_compare_exchange_n(&ws->lcur, &l, l->next, false, __ATOMIC_RELAXED,
                                       __ATOMIC_RELAXED))
        continue;
      if (__atomic_load_n(&l->overflow, __ATOMIC_RELAXED) &&
          __atomic_exchange_n(&l->overflow, 0, __ATOMIC_SEQ_CST)) {
        __atomic_fetch_sub(&ws->ovf_pending, 1, __ATOMIC_SEQ_CST);
        *rp = NULL;
        *lp = l;
        return true;
      }
      l = __atomic_load_n(&ws->lcur, __ATOMIC_RELAXED);
    }
    struct tp__region *no_r = NULL;
    struct tp__large *no_l = NULL;
    __atomic_compare_exchange_n(&ws->rcur, &no_r, ws->regions, false, __ATOMIC_RELAXED,
                                __ATOMIC_RELAXED);
    __atomic_compare_exchange_n(&ws->lcur, &no_l, ws->large, false, __ATOMIC_RELAXED,
                                __ATOMIC_RELAXED);
  }
  return false;
}

/* Scans what is pending in a claimed region, in address order, each
 * object through the gray stack (empty here, so there is room); or the
 * claimed large object. A pend bit set meanwhile in a word already taken
 * sets the region's flag again (tp__mark_pend), so it is claimed again later. */
static void scan_pending(struct tp__marker *mk, struct tp__region *r, struct tp__large *l,
                         bool par) {
  if (l) {
    mk->st[mk->top++] = (uintptr_t)(l + 1);
    tp__mark_drain_stack(mk, par);
    return;
  }
  tp_heap *h = mk->h;
  uint64_t *pend = tp__region_pend(h, r);
  for (size_t w = h->first_word; w < h->nwords; w++) {
    uint64_t bits;
    while (__atomic_load_n(&pend[w], __ATOMIC_RELAXED) &&
           (bits = __atomic_exchange_n(&pend[w], 0, __ATOMIC_SEQ_CST))) {
      while (bits) {
        size_t g = (w << 6) + (size_t)__builtin_ctzll(bits);
        bits &= bits - 1;
        mk->st[mk->top++] = (uintptr_t)r + (g << TP__GRAN_SHIFT) + 16;
        tp__mark_drain_stack(mk, par);
      }
    }
  }
}

/* One marker's part of a mark: its stack, the shared list (par), the
 * overflow pass, until nothing is left (alone) or every marker is idle
 * with nothing shared or pending (par: tp__markwork_idle). */
void tp__mark_loop(struct tp__marker *mk, bool par) {
  struct tp__region *r;
  struct tp__large *l;
  for (;;) {
    tp__mark_drain_stack(mk, par);
    if (par && tp__markwork_take(mk)) continue;
    if (claim_pending(mk, &r, &l)) {
      scan_pending(mk, r, l, par);
      continue;
    }
    if (!par || tp__markwork_idle(mk->ws)) return;
  }
}

/* ---- the session ------------------------------------------------------------------- */

bool tp__markwork_idle(struct tp__markwork *ws) {
  bool done;
  pthread_mutex_lock(&ws->lock);
  __atomic_store_n(&ws->idle, ws->idle + 1, __ATOMIC_RELAXED);
  for (;;) {
    if (ws->done) {
      done = true;
      break;
    }
    /* seq_cst: see tp__markwork_wake (the count is raised outside the lock) */
    if (ws->full || __atomic_load_n(&ws->ovf_pending, __ATOMIC_SEQ_CST)) {
      __atomic_store_n(&ws->idle, ws->idle - 1, __ATOMIC_RELAXED);
      done = false;
      break;
    }
    if (ws->idle == ws->active) {
      ws->done = true;
      ws->open = false;
      pthread_cond_broadcast(&ws->cv);
      done = true;
      break;
    }
    pthread_cond_wait(&ws->cv, &ws->lock);
  }
  pthread_mutex_unlock(&ws->lock);
  return done;
}

/* The marker that raised ovf_pending from 0 takes the lock after raising
 * it: an idle marker either read the count under the lock after that (and
 * left idle) or was already waiting, and this broadcast wakes it. */
void tp__markwork_wake(struct tp__markwork *ws) {
  pthread_mutex_lock(&ws->lock);
  if (ws->idle) pthread_cond_broadcast(&ws->cv);
  pthread_mutex_unlock(&ws->lock);
}

void tp__markwork_begin(struct tp__markwork *ws, struct tp__marker *mk) {
  __atomic_store_n(&ws->ovf_pending, 0, __ATOMIC_RELAXED);
  ws->regions = mk->regions;
  ws->large = mk->large;
  __atomic_store_n(&ws->rcur, mk->regions, __ATOMIC_RELAXED);
  __atomic_store_n(&ws->lcur, mk->large, __ATOMIC_RELAXED);
}

void tp__mark_drain(struct tp__marker *mk, unsigned want) {
  struct tp__markwork *ws = mk->ws;
  unsigned most = __atomic_load_n(&ws->nhelpers, __ATOMIC_RELAXED) + 1;
  if (want > most) want = most;
  if (want <= 1) {
    tp__mark_loop(mk, false);
    return;
  }
  pthread_mutex_lock(&ws->lock);
  ws->leader = mk;
  ws->want = want;
  ws->active = 1;
  __atomic_store_n(&ws->idle, 0, __ATOMIC_RELAXED);
  ws->done = false;
  ws->open = true;
  ws->bytes = ws->objs = ws->cpu_ns = 0;
  ws->any_overflow = false;
  pthread_cond_broadcast(&ws->cv);
  pthread_mutex_unlock(&ws->lock);

  mk->par = true;
  tp__mark_loop(mk, true);
  mk->par = false;

  pthread_mutex_lock(&ws->lock);
  while (ws->active > 1) pthread_cond_wait(&ws->cv_left, &ws->lock);
  /* Termination left nothing (gc_parallel_mark_test's guard against a
   * protocol that ends with work shared or pending: cheap, always on). */
  if (ws->full || __atomic_load_n(&ws->ovf_pending, __ATOMIC_RELAXED))
    tp__fatal("tp_heap_collect", NULL, "parallel mark ended with work left (collector bug)");
  ws->active = 0;
  ws->leader = NULL;
  mk->bytes += ws->bytes;
  mk->objs += ws->objs;
  mk->helper_cpu_ns += ws->cpu_ns;
  mk->any_overflow |= ws->any_overflow;
  pthread_mutex_unlock(&ws->lock);
}

/* ---- helper threads ------------------------------------------------------------ */

static void *helper_main(void *arg) {
  struct tp__markhelper *hp = arg;
  struct tp__markwork *ws = &hp->h->mw;
  pthread_mutex_lock(&ws->lock);
  for (;;) {
    while (!ws->stop && !(ws->open && ws->active < ws->want))
      pthread_cond_wait(&ws->cv, &ws->lock);
    if (ws->stop) break;
    ws->active++;
    const struct tp__marker *L = ws->leader;
    struct tp__marker mk = {.h = hp->h, .lo = L->lo, .span = L->span, .st = hp->gray,
                            .cap = hp->h->gray_cap, .regions = L->regions, .large = L->large,
                            .ws = ws, .par = true, .epoch = L->epoch};
    pthread_mutex_unlock(&ws->lock);
    uint64_t cpu0 = tp__clock_ns(CLOCK_THREAD_CPUTIME_ID);
    tp__mark_loop(&mk, true);
    uint64_t cpu = tp__clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    pthread_mutex_lock(&ws->lock);
    ws->bytes += mk.bytes;
    ws->objs += mk.objs;
    ws->cpu_ns += cpu;
    ws->any_overflow |= mk.any_overflow;
    ws->active--;
    pthread_cond_signal(&ws->cv_left);
  }
  pthread_mutex_unlock(&ws->lock);
  return NULL;
}

static size_t gray_bytes(const tp_heap *h) {
  return tp__round_up(h->gray_cap * sizeof(uintptr_t), tp__os_page_size());
}

void tp__markwork_start_helpers(tp_heap *h) {
  struct tp__markwork *ws = &h->mw;
  if (!ws->max_helpers) return;
  if (!ws->helpers && !(ws->helpers = tp__calloc(ws->max_helpers, sizeof *ws->helpers))) return;
  while (ws->nhelpers < ws->max_helpers) {
    struct tp__markhelper *hp = &ws->helpers[ws->nhelpers];
    hp->h = h;
    /* Stacks of their own, as the marker thread's (gc/collect.c,
     * ensure_marker says why), and their gray stacks: kept until the heap
     * is destroyed (a fork child unmaps the thread stacks). */
    if (!hp->stack && !(hp->stack = tp__os_map(TP__MARKER_STACK, 0))) break;
    if (!hp->gray) {
      if (!(hp->gray = tp__os_map(gray_bytes(h), 0))) break;
      tp__counter_add(&h->meta_bytes, (int64_t)gray_bytes(h));
    }
    /* helpers take no signal */
    if (tp__thread_create_quiet_on(&hp->tid, hp->stack, TP__MARKER_STACK, helper_main, hp) != 0)
      break;
    __atomic_store_n(&ws->nhelpers, ws->nhelpers + 1, __ATOMIC_RELAXED);
  }
}

void tp__markwork_stop_helpers(tp_heap *h) {
  struct tp__markwork *ws = &h->mw;
  pthread_mutex_lock(&ws->lock);
  ws->stop = true;
  pthread_cond_broadcast(&ws->cv);
  pthread_mutex_unlock(&ws->lock);
  for (unsigned i = 0; i < ws->nhelpers; i++) pthread_join(ws->helpers[i].tid, NULL);
  __atomic_store_n(&ws->nhelpers, 0, __ATOMIC_RELAXED);
}

/* ---- lifecycle -------------------------------------------------------------------- */

static void init_sync(struct tp__markwork *ws) {
  pthread_mutex_init(&ws->lock, NULL);
  tp__cond_init_monotonic(&ws->cv);
  tp__cond_init_monotonic(&ws->cv_left);
}

void tp__markwork_init(tp_heap *h) {
  init_sync(&h->mw);
  h->mw.max_helpers = h->markers - 1;
}

static void free_blocks(struct tp__grayblk *b) {
  for (struct tp__grayblk *next; b; b = next) {
    next = b->next;
    free(b);
  }
}

void tp__markwork_destroy(tp_heap *h) {
  struct tp__markwork *ws = &h->mw;
  free_blocks(ws->full);
  free_blocks(ws->free);
  if (ws->helpers) {
    for (unsigned i = 0; i < ws->max_helpers; i++) {
      if (ws->helpers[i].stack) tp__os_unmap(ws->helpers[i].stack, TP__MARKER_STACK);
      if (ws->helpers[i].gray) tp__os_unmap(ws->helpers[i].gray, gray_bytes(h));
    }
    free(ws->helpers);
  }
  pthread_mutex_destroy(&ws->lock);
  pthread_cond_destroy(&ws->cv);
  pthread_cond_destroy(&ws->cv_left);
}

void tp__markwork_fork_prepare(tp_heap *h) { pthread_mutex_lock(&h->mw.lock); }
void tp__markwork_fork_parent(tp_heap *h) { pthread_mutex_unlock(&h->mw.lock); }

/* The child's only thread: no helper runs (their stacks go, as the
 * marker's; their gray stacks stay for the next helpers), no session is
 * open (a mark in progress is abandoned by gc/heap.c). The lock stays held
 * (tp__markwork_fork_parent releases it). */
void tp__markwork_fork_child(tp_heap *h) {
  struct tp__markwork *ws = &h->mw;
  for (unsigned i = 0; i < ws->nhelpers; i++) {
    tp__os_unmap(ws->helpers[i].stack, TP__MARKER_STACK);
    ws->helpers[i].stack = NULL;
  }
  ws->nhelpers = 0;
  free_blocks(ws->full);
  ws->full = NULL;
  ws->nfull = ws->want = ws->active = ws->idle = 0;
  ws->open = ws->done = ws->stop = false;
  ws->leader = NULL;
  ws->ovf_pending = 0;
  tp__cond_init_monotonic(&ws->cv);
  tp__cond_init_monotonic(&ws->cv_left);
}
