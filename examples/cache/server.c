/*
 * server.c — the event loop (see server.h).
 *
 * Each worker owns an epoll instance and the connections it accepted; all
 * workers wait on the one listening socket with EPOLLEXCLUSIVE, so a new
 * connection wakes one of them, which accepts it and keeps it for life: a
 * connection is only ever touched by one thread. Sockets are non-blocking;
 * a connection is level-triggered for input while it has no unsent output,
 * and for output only while it has (then its input waits: that bounds what
 * one client can make the server buffer to its read buffer plus OUT_HIGH of
 * responses). Requests are parsed and answered in the order they arrive;
 * per ready connection one recv of up to a read buffer, the answers to all
 * of it in one send (sendmsg when they span several blocks), and no second
 * recv when the first drained the socket: two system calls per request, as
 * memcached.
 *
 * Nothing blocks a worker: the store's locks are per stripe and held for a
 * few hundred instructions; expired and flushed items are unlinked by the
 * maintenance thread, not by the worker that notices them.
 */
#define _GNU_SOURCE
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "store.h"

#define MAX_EVENTS 64
#define READS_PER_EVENT 16

typedef struct worker {
  pthread_t thread;
  int epfd;
  thread_stats stats;
  conn *conns; /* every connection of this worker (for the stop) */
} worker;

static struct {
  int listen_fd, stop_fd;
  worker *workers;
  int nworkers;
  tp_pool *conn_pool;
  pthread_t maint;
  pthread_mutex_t maint_lock;
  pthread_cond_t maint_cond;
  int maint_wake, stopping;
  int port;
} G;

int server_port(void) { return G.port; }

/* epoll data for the two shared descriptors (connections use their conn). */
static char listen_tag, stop_tag;

static void want(worker *w, conn *c, uint32_t ev) {
  if (c->events == ev) return;
  struct epoll_event e = {.events = ev, .data.ptr = c};
  epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &e);
  c->events = ev;
}

static void conn_close(worker *w, conn *c) {
  epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  proto_conn_release(c);
  for (conn **p = &w->conns; *p; p = &(*p)->next)
    if (*p == c) {
      *p = c->next;
      break;
    }
  tp_pool_put(G.conn_pool, c);
  __atomic_fetch_sub(&g_server.curr_conns, 1, __ATOMIC_RELAXED);
}

/* Writes what is pending: 0 (all written or the socket is full), -1 on an
 * error. */
static int conn_flush(conn *c) {
  while (c->out_pending > 0) {
    size_t n = c->iovcnt - c->iov_done;
    ssize_t r;
    if (n == 1) { /* the usual batch: one text block; send skips the msghdr copy */
      r = send(c->fd, c->iov[c->iov_done].iov_base, c->iov[c->iov_done].iov_len,
               MSG_NOSIGNAL);
    } else {
      struct msghdr m = {0};
      m.msg_iov = c->iov + c->iov_done;
      m.msg_iovlen = n > IOV_MAX ? IOV_MAX : n;
      r = sendmsg(c->fd, &m, MSG_NOSIGNAL);
    }
    if (r > 0) {
      proto_output_written(c, (size_t)r);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      TS_INC(c->ts, conn_yields);
      return 0;
    }
    return -1;
  }
  return 0;
}

/* Runs a ready connection: writes what is pending, answers every complete
 * request in the read buffer, reads more. A read that returns less than
 * the room it was given has drained the socket: once its requests are
 * answered the connection goes back to epoll (level-triggered, so bytes
 * that arrive meanwhile report it again) instead of paying a read that
 * would fail with EAGAIN, like memcached's one read per event. */
static void conn_run(worker *w, conn *c) {
  int reads = 0;
  bool drained = false;
  for (;;) {
    if (c->out_pending) {
      if (conn_flush(c) < 0) goto close;
      if (c->out_pending) {
        want(w, c, EPOLLOUT);
        return;
      }
    }
    if (c->close_now || c->close_after) goto close;
    if (c->rbuf && c->rpos < c->rlen) {
      uint32_t before = c->rpos;
      proto_process(c);
      if (c->close_now) goto close;
      if (c->out_pending || c->close_after) continue;
      if (c->rpos != before) continue;
    }
    if (drained || reads++ >= READS_PER_EVENT) break; /* fairness; level-triggered */
    size_t room;
    char *p = proto_read_space(c, &room);
    if (!p || room == 0) goto close;
    ssize_t n = recv(c->fd, p, room, 0); /* recv: no file-position lock, unlike read */
    if (n > 0) {
      c->rlen += (uint32_t)n;
      drained = (size_t)n < room;
      TS_ADD(c->ts, bytes_read, (uint64_t)n);
      proto_process(c);
      if (c->close_now) goto close;
      continue;
    }
    if (n == 0) goto close;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    goto close;
  }
  want(w, c, EPOLLIN);
  proto_conn_idle(c);
  return;
close:
  conn_close(w, c);
}

static void do_accept(worker *w) {
  for (int i = 0; i < 64; i++) {
    int fd = accept4(G.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return; /* EAGAIN: another worker took it; EMFILE etc. */
    __atomic_fetch_add(&g_server.total_conns, 1, __ATOMIC_RELAXED);
    if (__atomic_load_n(&g_server.curr_conns, __ATOMIC_RELAXED) >= g_server.maxconns) {
      /* memcached's answer, then close. */
      static const char msg[] = "ERROR Too many open connections\r\n";
      ssize_t r = send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL);
      (void)r;
      close(fd);
      __atomic_fetch_add(&g_server.rejected_conns, 1, __ATOMIC_RELAXED);
      continue;
    }
    conn *c = tp_pool_get(G.conn_pool);
    if (!c || proto_conn_init(c, fd, &w->stats) != 0) {
      if (c) tp_pool_put(G.conn_pool, c);
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->owner = w;
    c->events = EPOLLIN;
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &e) != 0) {
      proto_conn_release(c);
      tp_pool_put(G.conn_pool, c);
      close(fd);
      continue;
    }
    c->next = w->conns;
    w->conns = c;
    __atomic_fetch_add(&g_server.curr_conns, 1, __ATOMIC_RELAXED);
  }
}

