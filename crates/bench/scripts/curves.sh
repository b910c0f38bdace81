#!/usr/bin/env bash
# curves.sh [OUT_DIR=docs/bench]   (make bench): the cost curves of BENCHMARKS.md, measured with the
# release binaries (curves.py) and drawn as PNGs (plot_curves.py, matplotlib in target/plot-venv).
# Needs PostgreSQL at 127.0.0.1:5432, wrk, and ../shared/peer (reconnect.sh). QUICK=1: fewer points.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
out="${1:-$root/docs/bench}"
"$root/tests/pyvenv.sh" target/plot-venv "$root/crates/bench/scripts/plot-requirements.txt" matplotlib >&2
python3 "$root/crates/bench/scripts/curves.py" "$root/target/release/tether" \
  "$root/target/release/tether-bench-ws" "$out" ${QUICK:+--quick}
"$root/target/plot-venv/bin/python" "$root/crates/bench/scripts/plot_curves.py" "$out/curves.json" "$out"
echo "plots: $out/reconnect.png $out/rss.png $out/dashboards.png" >&2
