#!/usr/bin/env bash
# The layering rule, read from the sources: a file of layer L (the folder
# core, epoch, pool, arena or gc) may include only headers of L and of the
# layers below it — "X/y_internal.h" of a layer X, or a public
# <tidepool/y.h> (found by the folder that holds it; tidepool.h, the
# umbrella, is above every layer). The Bazel deps enforce the same rule at
# compile time (layers.bzl); this test names the offending line.
#
# First it checks itself on a scratch tree with one back edge (core
# including pool/pool.h), so it cannot pass by reading nothing.
set -euo pipefail
layers=(core epoch pool arena gc)

rank_of() {
  local i
  for i in "${!layers[@]}"; do
    [[ ${layers[$i]} == "$1" ]] && { echo "$i"; return; }
  done
  echo "${#layers[@]}" # the umbrella: above every layer
}

# check ROOT: prints each back edge; exit 1 if any, 2 if no file was read.
check() (
  cd "$1"
  declare -A hdr_layer=()
  local l h f inc target files=0 bad=0
  for l in "${layers[@]}"; do
    [[ -d $l ]] || continue
    while IFS= read -r h; do hdr_layer[${h#"$l"/}]=$l; done \
      < <(find -L "$l" -name '*.h' ! -name '*_internal.h')
  done
  for l in "${layers[@]}"; do
    [[ -d $l ]] || continue
    while IFS= read -r f; do
      files=$((files + 1))
      while IFS= read -r inc; do
        case $inc in
          \<tidepool/*\>)
            h=${inc#<tidepool/}; h=${h%>}
            target=${hdr_layer[$h]:-umbrella} ;;
          \"*/*\")
            h=${inc#\"}; target=${h%%/*}
            [[ " ${layers[*]} " == *" $target "* ]] || continue ;;
          *) continue ;;
        esac
        if (($(rank_of "$target") > $(rank_of "$l"))); then
          echo "back edge: $f (layer $l) includes $inc (layer $target, above it)"
          bad=1
        fi
      done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*\([<"][^>"]*[>"]\).*/\1/p' "$f")
    done < <(find -L "$l" -name '*.[ch]' | sort)
  done
  ((files > 0)) || { echo "no source files found under $PWD"; exit 2; }
  echo "$files files read"
  exit "$bad"
)

# Self-check: a tree with one back edge must fail.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/core" "$scratch/pool"
printf '#include "core/os_internal.h"\n' > "$scratch/pool/pool.c"
printf '#include <tidepool/pool.h>\n' > "$scratch/core/percpu.c"
: > "$scratch/pool/pool.h"
if out=$(check "$scratch"); then
  echo "self-check failed: a back edge was not reported" >&2
  exit 1
fi
grep -q 'core/percpu.c (layer core) includes <tidepool/pool.h>' <<<"$out" || {
  echo "self-check failed: unexpected report: $out" >&2
  exit 1
}

# The real tree (the runfiles of //:layer_sources).
check .
echo "layering: ok"
