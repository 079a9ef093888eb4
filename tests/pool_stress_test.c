/*
 * Stress of tp_pool: 8 worker threads on 2 cores get, put and bulk at
 * random and hand objects to each other; a churn thread keeps creating
 * short-lived threads that do the same and exit. Every object carries its
 * holder's id and a sequence number: a get swaps the holder from 0 to the
 * getter (anything else means the object was handed out twice at once), a
 * put checks holder and sequence and clears the holder. At the end every
 * object is back: in_use == 0 and gets == puts.
 *
 * A timer signal every 50 us interrupts the threads all along: each
 * delivery aborts a restartable sequence in flight, so the restart path
 * (which must re-arm the sequence) runs millions of times.
 *
 * Seeded (seed printed; TP_TEST_SEED replays the choices, not the
 * interleaving) and time-bounded (TP_TEST_SECONDS_SCALE scales it).
 */
#include <tidepool/pool.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/time.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/test_util.h"

#define WORKERS 8
#define HOLD_MAX 3000
#define MAILBOX 512

struct obj {
  _Atomic uint32_t holder; /* 0 = in the pool */
  uint32_t seq;
  uint64_t check; /* seq ^ holder ^ magic, written by the holder */
  char payload[40];
};

static tp_pool *pool;
static int stop; /* atomic */
static tt_failures failures;
static _Atomic uint32_t next_id = 1;
static _Atomic uint64_t churn_threads;

struct mailbox {
  pthread_mutex_t lock;
  struct obj *slot[MAILBOX];
  int n;
};
static struct mailbox mail[WORKERS];

static void take(struct obj *o, uint32_t me, uint32_t seq) {
  /* Free objects read 0, or the poison pattern in debug builds. */
  uint32_t prev = atomic_exchange_explicit(&o->holder, me, memory_order_acq_rel);
  if (prev != 0 && prev != 0xdbdbdbdbu)
    tt_fail_once(&failures, "object %p handed out while held by %u (to %u)", (void *)o, prev,
                 me);
  o->seq = seq;
  o->check = seq ^ me ^ 0x5eed;
  memset(o->payload, (int)(me & 0xff), sizeof o->payload);
}

static void give_back(struct obj *o, uint32_t me, uint32_t seq) {
  if (atomic_load_explicit(&o->holder, memory_order_relaxed) != me || o->seq != seq ||
      o->check != (seq ^ me ^ 0x5eed))
    tt_fail_once(&failures, "object %p corrupted: holder %u seq %u (expected %u/%u)",
                 (void *)o, atomic_load(&o->holder), o->seq, me, seq);
  for (size_t i = 0; i < sizeof o->payload; i++)
    if ((unsigned char)o->payload[i] != (me & 0xff)) {
      tt_fail_once(&failures, "object %p payload overwritten", (void *)o);
      break;
    }
  atomic_store_explicit(&o->holder, 0, memory_order_release);
}

/* A thread's objects and the sequence numbers it gave them. */
struct held {
  struct obj *o[HOLD_MAX];
  uint32_t seq[HOLD_MAX];
  int n;
  uint32_t me, next_seq;
  uint64_t rng;
};

static void get_some(struct held *h, size_t want) {
  if (want > (size_t)(HOLD_MAX - h->n)) want = (size_t)(HOLD_MAX - h->n);
  if (want == 0) return;
  if (want == 1) {
    struct obj *o = tp_pool_get(pool);
    if (!o) {
      tt_fail_once(&failures, "get failed: %d", errno);
      return;
    }
    take(o, h->me, ++h->next_seq);
    h->seq[h->n] = h->next_seq;
    h->o[h->n++] = o;
    return;
  }
  void *buf[128];
  if (want > 128) want = 128;
  size_t k = tp_pool_get_bulk(pool, buf, want);
  if (k != want) tt_fail_once(&failures, "bulk get %zu of %zu", k, want);
  for (size_t i = 0; i < k; i++) {
    take(buf[i], h->me, ++h->next_seq);
    h->seq[h->n] = h->next_seq;
    h->o[h->n++] = buf[i];
  }
}

