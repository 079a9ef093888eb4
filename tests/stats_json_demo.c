/* For stats_json_test.sh: does some of everything (a named pool with 5
 * objects out, an arena, a heap with one collection, retires), then writes
 * tp_stats_print(stdout, "json"), or with "table" the table. Pool names
 * with quotes, backslashes and non-ASCII bytes test the JSON escaping. */
#include <tidepool/tidepool.h>

#include <stdio.h>
#include <string.h>

static const tp_type leaf = {"leaf", 48, NULL, NULL, 0, NULL, TP_TYPE_LEAF};

int main(int argc, char **argv) {
  tp_pool_config pc = {.name = "json-demo", .obj_size = 96};
  tp_pool *p = tp_pool_create(&pc);
  tp_pool_config odd = {.name = "quote\" back\\ tab\t \xc3\xa9", .obj_size = 8};
  tp_pool *q = tp_pool_create(&odd);
  if (!p || !q) return 1;
  void *o[5];
  for (int i = 0; i < 5; i++) o[i] = tp_pool_get(p);
  for (int i = 0; i < 3; i++) tp_pool_retire(p, tp_pool_get(p));
  tp_epoch_barrier();
  tp_arena *a = tp_arena_create(NULL);
  tp_arena_alloc(a, 1000);
  tp_heap *h = tp_heap_create(NULL);
  for (int i = 0; i < 1000; i++) tp_heap_alloc(h, &leaf);
  tp_heap_collect(h);
  int rc = tp_stats_print(stdout, argc > 1 && strcmp(argv[1], "table") == 0 ? NULL : "json");
  for (int i = 0; i < 5; i++) tp_pool_put(p, o[i]);
  tp_heap_destroy(h);
  tp_arena_destroy(a);
  return rc == 0 ? 0 : 2;
}
