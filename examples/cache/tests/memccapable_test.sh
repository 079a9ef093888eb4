#!/usr/bin/env bash
# memccapable_test.sh TPCACHE — libmemcached's conformance tester
# (`memccapable -a`, every ASCII test) against tpcache on a free loopback
# port; then a clean SIGTERM stop by PID (exit 0, pidfile removed, nothing
# printed on stdout).
set -uo pipefail
tpcache=$1
tmp=${TEST_TMPDIR:-$(mktemp -d)}
pidfile=$tmp/tpcache.pid
out=$tmp/tpcache.out

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

for attempt in 1 2 3 4 5; do
  port=$(free_port)
  rm -f "$pidfile"
  "$tpcache" -p "$port" -l 127.0.0.1 -U 0 -t 2 -P "$pidfile" >"$out" &
  server=$!
  for _ in $(seq 200); do
    [[ -s $pidfile ]] && memcping --servers="127.0.0.1:$port" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$server" 2>/dev/null && [[ -s $pidfile ]] && break
  wait "$server"
done
[[ -s $pidfile ]] || { echo "tpcache did not start"; exit 1; }

memccapable -h 127.0.0.1 -p "$port" -a -t 10 | tee "$tmp/capable.log"
rc=${PIPESTATUS[0]}

pid=$(cat "$pidfile")
[[ $pid == "$server" ]] || { echo "pidfile holds $pid, server is $server"; exit 1; }
kill -TERM "$pid"
wait "$server"
stop_rc=$?

fail=0
[[ $rc -eq 0 ]] || { echo "FAIL: memccapable exited $rc"; fail=1; }
grep -q '^All tests passed' "$tmp/capable.log" || { echo "FAIL: not all tests passed"; fail=1; }
if grep -qi '\[fail\]' "$tmp/capable.log"; then echo "FAIL: a test failed"; fail=1; fi
[[ $stop_rc -eq 0 ]] || { echo "FAIL: tpcache exited $stop_rc on SIGTERM"; fail=1; }
[[ ! -e $pidfile ]] || { echo "FAIL: pidfile left behind"; fail=1; }
[[ ! -s $out ]] || { echo "FAIL: tpcache printed on stdout:"; head "$out"; fail=1; }
exit $fail
