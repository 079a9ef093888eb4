#!/usr/bin/python3
"""bench/plots.py — draws //bench's pictures from the driver's medians.

    /usr/bin/python3 bench/plots.py DIR/bench_data.json DIR

The driver (bench/driver.cc) writes bench_data.json (per case: the median
ns/op and counters over the rounds; per workload: peer / tidepool ratios)
and runs this script with Debian's python3-matplotlib. It writes, into DIR:

  burst_rss.png        RSS over time after a 256 MiB burst is put back,
                       tidepool (sweeper on) and every peer
  ratios.png           peer / tidepool per workload and peer (> 1: tidepool
                       is faster or leaner), as a heat map
  gc_pauses.png        the collectors' stop-the-world pause distributions
                       (gc_pause_256m) and full-collection times (gc_tree_1g)
  retire_latency.png   retire-to-free latency distribution at 1 M retires/s,
                       tidepool and liburcu's call_rcu
  gcserver.png         issue 12: tp_heap, Boehm and Go on the server-like
                       workload: the stop-the-world pause distributions
                       (pause_cdf_PPPP_ms) and the minimum mutator
                       utilization curves (mmu_PPPPms) at 256 MiB (solid)
                       and 1 GiB (dashed)

Workloads that did not run (--filter) leave their plot out. Exit status 3
when matplotlib is missing (the driver still printed its tables).
"""
import json
import math
import os
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm
except ImportError as e:  # the tables are printed already
    print("matplotlib is not installed (%s): apt-get install python3-matplotlib" % e)
    sys.exit(3)

NAMES = {"tp": "tidepool", "urcu": "liburcu call_rcu"}
TP_COLOR = "#d62728"
# The peers' colours: matplotlib's tab10 without its red (tidepool's).
PEER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
_peer_color = {}


def label(impl):
    return NAMES.get(impl, impl)


def color(impl):
    if impl == "tp":
        return TP_COLOR
    if impl not in _peer_color:
        _peer_color[impl] = PEER_COLORS[len(_peer_color) % len(PEER_COLORS)]
    return _peer_color[impl]


def style(impl):
    if impl == "tp":
        return {"color": TP_COLOR, "linewidth": 2.8, "zorder": 5}
    return {"color": color(impl), "linewidth": 1.4, "alpha": 0.9}


def cases_of(data, workload):
    cs = [c for c in data["cases"] if c["workload"] == workload]
    # tidepool first, then the peers in the driver's order
    return sorted(cs, key=lambda c: c["impl"] != "tp")


def cdf_step(ax, c, prefix, suffix, max_key, describe, **extra):
    """Draws case c's distribution (counters PREFIX_PPPPSUFFIX: the
    quantiles of bench_counter_cdf, then the maximum at 1) as a step
    curve labelled describe(counters, max)."""
    k = c["counters"]
    pts = []
    for name, v in k.items():
        if name.startswith(prefix + "_") and name.endswith(suffix) and v is not None:
            mid = name[len(prefix) + 1:len(name) - len(suffix)]
            if mid.isdigit():
                pts.append((v, int(mid) / 1000.0))
    if not pts:
        return
    pts.sort(key=lambda p: p[1])
    mx = k.get(max_key)
    if mx is not None:
        pts.append((mx, 1.0))
    xs, ys = zip(*pts)
    st = {"marker": "o", "markersize": 3}
    st.update(style(c["impl"]))
    st.update(extra)
    ax.step(xs, ys, where="post", label="%s: %s" % (label(c["impl"]), describe(k, mx or 0)), **st)


def target_line(ax, x, text, y=0.05, vertical=True, linestyle="--"):
    """A target drawn as a thin red line at x (or y), with its text."""
    if vertical:
        ax.axvline(x, color=TP_COLOR, linestyle=linestyle, linewidth=1)
    else:
        ax.axhline(y, color=TP_COLOR, linestyle=linestyle, linewidth=1)
    ax.annotate(text, (x, y), fontsize=8, color=TP_COLOR, xytext=(4, 0 if vertical else 4),
                textcoords="offset points")


def log_x_axes(ax, xlabel, ylabel, title, legend_loc, legend_size, ylim=(0, 1.02)):
    """Finishes a plot over a log x axis (distributions, MMU curves)."""
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(*ylim)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc=legend_loc, fontsize=legend_size)
    ax.set_title(title, fontsize=10)


def subtitle(data):
    rounds = data.get("rounds", 0)
    q = ", --quick" if data.get("quick") else ""
    m = data.get("machine") or "?"
    return "medians of %d round%s%s; %s" % (rounds, "" if rounds == 1 else "s", q, m)


def save(fig, outdir, name, written):
    path = os.path.join(outdir, name)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(name)


