#!/usr/bin/env bash
# bench/server/loadgen_test.sh — //bench/server:loadgen_test: loadgen against
# real servers (memcached, and tpcache when given) on a free loopback port:
# a short 90/10 run and a set-only run check every response and report sane
# figures; fill / delete / flush; and every non-loopback address is refused.
#
#   loadgen_test.sh LOADGEN memcached=PATH [tpcache=PATH]
set -uo pipefail
LOADGEN=$1; shift
TMP=${TEST_TMPDIR:-$(mktemp -d)}
. "$(dirname "$0")/testlib.sh"
trap 'stop_server' EXIT

echo "== refusals"
for addr in 10.0.0.1:11211 192.168.1.1:11211 8.8.8.8:53 0.0.0.0:11211 128.0.0.1:1 \
            '[::2]:11211' '[2001:db8::1]:11211' '[::]:11211' example.com:11211 '[::ffff:10.0.0.1]:1'; do
  "$LOADGEN" -s "$addr" -d 0.1 >"$TMP/out" 2>"$TMP/err"
  rc=$?
  [[ $rc == 2 ]] || fail "$addr: exit status $rc, expected 2 (refused)"
  grep -q refusing "$TMP/err" || fail "$addr: no refusal message: $(cat "$TMP/err")"
  grep -q '^result' "$TMP/out" && fail "$addr: it ran"
  echo "  $addr refused"
done
# Loopback addresses are accepted (nothing listens on this port: exit 3).
p=$(free_port)
for addr in "127.0.0.1:$p" "127.1.2.3:$p" "localhost:$p" "[::1]:$p"; do
  "$LOADGEN" -s "$addr" -d 0.1 >/dev/null 2>"$TMP/err"
  rc=$?
  [[ $rc == 3 ]] || fail "$addr: exit status $rc, expected 3 (connection refused): $(cat "$TMP/err")"
done
"$LOADGEN" -s 127.0.0.1:1 -c 0 >/dev/null 2>&1; [[ $? == 2 ]] || fail "-c 0 accepted"
"$LOADGEN" -s 127.0.0.1:1 -g 1.5 >/dev/null 2>&1; [[ $? == 2 ]] || fail "-g 1.5 accepted"
"$LOADGEN" -s 127.0.0.1:1 -v 5 >/dev/null 2>&1; [[ $? == 2 ]] || fail "-v 5 accepted"

for spec in "$@"; do
  kind=${spec%%=*}; bin=${spec#*=}
  echo "== $kind ($bin)"
  start_server "$kind" "$bin"
  for mix in 0.9 0; do
    "$LOADGEN" -s "127.0.0.1:$PORT" -c 20 -d 1 -g $mix -n 5000 -p -S 42 >"$TMP/out" 2>"$TMP/err" \
      || { cat "$TMP/out" "$TMP/err" >&2; fail "$kind: loadgen -g $mix failed"; }
    cat "$TMP/out"
    grep -q 'seed 42' "$TMP/out" || fail "the seed is not printed"
    [[ $(field errors "$TMP/out") == 0 ]] || fail "$kind: errors"
    ops=$(field ops "$TMP/out"); sets=$(field sets "$TMP/out"); hits=$(field hits "$TMP/out")
    [[ $ops -gt 100 ]] || fail "$kind: only $ops ops in 1 s"
    if [[ $mix == 0 ]]; then
      [[ $(field gets "$TMP/out") == 0 && $sets -ge $ops ]] || fail "$kind: set-only run did gets"
    else
      [[ $hits -gt $((ops / 2)) && $(field misses "$TMP/out") == 0 ]] || fail "$kind: $hits hits of $ops"
      [[ $sets -gt 0 && $sets -lt $((ops / 4)) ]] || fail "$kind: $sets sets of $ops"
    fi
    /usr/bin/python3 - "$TMP/out" <<'PY' || fail "$kind: percentiles out of order"
import sys
f = dict(kv.split("=") for kv in open(sys.argv[1]).read().split("\n")[1].split()[1:])
q = [float(f[k]) for k in ("p50_us", "p99_us", "p999_us", "max_us")]
assert 0 < q[0] <= q[1] <= q[2] <= q[3], q
assert float(f["ops_per_s"]) > 0
PY
  done
  # fill, then delete: every key must be there; a second delete finds none.
  "$LOADGEN" -s "127.0.0.1:$PORT" -o flush >/dev/null || fail "$kind: flush"
  "$LOADGEN" -s "127.0.0.1:$PORT" -o fill -n 3000 -v 1000 -D 4 >"$TMP/out" 2>&1 || { cat "$TMP/out"; fail "$kind: fill"; }
  [[ $(field sets "$TMP/out") == 3000 ]] || fail "$kind: fill sent $(field sets "$TMP/out") sets"
  "$LOADGEN" -s "127.0.0.1:$PORT" -o stats >"$TMP/out" || fail "$kind: stats"
  grep -q '^STAT curr_items 3000' "$TMP/out" || fail "$kind: curr_items after fill: $(grep curr_items "$TMP/out")"
  "$LOADGEN" -s "127.0.0.1:$PORT" -o delete -n 3000 -D 4 >"$TMP/out" 2>&1 || { cat "$TMP/out"; fail "$kind: delete"; }
  "$LOADGEN" -s "127.0.0.1:$PORT" -o delete -n 3000 -D 4 >"$TMP/out" 2>&1 && fail "$kind: deleting deleted keys passed"
  grep -q 'NOT_FOUND' "$TMP/out" || fail "$kind: the second delete did not report NOT_FOUND"
  "$LOADGEN" -s "127.0.0.1:$PORT" -o delete -n 3000 -D 4 -m >/dev/null 2>&1 || fail "$kind: delete --allow-miss"
  stop_server
done
echo PASS
