#!/usr/bin/env bash
# bench/server/loadgen_detect_test.sh — //bench/server:loadgen_detect_test:
# loadgen against fake_server.py, right (loadgen passes) and then wrong on
# purpose in each way (a flipped byte, a stale version, a miss of a stored
# key, another key's value, a line the protocol does not have): loadgen must
# exit 1 and name the fault each time.
#
#   loadgen_detect_test.sh LOADGEN FAKE_SERVER
set -uo pipefail
LOADGEN=$1 FAKE=$2
TMP=${TEST_TMPDIR:-$(mktemp -d)}
. "$(dirname "$0")/testlib.sh"
FPID=
trap '[[ -n $FPID ]] && { kill $FPID 2>/dev/null; wait $FPID 2>/dev/null; }' EXIT

check() {  # check MODE EXPECTED_STATUS PATTERN
  local mode=$1 want=$2 pat=$3 i
  rm -f "$TMP/port"
  /usr/bin/python3 "$FAKE" --port-file "$TMP/port" --mode "$mode" --lifetime 30 &
  FPID=$!
  for i in $(seq 100); do [[ -s $TMP/port ]] && break; sleep 0.1; done
  [[ -s $TMP/port ]] || fail "fake server ($mode) did not start"
  "$LOADGEN" -s "127.0.0.1:$(cat "$TMP/port")" -c 4 -d 1 -n 50 -g 0.5 -p -S 3 >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  kill $FPID; wait $FPID 2>/dev/null; FPID=
  echo "$mode: exit $rc; $(head -1 "$TMP/err")"
  [[ $rc == "$want" ]] || { cat "$TMP/out" "$TMP/err"; fail "$mode: exit status $rc, expected $want"; }
  [[ -z $pat ]] || grep -q -- "$pat" "$TMP/err" || fail "$mode: no \"$pat\" in: $(cat "$TMP/err")"
}

check ok 0 ""
check corrupt 1 "wrong value"
check stale 1 "version .*, expected"
check miss 1 "get of stored key .*: miss"
check wrongkey 1 "returned key"
check garbage 1 "expected VALUE or END"
echo PASS
