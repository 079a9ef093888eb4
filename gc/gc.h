/*
 * <tidepool/gc.h> — the tracing collector (tp_heap) and the sweeper.
 */
#ifndef TIDEPOOL_GC_H
#define TIDEPOOL_GC_H

#include <tidepool/common.h>
#include <tidepool/sweeper.h>

#endif /* TIDEPOOL_GC_H */
