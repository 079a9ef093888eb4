#!/usr/bin/env bash
# bench/go/smoke_test.sh — //bench:go_worker_smoke_test: the Go worker
# (bench_go) builds, lists its cases in the driver's format, and runs the
# server workload at a tiny size (--smoke: 2^14 entries, 0.2 s), writing a
# result the driver can parse: Google Benchmark JSON with ns_per_op and the
# counters the gcserver tables read. A few seconds.
set -euo pipefail
bin=$1
tmp=${TEST_TMPDIR:-$(mktemp -d)}

"$bin" --bench_list >"$tmp/list.txt"
grep -q $'^info\tgo\tgo1' "$tmp/list.txt" || { echo "no go version line"; cat "$tmp/list.txt"; exit 1; }
grep -q $'^case\tBM_gcserver_256m/go\tgcserver_256m\tgo\tgcserver\t' "$tmp/list.txt" ||
  { echo "no gcserver_256m case"; cat "$tmp/list.txt"; exit 1; }

"$bin" --smoke '--benchmark_filter=^BM_gcserver_256m/go(/|$)' --benchmark_out="$tmp/out.json" \
  --benchmark_out_format=json >"$tmp/stdout.txt"
grep -q '^result {' "$tmp/stdout.txt" || { echo "no result line"; cat "$tmp/stdout.txt"; exit 1; }

/usr/bin/python3 - "$tmp/out.json" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))["benchmarks"][0]
assert b["name"].startswith("BM_gcserver_256m/go/"), b["name"]
assert not b.get("error_occurred"), b.get("error_message")
need = ["ns_per_op", "gcs", "stw_p50_ms", "stw_p99_ms", "stw_max_ms", "stall_max_ms",
        "mmu_0010ms", "mmu_0100ms", "rss_peak_MiB", "pause_cdf_0500_ms"]
missing = [k for k in need if k not in b]
assert not missing, "missing counters: %s" % missing
assert b["ns_per_op"] > 0 and b["gcs"] >= 1, b
assert 0 <= b["mmu_0100ms"] <= 1, b
print("bench_go smoke: %.0f ns/op, %d collections, STW max %.3f ms, longest stall %.3f ms"
      % (b["ns_per_op"], b["gcs"], b["stw_max_ms"], b["stall_max_ms"]))
PY
