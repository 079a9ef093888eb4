/*
 * Run under valgrind by memcheck_test.sh. With no argument, correct use:
 * memcheck must report nothing. With "use-after-put", writes to an object
 * after putting it back: memcheck must report an invalid write, because
 * the pool describes its objects to memcheck with mempool client requests.
 * With "uninit", reads a fresh object before writing it: memcheck must
 * report a use of uninitialised memory.
 */
#include <tidepool/pool.h>

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "clean";
  tp_pool_config cfg = {.name = "vg", .obj_size = 48};
  tp_pool *p = tp_pool_create(&cfg);
  if (!p) return 1;
  char *v[300];
  for (int i = 0; i < 300; i++) {
    v[i] = tp_pool_get(p);
    if (!v[i]) return 2;
  }
  int sum = 0;
  if (strcmp(mode, "uninit") == 0 && v[7][3] == 42) sum++; /* never written */
  for (int i = 0; i < 300; i++) memset(v[i], i, 48);
  for (int i = 0; i < 300; i++) sum += v[i][47];
  for (int i = 0; i < 300; i++) tp_pool_put(p, v[i]);
  if (strcmp(mode, "use-after-put") == 0) v[5][10] = 1; /* after the put */
  void *bulk[64];
  size_t n = tp_pool_get_bulk(p, bulk, 64);
  for (size_t i = 0; i < n; i++) memset(bulk[i], 0, 48);
  tp_pool_put_bulk(p, bulk, n);
  printf("mode %s (%s): sum %d\n", mode, tp_percpu_mode(), sum);
  tp_pool_destroy(p);
  return 0;
}
