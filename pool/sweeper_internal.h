/*
 * Internal: the sweeper's state, for tp_stats_print.
 */
#ifndef TIDEPOOL_SWEEPER_INTERNAL_H
#define TIDEPOOL_SWEEPER_INTERNAL_H

#include <tidepool/sweeper.h>

/* Fills *cfg with the configuration in force (normalized: no zeros, no
 * SIZE_MAX) and returns 1 if the sweeper thread runs, else 0. Waits at most
 * for a tp_sweeper_start/stop in progress. Safe to call concurrently. */
int tp__sweeper_read_config(tp_sweeper_config *cfg);

#endif /* TIDEPOOL_SWEEPER_INTERNAL_H */
