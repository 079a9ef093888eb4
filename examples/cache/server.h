/*
 * server.h — tpcache's event loop: one epoll thread per -t, a shared
 * listening socket, connections from a tidepool pool, a maintenance thread
 * (expired and flushed items), and a clean stop.
 */
#ifndef TPCACHE_SERVER_H
#define TPCACHE_SERVER_H

typedef struct server_config {
  const char *addr; /* NULL = all interfaces, as memcached */
  int port;
  int threads;
  unsigned maxconns;
  int verbose;
} server_config;

/* Binds and listens (the port is in use when this returns 0), starts the
 * workers and the maintenance thread. 0 or -errno (with a message on
 * stderr). */
int server_start(const server_config *cfg);
/* The port listened on (what port 0 became). */
int server_port(void);
/* Stops accepting, closes every connection, joins the threads. */
void server_stop(void);
/* Wakes the maintenance thread (flush_all). */
void server_wake_maintenance(void);

#endif /* TPCACHE_SERVER_H */
