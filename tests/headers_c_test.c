/* The public headers compile as strict C11 (-pedantic) with every warning. */
#include <tidepool/tidepool.h>

#include <stdio.h>

int main(void) {
  tp_pool_config cfg = {.name = "c", .obj_size = 24};
  tp_pool *p = tp_pool_create(&cfg);
  void *o = tp_pool_get(p);
  tp_pool_put(p, o);
  tp_pool_destroy(p);
  printf("C11: %s\n", tp_version());
  return o ? 0 : 1;
}
