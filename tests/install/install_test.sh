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

# The epoch read side: by default the program calls libtidepool for it and
# references none of liburcu's inline read side (LGPL-2.1); with the opt-in
# (_LGPL_SOURCE before the include) it inlines liburcu's read lock/unlock,
# which reference liburcu's thread-local reader and grace-period counter.
urcu_inline='urcu_memb_reader|urcu_memb_gp|urcu_memb_read_lock|urcu_memb_read_unlock'
tp_calls='tp_epoch_enter|tp_epoch_leave|tp__deref|tp__publish'
syms=$(nm "$out/demo_shared")
echo "default build, read-side symbols:"; grep -E " ($tp_calls|$urcu_inline)\b" <<<"$syms" || true
for s in tp_epoch_enter tp_epoch_leave tp__deref tp__publish; do
  grep -qE "^ +U $s\b" <<<"$syms" || { echo "demo_shared does not call $s" >&2; exit 1; }
done
if grep -E "\b($urcu_inline)\b" <<<"$syms"; then
  echo "demo_shared references liburcu's inline read side without the opt-in" >&2
  exit 1
fi
cc -std=c11 -Wall -Werror -D_LGPL_SOURCE tests/install/demo.c $(pkg-config --cflags --libs tidepool) \
  -o "$out/demo_inline"
LD_LIBRARY_PATH="$prefix/lib" "$out/demo_inline"
syms=$(nm "$out/demo_inline")
echo "opt-in build (_LGPL_SOURCE), read-side symbols:"; grep -E " ($tp_calls|$urcu_inline)\b" <<<"$syms" || true
grep -qE "^ +U urcu_memb_reader\b" <<<"$syms" || {
  echo "demo_inline does not inline liburcu's read side (no urcu_memb_reader)" >&2
  exit 1
}
if grep -E "^ +U ($tp_calls)\b" <<<"$syms"; then
  echo "demo_inline calls libtidepool for its read side despite the opt-in" >&2
  exit 1
fi

# Static.
cc -std=c11 -Wall -Werror tests/install/demo.c -static-libgcc \
  $(pkg-config --cflags tidepool) "$prefix/lib/libtidepool.a" \
  $(pkg-config --static --libs-only-l tidepool | sed 's/-ltidepool//') -o "$out/demo_static"
"$out/demo_static"
echo "install test: ok"
