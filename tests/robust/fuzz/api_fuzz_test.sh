#!/usr/bin/env bash
# Runs the API-sequence fuzzer (api_fuzz.c, built with clang-14, libFuzzer,
# ASan + UBSan, TP_DEBUG) for FUZZ_SECONDS (default 45) from the committed
# seed corpus, with a fixed seed (TP_TEST_SEED, default 1). Any model
# mismatch, sanitizer report, abort, leak or hang (-timeout) fails the test;
# the crashing input is left in the test's undeclared outputs.
set -euo pipefail
fuzzer=$1
seeds=$(dirname "$2")
seconds=${FUZZ_SECONDS:-45}
seed=${TP_TEST_SEED:-1}
work=${TEST_TMPDIR:-$(mktemp -d)}/corpus
out=${TEST_UNDECLARED_OUTPUTS_DIR:-$work/..}
mkdir -p "$work"
echo "api_fuzz: ${seconds} s, seed ${seed} (replay with TP_TEST_SEED=${seed}), seeds: $(ls "$seeds" | wc -l) inputs"
# New inputs go to the scratch corpus; the committed seeds are read only.
"$fuzzer" -max_total_time="$seconds" -seed="$seed" -timeout=20 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$out/" "$work" "$seeds" 2>&1 |
  grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)' 
