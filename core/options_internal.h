/*
 * Internal: the TIDEPOOL_* environment options, read once per process.
 *
 * The table of options is in core/options.c and, for users, in
 * docs/options.md. Every option is parsed and range-checked the first time
 * tp__options() is called (from the start-up constructor in
 * gc/startup.c, so before main in practice); a bad value is reported with
 * one line on stderr and ignored (the default stays in force). The older
 * names TP_RETIRE_CAP, TP_PERCPU and TP_GC_CHECKMARK are read too, when
 * the TIDEPOOL_ name is not set.
 */
#ifndef TIDEPOOL_OPTIONS_INTERNAL_H
#define TIDEPOOL_OPTIONS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum tp__percpu_choice {
  TP__PERCPU_AUTO = 0, /* rseq when the kernel and glibc have it */
  TP__PERCPU_CAS = 1,  /* force the percpu-cas fallback */
};

enum tp__show_stats {
  TP__SHOW_STATS_OFF = 0,
  TP__SHOW_STATS_TABLE = 1,
  TP__SHOW_STATS_JSON = 2,
};

struct tp__options {
  int show_stats;             /* enum tp__show_stats */
  bool verbose;
  bool sweeper;               /* start the sweeper at start-up */
  unsigned sweeper_decay_ms;  /* 0 = the sweeper's default */
  unsigned sweeper_interval_ms; /* 0 = the sweeper's default */
  size_t retire_cap;          /* 0 = the epoch default (64 MiB) */
  int percpu;                 /* enum tp__percpu_choice */
  bool gc_checkmark;
  bool gc_nobarrier;          /* debug: the SATB barrier logs nothing */
};

/* The options in force (parsed on the first call; later calls return the
 * same values). Safe to call concurrently. */
const struct tp__options *tp__options(void);

/* Writes one line per option: its name, value in force and where the value
 * came from (environment, old name or default). For TIDEPOOL_VERBOSE. */
void tp__options_describe(FILE *out);

#endif /* TIDEPOOL_OPTIONS_INTERNAL_H */
