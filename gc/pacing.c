/*
 * Pacing: when the next cycle is asked for, what an allocation does while
 * the heap is past its goal, heap_sys as the stats and the pacer see it,
 * and giving empty pool memory back to the OS over the memory limit.
 *
 * The pacer's model, after Go's (docs/gc.md, "Pacing", has the measured
 * figures). With L the live heap (what the last mark traced from its
 * snapshot) and heap_alloc = L + bytes allocated since:
 *
 *   goal      G = max(min_heap_bytes, L + L * trigger_percent / 100, L + region)
 *                 (GOGC), and with a memory_limit at most
 *                 memory_limit - (heap_sys - heap_alloc), but never below
 *                 L + max(L / 16, 4 regions) (GOMEMLIMIT)
 *             g = G - L, the growth the goal allows
 *
 *   trigger   k_i = A_i / M_i for concurrent mark i: A_i bytes allocated
 *                 between its pause 1 and pause 2, M_i bytes it marked --
 *                 the mutators' allocation per byte of mark work (Go's
 *                 cons/mark), which does not change with the heap's size
 *             k = the largest k_i of the last TP__PACE_HISTORY marks (0
 *                 before the first): a mark slower than the last few is
 *                 the risk, a faster one only starts a little early
 *             W = k * L * 5/4 + region: the runway the next mark needs (it
 *                 marks about L bytes), a quarter more for the estimate's
 *                 error, a region for heap_alloc's lag (a buffer per thread)
 *             T = min(G, max(G - W, L + g / 8, min_heap_bytes))
 *                 A cycle is asked for when heap_alloc reaches T, so its
 *                 mark ends before heap_alloc reaches G if the next mark
 *                 is like the last ones. The floor L + g / 8 bounds how
 *                 often cycles start (see below); a mark that needs more
 *                 runway than that runs back to back with the last one
 *                 and the assists below take over past G. Below
 *                 min_heap_bytes nothing is automatic, as configured.
 *
 *   hard limit  H = G + 2 * max(g, 4 regions), at most max(G, memory_limit)
 *
 * Every cycle's pause 2 sets heap_alloc to L' + A (what was allocated
 * during the mark, born black, counts as allocated since it), so a cycle
 * is asked for every T - L bytes allocated (between g / 8 and g), or as
 * soon as the last one ends if its mark allocated more (A > T - L): then
 * the marker marks all the time, and its CPU share (below) is the cost.
 *
 * An allocation slow path with heap_alloc >= T asks for a cycle if none is
 * asked for (gc/collect.c, tp__gc_trigger), then, while that cycle has not
 * ended (tp__gc_pace_alloc below):
 *
 *   heap_alloc < G        nothing more: the mark is on schedule.
 *   G <= heap_alloc < H   an assist, bounded per slow path: the thread
 *                         yields a fraction f = min(x, 1/2) of its time,
 *                         where x = (heap_alloc - G) / (H - G): more the
 *                         further past the goal, a half from G + g on,
 *                         so it runs at least half the time whatever the
 *                         overshoot. It
 *                         owes run * f / (1 - f) for the time `run` it ran
 *                         since its last assist (or since it first passed
 *                         the goal in this cycle) and pays at most
 *                         TP__ASSIST_MAX_NS (1 ms) of it per slow path,
 *                         nothing while it owes under TP__ASSIST_MIN_NS
 *                         (50 us, it pays later). Paying = waiting as a
 *                         blocking section (the pauses do not wait for it)
 *                         until a pause ends or the debt's time is up: the
 *                         marker gets the CPU the thread leaves. With one
 *                         marker that owns its gray stack there is no mark
 *                         work to share; a parallel marker with a shared
 *                         work list would mark for the debt's time here
 *                         instead of yielding it. Counted in
 *                         mark_assist_ns, assists, assist_max_ns.
 *   heap_alloc >= H       a wait (as a blocking section) until the mark or
 *                         the cycle ends, then the slow path starts over:
 *                         the one unbounded wait, so that memory stays
 *                         bounded when the marker cannot keep up (or a
 *                         memory_limit is reached). Counted in limit_waits,
 *                         limit_wait_ns.
 *
 * The background marker is one thread: at most one CPU. Competing with N
 * runnable mutators for C CPUs it gets about C / (N + 1) of a CPU from the
 * scheduler (2/3 with 2 mutators on 2 CPUs, a third of the machine), and
 * more while the mutators yield in assists; mark_bg_cpu_ns counts it.
 */
#define _GNU_SOURCE
#include "gc/heap_internal.h"

#include "core/os_internal.h"
#include "pool/pool_internal.h"

