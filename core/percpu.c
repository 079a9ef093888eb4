/*
 * Per-CPU blocks: mode selection, regions, batch moves, drains, fences.
 *
 * The single-object fast paths are inline in <tidepool/detail/rseq.h>; this
 * file holds what is too long to inline. The argument for the rseq
 * sequences is in that header; this file adds the fallback and the batch
 * sequences.
 *
 * Fallback (percpu-cas). A block is taken with one CAS that sets
 * TP__PCACHE_BUSY in its commit word (acquire) and given back with one store
 * of the new word (release). A thread that finds the block busy does not
 * wait: it reports a miss and its caller goes to the depot, so a thread
 * preempted while holding a block delays nobody. Under the bit the block is
 * the holder's alone, so slots are read and written with plain accesses. The
 * release store publishes the slots written under the bit to the next
 * holder's acquire CAS.
 */
#define _GNU_SOURCE
#include "core/percpu_internal.h"
#include "core/debug_internal.h"
#include "core/options_internal.h"
#include "core/fault_internal.h"
#include "core/os_internal.h"
#include "core/trylock_internal.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

_Static_assert(sizeof(tp__pcache) == TP__PCACHE_STRIDE, "one block is one stride");

/* Read directly (no once check) by the functions below: they only run on
 * regions and arenas made after a tp__percpu() call. */
static struct tp__percpu_info info;
static pthread_once_t info_once = PTHREAD_ONCE_INIT;

static unsigned possible_cpus(void) {
  /* rseq's cpu_id ranges over the possible CPUs: "0-3", "0", "0-1,4-7". */
  unsigned n = 0;
  FILE *f = tp__fopen("/sys/devices/system/cpu/possible", "re");
  if (f) {
    char buf[256];
    if (fgets(buf, sizeof buf, f)) {
      for (char *s = buf; *s;) {
        char *end;
        unsigned long a = strtoul(s, &end, 10), b = a;
        if (end == s) break;
        if (*end == '-') b = strtoul(end + 1, &end, 10);
        if (b + 1 > n) n = (unsigned)(b + 1);
        s = (*end == ',') ? end + 1 : end;
        if (*s == '\n') break;
      }
    }
    fclose(f);
  }
  long conf = sysconf(_SC_NPROCESSORS_CONF);
  if (conf > 0 && (unsigned long)conf > n) n = (unsigned)conf;
  return n ? n : 1;
}

static long membarrier_call(int cmd, unsigned flags, int cpu) {
  return syscall(__NR_membarrier, cmd, flags, cpu);
}

static void percpu_init(void) {
  info.ncpu = possible_cpus();
  bool rseq = __rseq_size >= 20;
#ifdef TP_FORCE_NORSEQ
  rseq = false;
#endif
  if (tp__options()->percpu == TP__PERCPU_CAS) rseq = false; /* TIDEPOOL_PERCPU=cas */
  if (rseq && tp__rseq_cpu_id() < 0) rseq = false;
  info.rseq = rseq;
  if (rseq) {
    /* Idempotent; needed once per process (inherited across fork). */
    info.fence = membarrier_call(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ,
                                 0, 0) == 0;
  }
}

char *tp__pcache_zero_base(void) {
  static char *zero_base; /* CAS from NULL; racing mappers unmap their copy */
  char *z = __atomic_load_n(&zero_base, __ATOMIC_ACQUIRE);
  if (z) return z;
  size_t bytes = tp__pcache_region_bytes();
  char *raw = tp__mmap(NULL, bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) {
    errno = ENOMEM;
    return NULL;
  }
  z = raw + TP__PCACHE_SENTINELS * TP__PCACHE_STRIDE;
  char *expect = NULL;
  if (__atomic_compare_exchange_n(&zero_base, &expect, z, false, __ATOMIC_ACQ_REL,
                                  __ATOMIC_ACQUIRE))
    return z;
  tp__munmap(raw, bytes);
  return expect;
}

const struct tp__percpu_info *tp__percpu(void) {
  pthread_once(&info_once, percpu_init);
  return &info;
}

const char *tp_percpu_mode(void) {
  return tp__percpu()->rseq ? "rseq" : "percpu-cas";
}

size_t tp__pcache_region_resident(void) {
  return (size_t)tp__percpu()->ncpu * tp__os_page_size(); /* each block's first page */
}

size_t tp__pcache_region_bytes(void) {
  return (size_t)(tp__percpu()->ncpu + TP__PCACHE_SENTINELS) * TP__PCACHE_STRIDE;
}

char *tp__pcache_region_new(unsigned limit) {
  const struct tp__percpu_info *pi = tp__percpu();
  if (limit > TP__PCACHE_SLOTS) limit = TP__PCACHE_SLOTS;
  char *raw = tp__os_map(tp__pcache_region_bytes(), 0);
  if (!raw) return NULL;
  /* The sentinels stay all-zero: lo 0 = count 0 refuses pops, limit 0
   * refuses pushes. */
  char *base = raw + TP__PCACHE_SENTINELS * TP__PCACHE_STRIDE;
  for (unsigned c = 0; c < pi->ncpu; c++)
    tp__pcache_at(base, c)->bounds = TP__PCACHE_BOUNDS(limit);
  tp__counter_add(&tp__os.resident, (int64_t)tp__pcache_region_resident());
  return base;
}