static void put_some(struct held *h, size_t count) {
  if (count > (size_t)h->n) count = (size_t)h->n;
  void *buf[128];
  size_t nb = 0;
  for (size_t i = 0; i < count; i++) {
    size_t at = tt_rand(&h->rng) % (size_t)h->n;
    struct obj *o = h->o[at];
    give_back(o, h->me, h->seq[at]);
    h->o[at] = h->o[--h->n];
    h->seq[at] = h->seq[h->n];
    if (count == 1) {
      tp_pool_put(pool, o);
    } else {
      buf[nb++] = o;
      if (nb == 128) {
        tp_pool_put_bulk(pool, buf, nb);
        nb = 0;
      }
    }
  }
  if (nb) tp_pool_put_bulk(pool, buf, nb);
}

/* Hands one object to worker `to` (the holder changes under its lock). */
static void send(struct held *h, int to) {
  if (!h->n) return;
  struct mailbox *m = &mail[to];
  pthread_mutex_lock(&m->lock);
  if (m->n < MAILBOX) {
    size_t at = tt_rand(&h->rng) % (size_t)h->n;
    struct obj *o = h->o[at];
    give_back(o, h->me, h->seq[at]);
    take(o, 0xffffffu - (uint32_t)to, 0); /* "in the mailbox of to" */
    m->slot[m->n++] = o;
    h->o[at] = h->o[--h->n];
    h->seq[at] = h->seq[h->n];
  }
  pthread_mutex_unlock(&m->lock);
}

static void receive(struct held *h, int me_idx) {
  struct mailbox *m = &mail[me_idx];
  pthread_mutex_lock(&m->lock);
  while (m->n && h->n < HOLD_MAX) {
    struct obj *o = m->slot[--m->n];
    give_back(o, 0xffffffu - (uint32_t)me_idx, 0);
    take(o, h->me, ++h->next_seq);
    h->seq[h->n] = h->next_seq;
    h->o[h->n++] = o;
  }
  pthread_mutex_unlock(&m->lock);
}

struct worker_arg {
  int idx;
  uint64_t seed;
};

static void *worker(void *argp) {
  struct worker_arg *a = argp;
  struct held *h = calloc(1, sizeof *h);
  h->me = atomic_fetch_add(&next_id, 1);
  h->rng = a->seed;
  while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
    uint64_t r = tt_rand(&h->rng);
    switch (r % 8) {
      case 0: case 1: case 2: get_some(h, 1); break;
      case 3: case 4: put_some(h, 1); break;
      case 5: get_some(h, (r >> 8) % 100); break;
      case 6: put_some(h, (r >> 8) % 100); break;
      case 7:
        send(h, (int)((r >> 8) % WORKERS));
        receive(h, a->idx);
        break;
    }
  }
  receive(h, a->idx);
  put_some(h, (size_t)h->n);
  free(h);
  return NULL;
}

struct churn_arg {
  uint64_t seed;
};

static void *short_lived(void *argp) {
  struct held *h = calloc(1, sizeof *h);
  h->me = atomic_fetch_add(&next_id, 1);
  h->rng = (uint64_t)(uintptr_t)argp;
  for (int i = 0; i < 50; i++) {
    get_some(h, tt_rand(&h->rng) % 40);
    put_some(h, tt_rand(&h->rng) % 40);
  }
  put_some(h, (size_t)h->n);
  free(h);
  atomic_fetch_add(&churn_threads, 1);
  return NULL;
}

static void *churn(void *argp) {
  struct churn_arg *a = argp;
  uint64_t rng = a->seed;
  while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
      pthread_create(&t[i], NULL, short_lived, (void *)(uintptr_t)(tt_rand(&rng) | 1));
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  }
  return NULL;
}

static _Atomic uint64_t signals;
static void on_alarm(int sig) {
  (void)sig;
  atomic_fetch_add_explicit(&signals, 1, memory_order_relaxed);
}

/* What a run must have done for its checks to mean something; it runs
 * until it has (and its time is up). Pool stats are read while the
 * threads run: each counter only grows, so the final ones are larger. */
