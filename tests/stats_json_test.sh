#!/usr/bin/env bash
# tp_stats_print(stdout, "json") and TIDEPOOL_SHOW_STATS=json parse with
# `python3 -m json.tool` (Debian's python3, as a user would check), and the
# parsed report carries what stats_json_demo did: its pool with 5 objects
# in use, an arena chunk pool, 3 retires freed, one heap with one
# collection; names with quotes, backslashes, tabs and non-ASCII bytes
# come out escaped.
set -euo pipefail
py=/usr/bin/python3
demo=tests/stats_json_demo
out="${TEST_TMPDIR:-$(mktemp -d)}"

"$demo" > "$out/report.json"
"$py" -m json.tool "$out/report.json" > /dev/null || {
  echo "tp_stats_print JSON does not parse:" >&2
  cat "$out/report.json" >&2
  exit 1
}
"$py" - "$out/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
pools = {p["name"]: p for p in r["pools"]}
demo = pools["json-demo"]
assert demo["obj_size"] == 96 and demo["in_use"] == 5, demo
assert 'quote" back\\ tab\t \u00c3\u00a9' in pools, sorted(pools)
assert len(r["arena_chunk_pools"]) >= 1 and r["arena_chunk_pools"][0]["chunk_size"] > 0
assert r["epoch"]["retired"] >= 3 and r["epoch"]["freed"] >= 3, r["epoch"]
assert r["sweeper"]["running"] is False and r["sweeper"]["decay_ms"] == 1000
assert len(r["heaps"]) == 1 and r["heaps"][0]["num_gc"] == 1, r["heaps"]
hp = r["heaps"][0]
# The pause histogram: 24 power-of-2 buckets, two pauses counted (the
# concurrent collection's pause 1 and pause 2), the last one in its bucket.
lo = hp["pause_hist_lo_ns"]
assert len(lo) == len(hp["pause_hist"]) == 24 and lo[0] == 0 and lo[1] == 1024, lo
assert all(lo[k + 1] == 2 * lo[k] for k in range(1, 23)), lo
assert sum(hp["pause_hist"]) == hp["pauses"] == 2, hp
k = max(i for i in range(24) if lo[i] <= hp["last_pause_ns"])
assert hp["pause_hist"][k] >= 1, (k, hp)
assert hp["pause_max_ns"] >= hp["last_pause_ns"] and hp["pause_total_ns"] >= hp["pause_max_ns"], hp
assert hp["phase"] == "idle" and hp["mark_assist_ns"] == 0 and "mark_bg_cpu_ns" in hp, hp
assert hp["arenas"] == 0, hp
# The pacer: a trigger at or below the goal, a hard limit above it; the demo
# allocates far below the goal, so nothing assisted or waited.
assert hp["gc_trigger"] <= hp["next_gc"] < hp["gc_hard_limit"], hp
assert hp["assists"] == hp["assist_max_ns"] == hp["limit_waits"] == hp["limit_wait_ns"] == 0, hp
assert r["process"]["bytes_mapped"] > 0
print("report: %d pools, %d chunk pools, %d heaps" % (len(r["pools"]), len(r["arena_chunk_pools"]), len(r["heaps"])))
PY

# At exit, through the environment option: stderr is the JSON report.
TIDEPOOL_SHOW_STATS=json "$demo" table > "$out/table.txt" 2> "$out/atexit.json"
grep -q '^json-demo ' "$out/table.txt" || { echo "no json-demo row in the table" >&2; cat "$out/table.txt" >&2; exit 1; }
grep -Eq '^  pauses 2: \[.*\) [12]$' "$out/table.txt" || { echo "no pause histogram line in the table" >&2; cat "$out/table.txt" >&2; exit 1; }
"$py" -m json.tool "$out/atexit.json" > /dev/null || {
  echo "TIDEPOOL_SHOW_STATS=json output does not parse:" >&2
  cat "$out/atexit.json" >&2
  exit 1
}
echo "stats json test: ok"