void tp__pcache_region_free(char *base) {
  if (!base) return;
  tp__counter_add(&tp__os.resident, -(int64_t)tp__pcache_region_resident());
  tp__os_unmap(base - TP__PCACHE_SENTINELS * TP__PCACHE_STRIDE,
               tp__pcache_region_bytes());
}

unsigned tp__current_cpu(void) {
  int c = sched_getcpu();
  unsigned n = info.ncpu;
  return c < 0 ? 0 : (unsigned)c % n;
}

/* ---- fallback: blocks taken with the BUSY bit -------------------------- */

/* Takes block c (core/trylock_internal.h, the busy bit inside its commit
 * word): returns its word (without BUSY) or UINT64_MAX if another thread
 * holds it. Retries only while the CAS fails against a free block. */
static uint64_t cas_take(tp__pcache *c) {
  uint64_t w;
  return tp__busy_try(&c->word, TP__PCACHE_BUSY, 4, &w) ? w : UINT64_MAX;
}

/* Gives block c back with its new word; release publishes the slots. */
static void cas_give(tp__pcache *c, uint64_t w) { tp__busy_give(&c->word, w); }

static unsigned cas_pop_n(tp__pcache *c, void **out, unsigned n) {
  uint64_t w = cas_take(c);
  if (w == UINT64_MAX) return 0;
  unsigned count = tp__pcache_count(w);
  unsigned lo = (uint32_t)__atomic_load_n(&c->bounds, __ATOMIC_RELAXED);
  unsigned k = count > lo ? count - lo : 0;
  if (k > n) k = n;
  for (unsigned i = 0; i < k; i++) out[i] = c->slot[count - 1 - i];
  cas_give(c, w - k + (uint64_t)k * TP__PCACHE_REMOVAL);
  return k;
}

static unsigned cas_push_n(tp__pcache *c, void *const *in, unsigned n) {
  uint64_t w = cas_take(c);
  if (w == UINT64_MAX) return 0;
  unsigned count = tp__pcache_count(w);
  unsigned limit = (unsigned)(__atomic_load_n(&c->bounds, __ATOMIC_RELAXED) >> 32);
  unsigned k = limit > count ? limit - count : 0;
  if (k > n) k = n;
  for (unsigned i = 0; i < k; i++) c->slot[count + i] = in[i];
  cas_give(c, w + k);
  return k;
}

/* ---- rseq batch sequences ----------------------------------------------- */

/*
 * Pops k = min(n, count - lo) objects into out[0..k) in one sequence.
 * The copy loop writes only the caller's buffer; the commit is the single
 * store of word - k + k * REMOVAL, so an abort at any point leaves the block
 * untouched and the restart recomputes everything.
 */
static unsigned rseq_pop_n(char *base, void **out, unsigned n) {
  unsigned long k;
  __asm__ volatile(TP__RSEQ_CS_DESCRIPTOR TP__RSEQ_ENTER TP__RSEQ_BLOCK
                   "xorl %k[k], %k[k]\n\t"
                   "movl 8(%%rax), %%esi\n\t"       /* lo, before the word */
                   "movq (%%rax), %%rcx\n\t"        /* word */
                   "movzwl %%cx, %%edx\n\t"         /* count */
                   "movl %%edx, %%r8d\n\t"
                   "subl %%esi, %%r8d\n\t"          /* avail = count - lo */
                   "jle 2f\n\t"                     /* nothing (or locked) */
                   "movl %[n], %k[k]\n\t"
                   "cmpl %%r8d, %k[k]\n\t"
                   "cmoval %%r8d, %k[k]\n\t"        /* k = min(n, avail) */
                   "movl %%edx, %%r9d\n\t"
                   "subl %k[k], %%r9d\n\t"          /* first = count - k */
                   "leaq 16(%%rax,%%r9,8), %%r10\n\t"
                   "xorl %%r11d, %%r11d\n\t"
                   "5:\n\t"
                   "movq (%%r10,%%r11,8), %%r9\n\t"
                   "movq %%r9, (%[out],%%r11,8)\n\t"
                   "incq %%r11\n\t"
                   "cmpq %[k], %%r11\n\t"
                   "jb 5b\n\t"
                   "movq %[k], %%r9\n\t"
                   "shlq $16, %%r9\n\t"
                   "subq %[k], %%r9\n\t"
                   "addq %%r9, %%rcx\n\t"           /* count - k, removals + k */
                   "movq %%rcx, (%%rax)\n\t"        /* commit */
                   "2:\n\t" TP__RSEQ_ABORT_HANDLER
                   : [k] "=&r"(k)
                   : [rseq] "r"(__rseq_offset), [base] "r"(base),
                     [out] "r"(out), [n] "r"(n)
                   : "rax", "rcx", "rdx", "rsi", "r8", "r9", "r10", "r11",
                     "memory", "cc");
  return (unsigned)k;
}

