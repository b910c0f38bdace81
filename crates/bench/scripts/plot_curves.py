#!/usr/bin/env python3
"""Draws the cost curves (curves.py's JSON) as PNGs: plot_curves.py CURVES_JSON OUT_DIR."""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def save(fig, out_dir, name):
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    plt.close(fig)


def main():
    data = json.load(open(sys.argv[1]))
    out = sys.argv[2]
    note = f"{data['machine']}, {data['date']}"

    fig, (tput, p99) = plt.subplots(1, 2, figsize=(10, 4))
    for backend, points in data["reconnect"].items():
        x = [p["connections"] for p in points]
        tput.plot(x, [p["req_per_s"] for p in points], marker="o", label=backend)
        p99.plot(x, [p["p99_ms"] for p in points], marker="o", label=backend)
    for ax, title, unit in ((tput, "Reconnect throughput", "req/s"), (p99, "Reconnect p99", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 8, 32, 128], ["1", "8", "32", "128"])
        ax.set_xlabel("client connections (wrk)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Reconnect cost curve ({note})", fontsize=9)
    save(fig, out, "reconnect.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    x = [p["sessions"] for p in data["rss"]]
    ax.plot(x, [p["rss_start_kib"] / 1024 for p in data["rss"]], marker="o", label="at start")
    ax.plot(x, [p["rss_after_kib"] / 1024 for p in data["rss"]], marker="o",
            label="after list, counts, metrics, health_update")
    ax.set_xscale("log")
    ax.set_xlabel("sessions stored (PostgreSQL)")
    ax.set_ylabel("tether RSS, MiB")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Memory vs stored sessions\n({note})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, out, "rss.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    x = [p["dashboards"] for p in data["dashboards"]]
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max")):
        ax.plot(x, [p[key] for p in data["dashboards"]], marker="o", label=label)
    ax.axhline(100, color="grey", linestyle="--", linewidth=1, label="p99 target")
    ax.set_xlabel("dashboards on one instance (health=summary)")
    ax.set_ylabel("event delivery latency, ms")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Dashboard delivery vs dashboards\n({note})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, out, "dashboards.png")


if __name__ == "__main__":
    main()
