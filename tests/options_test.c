/*
 * The TIDEPOOL_* environment options (docs/options.md), as a user sets
 * them: each case runs this binary again as a child with a given
 * environment (the options are read once, at start-up) and checks what the
 * child reports on stdout and what the library wrote on stderr:
 *  - every option takes effect (retire cap, per-CPU mode, checkmark,
 *    sweeper with its decay and interval, verbose, show-stats);
 *  - the old names (TP_RETIRE_CAP, TP_PERCPU, TP_GC_CHECKMARK) still work,
 *    and the TIDEPOOL_ name wins when both are set;
 *  - a bad value (not a number, out of range, trailing junk, overflow, an
 *    unknown word) gives exactly one line on stderr naming it, and the
 *    default stays in force.
 */
#include <tidepool/tidepool.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "tests/test_util.h"

static const char *self_path;

/* ---- the child: reports what the library runs with ---------------------- */


static int child(void) {
  tp_epoch_stats es;
  if (tp_epoch_read_stats(&es) != 0) return 2;
  tp_heap *h = tp_heap_create(NULL);
  tp_heap_stats hs;
  if (!h || tp_heap_read_stats(h, &hs) != 0) return 3;
  /* The sweeper's configuration, from the JSON report. */
  char *buf = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&buf, &len);
  if (!m || tp_stats_print(m, "json") != 0) return 4;
  fclose(m);
  unsigned decay = 0, interval = 0;
  const char *d = strstr(buf, "\"decay_ms\": "), *i = strstr(buf, "\"interval_ms\": ");
  if (d) decay = (unsigned)strtoul(d + 12, NULL, 10);
  if (i) interval = (unsigned)strtoul(i + 15, NULL, 10);
  free(buf);
  tp_pool_config pc = {.name = "options-child", .obj_size = 48};
  tp_pool *p = tp_pool_create(&pc);
  void *o = tp_pool_get(p);
  printf("cap=%llu percpu=%s checkmark=%u sweeper=%d decay=%u interval=%u\n",
         (unsigned long long)es.retire_cap, tp_percpu_mode(), hs.checkmark, tp_sweeper_running(),
         decay, interval);
  printf("child done\n");
  fflush(stdout);
  tp_pool_put(p, o);
  /* The pool stays: TIDEPOOL_SHOW_STATS must show it at exit. */
  tp_heap_destroy(h);
  return 0;
}

/* ---- the parent ----------------------------------------------------------------- */

struct run {
  char out[4096];
  char err[65536];
  int status;
};

/* Runs the child with `env` (NULL-terminated NAME=VALUE strings) added to
 * an environment without any TIDEPOOL_ or TP_ option. */
static void run_child(const char *const *env, struct run *r) {
  int po[2], pe[2];
  assert_int_equal(pipe(po), 0);
  assert_int_equal(pipe(pe), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(po[1], 1);
    dup2(pe[1], 2);
    close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
    static const char *const clear[] = {"TIDEPOOL_SHOW_STATS", "TIDEPOOL_VERBOSE",
                                        "TIDEPOOL_SWEEPER", "TIDEPOOL_SWEEPER_DECAY_MS",
                                        "TIDEPOOL_SWEEPER_INTERVAL_MS", "TIDEPOOL_RETIRE_CAP",
                                        "TIDEPOOL_PERCPU", "TIDEPOOL_GC_CHECKMARK",
                                        "TP_RETIRE_CAP", "TP_PERCPU", "TP_GC_CHECKMARK"};
    for (size_t i = 0; i < sizeof clear / sizeof clear[0]; i++) unsetenv(clear[i]);
    for (const char *const *e = env; *e; e++) putenv((char *)*e);
    execl(self_path, self_path, "child", (char *)NULL);
    _exit(127);
  }
  close(po[1]), close(pe[1]);
  /* The child writes little to stdout; read stderr, then stdout. A
   * TIDEPOOL_SHOW_STATS report fits the pipe and the buffer. */
  tt_read_all(pe[0], r->err, sizeof r->err);
  tt_read_all(po[0], r->out, sizeof r->out);
  close(po[0]), close(pe[0]);
  assert_int_equal(waitpid(pid, &r->status, 0), pid);
}

static int count_lines(const char *s) {
  int n = 0;
  for (; *s; s++) n += *s == '\n';
  return n;
}

