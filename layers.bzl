"""tp_layer: one layer of tidepool (a folder) as Bazel libraries.

The library is built in layers, each a folder: core -> epoch -> pool ->
arena -> gc. A layer may include only its own headers and those of the
layers below it: its cc_library depends on the layer directly below only,
so an #include of a higher layer's header is not in the compile sandbox and
fails to build (and //tests:layering_test reads the includes as well).

tp_layer(name, public_hdrs, below) defines
  :NAME_hdrs   the layer's public headers as <tidepool/...> (NAME/x.h is
               <tidepool/x.h>, NAME/detail/y.h is <tidepool/detail/y.h>)
  :NAME        NAME/*.c compiled with TP_COPTS, its NAME/*_internal.h as
               "NAME/x_internal.h" for the layers above
  :NAME_debug  the same compiled with TP_DEBUG=1 (over the layers' _debug)
"""

load("@rules_cc//cc:defs.bzl", "cc_library")

# Warnings are errors on project code. initial-exec TLS keeps the epoch read
# side at ~1-2 ns inside libtidepool.so as well (liburcu's reader state and
# tidepool's registered flag are thread-local).
TP_COPTS = [
    "-Wall",
    "-Wextra",
    "-Werror",
    "-ftls-model=initial-exec",
    "-fvisibility=hidden",
    "-DTP_HAVE_VALGRIND=1",
]

TP_LINKOPTS = [
    "-lurcu-memb",
    "-lurcu-cds",
    "-lurcu-common",
    "-lpthread",
]

# Bottom to top. A layer depends on the one before it.
TP_LAYERS = ["core", "epoch", "pool", "arena", "gc"]

def tp_layer(name, public_hdrs = [], below = None):
    """Defines :NAME_hdrs, :NAME and :NAME_debug for the folder NAME.

    Args:
      name: the layer (its folder).
      public_hdrs: its installed headers (NAME/x.h, NAME/detail/y.h).
      below: the layer directly below it, or None for core.
    """
    cc_library(
        name = name + "_hdrs",
        hdrs = public_hdrs,
        include_prefix = "tidepool",
        strip_include_prefix = name,
        deps = [":" + below + "_hdrs"] if below else [],
    )
    for suffix, copts, defines in [
        ("", TP_COPTS, []),
        ("_debug", TP_COPTS + ["-DTP_DEBUG=1"], ["TP_DEBUG=1"]),
    ]:
        cc_library(
            name = name + suffix,
            srcs = native.glob([name + "/*.c"]),
            hdrs = native.glob([name + "/*_internal.h"]),
            alwayslink = True,
            # No per-layer .so: internal symbols are hidden
            # (-fvisibility=hidden) and cross layers; //dist:libtidepool.so
            # is the one shared library.
            linkstatic = True,
            copts = copts,
            defines = defines,
            linkopts = TP_LINKOPTS,
            deps = [":" + name + "_hdrs"] + ([":" + below + suffix] if below else []),
        )