#include <errno.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* ---- the goal, the trigger, the hard limit ----------------------------------------- */

static uint64_t sat_add(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }

/* a * b / c, saturated (c > 0). */
static uint64_t mul_div(uint64_t a, uint64_t b, uint64_t c) {
  unsigned __int128 r = (unsigned __int128)a * b / c;
  return r > UINT64_MAX ? UINT64_MAX : (uint64_t)r;
}

static uint64_t goal_of(const tp_heap *h, uint64_t live) {
  uint64_t goal = UINT64_MAX;
  if (h->trigger_percent) {
    uint64_t grow = mul_div(live, h->trigger_percent, 100);
    goal = sat_add(live, grow);
  }
  if (h->memory_limit) {
    /* Like GOMEMLIMIT: leave room for what is mapped but not in objects
     * (fragmentation, cached regions, metadata), but never closer to the
     * live heap than 1/16 of it or four regions (a soft limit: over it
     * the heap collects often, it does not fail). */
    uint64_t sys = tp__gc_heap_sys(h);
    uint64_t alloc = tp__heap_alloc_now(h);
    uint64_t overhead = sys > alloc ? sys - alloc : 0;
    uint64_t lgoal = h->memory_limit > overhead ? h->memory_limit - overhead : 0;
    uint64_t floor = live + (live / 16 > 4 * h->region_size ? live / 16 : 4 * h->region_size);
    if (lgoal < floor) lgoal = floor;
    if (lgoal < goal) goal = lgoal;
  }
  if (goal != UINT64_MAX) {
    if (goal < h->min_heap) goal = h->min_heap;
    /* At least a region above live: a goal at live (live * percent / 100
     * rounds to 0, min_heap <= live) would make every allocation after a
     * collection collect again, forever. A region is also the pacer's
     * resolution (heap_alloc lags by a buffer per thread). */
    uint64_t least = sat_add(live, h->region_size);
    if (goal < least) goal = least;
  }
  return goal;
}

/* T of the top comment (goal != UINT64_MAX, so goal > live). */
static uint64_t trigger_of(const tp_heap *h, uint64_t live, uint64_t goal) {
  uint64_t k = 0; /* Q16 */
  for (unsigned i = 0; i < TP__PACE_HISTORY; i++) {
    uint64_t ki = __atomic_load_n(&h->cons_mark[i], __ATOMIC_RELAXED);
    if (ki > k) k = ki;
  }
  uint64_t runway = sat_add(mul_div(live, k, (uint64_t)1 << 16) / 4 * 5, h->region_size);
  uint64_t t = goal > runway ? goal - runway : 0;
  uint64_t floor = live + (goal - live) / 8;
  if (t < floor) t = floor;
  if (t < h->min_heap) t = h->min_heap;
  return t < goal ? t : goal;
}

/* H of the top comment. */
static uint64_t hard_limit_of(const tp_heap *h, uint64_t live, uint64_t goal) {
  uint64_t grow = goal - live;
  if (grow < 4 * h->region_size) grow = 4 * h->region_size;
  uint64_t hard = sat_add(goal, sat_add(grow, grow));
  if (h->memory_limit && hard > h->memory_limit) hard = goal > h->memory_limit ? goal : h->memory_limit;
  return hard;
}

void tp__gc_pace(tp_heap *h) {
  uint64_t live = tp__counter_get(&h->live_bytes);
  uint64_t goal = goal_of(h, live), trigger = UINT64_MAX, hard = UINT64_MAX;
  if (goal != UINT64_MAX) {
    trigger = trigger_of(h, live, goal);
    hard = hard_limit_of(h, live, goal);
  }
  /* Three relaxed words: an allocator that reads them while they change
   * paces one slow path by a mix of two cycles' figures, each valid. */
  __atomic_store_n(&h->next_gc, goal, __ATOMIC_RELAXED);
  __atomic_store_n(&h->gc_trigger, trigger, __ATOMIC_RELAXED);
  __atomic_store_n(&h->hard_limit, hard, __ATOMIC_RELAXED);
}

void tp__gc_pace_mark_done(tp_heap *h, uint64_t allocated, uint64_t marked) {
  if (!marked) return; /* nothing to scale by: keep the history */
  /* A_i / M_i in Q16, saturated (allocated below 2^47 cannot overflow). */
  uint64_t a = allocated < ((uint64_t)1 << 47) ? allocated : (uint64_t)1 << 47;
  /* Relaxed: tp__gc_pace may read the history on another thread (a
   * stop-the-world fallback's caller after its pause). */
  __atomic_store_n(&h->cons_mark[h->cons_mark_i], (a << 16) / marked, __ATOMIC_RELAXED);
  h->cons_mark_i = (h->cons_mark_i + 1) % TP__PACE_HISTORY;
}

