/*
 * Internal: blocking sections across layers.
 *
 * A lower layer that may make the calling thread wait for other threads
 * (an epoch grace period, an epoch barrier) brackets the wait with
 * tp__blocking_enter / tp__blocking_leave. A higher layer that must not
 * wait for a thread stuck in such a wait installs hooks here: the
 * collector (gc/mutators.c) makes the wait a blocking section
 * (tp_heap_blocking_enter/_leave) of every heap the thread is attached to,
 * so a collection proceeds without it instead of waiting for a thread that
 * waits for a reader the collection itself has parked. The layering stays
 * core -> ... -> gc: core calls through the pointers, never into gc.
 *
 * Both calls may be nested; each enter is matched by a leave on the same
 * thread with nothing of the waiting layer's own locks held around them
 * (the hooks take heap locks, rank 40). Hooks are set once (release) and
 * read with acquire; no hook: no-ops.
 */
#ifndef TIDEPOOL_BLOCKING_INTERNAL_H
#define TIDEPOOL_BLOCKING_INTERNAL_H

/* Installs the hooks (once, before the first heap exists). */
void tp__blocking_hooks_set(void (*enter)(void), void (*leave)(void));
/* Around a wait for other threads. */
void tp__blocking_enter(void);
void tp__blocking_leave(void);

#endif /* TIDEPOOL_BLOCKING_INTERNAL_H */