#define MIN_GETS 10000

static int did_enough(void *arg) {
  (void)arg;
  tp_pool_stats s;
  return tp_pool_read_stats(pool, &s) == 0 && s.gets > MIN_GETS &&
         atomic_load(&churn_threads) > 0;
}

static void run(size_t obj_size, double seconds, const char *name) {
  uint64_t seed = tt_seed(name);
  tp_pool_config c = {.name = name, .obj_size = obj_size};
  pool = tp_pool_create(&c);
  assert_non_null(pool);
  __atomic_store_n(&stop, 0, __ATOMIC_RELAXED);
  tt_failures_reset(&failures);
  atomic_store(&churn_threads, 0);
  for (int i = 0; i < WORKERS; i++) {
    pthread_mutex_init(&mail[i].lock, NULL);
    mail[i].n = 0;
  }
  pthread_t t[WORKERS], ct;
  struct worker_arg wa[WORKERS];
  for (int i = 0; i < WORKERS; i++) {
    wa[i] = (struct worker_arg){i, seed + (uint64_t)i * 7919 + 1};
    pthread_create(&t[i], NULL, worker, &wa[i]);
  }
  struct churn_arg ca = {seed ^ 0xc0ffee};
  pthread_create(&ct, NULL, churn, &ca);
  tt_alarm_every(on_alarm, 50);
  tt_run_until(tt_deadline(seconds), &failures, did_enough, NULL, &stop);
  tt_alarm_every(NULL, 0);
  for (int i = 0; i < WORKERS; i++) pthread_join(t[i], NULL);
  pthread_join(ct, NULL);
  /* Mailboxes may still hold objects sent after their owner drained. */
  for (int i = 0; i < WORKERS; i++)
    while (mail[i].n) {
      struct obj *o = mail[i].slot[--mail[i].n];
      give_back(o, 0xffffffu - (uint32_t)i, 0);
      tp_pool_put(pool, o);
    }
  tp_pool_stats s;
  assert_int_equal(tp_pool_read_stats(pool, &s), 0);
  printf("%s: %llu gets, %llu puts, %llu churn threads, %llu depot exchanges, %llu signals, "
         "mode %s\n",
         name, (unsigned long long)s.gets, (unsigned long long)s.puts,
         (unsigned long long)atomic_load(&churn_threads),
         (unsigned long long)s.depot_exchanges, (unsigned long long)atomic_load(&signals),
         tp_percpu_mode());
  tt_assert_no_failures(&failures);
  assert_int_equal(s.in_use, 0);
  assert_int_equal(s.gets, s.puts);
  assert_true(s.gets > MIN_GETS);
  assert_true(atomic_load(&churn_threads) > 0);
  tp_pool_destroy(pool);
}

/* Signal handlers on the same CPU. The kernel aborts a restartable
 * sequence that a signal interrupts (and clears rseq_cs); the sequence
 * must re-arm itself when it restarts, or a second signal landing in the
 * restarted sequence would run its handler unnoticed in the middle of it.
 * Here every handler takes one object straight from the interrupted
 * thread's CPU cache (the async-signal-safe rseq pop; the slow path is not)
 * and keeps it: an interrupted pop that committed anyway would hand out the
 * same object twice, which take() reports. (With the restart left
 * unprotected, this test fails within a second.) */
#define HANDLER_ID 0xfffffff0u
#define STASH 4096
static __thread struct obj *stash[STASH];
static __thread unsigned nstash;
static _Atomic uint64_t stolen;

static void on_alarm_steal(int sig) {
  (void)sig;
  atomic_fetch_add_explicit(&signals, 1, memory_order_relaxed);
  if (nstash == STASH) return;
  struct obj *o = tp__pcache_pop(((struct tp__pool_head *)pool)->fast_base);
  if (!o) return;
  uint32_t prev = atomic_exchange_explicit(&o->holder, HANDLER_ID, memory_order_acq_rel);
  if (prev != 0 && prev != 0xdbdbdbdbu) {
    static const char msg[] = "handler got an object that a thread holds\n";
    if (write(2, msg, sizeof msg - 1) < 0) { /* nothing to do */ }
    __atomic_fetch_add(&failures.count, 1, __ATOMIC_RELAXED); /* tt_fail_once formats */
  }
  stash[nstash++] = o;
  atomic_fetch_add_explicit(&stolen, 1, memory_order_relaxed);
}

