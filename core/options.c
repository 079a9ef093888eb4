/*
 * The TIDEPOOL_* environment options (see core/options_internal.h and
 * docs/options.md): one table, parsed once, each value range-checked.
 *
 * Parsing never guesses: a value must match its kind completely (a boolean
 * word, a decimal integer with an optional binary suffix, or one of a few
 * words) and lie in the option's range, or it is reported on stderr in one
 * line and the default stays in force.
 */
#include "core/options_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum kind {
  K_BOOL,       /* 0/1, false/true, no/yes, off/on */
  K_SHOW_STATS, /* a boolean, or "json" */
  K_MS,         /* decimal milliseconds */
  K_SIZE,       /* decimal bytes, optional k/M/G suffix (binary) */
  K_PERCPU,     /* auto/rseq or cas */
};

struct spec {
  const char *name;     /* TIDEPOOL_... */
  const char *old_name; /* the name before 0.1 (still read), or NULL */
  enum kind kind;
  uint64_t min, max;    /* K_MS, K_SIZE */
  size_t offset;        /* field of struct tp__options */
  const char *expect;   /* what a valid value looks like (error message) */
};

#define FIELD(f) offsetof(struct tp__options, f)

static const struct spec specs[] = {
    {"TIDEPOOL_SHOW_STATS", NULL, K_SHOW_STATS, 0, 0, FIELD(show_stats), "0, 1 or json"},
    {"TIDEPOOL_VERBOSE", NULL, K_BOOL, 0, 0, FIELD(verbose), "0 or 1"},
    {"TIDEPOOL_SWEEPER", NULL, K_BOOL, 0, 0, FIELD(sweeper), "0 or 1"},
    {"TIDEPOOL_SWEEPER_DECAY_MS", NULL, K_MS, 1, 3600000, FIELD(sweeper_decay_ms),
     "milliseconds, 1..3600000"},
    {"TIDEPOOL_SWEEPER_INTERVAL_MS", NULL, K_MS, 1, 60000, FIELD(sweeper_interval_ms),
     "milliseconds, 1..60000"},
    {"TIDEPOOL_RETIRE_CAP", "TP_RETIRE_CAP", K_SIZE, (uint64_t)64 << 10, (uint64_t)1 << 40,
     FIELD(retire_cap), "bytes with an optional k, M or G suffix, 64k..1024G"},
    {"TIDEPOOL_PERCPU", "TP_PERCPU", K_PERCPU, 0, 0, FIELD(percpu), "auto, rseq or cas"},
    {"TIDEPOOL_GC_CHECKMARK", "TP_GC_CHECKMARK", K_BOOL, 0, 0, FIELD(gc_checkmark), "0 or 1"},
    {"TIDEPOOL_GC_NOBARRIER", NULL, K_BOOL, 0, 0, FIELD(gc_nobarrier), "0 or 1"},
};
#define NSPECS (sizeof specs / sizeof specs[0])

static struct tp__options opts;
/* Per option: where its value came from (0 default, 1 name, 2 old name). */
static unsigned char source[NSPECS];
static pthread_once_t opts_once = PTHREAD_ONCE_INIT;

static int parse_bool(const char *v) {
  static const char *const no[] = {"0", "false", "no", "off"};
  static const char *const yes[] = {"1", "true", "yes", "on"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(v, no[i]) == 0) return 0;
    if (strcasecmp(v, yes[i]) == 0) return 1;
  }
  return -1;
}

/* Decimal digits only (no sign, no spaces, no hex): strtoull alone would
 * accept " -1" as a huge number. */
static int parse_u64(const char *v, uint64_t *out, const char **rest) {
  if (*v < '0' || *v > '9') return -1;
  uint64_t n = 0;
  for (; *v >= '0' && *v <= '9'; v++) {
    unsigned d = (unsigned)(*v - '0');
    if (n > (UINT64_MAX - d) / 10) return -1;
    n = n * 10 + d;
  }
  *out = n;
  *rest = v;
  return 0;
}

