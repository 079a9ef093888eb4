/*
 * Start-up: what the TIDEPOOL_* environment options ask for before main
 * (docs/options.md). A constructor reads the options once
 * (core/options.c reports bad values) and then:
 *   TIDEPOOL_VERBOSE=1      prints the per-CPU and epoch modes and every
 *                           option in force to stderr;
 *   TIDEPOOL_SWEEPER=1      starts the sweeper (with
 *                           TIDEPOOL_SWEEPER_DECAY_MS / _INTERVAL_MS);
 *   TIDEPOOL_SHOW_STATS=1   registers an atexit handler that prints
 *                           tp_stats_print's table (or "json") to stderr.
 * With none of them set it only reads the environment: no thread, no
 * mapping. It sits at the top of the library because it starts the
 * sweeper and prints every layer's statistics.
 */
#include <tidepool/epoch.h>
#include <tidepool/percpu.h>
#include <tidepool/stats.h>
#include <tidepool/sweeper.h>

#include "core/options_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void show_stats_at_exit(void) {
  tp_stats_print(stderr, tp__options()->show_stats == TP__SHOW_STATS_JSON ? "json" : NULL);
}

__attribute__((constructor)) static void tp__startup(void) {
  const struct tp__options *o = tp__options();
  if (o->sweeper) {
    tp_sweeper_config c = TP_SWEEPER_CONFIG_DEFAULT;
    if (o->sweeper_decay_ms) c.decay_ms = o->sweeper_decay_ms;
    if (o->sweeper_interval_ms) c.interval_ms = o->sweeper_interval_ms;
    int rc = tp_sweeper_start(&c);
    if (rc) fprintf(stderr, "tidepool: TIDEPOOL_SWEEPER=1: the sweeper did not start: %s\n", strerror(-rc));
  }
  if (o->show_stats && atexit(show_stats_at_exit) != 0)
    fprintf(stderr, "tidepool: TIDEPOOL_SHOW_STATS: atexit failed; no statistics at exit\n");
  if (o->verbose) {
    fprintf(stderr, "tidepool %s: percpu %s, epoch %s, sweeper %s; options:\n", tp_version(),
            tp_percpu_mode(), tp_epoch_mode(), tp_sweeper_running() ? "running" : "off");
    tp__options_describe(stderr);
  }
}
