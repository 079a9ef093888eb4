/*
 * Issue 14, fault 8: a get must not fail with ENOMEM while free objects sit
 * in another CPU's cache. The drain of the other caches used to run only
 * when the pool had max_bytes; here the limit is the OS's (RLIMIT_AS in a
 * forked child), the pool has none.
 *
 * On CPU A: take every object the pool can get (until ENOMEM under the
 * cap), put one back (it stays in A's cache). On CPU B: a get finds its
 * cache and the depot empty and the slabs full, no new slab can be mapped,
 * so only the object in A's cache can serve it.
 *
 * nosan: sanitizer shadow memory does not fit under an address-space cap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <sched.h>
#include <tidepool/tidepool.h>

#include "tests/issue14_util.h"

static int pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof set, &set);
}

static int cross_cpu_child(void *arg) {
  int *cpus = arg;
  T14_CHECK(pin(cpus[0]) == 0);
  /* 256 KiB objects: 4 MiB slabs (8 MiB mapped while aligning), so a 2 MiB
   * margin refuses every new slab but leaves malloc room. */
  tp_pool *p = tp_pool_create(&(tp_pool_config){.name = "x", .obj_size = 256 << 10});
  T14_CHECK(p != NULL);
  void *warm = tp_pool_get(p); /* magazines and caches exist */
  T14_CHECK(warm != NULL);
  T14_CHECK(t14_cap_as((size_t)2 << 20) == 0);
  static void *objs[4096];
  size_t n = 0;
  objs[n++] = warm;
  for (;;) {
    T14_CHECK(n < 4096);
    errno = 0;
    void *o = tp_pool_get(p);
    if (!o) {
      T14_CHECK(errno == ENOMEM);
      break;
    }
    objs[n++] = o;
  }
  tp_pool_put(p, objs[--n]); /* into CPU A's cache */
  T14_CHECK(pin(cpus[1]) == 0);
  T14_CHECK(sched_getcpu() == cpus[1]);
  void *o = tp_pool_get(p);
  if (!o) fprintf(stderr, "get on CPU %d failed (errno %d) with one object free on CPU %d\n",
                  cpus[1], errno, cpus[0]);
  T14_CHECK(o != NULL);
  return 0;
}

static void test_get_drains_other_cpus_before_enomem(void **state) {
  (void)state;
  cpu_set_t set;
  CPU_ZERO(&set);
  assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
  int cpus[2], k = 0;
  for (int c = 0; c < CPU_SETSIZE && k < 2; c++)
    if (CPU_ISSET(c, &set)) cpus[k++] = c;
  if (k < 2) {
    printf("one CPU available: the case needs two; skipped\n");
    skip();
  }
  assert_int_equal(t14_run_child(cross_cpu_child, cpus, TT_HANG_MS), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_get_drains_other_cpus_before_enomem),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
