#!/usr/bin/env bash
# bench/go/build.sh OUT SRC... — builds //bench:bench_go (bench/go/main.go)
# offline, for the genrule in bench/BUILD: Debian's golang-go, the standard
# library only (go.mod has no requirements), every Go directory (HOME,
# GOCACHE, GOPATH) in a temporary directory beside OUT (writable inside
# Bazel's sandbox), no proxy, no toolchain switch, no cgo.
#
# Without Go it writes a stub in OUT that explains and exits 1: the driver
# then reports the worker as missing and prints the tables with Go as n/a
# (./bazelw installs golang-go; after installing it by hand, touch
# bench/go/main.go so that Bazel builds the real worker).
set -euo pipefail
out=$(realpath -m "$1")
shift
go=$(command -v go || true)
if [[ -z $go ]]; then
  for g in /usr/lib/go-*/bin/go; do [[ -x $g ]] && go=$g; done
fi
if [[ -z $go ]]; then
  cat >"$out" <<'STUB'
#!/bin/sh
echo "bench_go: Go was not installed when //bench was built: install golang-go (./bazelw does), then touch bench/go/main.go and run again" >&2
exit 1
STUB
  chmod +x "$out"
  echo "bench/go/build.sh: no go found; bench_go is a stub (the Go worker will be n/a)" >&2
  exit 0
fi
tmp=$(mktemp -d "$(dirname "$out")/bench_go.tmp.XXXXXX")
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
mkdir "$tmp/src"
cp "$@" "$tmp/src/"
export HOME="$tmp" GOCACHE="$tmp/cache" GOPATH="$tmp/path" GOENV=off GOFLAGS=-mod=mod \
  GOPROXY=off GOSUMDB=off GOTOOLCHAIN=local GOWORK=off GO111MODULE=on CGO_ENABLED=0
cd "$tmp/src"
"$go" build -trimpath -o "$out" .
