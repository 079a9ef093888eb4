/*
 * <tidepool/detail/rseq.h> — the per-CPU caches' inline fast paths (rseq
 * assembly). An installed detail header: <tidepool/pool.h> and
 * <tidepool/arena.h> include it for their inline get/put/bump; nothing in
 * it is API (every name is tp__), and it changes without notice. The API
 * of this layer is <tidepool/percpu.h> (tp_percpu_mode).
 *
 * Algorithm. Each pool keeps, for every possible CPU, one block of
 * TP__PCACHE_STRIDE bytes holding a bounded stack of free objects
 * (struct tp__pcache). A thread pushes to or pops from the block of the CPU
 * it runs on inside an rseq critical section (Linux restartable sequences,
 * registered for every thread by glibc 2.35+): it reads its CPU number from
 * glibc's struct rseq, finds the block, checks the bounds, moves the object,
 * and commits with ONE plain 64-bit store of the block's commit word. If the
 * kernel preempts, migrates or signals the thread before the commit, it
 * restarts the sequence from the top, so no other thread can have touched
 * the block between the reads and the commit: no atomic instruction is
 * needed. This is the technique of tcmalloc's per-CPU caches, written anew.
 *
 * Why it is correct (the argument the code relies on):
 *  1. Only threads running on CPU c commit to block c, one at a time,
 *     because any interleaving on c passes through the kernel, which aborts
 *     the interrupted sequence before it resumes (rseq contract).
 *  2. Every store before the commit writes a slot at index >= count, which
 *     no reader of the block looks at, so a restarted sequence leaves no
 *     visible trace.
 *  3. Another thread (the sweeper, a pool draining caches for max_bytes)
 *     takes a block over by a CAS of its bounds to "locked" (pop and push
 *     both fail; of two drainers only one wins, so drains never overlap)
 *     and then fencing CPU c with membarrier(PRIVATE_EXPEDITED_RSEQ, CPU c):
 *     any sequence that was running on c is aborted, and every sequence that
 *     starts later reads the locked bounds. The sequences read the bounds
 *     BEFORE the commit word, so on x86-64 (loads are not reordered with
 *     older loads; stores are not reordered with older stores) a sequence
 *     that sees the unlock also sees the word the drainer wrote before it.
 *  4. A thread whose rseq area is not registered reads cpu_id -1 or -2;
 *     the two blocks below block 0 are sentinels whose bounds refuse
 *     everything, so such a thread always takes the slow path.
 *
 * When glibc has not registered rseq (__rseq_size == 0: valgrind, the
 * tunable glibc.pthread.rseq=0, old kernels) or when TP_FORCE_NORSEQ is
 * defined, tidepool uses the fallback "percpu-cas": the same blocks, chosen
 * with sched_getcpu(), each taken as a try-lock: one CAS sets a busy bit in
 * the commit word (acquire), one store of the new word gives it back
 * (release); a thread that finds the block busy does not wait but misses
 * to the depot (core/percpu.c). The inline functions below are not used in
 * that mode (the pools point them at an all-zero region, so they miss).
 *
 * x86-64 only, like the rest of the per-CPU code.
 */
#ifndef TIDEPOOL_DETAIL_RSEQ_H
#define TIDEPOOL_DETAIL_RSEQ_H

#include <tidepool/common.h>
#include <stddef.h>
#include <stdint.h>

/* glibc's offset of the thread's struct rseq from the thread pointer,
 * declared exactly as <sys/rseq.h> declares it — outside extern "C", as
 * glibc does, so that C++ sees one declaration either way (a variable's
 * name is not mangled) — so that this header does not pull in the kernel's
 * rseq headers. */
extern const ptrdiff_t __rseq_offset;