def plot_burst(data, outdir, written):
    cs = cases_of(data, "burst")
    if not cs:
        return
    fig, ax = plt.subplots(figsize=(9, 5.2))
    for c in cs:
        pts = []
        for k, v in c["counters"].items():
            if k.startswith("rss_") and k.endswith("_MiB") and v is not None:
                pts.append((int(k[4:8]), v))
        if not pts:
            continue
        pts.sort()
        peak = c["counters"].get("peak_MiB")
        base = c["counters"].get("base_MiB")
        name = label(c["impl"]) + (" (sweeper, decay 1 s)" if c["impl"] == "tp" else "")
        if peak is not None:
            pts.insert(0, (-100, peak))  # the peak, just before the last put
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", markersize=3, label=name, **style(c["impl"]))
        if c["impl"] == "tp" and base is not None and peak is not None:
            ax.axhline(base + 0.1 * (peak - base), color=TP_COLOR, linestyle=":", linewidth=1)
            ax.annotate("base + 10% of peak", (2500, base + 0.1 * (peak - base)), color=TP_COLOR,
                        fontsize=8, ha="right", va="bottom")
    ax.set_ylim(bottom=0)
    top = ax.get_ylim()[1]
    ax.axvline(1000, color="grey", linestyle="--", linewidth=1)
    ax.annotate("sweeper decay (1 s)", (1000, top * 0.55), fontsize=8, ha="right", va="top",
                color="grey", xytext=(-4, 0), textcoords="offset points")
    ax.axvline(1500, color=TP_COLOR, linestyle="--", linewidth=1)
    ax.annotate("target: back\nby 1.5 s", (1500, top * 0.55), fontsize=8, ha="left", va="top",
                color=TP_COLOR, xytext=(4, 0), textcoords="offset points")
    ax.set_xlabel("ms since the last object was put back (the point at -100: the peak)")
    ax.set_ylabel("process RSS (MiB)")
    ax.set_xlim(-150, 2550)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, borderaxespad=0)
    ax.set_title("Burst: 4 threads take 4 M x 64 B (256 MiB), put everything back, then idle\n"
                 + subtitle(data), fontsize=10)
    save(fig, outdir, "burst_rss.png", written)


def plot_ratios(data, outdir, written):
    rows = data.get("ratios") or []
    if not rows:
        return
    peers = []
    for r in rows:
        for p in r["peers"]:
            if p not in peers:
                peers.append(p)
    grid = [[r["peers"].get(p) for p in peers] for r in rows]
    logs = [[math.log2(v) if v and v > 0 else float("nan") for v in row] for row in grid]
    finite = [abs(x) for row in logs for x in row if not math.isnan(x)]
    lim = max(1.0, min(6.0, max(finite) if finite else 1.0))
    fig, ax = plt.subplots(figsize=(1.5 + 1.05 * len(peers), 0.9 + 0.36 * len(rows)))
    cmap = matplotlib.colormaps["RdYlGn"].copy()
    cmap.set_bad("#eeeeee")
    import numpy as np
    arr = np.ma.masked_invalid(np.array(logs, dtype=float))
    im = ax.imshow(arr, cmap=cmap, norm=TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim), aspect="auto")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if v is None or not (v > 0):
                continue
            txt = ("%.0fx" % v) if v >= 100 else ("%.1fx" % v) if v >= 10 else ("%.2fx" % v)
            ax.text(j, i, txt, ha="center", va="center", fontsize=7.5,
                    color="white" if abs(math.log2(v)) > 0.75 * lim else "black")
    ax.set_xticks(range(len(peers)))
    ax.set_xticklabels([label(p) for p in peers], rotation=30, ha="right")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(["%s: %s%s" % (r["group"], r["workload"],
                                      "" if r["metric"] == "ns/op" else " (" + r["metric"] + ")")
                        for r in rows], fontsize=8)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    ticks = [t for t in range(-int(lim), int(lim) + 1)]
    cb.set_ticks(ticks)
    cb.set_ticklabels(["%gx" % (2.0 ** t) if t >= 0 else "1/%dx" % (2 ** -t) for t in ticks])
    cb.set_label("peer / tidepool (> 1: tidepool is better)")
    ax.set_title("tidepool vs each peer, per workload (ns/op unless noted)\n" + subtitle(data),
                 fontsize=10)
    save(fig, outdir, "ratios.png", written)