static void drain_stash(void) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  while (nstash) {
    struct obj *o = stash[--nstash];
    if (atomic_exchange(&o->holder, 0) != HANDLER_ID)
      tt_fail_once(&failures, "stashed object %p changed hands", (void *)o);
    tp_pool_put(pool, o);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void *signalled_worker(void *argp) {
  struct worker_arg *a = argp;
  struct held *h = calloc(1, sizeof *h);
  h->me = atomic_fetch_add(&next_id, 1);
  h->rng = a->seed;
  while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
    /* Single gets (short sequences) and bulk gets of ~120 (a sequence that
     * copies 120 pointers is a wide target for a second signal). */
    for (int k = 0; k < 32; k++) get_some(h, 1);
    get_some(h, 100 + tt_rand(&h->rng) % 28);
    put_some(h, (size_t)h->n / 2);
    put_some(h, (size_t)h->n);
    if (nstash > STASH / 2) drain_stash();
  }
  /* No handler may take anything after the last drain. */
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  put_some(h, (size_t)h->n);
  drain_stash();
  free(h);
  return NULL;
}

static void stress_signals(void **state) {
  (void)state;
  uint64_t seed = tt_seed("pool_stress_signals");
  tp_pool_config c = {.name = "signals", .obj_size = sizeof(struct obj)};
  pool = tp_pool_create(&c);
  assert_non_null(pool);
  __atomic_store_n(&stop, 0, __ATOMIC_RELAXED);
  tt_failures_reset(&failures);
  atomic_store(&stolen, 0);
  /* The main thread only sleeps: keep the signals for the workers. */
  sigset_t old;
  pthread_t t[3];
  struct worker_arg wa[3];
  for (int i = 0; i < 3; i++) {
    wa[i] = (struct worker_arg){i, seed + (uint64_t)i * 104729 + 1};
    pthread_create(&t[i], NULL, signalled_worker, &wa[i]);
  }
  tt_block_alarm(&old);
  tt_alarm_every(on_alarm_steal, 20);
  /* The timer stops before the workers do: once they stop they block
   * signals, and a SIGALRM left pending would then reach this thread. */
  tt_run_until(tt_deadline(3.0), &failures, NULL, NULL, NULL);
  tt_alarm_every(NULL, 0);
  __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
  for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  tp_pool_stats s;
  tp_pool_read_stats(pool, &s);
  printf("pool_stress_signals: %llu gets, %llu signals, %llu objects taken by handlers (%s)\n",
         (unsigned long long)s.gets, (unsigned long long)atomic_load(&signals),
         (unsigned long long)atomic_load(&stolen), tp_percpu_mode());
  tt_assert_no_failures(&failures);
  assert_int_equal(s.in_use, 0);
  /* The case means something only if signals arrived and, where the inline
   * rseq pop is on (else the handlers' pop reads the all-zero region and
   * takes nothing: percpu-cas, debug, sanitizer and valgrind builds), if
   * handlers took objects. */
  assert_true(atomic_load(&signals) > 0);
  if (((struct tp__pool_head *)pool)->slab_mask != 0) /* the inline path is on */
    assert_true(atomic_load(&stolen) > 0);
  else
    print_message("  the inline pop is off in this build: handlers took nothing\n");
  tp_pool_destroy(pool);
}

static void stress_small(void **state) {
  (void)state;
  run(sizeof(struct obj), 3.0, "pool_stress_small");
}

static void stress_large(void **state) {
  (void)state;
  run(5000, 2.0, "pool_stress_large"); /* small caches and batches */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(stress_small),
      cmocka_unit_test(stress_large),
      cmocka_unit_test(stress_signals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
