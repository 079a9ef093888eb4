# bench/server/testlib.sh — shell helpers for the loadgen tests: free
# loopback ports, servers started and stopped by PID, bounded waits.
# Sourced; expects $LOADGEN (the loadgen binary) and $TMP (a scratch dir).

SERVER_PID=
fail() { echo "FAIL: $*" >&2; exit 1; }

# A port nobody listens on now (another process may take it before we do:
# start_server retries).
free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ready PORT PID: up to 10 s for the server to answer flush_all.
wait_ready() {
  local i
  for i in $(seq 100); do
    kill -0 "$2" 2>/dev/null || return 1
    "$LOADGEN" -s "127.0.0.1:$1" -o flush -t 1 >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# start_server KIND BINARY: starts memcached or tpcache (memcached's flags)
# on a free loopback port; sets PORT and SERVER_PID. Up to 5 tries.
start_server() {
  local kind=$1 bin=$2 try extra=()
  [[ $kind == memcached && $(id -u) == 0 ]] && extra=(-u root)
  for try in 1 2 3 4 5; do
    PORT=$(free_port)
    "$bin" "${extra[@]}" -U 0 -p "$PORT" -l 127.0.0.1 -t 1 -m 64 -c 1024 >"$TMP/$kind.log" 2>&1 &
    SERVER_PID=$!
    if wait_ready "$PORT" "$SERVER_PID"; then
      return 0
    fi
    kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null
  done
  cat "$TMP/$kind.log" >&2
  fail "$kind did not start"
}

stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  local i
  for i in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# field NAME FILE: the value of NAME=... on the file's `result` line.
field() {
  sed -n 's/^result .*[ ]'"$1"'=\([^ ]*\).*/\1/p' "$2" | head -1
}