/*
 * Pushes k = min(n, limit - count) objects from in[0..k) in one sequence.
 * The copy writes slots count .. count+k-1, invisible until the commit.
 */
static unsigned rseq_push_n(char *base, void *const *in, unsigned n) {
  unsigned long k;
  __asm__ volatile(TP__RSEQ_CS_DESCRIPTOR TP__RSEQ_ENTER TP__RSEQ_BLOCK
                   "xorl %k[k], %k[k]\n\t"
                   "movl 12(%%rax), %%esi\n\t"      /* limit, before the word */
                   "movq (%%rax), %%rcx\n\t"        /* word */
                   "movzwl %%cx, %%edx\n\t"         /* count */
                   "movl %%esi, %%r8d\n\t"
                   "subl %%edx, %%r8d\n\t"          /* room = limit - count */
                   "jle 2f\n\t"                     /* full (or locked) */
                   "movl %[n], %k[k]\n\t"
                   "cmpl %%r8d, %k[k]\n\t"
                   "cmoval %%r8d, %k[k]\n\t"        /* k = min(n, room) */
                   "leaq 16(%%rax,%%rdx,8), %%r10\n\t"
                   "xorl %%r11d, %%r11d\n\t"
                   "5:\n\t"
                   "movq (%[in],%%r11,8), %%r9\n\t"
                   "movq %%r9, (%%r10,%%r11,8)\n\t"
                   "incq %%r11\n\t"
                   "cmpq %[k], %%r11\n\t"
                   "jb 5b\n\t"
                   "addq %[k], %%rcx\n\t"
                   "movq %%rcx, (%%rax)\n\t"        /* commit */
                   "2:\n\t" TP__RSEQ_ABORT_HANDLER
                   : [k] "=&r"(k)
                   : [rseq] "r"(__rseq_offset), [base] "r"(base),
                     [in] "r"(in), [n] "r"(n)
                   : "rax", "rcx", "rdx", "rsi", "r8", "r9", "r10", "r11",
                     "memory", "cc");
  return (unsigned)k;
}

unsigned tp__pcache_pop_n(char *base, void **out, unsigned n) {
  if (n == 0) return 0;
  if (info.rseq) return rseq_pop_n(base, out, n);
  return cas_pop_n(tp__pcache_at(base, tp__current_cpu()), out, n);
}

unsigned tp__pcache_push_n(char *base, void *const *in, unsigned n) {
  if (n == 0) return 0;
  if (info.rseq) return rseq_push_n(base, in, n);
  return cas_push_n(tp__pcache_at(base, tp__current_cpu()), in, n);
}

/* Fences CPU cpu against in-flight rseq sequences (see percpu.h, point 3).
 * 0 or -errno. */
static int percpu_fence_cpu(unsigned cpu) {
  if (!info.fence) return -ENOSYS;
  if (membarrier_call(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
                      MEMBARRIER_CMD_FLAG_CPU, (int)cpu) != 0)
    return -errno;
  return 0;
}

int tp__pcache_drain(char *base, unsigned cpu, void **out) {
  tp__pcache *c = tp__pcache_at(base, cpu);
  if (!info.rseq) {
    /* Fallback: take the block like any holder; if a thread holds it now,
     * report nothing drained (the caller retries on a later pass). */
    return (int)cas_pop_n(c, out, TP__PCACHE_SLOTS);
  }
  if (!info.fence) return -ENOSYS;
  uint64_t bounds = __atomic_load_n(&c->bounds, __ATOMIC_RELAXED);
  /* Lock: pop and push both refused from now on. A CAS, so that two drains
   * of one block (the sweeper and a pool at max_bytes) never overlap: the
   * loser reports nothing drained. Relaxed is enough: the membarrier below
   * orders this store before every sequence that starts on `cpu` after it
   * returns (it runs a full barrier there). */
  if (bounds == TP__PCACHE_LOCKED ||
      !__atomic_compare_exchange_n(&c->bounds, &bounds, TP__PCACHE_LOCKED, false,
                                   __ATOMIC_RELAXED, __ATOMIC_RELAXED))
    return 0;
  int rc = percpu_fence_cpu(cpu);
  if (rc != 0) {
    __atomic_store_n(&c->bounds, bounds, __ATOMIC_RELEASE);
    return rc;
  }
  /* The block is ours: every sequence that was running on `cpu` has been
   * aborted or has committed (and its commit is visible after the fence). */
  uint64_t w = __atomic_load_n(&c->word, __ATOMIC_RELAXED);
  unsigned n = tp__pcache_count(w);
  for (unsigned i = 0; i < n; i++) out[i] = c->slot[i];
  __atomic_store_n(&c->word, w - n + (uint64_t)n * TP__PCACHE_REMOVAL,
                   __ATOMIC_RELAXED);
  /* Unlock. release: the new word is visible before the unlocked bounds
   * (the sequences read bounds first; see percpu.h point 3). */
  __atomic_store_n(&c->bounds, bounds, __ATOMIC_RELEASE);
  return (int)n;
}