/* Runs the child and checks its report line. */
static void expect(const char *const *env, const char *report, int err_lines, const char *err_has) {
  struct run r;
  run_child(env, &r);
  printf("env:");
  for (const char *const *e = env; *e; e++) printf(" %s", *e);
  printf("\n  stdout: %s  stderr: %s%s", r.out, r.err[0] ? "\n" : "(empty)\n", r.err);
  assert_true(WIFEXITED(r.status));
  assert_int_equal(WEXITSTATUS(r.status), 0);
  assert_non_null(strstr(r.out, report));
  if (err_lines >= 0) assert_int_equal(count_lines(r.err), err_lines);
  if (err_has) assert_non_null(strstr(r.err, err_has));
}

#define ENV(...) ((const char *const[]){__VA_ARGS__, NULL})
static const char *const no_env[] = {NULL};

static void test_defaults(void **state) {
  (void)state;
  expect(no_env, "cap=67108864 ", 0, NULL);
  expect(no_env, "checkmark=0 sweeper=0 ", 0, NULL);
}

static void test_retire_cap(void **state) {
  (void)state;
  expect(ENV("TIDEPOOL_RETIRE_CAP=16M"), "cap=16777216 ", 0, NULL);
  expect(ENV("TIDEPOOL_RETIRE_CAP=1048576"), "cap=1048576 ", 0, NULL);
  expect(ENV("TIDEPOOL_RETIRE_CAP=2g"), "cap=2147483648 ", 0, NULL);
  /* The old name, and the new one winning over it. */
  expect(ENV("TP_RETIRE_CAP=8M"), "cap=8388608 ", 0, NULL);
  expect(ENV("TP_RETIRE_CAP=8M", "TIDEPOOL_RETIRE_CAP=4M"), "cap=4194304 ", 0, NULL);
}

static void test_percpu_and_checkmark(void **state) {
  (void)state;
  expect(ENV("TIDEPOOL_PERCPU=cas"), "percpu=percpu-cas ", 0, NULL);
  expect(ENV("TP_PERCPU=cas"), "percpu=percpu-cas ", 0, NULL);
  expect(ENV("TIDEPOOL_GC_CHECKMARK=1"), "checkmark=1 ", 0, NULL);
  expect(ENV("TP_GC_CHECKMARK=1"), "checkmark=1 ", 0, NULL);
  expect(ENV("TP_GC_CHECKMARK=1", "TIDEPOOL_GC_CHECKMARK=0"), "checkmark=0 ", 0, NULL);
}

static void test_sweeper(void **state) {
  (void)state;
  expect(ENV("TIDEPOOL_SWEEPER=1"), "sweeper=1 decay=1000 interval=50", 0, NULL);
  expect(ENV("TIDEPOOL_SWEEPER=yes", "TIDEPOOL_SWEEPER_DECAY_MS=250",
             "TIDEPOOL_SWEEPER_INTERVAL_MS=20"),
         "sweeper=1 decay=250 interval=20", 0, NULL);
  expect(ENV("TIDEPOOL_SWEEPER=0", "TIDEPOOL_SWEEPER_DECAY_MS=250"), "sweeper=0 ", 0, NULL);
}

