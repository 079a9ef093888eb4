// The public headers compile as C++ (-std=c++17 -pedantic) and the inline
// fast paths work from C++ code.
#include <tidepool/tidepool.h>

#include <cstdio>

int main() {
  tp_pool_config cfg = {};
  cfg.name = "cxx";
  cfg.obj_size = 40;
  tp_pool* p = tp_pool_create(&cfg);
  if (!p) return 1;
  void* o = tp_pool_get(p);
  if (!o) return 2;
  tp_pool_put(p, o);
  tp_arena* a = tp_arena_create(nullptr);
  if (!a || !tp_arena_alloc(a, 24)) return 3;
  tp_arena_destroy(a);
  tp_epoch_enter();
  tp_epoch_leave();
  tp_pool_destroy(p);
  std::printf("C++: %s, %s\n", tp_percpu_mode(), tp_epoch_mode());
  return 0;
}
