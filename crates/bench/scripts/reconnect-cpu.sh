#!/usr/bin/env bash
# reconnect-cpu.sh TETHER_BINARY [N=6000] [C=32]   (env: PERF=1 to also sample tether with perf)
#
# Where the CPU of a reconnect goes, on PostgreSQL: one tether on a fresh database, N single-use
# reconnects fired by wrk at C connections exactly as ../shared/peer/reconnect.sh fires them (its
# prepare.py and reconnect.lua), and the CPU time each party spent during the wrk phase only:
# tether, PostgreSQL (all of its processes) and wrk, per reconnect. With PERF=1, tether is sampled
# by `perf record -e cpu-clock -g` during that phase and the top of `perf report` is printed.
set -euo pipefail
TETHER="$(realpath "${1:?usage: reconnect-cpu.sh TETHER_BINARY [N] [C]}")"; N="${2:-6000}"; C="${3:-32}"
HERE="$(cd "$(dirname "$0")" && pwd)"; PEER="$HERE/../../../../shared/peer"
[ -f "$PEER/prepare.py" ] || { echo "reconnect-cpu.sh: $PEER/prepare.py missing" >&2; exit 1; }
command -v wrk >/dev/null || { echo "reconnect-cpu.sh: wrk missing (apt-get install -y wrk)" >&2; exit 1; }
export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres
KEY="bench-$(head -c 12 /dev/urandom | base64 | tr -dc A-Za-z0-9)"; PORT=18943
DB="cpu_$$_$RANDOM"; WORK="$(mktemp -d)"; SRV=""; PERF_PID=""
cleanup() { [ -n "$PERF_PID" ] && kill -INT "$PERF_PID" 2>/dev/null; [ -n "$SRV" ] && kill "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null
            dropdb --if-exists "$DB"; rm -rf "$WORK"; }
trap cleanup EXIT

ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }   # utime + stime, clock ticks
pg_ticks() { local t=0 p; for p in $(pgrep -x postgres); do t=$((t + $(ticks "$p"))); done; echo "$t"; }
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }                      # machine, all cores

createdb "$DB"
TETHER_LIMITS__RECONNECT_PER_ADDRESS=0 DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" MCP_API_KEY="$KEY" TETHER_SERVER__BIND="127.0.0.1:$PORT" \
  "$TETHER" >"$WORK/tether.log" 2>&1 &
SRV=$!
for _ in $(seq 150); do curl -sf "http://127.0.0.1:$PORT/api/mcp/health" >/dev/null && break; sleep 0.2; done
python3 "$PEER/prepare.py" "http://127.0.0.1:$PORT/api/mcp" "$KEY" "$N" "$WORK/pairs" 16
mkdir "$WORK/done"
if [ "${PERF:-0}" = 1 ]; then
  perf record -q -e cpu-clock -F "${PERF_FREQ:-2000}" --call-graph "${PERF_CALLGRAPH:-fp}" -p "$SRV" -o "$WORK/perf.data" 2>/dev/null & PERF_PID=$!
  sleep 0.5
fi
t0=$(ticks "$SRV"); p0=$(pg_ticks); m0=$(busy); s0=$(date +%s.%N)
BENCH_PAIRS="$WORK/pairs" BENCH_DONE="$WORK/done" BENCH_THREADS="$C" BENCH_N="$N" BENCH_KEY="$KEY" \
BENCH_PATH=/api/mcp wrk -t"$C" -c"$C" -d120s --timeout 30s -s "$PEER/reconnect.lua" "http://127.0.0.1:$PORT/" >"$WORK/out" 2>&1 &
WRK=$!
while kill -0 "$WRK" 2>/dev/null && [ "$(ls "$WORK/done" | wc -l)" -lt "$C" ]; do sleep 0.05; done
w=$(ticks "$WRK"); t1=$(ticks "$SRV"); p1=$(pg_ticks); m1=$(busy); s1=$(date +%s.%N)
kill -INT "$WRK" 2>/dev/null || true; wait "$WRK" || true
if [ -n "$PERF_PID" ]; then kill -INT "$PERF_PID"; wait "$PERF_PID" || true; PERF_PID=""; fi
grep '^reconnect:' "$WORK/out" || { cat "$WORK/out" >&2; exit 1; }
HZ=$(getconf CLK_TCK)
python3 - "$N" "$HZ" "$((t1 - t0))" "$((p1 - p0))" "$w" "$((m1 - m0))" "$s0" "$s1" <<'PY'
import sys
n, hz, t, p, w, m, s0, s1 = int(sys.argv[1]), int(sys.argv[2]), *map(int, sys.argv[3:7]), *map(float, sys.argv[7:9])
us = lambda ticks: ticks / hz * 1e6 / n
wall = s1 - s0
print(f"cpu per reconnect: tether {us(t):.0f} us, postgres {us(p):.0f} us, wrk {us(w):.0f} us, "
      f"machine {us(m):.0f} us (busy {m / hz / wall:.2f} of 2 cores over {wall:.2f} s)")
PY
if [ -f "$WORK/perf.data" ]; then
  OUT="${PERF_OUT:-/tmp/tether-reconnect.perf.data}"; cp "$WORK/perf.data" "$OUT"
  echo "perf data: $OUT (top symbols of tether, self time):"
  perf report -i "$OUT" --no-children --sort dso,symbol --stdio -g none 2>/dev/null \
    | grep '%' | cut -c1-150 | head -"${PERF_TOP:-40}" || true
fi
