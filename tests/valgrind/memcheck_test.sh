#!/usr/bin/env bash
# Pool objects are visible to valgrind's memcheck (mempool client requests):
# correct use is clean, a write after put and a read of a never-written
# object are reported. (Under valgrind glibc does not register rseq, so this
# also exercises the per-CPU fallback.)
set -uo pipefail
bin=tests/memcheck_pool
vg() { valgrind -q --error-exitcode=99 --track-origins=no "$@"; }

out=$(vg "$bin" 2>&1); rc=$?
echo "$out"
[[ $rc -eq 0 ]] || { echo "FAIL: correct use reported errors (rc $rc)"; exit 1; }

out=$(vg "$bin" use-after-put 2>&1); rc=$?
echo "$out"
[[ $rc -eq 99 ]] && grep -q "Invalid write" <<<"$out" ||
  { echo "FAIL: use after put not reported (rc $rc)"; exit 1; }

out=$(vg "$bin" uninit 2>&1); rc=$?
echo "$out"
[[ $rc -eq 99 ]] && grep -q "uninitialised" <<<"$out" ||
  { echo "FAIL: read of a never-written object not reported (rc $rc)"; exit 1; }
echo "memcheck test: ok"
