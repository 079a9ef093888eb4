#!/usr/bin/python3
"""bench/server/plot_rss.py — //bench:server's picture: the RSS of memcached
and tpcache over time after a delete of everything and after flush_all,
one line per repetition, from the driver's rss.csv.

  plot_rss.py rss.csv rss.png ITEMS
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    src, dst, items = sys.argv[1], sys.argv[2], int(sys.argv[3])
    curves = defaultdict(list)  # (server, variant, rep) -> [(t, mib)]
    ends = {}
    with open(src) as f:
        for row in csv.DictReader(f):
            k = (row["server"], row["variant"], int(row["rep"]))
            if row["rss_mib"] != "-":
                curves[k].append((float(row["t_s"]), float(row["rss_mib"])))
            if row["delete_end_s"] != "-":
                ends[k] = float(row["delete_end_s"])
    colors = {"memcached": "tab:red", "tpcache": "tab:blue"}
    variants = [v for v in ("delete", "flush") if any(k[1] == v for k in curves)]
    fig, axes = plt.subplots(1, len(variants), figsize=(6.5 * len(variants), 4.5), squeeze=False, sharey=True)
    for ax, v in zip(axes[0], variants):
        labelled = set()
        for (srv, var, rep), pts in sorted(curves.items()):
            if var != v:
                continue
            t = [p[0] for p in pts]
            m = [p[1] for p in pts]
            ax.plot(t, m, color=colors.get(srv, "k"), alpha=0.75, linewidth=1.2,
                    label=None if srv in labelled else srv)
            labelled.add(srv)
            if (srv, var, rep) in ends:
                ax.axvline(ends[(srv, var, rep)], color=colors.get(srv, "k"), alpha=0.25, linestyle=":")
        what = "delete of every item" if v == "delete" else "flush_all"
        ax.set_title("RSS after %s (%d x 1000 B items)" % (what, items))
        ax.set_xlabel("seconds since the %s started (dotted: it ended)" % ("delete" if v == "delete" else "flush_all"))
        ax.set_ylabel("RSS, MiB (VmRSS, every 100 ms)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main()
