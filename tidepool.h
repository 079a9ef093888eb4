/*
 * <tidepool/tidepool.h> — the whole library: pools, arenas, epochs, the
 * sweeper and the tracing collector.
 */
#ifndef TIDEPOOL_TIDEPOOL_H
#define TIDEPOOL_TIDEPOOL_H

#include <tidepool/common.h>
#include <tidepool/percpu.h>
#include <tidepool/pool.h>
#include <tidepool/epoch.h>
#include <tidepool/arena.h>
#include <tidepool/gc.h>
#include <tidepool/stats.h>

#endif /* TIDEPOOL_TIDEPOOL_H */
