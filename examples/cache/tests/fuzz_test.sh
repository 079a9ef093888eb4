#!/usr/bin/env bash
# fuzz_test.sh ARCHIVE HEADERS... -- SOURCES... : builds the libFuzzer target
# on tpcache's parser with clang-14 (-fsanitize=fuzzer,address,undefined)
# against libtidepool.a, and runs it for a short, seeded, time-bounded
# session from a seed corpus of real requests. TPCACHE_FUZZ_SECONDS sets the
# length (default 20).
set -euo pipefail
archive=$1; shift
tmp=${TEST_TMPDIR:-$(mktemp -d)}
mkdir -p "$tmp/inc/tidepool" "$tmp/corpus"
srcs=()
mkdir -p "$tmp/inc/tidepool/detail"
while [[ $1 != -- ]]; do
  case $1 in
    */detail/*) cp "$1" "$tmp/inc/tidepool/detail/" ;;
    *) cp "$1" "$tmp/inc/tidepool/" ;;
  esac
  shift
done
shift
for f in "$@"; do
  case $f in
    *.c) srcs+=("$f") ;;
    *.dict) dict=$f ;;
    *) cp "$f" "$tmp/inc/" ;;
  esac
done
# grep reads all of nm's output (no -q): under pipefail, a grep -q that
# stops at the first match made nm die of SIGPIPE and the test not skip.
if nm "$archive" 2>/dev/null | grep -E '__(asan|tsan)_init' >/dev/null; then
  echo "skipped: libtidepool.a is built with a gcc sanitizer here (run without --config=asan/tsan)"
  exit 0
fi
clang-14 -std=c11 -O1 -g -fsanitize=fuzzer,address,undefined \
  -fno-sanitize-recover=undefined -I"$tmp/inc" "${srcs[@]}" "$archive" \
  -lurcu-memb -lurcu-cds -lurcu-common -lpthread -o "$tmp/fuzz_proto"
i=0
for r in 'get a\r\n' 'set a 0 0 1\r\nx\r\nget a b\r\n' 'gets a\r\ncas a 0 0 1 1\r\ny\r\n' \
         'incr n 1\r\ndecr n 1 noreply\r\n' 'touch a 10\r\ngat 10 a\r\n' \
         'mg a v k O1 t s f c\r\nms b 2 T0 F1 MA\r\nhi\r\n' 'ma n N0 J5 v\r\nmd n q\r\nmn\r\n' \
         'append a 0 0 2\r\nzz\r\nprepend a 0 0 2\r\nzz\r\n' 'flush_all 0\r\nstats\r\n' \
         'stats tidepool\r\nversion\r\nverbosity 1\r\nquit\r\n' 'set k 0 0 5\r\nab\r\n\r\n' \
         'delete a 0 noreply\r\nadd a 0 0 1\r\nq\r\nreplace a 0 0 1\r\nr\r\n'; do
  printf "\xf0$r" >"$tmp/corpus/seed$i"; i=$((i + 1))
  printf "\x03$r" >"$tmp/corpus/split$i"
done
seed=${TPCACHE_FUZZ_SEED:-$RANDOM}
echo "fuzz seed $seed"
rc=0
"$tmp/fuzz_proto" -seed="$seed" -max_total_time="${TPCACHE_FUZZ_SECONDS:-20}" -max_len=8192 \
  -rss_limit_mb=2048 -dict="$dict" -print_final_stats=1 "$tmp/corpus" >"$tmp/fuzz.log" 2>&1 || rc=$?
if [[ $rc -ne 0 ]]; then
  echo "FAIL: the fuzzer found a crash (exit $rc):"
  grep -m1 -A40 -E '^==[0-9]+==ERROR|deadly signal|runtime error' "$tmp/fuzz.log" || tail -40 "$tmp/fuzz.log"
  grep -E '^(artifact_prefix|Test unit written)' "$tmp/fuzz.log" || true
else
  grep -E '^(Done|stat::)' "$tmp/fuzz.log"
fi
exit "$rc"