/* ---- past the goal: assists and the hard limit ------------------------------------- */

/* Waits as a blocking section (the pauses do not wait for this thread;
 * its buffers may be retired meanwhile) until a stop of the world ends or
 * a cycle ends, or `budget` ns have passed (0: no limit). Returns the time
 * waited. sp_lock not held. */
static uint64_t wait_progress(tp_heap *h, uint64_t budget) {
  uint64_t t0 = tp__now_ns();
  tp_heap_blocking_enter(h);
  pthread_mutex_lock(&h->sp_lock);
  uint64_t epoch = h->stw_epoch, done = h->cycles_done;
  /* A mark (or a cycle not yet started) ends with a pause, signalled on
   * cv_resume; a sweep ends with the cycle, on cv_cycle. */
  pthread_cond_t *cv =
      __atomic_load_n(&h->phase, __ATOMIC_RELAXED) == TP__PH_SWEEP ? &h->cv_cycle : &h->cv_resume;
  struct timespec ts = {0};
  if (budget) ts = tp__deadline_ns(budget); /* 0: no limit, no clock read */
  while (h->stw_epoch == epoch && h->cycles_done == done && h->cycles_done < h->cycles_req) {
    if (!budget) pthread_cond_wait(cv, &h->sp_lock);
    else if (pthread_cond_timedwait(cv, &h->sp_lock, &ts) == ETIMEDOUT) break;
  }
  pthread_mutex_unlock(&h->sp_lock);
  tp_heap_blocking_leave(h);
  return tp__now_ns() - t0;
}

/* Whether a cycle is asked for or runs (its sweep included). */
static bool cycle_pending(tp_heap *h) {
  pthread_mutex_lock(&h->sp_lock);
  bool pending = h->cycles_done < h->cycles_req;
  pthread_mutex_unlock(&h->sp_lock);
  return pending;
}

static void assist(tp_heap *h, tp__mut *m, uint64_t over, uint64_t span) {
  uint64_t now = tp__now_ns(), gc = tp__counter_get(&h->num_gc);
  if (m->assist_gc != gc || !m->assist_t) {
    /* First past the goal in this cycle: the clock starts. */
    m->assist_gc = gc;
    m->assist_t = now;
    return;
  }
  /* owed = run * f / (1 - f), f = min(x, 1/2), x = over / span (< 1):
   * run * over / (span - over) below x = 1/2, run from there. */
  uint64_t run = now - m->assist_t;
  unsigned __int128 owed = 2 * (unsigned __int128)over >= span
                               ? run
                               : (unsigned __int128)run * over / (span - over);
  if (owed < TP__ASSIST_MIN_NS) return;
  if (!cycle_pending(h)) return;
  uint64_t waited = wait_progress(h, owed < TP__ASSIST_MAX_NS ? (uint64_t)owed : TP__ASSIST_MAX_NS);
  m->assist_t = tp__now_ns();
  tp__counter_add(&h->mark_assist_ns, (int64_t)waited);
  tp__counter_add(&h->assists, 1);
  tp__counter_max(&h->assist_max_ns, waited); /* two assists may end together */
}

bool tp__gc_pace_alloc(tp_heap *h, tp__mut *m) {
  uint64_t alloc = tp__heap_alloc_now(h), goal = tp__counter_get(&h->next_gc);
  if (alloc < goal) return false;
  uint64_t hard = tp__counter_get(&h->hard_limit);
  if (alloc < hard) {
    assist(h, m, alloc - goal, hard - goal);
    return false;
  }
  if (!cycle_pending(h)) return false;
  tp__counter_add(&h->limit_waits, 1);
  tp__counter_add(&h->limit_wait_ns, (int64_t)wait_progress(h, 0));
  return true;
}

/* ---- heap_sys and trimming -------------------------------------------------------- */

void tp__gc_trim(tp_heap *h) {
  size_t retain = 0;
  pthread_mutex_lock(&tp__pool_pass_lock);
  tp__pool_scavenge(h->pool);
  tp__pool_release_empty(h->pool, tp__now_ms_coarse(), 0, &retain);
  pthread_mutex_unlock(&tp__pool_pass_lock);
}

/* No pool lock: the pacer calls this under the heap lock (rank 40), above
 * the pools' (30). */
uint64_t tp__gc_heap_sys(const tp_heap *h) {
  return tp__pool_bytes_mapped(h->pool) + tp__counter_get(&h->large_map_bytes) +
         tp__counter_get(&h->meta_bytes);
}
