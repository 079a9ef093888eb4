"""tp_test: a cmocka test of tidepool."""

load("@rules_cc//cc:defs.bzl", "cc_test")

def tp_test(name, srcs, debug = False, size = "small", timeout = None, deps = [], **kwargs):
    """A cmocka test linked with //:tidepool (or //:tidepool_debug).

    Args:
      name: target name.
      srcs: C sources.
      debug: link the TP_DEBUG build of the library (misuse checks, poison).
      size: Bazel test size.
      timeout: Bazel test timeout.
      deps: extra deps.
      **kwargs: passed to cc_test.
    """
    cc_test(
        name = name,
        srcs = srcs + ["//tests:test_util.h", "//tests:death.h"],
        copts = ["-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE"],
        linkopts = ["-lcmocka", "-lpthread"],
        deps = [("//:tidepool_debug" if debug else "//:tidepool")] + deps,
        size = size,
        timeout = timeout,
        **kwargs
    )
