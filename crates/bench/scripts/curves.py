#!/usr/bin/env python3
"""The cost curves of issue 9 (BENCHMARKS.md, "Cost curves"), measured against the real binary.

    curves.py TETHER TETHER_BENCH_WS OUT_DIR [--quick]

1. Reconnect throughput and p99 at 1, 8, 32 and 128 client connections, on PostgreSQL and SQLite:
   for each point a fresh database and a fresh tether, then ../shared/peer/reconnect.sh (N
   single-use reconnects fired by wrk, the side-by-side load).
2. Tether's RSS with 10k, 100k and 1M sessions stored (PostgreSQL): the rows are written straight
   into the database before tether starts; RSS after start, then after a page of the list, the
   counts, a metrics scrape and a dashboard that received a health_update.
3. Dashboard delivery p99 at 1k, 5k and 9k dashboards (tether-bench-ws --pin: the bench on one core,
   the server on the other; health=summary). 10k cannot
   run on a machine whose hard `ulimit -n` is 20,000: each dashboard holds two descriptors.

Writes OUT_DIR/curves.json and prints Markdown tables; plot_curves.py draws the PNGs from the JSON.
"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.normpath(os.path.join(HERE, "../../../../shared/peer"))
PG = "postgres://postgres@127.0.0.1:5432"
KEY = "curves-api-key-0123456789abcdef"
SECRET = "curves-signing-secret-0123456789abcdef0123456789"


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(db, sql):
    subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-v",
                    "ON_ERROR_STOP=1", "-c", sql], check=True, stdout=subprocess.DEVNULL)


class Tether:
    """One tether on 127.0.0.1, stopped with SIGTERM."""

    def __init__(self, binary, url, extra=None):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "MCP_"))}
        env.update({"DATABASE_URL": url, "MCP_API_KEY": KEY, "MCP_SESSION_SECRET": SECRET,
                    "TETHER_SERVER__BIND": f"127.0.0.1:{self.port}", "TETHER_LOG__LEVEL": "warn",
                    "TETHER_LIMITS__RECONNECT_PER_ADDRESS": "0"})
        env.update(extra or {})
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([binary], env=env, stdout=self.log, stderr=self.log)
        self.base = f"http://127.0.0.1:{self.port}/api/mcp"
        for _ in range(300):
            try:
                urllib.request.urlopen(self.base + "/health", timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("tether did not start")

    def get(self, path):
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {KEY}"})
        return urllib.request.urlopen(req, timeout=60).read()

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read())[1])

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def fresh_pg():
    name = f"curves_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)
    return name


def drop_pg(name):
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", name], check=True)


LINE = re.compile(r"reconnect: (\d+) requests, (\S+) req/s, p50 (\S+) ms, p99 (\S+) ms, non-2xx (\d+)")


def reconnect_point(binary, backend, conns, n):
    if backend == "postgres":
        db = fresh_pg()
        url = f"{PG}/{db}"
    else:
        tmp = tempfile.mkdtemp(prefix="curves-")
        url = f"sqlite://{tmp}/tether.db"
    server = Tether(binary, url)
    try:
        out = subprocess.run([f"{PEER}/reconnect.sh", server.base, KEY, str(n), str(conns)],
                             check=True, capture_output=True, text=True).stdout
    finally:
        server.stop()
        if backend == "postgres":
            drop_pg(db)
        else:
            subprocess.run(["rm", "-rf", tmp], check=True)
    m = LINE.search(out)
    if not m:
        raise RuntimeError(f"no result line in {out!r}")
    return {"connections": conns, "requests": int(m[1]), "req_per_s": float(m[2]),
            "p50_ms": float(m[3]), "p99_ms": float(m[4]), "non_2xx": int(m[5])}


def rss_point(binary, sessions):
    db = fresh_pg()
    try:
        Tether(binary, f"{PG}/{db}").stop()  # migrates
        now = int(time.time() * 1e6)
        psql(db, f"""INSERT INTO sessions (session_id, client_type, client_version, principal, status,
                 connected_at, last_activity, metadata, token_hash, token_expires_at)
                 SELECT 'stored-' || g, 'bench-client', '1.0.0', 'user-' || (g % 1000), 'active',
                 {now} - g, {now} - g, '{{"team":"bench"}}', sha256(g::text::bytea),
                 {now} + 900000000 FROM generate_series(1, {sessions}) g""")
        psql(db, "VACUUM ANALYZE sessions")
        server = Tether(binary, f"{PG}/{db}", {"TETHER_WS__HEALTH_INTERVAL_MS": "1000"})
        try:
            started = server.rss_kib()
            page = json.loads(server.get("/sessions?limit=500"))
            assert len(page["sessions"]) == 500
            server.get("/sessions?status=active&limit=50")
            urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{server.port}/metrics",
                headers={"Authorization": f"Bearer {KEY}"}), timeout=60).read()
            health = dashboard_health(server)
            return {"sessions": sessions, "rss_start_kib": started,
                    "rss_after_kib": server.rss_kib(), "health_total": health}
        finally:
            server.stop()
    finally:
        drop_pg(db)


def dashboard_health(server):
    """Opens the dashboard stream with the API key and waits for one health_update."""
    import base64
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /api/mcp/ws/sessions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
               f"Authorization: Bearer {KEY}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    assert buf.startswith(b"HTTP/1.1 101"), buf[:80]
    buf = buf.split(b"\r\n\r\n", 1)[1]
    deadline = time.time() + 30
    while time.time() < deadline:
        while len(buf) >= 2:
            n, off = buf[1] & 0x7F, 2
            if n == 126:
                n, off = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                n, off = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < off + n:
                break
            payload, buf = buf[off:off + n], buf[off + n:]
            if payload.startswith(b"{"):
                msg = json.loads(payload)
                if msg.get("type") == "health_update":
                    s.close()
                    return msg["data"]["status_breakdown"]["total"]
        buf += s.recv(1 << 20)
    raise RuntimeError("no health_update within 30 s")


DELIVERY = re.compile(r"delivery latency, N = ([\d,]+), p50 / p99 / max \| ([\d.]+) / ([\d.]+) / ([\d.]+) ms")


def dashboard_points(binary, bench_ws, counts):
    # --pin: the bench on one core, the server on the other, so that the figure is the server's.
    out = subprocess.run([bench_ws, "--tether", binary, "--pin", "--phases", "latency", "--pairs", "1",
                          "--health", "summary", "--dashboards", ",".join(map(str, counts))],
                         check=True, capture_output=True, text=True).stdout
    points = [{"dashboards": int(m[1].replace(",", "")), "p50_ms": float(m[2]),
               "p99_ms": float(m[3]), "max_ms": float(m[4])} for m in DELIVERY.finditer(out)]
    if len(points) != len(counts):
        raise RuntimeError(f"expected {len(counts)} delivery rows in:\n{out}")
    return points


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    binary, bench_ws, out_dir = (os.path.abspath(p) for p in sys.argv[1:4])
    quick = "--quick" in sys.argv
    os.makedirs(out_dir, exist_ok=True)
    result = {"machine": f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "reconnect": {}, "rss": [], "dashboards": []}
    n = 600 if quick else 3000
    for backend in ("postgres", "sqlite"):
        result["reconnect"][backend] = []
        for conns in (1, 8, 32, 128):
            log(f"reconnect, {backend}, {conns} connections, {n} reconnects")
            p = reconnect_point(binary, backend, conns, n)
            log(f"  {p['req_per_s']:.0f} req/s, p99 {p['p99_ms']:.2f} ms, non-2xx {p['non_2xx']}")
            result["reconnect"][backend].append(p)
    for sessions in ((10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)):
        log(f"RSS with {sessions} stored sessions")
        p = rss_point(binary, sessions)
        log(f"  {p['rss_start_kib']} KiB at start, {p['rss_after_kib']} KiB after the reads")
        result["rss"].append(p)
    counts = [200, 1000] if quick else [1000, 5000, 9000]
    log(f"dashboard delivery at {counts}")
    result["dashboards"] = dashboard_points(binary, bench_ws, counts)
    with open(os.path.join(out_dir, "curves.json"), "w") as f:
        json.dump(result, f, indent=1)

    print("| backend | connections | req/s | p50 ms | p99 ms | non-2xx |\n|---|---|---|---|---|---|")
    for backend, points in result["reconnect"].items():
        for p in points:
            print(f"| {backend} | {p['connections']} | {p['req_per_s']:.0f} | {p['p50_ms']:.2f} | "
                  f"{p['p99_ms']:.2f} | {p['non_2xx']} |")
    print("\n| sessions stored | RSS at start | RSS after list, counts, metrics, a health_update |\n|---|---|---|")
    for p in result["rss"]:
        print(f"| {p['sessions']:,} | {p['rss_start_kib'] / 1024:.1f} MiB | {p['rss_after_kib'] / 1024:.1f} MiB |")
    print("\n| dashboards | delivery p50 | p99 | max |\n|---|---|---|---|")
    for p in result["dashboards"]:
        print(f"| {p['dashboards']:,} | {p['p50_ms']:.1f} ms | {p['p99_ms']:.1f} ms | {p['max_ms']:.1f} ms |")


if __name__ == "__main__":
    main()