def plot_gc(data, outdir, written):
    pause = cases_of(data, "gc_pause_256m")
    tree = cases_of(data, "gc_tree_1g")
    if not pause and not tree and not cases_of(data, "gc_cycles"):
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [2.2, 1]})
    ax = axes[0]
    for c in cases_of(data, "gc_cycles"):
        cdf_step(ax, c, "pause_cdf", "_ms", None,
                 lambda k, mx: "cyclic garbage, small live heap: %.0f collections" % (
                     k.get("gcs") or 0))
    for c in pause:
        cdf_step(ax, c, "pause_cdf", "_ms", "pause_max_ms",
                 lambda k, mx: "256 MiB live: %.0f collections, mean %.1f ms" % (
                     k.get("gcs") or 0, k.get("pause_mean_ms") or 0),
                 linestyle="--", marker="s", markersize=6)
    log_x_axes(ax, "stop-the-world pause (ms, log scale)", "fraction of pauses <= x",
               "Stop-the-world pauses (gc_cycles: solid; gc_pause_256m: dashed)", "lower right", 8)
    ax = axes[1]
    names, secs, colors = [], [], []
    for c in tree:
        s = c["counters"].get("secs")
        if s is None:
            continue
        names.append(label(c["impl"]))
        secs.append(s)
        colors.append(TP_COLOR if c["impl"] == "tp" else "#7f7f7f")
    if secs:
        bars = ax.bar(names, secs, color=colors)
        for b, s in zip(bars, secs):
            ax.annotate("%.2f s" % s, (b.get_x() + b.get_width() / 2, s), ha="center", va="bottom",
                        fontsize=9)
        ax.set_ylabel("seconds")
        ax.set_title("One full collection, 1 GiB live tree", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    else:
        fig.delaxes(ax)  # gc_tree_1g did not run
    fig.suptitle("Tracing collectors: tp_heap vs Boehm GC — " + subtitle(data), fontsize=10)
    save(fig, outdir, "gc_pauses.png", written)


def plot_gcserver(data, outdir, written):
    sizes = [(w, ls) for w, ls in (("gcserver_256m", "-"), ("gcserver_1g", "--")) if cases_of(data, w)]
    if not sizes:
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    ax = axes[0]
    for w, ls in sizes:
        for c in cases_of(data, w):
            cdf_step(ax, c, "pause_cdf", "_ms", "stw_max_ms",
                     lambda k, mx, w=w: "%s: %.0f GCs, p99 %.4g ms" % (
                         w[len("gcserver_"):], k.get("gcs") or 0, k.get("stw_p99_ms") or 0),
                     linestyle=ls)
    target_line(ax, 1.0, "target: max <= 1 ms", linestyle=":")
    log_x_axes(ax, "stop-the-world pause (ms, log scale)", "fraction of pauses <= x",
               "Stop-the-world pauses (256 MiB solid, 1 GiB dashed)", "lower right", 7)
    ax = axes[1]
    for w, ls in sizes:
        for c in cases_of(data, w):
            pts = []
            for name, v in c["counters"].items():
                if name.startswith("mmu_") and name.endswith("ms") and v is not None:
                    mid = name[4:-2]
                    if mid.isdigit():
                        pts.append((int(mid), v))
            if not pts:
                continue
            pts.sort()
            xs, ys = zip(*pts)
            st = {"marker": "o", "markersize": 3}
            st.update(style(c["impl"]))
            ax.plot(xs, ys, linestyle=ls, label="%s %s" % (label(c["impl"]), w[len("gcserver_"):]),
                    **st)
    target_line(ax, 100, "target: MMU(100 ms) >= 0.5", y=0.5, vertical=False, linestyle=":")
    log_x_axes(ax, "window (ms, log scale)", "minimum mutator utilization (worst mutator)",
               "Minimum mutator utilization", "upper left", 7, ylim=(-0.02, 1.02))
    fig.suptitle("Server-like workload (issue 12): tp_heap, Boehm, Go — " + subtitle(data),
                 fontsize=10)
    save(fig, outdir, "gcserver.png", written)


def plot_retire(data, outdir, written):
    cs = cases_of(data, "retire_latency")
    if not cs:
        return
    fig, ax = plt.subplots(figsize=(9, 5))
    for c in cs:
        cdf_step(ax, c, "cdf", "_us", "max_us",
                 lambda k, mx: "p50 %.0f us, p99 %.0f us, max %.0f us" % (
                     k.get("p50_us") or 0, k.get("p99_us") or 0, mx))
    target_line(ax, 2000, "target: p99 <= 2 ms")
    log_x_axes(ax, "retire-to-free latency (us, log scale): from the retire to its callback",
               "fraction of retires freed within x",
               "Epochs: retire-to-free latency at 1 M retires/s\n" + subtitle(data), "upper left", 9)
    save(fig, outdir, "retire_latency.png", written)


def main():
    if len(sys.argv) != 3:
        print("usage: plots.py bench_data.json OUTDIR")
        return 2
    with open(sys.argv[1]) as f:
        data = json.load(f)
    outdir = sys.argv[2]
    written = []
    for fn in (plot_burst, plot_ratios, plot_gc, plot_gcserver, plot_retire):
        fn(data, outdir, written)
    if not written:
        print("plots: none (no workload with a plot ran); data in %s" % sys.argv[1])
        return 0
    print("plots: %s" % outdir)
    for w in written:
        print("  %s" % os.path.join(outdir, w))
    return 0


if __name__ == "__main__":
    sys.exit(main())