/* One line each, naming the variable and its value; defaults kept. */
static void test_bad_values(void **state) {
  (void)state;
  expect(ENV("TIDEPOOL_RETIRE_CAP=banana"), "cap=67108864 ", 1,
         "tidepool: ignoring TIDEPOOL_RETIRE_CAP=banana: expected ");
  expect(ENV("TIDEPOOL_RETIRE_CAP=-1"), "cap=67108864 ", 1, "TIDEPOOL_RETIRE_CAP=-1");
  expect(ENV("TIDEPOOL_RETIRE_CAP=16Mx"), "cap=67108864 ", 1, "TIDEPOOL_RETIRE_CAP=16Mx");
  expect(ENV("TIDEPOOL_RETIRE_CAP=1k"), "cap=67108864 ", 1, "TIDEPOOL_RETIRE_CAP=1k");
  expect(ENV("TIDEPOOL_RETIRE_CAP=99999999999999999999"), "cap=67108864 ", 1, "RETIRE_CAP");
  expect(ENV("TIDEPOOL_RETIRE_CAP=17179869184G"), "cap=67108864 ", 1, "RETIRE_CAP");
  expect(ENV("TIDEPOOL_RETIRE_CAP="), "cap=67108864 ", 1, "RETIRE_CAP=:");
  expect(ENV("TP_RETIRE_CAP=0x100000"), "cap=67108864 ", 1, "ignoring TP_RETIRE_CAP=0x100000");
  expect(ENV("TIDEPOOL_PERCPU=fast"), "percpu=", 1, "TIDEPOOL_PERCPU=fast: expected auto, rseq or cas");
  expect(ENV("TIDEPOOL_GC_CHECKMARK=2"), "checkmark=0 ", 1, "TIDEPOOL_GC_CHECKMARK=2");
  expect(ENV("TIDEPOOL_SWEEPER=maybe"), "sweeper=0 ", 1, "TIDEPOOL_SWEEPER=maybe");
  expect(ENV("TIDEPOOL_SWEEPER=1", "TIDEPOOL_SWEEPER_DECAY_MS=0"), "sweeper=1 decay=1000 ", 1,
         "TIDEPOOL_SWEEPER_DECAY_MS=0: expected milliseconds, 1..3600000");
  expect(ENV("TIDEPOOL_SWEEPER=1", "TIDEPOOL_SWEEPER_DECAY_MS=3600001"), "decay=1000 ", 1,
         "DECAY_MS=3600001");
  expect(ENV("TIDEPOOL_SWEEPER=1", "TIDEPOOL_SWEEPER_INTERVAL_MS=60001"), "interval=50", 1,
         "INTERVAL_MS=60001");
  expect(ENV("TIDEPOOL_SHOW_STATS=2"), "child done", 1, "TIDEPOOL_SHOW_STATS=2");
  expect(ENV("TIDEPOOL_VERBOSE=on!"), "child done", 1, "TIDEPOOL_VERBOSE=on!");
  /* Two bad values: two lines; the good one next to them still counts. */
  expect(ENV("TIDEPOOL_RETIRE_CAP=x", "TIDEPOOL_PERCPU=y", "TIDEPOOL_GC_CHECKMARK=1"),
         "checkmark=1 ", 2, NULL);
}

static void test_verbose(void **state) {
  (void)state;
  struct run r;
  run_child(ENV("TIDEPOOL_VERBOSE=1", "TP_RETIRE_CAP=8M"), &r);
  printf("%s", r.err);
  assert_true(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0);
  char mode[64];
  snprintf(mode, sizeof mode, "percpu %s, epoch %s", tp_percpu_mode(), tp_epoch_mode());
  assert_non_null(strstr(r.err, mode));
  assert_non_null(strstr(r.err, "TIDEPOOL_RETIRE_CAP"));
  assert_non_null(strstr(r.err, "8388608    set as TP_RETIRE_CAP"));
  assert_non_null(strstr(r.err, "TIDEPOOL_GC_CHECKMARK"));
  assert_non_null(strstr(r.err, "default"));
}

static void test_show_stats(void **state) {
  (void)state;
  struct run r;
  run_child(ENV("TIDEPOOL_SHOW_STATS=1"), &r);
  assert_true(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0);
  printf("%s", r.err);
  /* At exit: after the child's last line, with the pool it left. */
  assert_non_null(strstr(r.out, "child done"));
  assert_non_null(strstr(r.err, "statistics (pid"));
  const char *row = strstr(r.err, "\noptions-child ");
  assert_non_null(row);
  assert_non_null(strstr(r.err, "epoch: retired"));
  assert_non_null(strstr(r.err, "sweeper: not running"));
  run_child(ENV("TIDEPOOL_SHOW_STATS=json"), &r);
  assert_true(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0);
  assert_non_null(strstr(r.err, "{\"name\": \"options-child\""));
  /* Without the option: nothing at exit. */
  run_child(no_env, &r);
  assert_string_equal(r.err, "");
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "child") == 0) return child();
  static char path[4096];
  ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) {
    perror("options_test: readlink /proc/self/exe");
    return 1;
  }
  path[n] = 0;
  self_path = path;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),        cmocka_unit_test(test_retire_cap),
      cmocka_unit_test(test_percpu_and_checkmark), cmocka_unit_test(test_sweeper),
      cmocka_unit_test(test_bad_values),      cmocka_unit_test(test_verbose),
      cmocka_unit_test(test_show_stats),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
