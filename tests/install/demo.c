/* A program built outside Bazel against an installed tidepool:
 *   cc demo.c $(pkg-config --cflags --libs tidepool) */
#include <tidepool/tidepool.h>

#include <stdio.h>
#include <string.h>

struct conn {
  int fd;
  char buf[120];
};

static struct conn *current;

int main(void) {
  tp_pool_config cfg = {.name = "conn", .obj_size = sizeof(struct conn)};
  tp_pool *p = tp_pool_create(&cfg);
  if (!p) return 1;
  struct conn *v[1000];
  for (int i = 0; i < 1000; i++) {
    v[i] = tp_pool_get(p);
    if (!v[i]) return 2;
    v[i]->fd = i;
    memset(v[i]->buf, 'x', sizeof v[i]->buf);
  }
  for (int i = 0; i < 1000; i++) tp_pool_put(p, v[i]);

  /* Epoch-protected publish/read/retire. */
  struct conn *c = tp_pool_get(p);
  c->fd = 42;
  tp_publish(current, c);
  tp_epoch_enter();
  int fd = tp_deref(current)->fd;
  tp_epoch_leave();
  tp_publish(current, NULL);
  if (tp_pool_retire(p, c) != 0 || tp_epoch_barrier() != 0) return 3;

  tp_arena *a = tp_arena_create(NULL);
  char *s = tp_arena_strdup(a, "hello");
  tp_arena_destroy(a);

  tp_pool_stats st;
  tp_pool_read_stats(p, &st);
  printf("tidepool %s: percpu %s, epoch %s, fd %d, %s, in_use %llu, gets %llu\n", tp_version(),
         tp_percpu_mode(), tp_epoch_mode(), fd, s ? "arena ok" : "arena failed",
         (unsigned long long)st.in_use, (unsigned long long)st.gets);
  tp_pool_destroy(p);
  return (fd == 42 && st.in_use == 0 && st.gets == 1001) ? 0 : 4;
}
