#!/usr/bin/env bash
# Installs tidepool for non-Bazel users:
#   ./bazelw run //:install -- PREFIX
# gives PREFIX/include/tidepool/*.h, PREFIX/lib/libtidepool.a,
# PREFIX/lib/libtidepool.so (+ .so.0), PREFIX/lib/pkgconfig/tidepool.pc and
# PREFIX/lib/cmake/tidepool/tidepoolConfig.cmake (+ tidepoolConfigVersion.cmake).
# Then:
#   PKG_CONFIG_PATH=PREFIX/lib/pkgconfig cc app.c $(pkg-config --cflags --libs tidepool)
#   cmake -DCMAKE_PREFIX_PATH=PREFIX ...   (find_package(tidepool CONFIG REQUIRED),
#                                           target_link_libraries(app tidepool::tidepool))
#   meson: dependency('tidepool') with PKG_CONFIG_PATH=PREFIX/lib/pkgconfig
set -euo pipefail

prefix=${1:-}
if [[ -z $prefix ]]; then
  echo "usage: bazel run //:install -- PREFIX" >&2
  exit 2
fi
# `bazel run` starts us in the runfiles tree; a relative PREFIX means
# relative to where the user ran the command.
[[ $prefix == /* ]] || prefix="${BUILD_WORKING_DIRECTORY:-$PWD}/$prefix"

# Our files, relative to the runfiles root of this workspace (the working
# directory under `bazel run` and in //tests:install_test). The headers are
# those of //:public_headers — the only ones in the runfiles; the list lives
# in BUILD alone.
root=$PWD
# LAYER/x.h installs as tidepool/x.h, LAYER/detail/y.h as tidepool/detail/y.h,
# the umbrella tidepool.h as tidepool/tidepool.h.
mapfile -t headers < <(cd "$root" && { find -L core epoch pool arena gc -name '*.h' ! -name '*_internal.h'; ls tidepool.h; } | sort)
((${#headers[@]})) || { echo "install: no headers in $root" >&2; exit 1; }
version=$(sed -n 's/^#define TP_VERSION_STRING "\(.*\)"/\1/p' "$root/core/common.h")

mkdir -p "$prefix/include/tidepool" "$prefix/lib/pkgconfig" "$prefix/lib/cmake/tidepool"
for h in "${headers[@]}"; do
  dest=${h#*/}
  install -D -m 0644 "$root/$h" "$prefix/include/tidepool/$dest"
done
install -m 0644 "$root/dist/libtidepool.a" "$prefix/lib/libtidepool.a"
install -m 0755 "$root/dist/libtidepool.so" "$prefix/lib/libtidepool.so.$version"
ln -sf "libtidepool.so.$version" "$prefix/lib/libtidepool.so.0"
ln -sf "libtidepool.so.0" "$prefix/lib/libtidepool.so"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" "$root/dist/tidepool.pc.in" \
  > "$prefix/lib/pkgconfig/tidepool.pc"
for f in tidepoolConfig.cmake tidepoolConfigVersion.cmake; do
  sed -e "s|@VERSION@|$version|g" "$root/dist/$f.in" > "$prefix/lib/cmake/tidepool/$f"
done
echo "tidepool $version installed in $prefix"