static void *worker_main(void *arg) {
  worker *w = arg;
  struct epoll_event ev[MAX_EVENTS];
  tp_epoch_register_thread();
  for (;;) {
    int n = epoll_wait(w->epfd, ev, MAX_EVENTS, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < n; i++) {
      void *tag = ev[i].data.ptr;
      if (tag == &stop_tag) goto out;
      if (tag == &listen_tag) {
        do_accept(w);
        continue;
      }
      conn *c = tag;
      if ((ev[i].events & (EPOLLERR | EPOLLHUP)) && !(ev[i].events & (EPOLLIN | EPOLLOUT))) {
        conn_close(w, c);
        continue;
      }
      conn_run(w, c);
    }
  }
out:
  while (w->conns) conn_close(w, w->conns);
  return NULL;
}

/* ---- maintenance: expired and flushed items leave the index ---- */

void server_wake_maintenance(void) {
  if (!G.workers) return; /* not running (the fuzz target) */
  pthread_mutex_lock(&G.maint_lock);
  G.maint_wake = 1;
  pthread_cond_signal(&G.maint_cond);
  pthread_mutex_unlock(&G.maint_lock);
}

static void *maint_main(void *arg) {
  (void)arg;
  uint64_t done_gen = 0;
  pthread_mutex_lock(&G.maint_lock);
  while (!G.stopping) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    if (!G.maint_wake) pthread_cond_timedwait(&G.maint_cond, &G.maint_lock, &ts);
    G.maint_wake = 0;
    if (G.stopping) break;
    pthread_mutex_unlock(&G.maint_lock);
    uint64_t gen;
    rel_time_t ol = store_oldest_live(&gen);
    if (gen != done_gen && ol <= store_now()) {
      store_crawl(true); /* a flush_all took effect: unlink everything */
      done_gen = gen;
    } else {
      store_crawl(false);
    }
    pthread_mutex_lock(&G.maint_lock);
  }
  pthread_mutex_unlock(&G.maint_lock);
  return NULL;
}

/* ---- start and stop ---- */

static int listen_on(const char *addr, int port) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *res;
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  int rc = getaddrinfo(addr, ps, &hints, &res);
  if (rc != 0) {
    fprintf(stderr, "tpcache: cannot resolve %s: %s\n", addr ? addr : "*", gai_strerror(rc));
    return -EINVAL;
  }
  int fd = -1, err = 0;
  /* With no -l, prefer IPv4 any (memcached listens on every family; one is
   * enough for the clients here). */
  for (struct addrinfo *a = res; a; a = a->ai_next) {
    if (!addr && a->ai_family != AF_INET && a->ai_next) continue;
    fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      err = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 1024) == 0) break;
    err = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    fprintf(stderr, "tpcache: failed to listen on %s:%d: %s\n", addr ? addr : "*", port,
            strerror(err));
    return -err;
  }
  return fd;
}

int server_start(const server_config *cfg) {
  memset(&G, 0, sizeof G);
  pthread_mutex_init(&G.maint_lock, NULL);
  pthread_cond_init(&G.maint_cond, NULL);
  tp_pool_config pc = {.name = "conn", .obj_size = sizeof(conn)};
  if (!(G.conn_pool = tp_pool_create(&pc))) return -errno;
  int fd = listen_on(cfg->addr, cfg->port);
  if (fd < 0) return fd;
  G.listen_fd = fd;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
    G.port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port);
  G.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  G.nworkers = cfg->threads;
  G.workers = calloc((size_t)cfg->threads, sizeof(worker));
  if (G.stop_fd < 0 || !G.workers) return -ENOMEM;
  /* Worker threads inherit this mask: signals go to the main thread. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  for (int i = 0; i < cfg->threads; i++) {
    worker *w = &G.workers[i];
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event le = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &listen_tag};
    struct epoll_event se = {.events = EPOLLIN, .data.ptr = &stop_tag};
    if (w->epfd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &le) != 0 ||
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, G.stop_fd, &se) != 0)
      return -errno;
    g_server.thread_stats[i] = &w->stats;
  }
  __atomic_store_n(&g_server.nthreads_registered, (unsigned)cfg->threads, __ATOMIC_RELEASE);
  for (int i = 0; i < cfg->threads; i++)
    if (pthread_create(&G.workers[i].thread, NULL, worker_main, &G.workers[i]) != 0)
      return -EAGAIN;
  if (pthread_create(&G.maint, NULL, maint_main, NULL) != 0) return -EAGAIN;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return 0;
}

void server_stop(void) {
  uint64_t one = 1;
  ssize_t r = write(G.stop_fd, &one, sizeof one); /* level: wakes every worker */
  (void)r;
  for (int i = 0; i < G.nworkers; i++) pthread_join(G.workers[i].thread, NULL);
  pthread_mutex_lock(&G.maint_lock);
  G.stopping = 1;
  pthread_cond_signal(&G.maint_cond);
  pthread_mutex_unlock(&G.maint_lock);
  pthread_join(G.maint, NULL);
  for (int i = 0; i < G.nworkers; i++) close(G.workers[i].epfd);
  close(G.listen_fd);
  close(G.stop_fd);
  __atomic_store_n(&g_server.nthreads_registered, 0, __ATOMIC_RELEASE);
  free(G.workers);
  G.workers = NULL;
  tp_pool_destroy(G.conn_pool);
}