#ifdef __cplusplus
extern "C" {
#endif

/* A block is 2^TP__PCACHE_SHIFT bytes: the two words, then the slots. */
#define TP__PCACHE_SHIFT 13
#define TP__PCACHE_STRIDE (1u << TP__PCACHE_SHIFT)
#define TP__PCACHE_SLOTS ((TP__PCACHE_STRIDE - 16u) / sizeof(void *))
#define TP__PCACHE_COUNT_MASK 0xffffull
#define TP__PCACHE_REMOVAL (1ull << 16)
/* Bounds as one 64-bit value (lo in the low half, limit in the high half). */
#define TP__PCACHE_BOUNDS(limit) ((uint64_t)(limit) << 32)
#define TP__PCACHE_LOCKED ((uint64_t)0xffff)
/* Sentinel blocks below block 0, for rseq cpu_id -1 and -2 (in every
 * per-CPU array the sequences index with cpu_id). */
#define TP__PCACHE_SENTINELS 2

/*
 * One CPU's cache of free objects of one pool; exactly TP__PCACHE_STRIDE
 * bytes (block c is at base + (c << TP__PCACHE_SHIFT)).
 *
 * Invariants (outside a commit): count <= limit <= TP__PCACHE_SLOTS while
 * unlocked; slot[i] is a free object of the pool for every i < count.
 * Word layout: bits 0..15 count, bits 16..63 removals (mod 2^48).
 */
typedef struct tp__pcache {
  uint64_t word;   /* commit word: count | removals << 16 */
  uint64_t bounds; /* lo | limit << 32, read by the sequences as two 32-bit
                      halves: pop is refused while count <= lo (0, or 0xffff
                      when locked), push while count >= limit (the capacity,
                      or 0 when locked) */
  void *slot[TP__PCACHE_SLOTS];
} tp__pcache;

/* RSEQ_SIG as glibc registers it on x86. */
#define TP__RSEQ_SIG 0x53053053

/*
 * The rseq critical-section descriptor and abort handler, emitted next to
 * each sequence. Label 1: start, 2: end (post-commit), 4: abort handler
 * (which restarts at 0, re-arming rseq_cs; see TP__RSEQ_ENTER). The four bytes before the abort handler are the
 * signature the kernel checks; the three before them make the pair decode as
 * one harmless `ud1` instruction for disassemblers.
 */
#define TP__RSEQ_CS_DESCRIPTOR                                                \
  ".pushsection __rseq_cs, \"aw\"\n\t"                                        \
  ".balign 32\n\t"                                                            \
  "3:\n\t"                                                                    \
  ".long 0, 0\n\t"                                                            \
  ".quad 1f, 2f - 1f, 4f\n\t"                                                 \
  ".popsection\n\t"
#define TP__RSEQ_ABORT_HANDLER                                                \
  ".pushsection __rseq_failure, \"ax\"\n\t"                                   \
  ".byte 0x0f, 0xb9, 0x3d\n\t"                                                \
  ".long 0x53053053\n\t"                                                      \
  "4:\n\t"                                                                    \
  "jmp 0b\n\t"                                                                \
  ".popsection\n\t"
/* Label 0: rseq->rseq_cs = &descriptor (offset 8 of struct rseq); label 1:
 * the start. The abort handler goes back to 0, not 1: the kernel clears
 * rseq_cs when it aborts a sequence, so a restart must arm it again, or the
 * restarted sequence would run unprotected. */
#define TP__RSEQ_ENTER                                                        \
  "0:\n\t"                                                                    \
  "leaq 3b(%%rip), %%rax\n\t"                                                 \
  "movq %%rax, %%fs:8(%[rseq])\n\t"                                           \
  "1:\n\t"
/* %rax = this CPU's block of a per-CPU array of 2^shift-byte blocks:
 * base + (signed cpu_id << shift). shift is pasted into the instruction, so
 * it must be an integer literal or a macro naming one. */
#define TP__RSEQ_BLOCK_AT(shift)                                              \
  "movslq %%fs:4(%[rseq]), %%rax\n\t"                                         \
  "shlq $" TP__RSEQ_STR(shift) ", %%rax\n\t"                                  \
  "addq %[base], %%rax\n\t"
#define TP__RSEQ_STR(x) TP__RSEQ_STR_(x) /* expands x first */
#define TP__RSEQ_STR_(x) #x
/* The calling CPU's tp__pcache. */
#define TP__RSEQ_BLOCK TP__RSEQ_BLOCK_AT(TP__PCACHE_SHIFT)

/*
 * Pops one object from the calling CPU's block at `base`.
 * Cost: 13 instructions from arming rseq_cs to the commit (objdump), one
 * branch, no atomic. Returns NULL when the
 * block is empty or locked, or when rseq is not registered for the thread.
 * Linearization point: the commit store of the word.
 * Safe to call concurrently from any number of threads.
 */
TP_INLINE void *tp__pcache_pop(char *base) {
  void *obj;
  __asm__ volatile goto(TP__RSEQ_CS_DESCRIPTOR TP__RSEQ_ENTER TP__RSEQ_BLOCK
               "movl 8(%%rax), %%esi\n\t"         /* lo, read before the word */
               "movq (%%rax), %%rcx\n\t"          /* word */
               "movzwl %%cx, %%edx\n\t"           /* count */
               "cmpl %%esi, %%edx\n\t"
               "jbe %l[miss]\n\t"                 /* count <= lo: empty/locked */
               "movq 8(%%rax,%%rdx,8), %[obj]\n\t" /* slot[count - 1] */
               "addq $0xffff, %%rcx\n\t"          /* count - 1, removals + 1 */
               "movq %%rcx, (%%rax)\n\t"          /* commit */
               "2:\n\t" TP__RSEQ_ABORT_HANDLER
               /* early clobber: an abort after obj is written restarts
                * at 0, which must still find every input intact */
               : [obj] "=&r"(obj)
               : [rseq] "r"(__rseq_offset), [base] "r"(base)
               : "rax", "rcx", "rdx", "rsi", "memory", "cc"
               : miss);
  /* Slots never hold NULL: lets the caller's NULL test fold into the miss. */
  if (obj == NULL) __builtin_unreachable();
  return obj;
miss:
  return NULL;
}

/* The two pushes' shared text. READ: limit (read before the word), the
 * word, and its count in edx. COMMIT: the slot store at index count
 * (invisible until the commit), then the commit store of the word; label
 * 2 ends the sequence. */
#define TP__PCACHE_PUSH_READ                                                  \
  "movl 12(%%rax), %%esi\n\t"                                                 \
  "movq (%%rax), %%rcx\n\t"                                                   \
  "movzwl %%cx, %%edx\n\t"
#define TP__PCACHE_PUSH_COMMIT                                                \
  "movq %[obj], 16(%%rax,%%rdx,8)\n\t"                                        \
  "addq $1, %%rcx\n\t"                                                        \
  "movq %%rcx, (%%rax)\n\t"                                                   \
  "2:\n\t" TP__RSEQ_ABORT_HANDLER

/*
 * Pushes `obj` on the calling CPU's block at `base`. Cost: 13 instructions
 * from arming rseq_cs to the commit (objdump), one branch, no atomic. Returns 1 if pushed, 0 when the block is full or
 * locked, or rseq is not registered.
 * Linearization point: the commit store of the word; the slot store before
 * it is at index count and invisible until then.
 * Safe to call concurrently from any number of threads.
 */
TP_INLINE int tp__pcache_push(char *base, void *obj) {
  __asm__ volatile goto(TP__RSEQ_CS_DESCRIPTOR TP__RSEQ_ENTER TP__RSEQ_BLOCK TP__PCACHE_PUSH_READ
               "cmpl %%esi, %%edx\n\t"
               "jae %l[miss]\n\t"                 /* count >= limit: full/locked */
               TP__PCACHE_PUSH_COMMIT
               :
               : [rseq] "r"(__rseq_offset), [base] "r"(base), [obj] "r"(obj)
               : "rax", "rcx", "rdx", "rsi", "memory", "cc"
               : miss);
  return 1;
miss:
  return 0;
}

/*
 * tp__pcache_push, vetoed when `check` is nonzero (the caller's condition
 * folded into the bounds test, so it needs no branch of its own; it stays
 * off the slot store's address, so a late `check` does not delay the store
 * a following pop forwards from). 15 instructions from arming rseq_cs to
 * the commit (objdump), one branch, no atomic.
 * Safe to call concurrently from any number of threads.
 */
TP_INLINE int tp__pcache_push_checked(char *base, void *obj, uintptr_t check) {
  __asm__ volatile goto(TP__RSEQ_CS_DESCRIPTOR TP__RSEQ_ENTER TP__RSEQ_BLOCK TP__PCACHE_PUSH_READ
               "movq %%rdx, %%r8\n\t"
               "orq %[check], %%r8\n\t"           /* veto: makes it huge */
               "cmpq %%rsi, %%r8\n\t"
               "jae %l[miss]\n\t"                 /* count >= limit, or vetoed */
               TP__PCACHE_PUSH_COMMIT
               :
               : [rseq] "r"(__rseq_offset), [base] "r"(base), [obj] "r"(obj),
                 [check] "r"(check)
               : "rax", "rcx", "rdx", "rsi", "r8", "memory", "cc"
               : miss);
  return 1;
miss:
  return 0;
}

#ifdef __cplusplus
}
#endif

#endif /* TIDEPOOL_DETAIL_RSEQ_H */
