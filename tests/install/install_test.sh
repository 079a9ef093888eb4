#!/usr/bin/env bash
# Installs tidepool into a temporary prefix with the same script as
# `bazel run //:install`, then builds and runs tests/install/demo.c OUTSIDE
# Bazel the three ways C projects do:
#   1. pkg-config: `cc demo.c $(pkg-config --cflags --libs tidepool)`,
#      shared and static;
#   2. CMake: find_package(tidepool CONFIG REQUIRED) +
#      target_link_libraries(demo tidepool::tidepool), static by default and
#      shared with -DTIDEPOOL_SHARED=ON;
#   3. Meson: dependency('tidepool').
# Each binary must run, be linked with the library it asked for, and carry
# the start-up options (TIDEPOOL_SHOW_STATS=1 prints the table at exit; a
# bad value gives one line on stderr) — in a static link too.
# With nm it also checks the epoch read side: without the opt-in the program
# calls libtidepool and references no liburcu inline symbol; with
# _LGPL_SOURCE it inlines liburcu's read side.
set -euo pipefail
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
prefix="$tmp/prefix"
src="$PWD/tests/install"
bash dist/install.sh "$prefix"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
echo "cflags: $(pkg-config --cflags tidepool)"
echo "libs:   $(pkg-config --libs tidepool)"
out="$tmp/out"
mkdir -p "$out"

fail() {
  echo "install test: $*" >&2
  exit 1
}

# $1: the binary; $2: "shared" or "static" (what it must be linked with).
check_binary() {
  local bin=$1 kind=$2 deps
  deps=$(LD_LIBRARY_PATH="$prefix/lib" ldd "$bin" 2>&1 || true)
  if [[ $kind == shared ]]; then
    grep -q "libtidepool.so.0 => $prefix/lib/libtidepool.so.0" <<<"$deps" ||
      fail "$bin is not linked with the installed libtidepool.so:"$'\n'"$deps"
  else
    ! grep -q "libtidepool" <<<"$deps" || fail "$bin should be static but needs:"$'\n'"$deps"
  fi
  LD_LIBRARY_PATH="$prefix/lib" "$bin" || fail "$bin exited with $?"
  # The start-up options work in this link too.
  local err
  err=$(TIDEPOOL_SHOW_STATS=1 LD_LIBRARY_PATH="$prefix/lib" "$bin" 2>&1 >/dev/null)
  grep -q "^tidepool .* statistics (pid " <<<"$err" && grep -q "^arena chunk pools" <<<"$err" ||
    fail "TIDEPOOL_SHOW_STATS=1 $bin printed no statistics at exit:"$'\n'"$err"
  err=$(TIDEPOOL_SWEEPER_DECAY_MS=soon LD_LIBRARY_PATH="$prefix/lib" "$bin" 2>&1 >/dev/null)
  [[ $err == "tidepool: ignoring TIDEPOOL_SWEEPER_DECAY_MS=soon: expected milliseconds, 1..3600000" ]] ||
    fail "a bad option value should give exactly one line on stderr; $bin printed:"$'\n'"$err"
  echo "ok: $bin ($kind)"
}

# ---- 1. pkg-config ----
# Shared (the default when both exist).
cc -std=c11 -Wall -Werror "$src/demo.c" $(pkg-config --cflags --libs tidepool) -o "$out/demo_shared"
check_binary "$out/demo_shared" shared

# The epoch read side: by default the program calls libtidepool for it and
# references none of liburcu's inline read side (LGPL-2.1); with the opt-in
# (_LGPL_SOURCE before the include) it inlines liburcu's read lock/unlock,
# which reference liburcu's thread-local reader and grace-period counter.
urcu_inline='urcu_memb_reader|urcu_memb_gp|urcu_memb_read_lock|urcu_memb_read_unlock'
tp_calls='tp_epoch_enter|tp_epoch_leave|tp__deref|tp__publish'
syms=$(nm "$out/demo_shared")
echo "default build, read-side symbols:"; grep -E " ($tp_calls|$urcu_inline)\b" <<<"$syms" || true
for s in tp_epoch_enter tp_epoch_leave tp__deref tp__publish; do
  grep -qE "^ +U $s\b" <<<"$syms" || fail "demo_shared does not call $s"
done
if grep -E "\b($urcu_inline)\b" <<<"$syms"; then
  fail "demo_shared references liburcu's inline read side without the opt-in"
fi
cc -std=c11 -Wall -Werror -D_LGPL_SOURCE "$src/demo.c" $(pkg-config --cflags --libs tidepool) \
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
cc -std=c11 -Wall -Werror "$src/demo.c" -static-libgcc \
  $(pkg-config --cflags tidepool) "$prefix/lib/libtidepool.a" \
  $(pkg-config --static --libs-only-l tidepool | sed 's/-ltidepool//') -o "$out/demo_static"
check_binary "$out/demo_static" static

# ---- 2. CMake ----
cmake_build() {
  local dir=$1; shift
  if ! cmake -S "$src" -B "$dir" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" "$@" > "$dir.log" 2>&1 ||
     ! cmake --build "$dir" >> "$dir.log" 2>&1; then
    cat "$dir.log" >&2
    fail "the CMake build in $dir failed"
  fi
  grep "tidepool 0" "$dir.log" || true
}
cmake_build "$out/cmake_static"
check_binary "$out/cmake_static/demo" static
cmake_build "$out/cmake_shared" -DTIDEPOOL_SHARED=ON
check_binary "$out/cmake_shared/demo" shared
# The version file refuses a version this is not compatible with.
sed -i 's/find_package(tidepool 0.1 CONFIG REQUIRED)/find_package(tidepool 1.0 CONFIG REQUIRED)/' \
  "$(cp -rL "$src" "$out/src_v1" && echo "$out/src_v1/CMakeLists.txt")"
if cmake -S "$out/src_v1" -B "$out/cmake_v1" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" > "$out/cmake_v1.log" 2>&1; then
  fail "find_package(tidepool 1.0) accepted version 0.x"
fi

# ---- 3. Meson ----
if ! meson setup "$out/meson" "$src" > "$out/meson.log" 2>&1 ||
   ! ninja -C "$out/meson" >> "$out/meson.log" 2>&1; then
  cat "$out/meson.log" >&2
  fail "the Meson build failed"
fi
grep -i "dependency tidepool found" "$out/meson.log" || true
check_binary "$out/meson/demo" shared

echo "install test: ok (pkg-config shared and static, CMake static and shared, Meson)"