/* 0 and the value in *out, or -1 for a value that is not valid. */
static int parse(const struct spec *s, const char *v, uint64_t *out) {
  const char *rest;
  uint64_t n;
  int b;
  switch (s->kind) {
    case K_BOOL:
      if ((b = parse_bool(v)) < 0) return -1;
      *out = (uint64_t)b;
      return 0;
    case K_SHOW_STATS:
      if (strcasecmp(v, "json") == 0) {
        *out = TP__SHOW_STATS_JSON;
        return 0;
      }
      if ((b = parse_bool(v)) < 0) return -1;
      *out = b ? TP__SHOW_STATS_TABLE : TP__SHOW_STATS_OFF;
      return 0;
    case K_MS:
      if (parse_u64(v, &n, &rest) || *rest || n < s->min || n > s->max) return -1;
      *out = n;
      return 0;
    case K_SIZE: {
      if (parse_u64(v, &n, &rest)) return -1;
      unsigned shift = 0;
      if (*rest == 'k' || *rest == 'K') shift = 10, rest++;
      else if (*rest == 'm' || *rest == 'M') shift = 20, rest++;
      else if (*rest == 'g' || *rest == 'G') shift = 30, rest++;
      if (*rest || n > (UINT64_MAX >> shift)) return -1;
      n <<= shift;
      if (n < s->min || n > s->max) return -1;
      *out = n;
      return 0;
    }
    case K_PERCPU:
      if (strcmp(v, "auto") == 0 || strcmp(v, "rseq") == 0) *out = TP__PERCPU_AUTO;
      else if (strcmp(v, "cas") == 0) *out = TP__PERCPU_CAS;
      else return -1;
      return 0;
  }
  return -1;
}

static void store(const struct spec *s, uint64_t v) {
  char *f = (char *)&opts + s->offset;
  switch (s->kind) {
    case K_BOOL: *(bool *)f = v != 0; break;
    case K_SHOW_STATS:
    case K_PERCPU: *(int *)f = (int)v; break;
    case K_MS: *(unsigned *)f = (unsigned)v; break;
    case K_SIZE: *(size_t *)f = (size_t)v; break;
  }
}

static void options_init(void) {
  for (size_t i = 0; i < NSPECS; i++) {
    const struct spec *s = &specs[i];
    const char *name = s->name, *v = getenv(name);
    unsigned char from = 1;
    if (!v && s->old_name && (v = getenv(s->old_name))) name = s->old_name, from = 2;
    if (!v) continue;
    uint64_t x;
    if (parse(s, v, &x) != 0) {
      fprintf(stderr, "tidepool: ignoring %s=%s: expected %s\n", name, v, s->expect);
      continue;
    }
    store(s, x);
    source[i] = from;
  }
}

const struct tp__options *tp__options(void) {
  pthread_once(&opts_once, options_init);
  return &opts;
}

void tp__options_describe(FILE *out) {
  tp__options();
  for (size_t i = 0; i < NSPECS; i++) {
    const struct spec *s = &specs[i];
    const char *f = (const char *)&opts + s->offset;
    char val[32];
    switch (s->kind) {
      case K_BOOL: snprintf(val, sizeof val, "%d", *(const bool *)f); break;
      case K_SHOW_STATS: {
        int v = *(const int *)f;
        snprintf(val, sizeof val, "%s", v == TP__SHOW_STATS_JSON ? "json" : v ? "1" : "0");
        break;
      }
      case K_PERCPU:
        snprintf(val, sizeof val, "%s", *(const int *)f == TP__PERCPU_CAS ? "cas" : "auto");
        break;
      case K_MS:
        if (*(const unsigned *)f) snprintf(val, sizeof val, "%u", *(const unsigned *)f);
        else snprintf(val, sizeof val, "-");
        break;
      case K_SIZE:
        if (*(const size_t *)f) snprintf(val, sizeof val, "%zu", *(const size_t *)f);
        else snprintf(val, sizeof val, "-");
        break;
    }
    fprintf(out, "tidepool:   %-28s %-10s %s%s\n", s->name, val,
            source[i] == 1 ? "set" : source[i] == 2 ? "set as " : "default",
            source[i] == 2 ? s->old_name : "");
  }
}
