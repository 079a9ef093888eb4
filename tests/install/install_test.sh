#!/usr/bin/env bash
# Installs tidepool into a temporary prefix with the same script as
# `bazel run //:install`, then builds and runs a program OUTSIDE Bazel with
# `cc demo.c $(pkg-config --cflags --libs tidepool)`, against the shared
# library and (with --static) the static one.
set -euo pipefail
prefix="${TEST_TMPDIR:-$(mktemp -d)}/prefix"
bash dist/install.sh "$prefix"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
echo "cflags: $(pkg-config --cflags tidepool)"
echo "libs:   $(pkg-config --libs tidepool)"
out="${TEST_TMPDIR:-/tmp}"
# Shared (the default when both exist).
cc -std=c11 -Wall -Werror tests/install/demo.c $(pkg-config --cflags --libs tidepool) -o "$out/demo_shared"
LD_LIBRARY_PATH="$prefix/lib" "$out/demo_shared"
deps=$(LD_LIBRARY_PATH="$prefix/lib" ldd "$out/demo_shared")
grep -q "libtidepool.so.0 => $prefix/lib/libtidepool.so.0" <<<"$deps" || {
  echo "demo_shared is not linked with the installed libtidepool.so:" >&2
  echo "$deps" >&2
  exit 1
}
# Static.
cc -std=c11 -Wall -Werror tests/install/demo.c -static-libgcc \
  $(pkg-config --cflags tidepool) "$prefix/lib/libtidepool.a" \
  $(pkg-config --static --libs-only-l tidepool | sed 's/-ltidepool//') -o "$out/demo_static"
"$out/demo_static"
echo "install test: ok"
