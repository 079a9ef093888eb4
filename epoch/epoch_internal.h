/*
 * Internal: what the layers above epoch use of it beyond the public API.
 */
#ifndef TIDEPOOL_EPOCH_INTERNAL_H
#define TIDEPOOL_EPOCH_INTERNAL_H

#include <tidepool/epoch.h>
#include <stddef.h>

/* tp_epoch_retire_sized that never waits at the cap (it is accepted past
 * it): for retires issued under a lock that ranks after the epoch's
 * grace-period lock (the sweeper's slab retires, under its pass lock).
 * 0; -EINVAL (NULL fn); -ENOMEM. */
int tp__epoch_retire_nowait(void *obj, size_t bytes, void (*fn)(void *obj, void *arg), void *arg);

/* Unmaps the retire-queue segments held for reuse beyond the few always
 * kept (as the reclaimer does when it goes to sleep): for tp_sweep_all,
 * which gives back everything idle now. Returns the bytes unmapped. */
size_t tp__epoch_trim(void);

#endif /* TIDEPOOL_EPOCH_INTERNAL_H */
