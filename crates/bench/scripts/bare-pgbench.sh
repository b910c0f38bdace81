#!/usr/bin/env bash
# bare-pgbench.sh TETHER [CLIENTS=32] [SECONDS=15]: the PostgreSQL ceiling that issue 9 compares the
# reconnect with ("the bare statement without any NOTIFY"). The reconnect's statement of
# crates/persistence/src/postgres.rs (the token compare-and-swap and its outbox row, one CTE), alone:
# no HTTP, no tether, prepared, fired by pgbench from CLIENTS connections at random sessions among
# 100,000, on a fresh database migrated by TETHER itself (so the schema, indexes and the absence of a
# NOTIFY trigger are the shipped ones). Needs PostgreSQL at 127.0.0.1:5432 and pgbench. Prints
# pgbench's summary; compare its tps with the req/s of side_by_side.sh on the same machine.
set -euo pipefail
tether="$(realpath "$1")"
clients="${2:-32}"
seconds="${3:-15}"
pg=(-h 127.0.0.1 -U postgres)
db="bare_$$_$(date +%s)"
work="$(mktemp -d)"
createdb "${pg[@]}" "$db"
cleanup() {
  [[ -n "${server:-}" ]] && kill "$server" 2>/dev/null || true
  dropdb "${pg[@]}" --if-exists "$db"
  rm -rf "$work"
}
trap cleanup EXIT

# Migrate: start tether on the database once and stop it.
env -i PATH="$PATH" DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" \
  MCP_API_KEY=bare-pgbench-api-key-0123456789 \
  MCP_SESSION_SECRET=bare-pgbench-signing-secret-0123456789abcdef \
  TETHER_SERVER__BIND=127.0.0.1:0 TETHER_LOG__LEVEL=warn "$tether" > "$work/out" 2>&1 &
server=$!
for _ in $(seq 300); do
  grep -q "listening on" "$work/out" && break
  sleep 0.1
done
grep -q "listening on" "$work/out" || { cat "$work/out"; exit 1; }
kill -TERM "$server"
wait "$server" || true
server=

# Every session's live token hash is sha256('stored-N'); the statement presents it and installs it
# again, so every execution finds its row and changes it, as a successful reconnect does.
psql -q "${pg[@]}" -d "$db" -v ON_ERROR_STOP=1 <<'SQL'
INSERT INTO sessions (session_id, client_type, client_version, principal, status, connected_at,
                      last_activity, metadata, token_hash, token_expires_at)
SELECT 'stored-' || g, 'bench-client', '1.0.0', 'user-' || (g % 1000), 'active', 1700000000000000,
       1700000000000000, '{"team":"bench"}', sha256(('stored-' || g)::bytea), 4102444800000000
FROM generate_series(1, 100000) g;
VACUUM ANALYZE sessions;
SQL

cat > "$work/single.sql" <<'SQL'
\set id random(1, 100000)
WITH s AS (UPDATE sessions SET prev_token_hash = token_hash, token_hash = sha256(('stored-' || :id)::bytea), token_expires_at = 4102444800000000, token_rotated_at = 1800000000000000, reconnect_count = reconnect_count + 1, status = 'active', last_activity = 1800000000000000, idle_since = NULL WHERE session_id = 'stored-' || :id AND status <> 'disconnected' AND token_hash = sha256(('stored-' || :id)::bytea) AND token_expires_at > 1800000000000000 RETURNING *), e AS (INSERT INTO session_events (session_id, kind, update_type, at, status, client_type, reconnect_count, reason) SELECT session_id, 'reconnected', NULL, 1800000000000000, status, client_type, reconnect_count, disconnect_reason FROM s RETURNING seq) SELECT s.*, e.seq FROM s, e;
SQL
pgbench "${pg[@]}" -n -c "$clients" -j 2 -T "$seconds" -M prepared -f "$work/single.sql" "$db"
# Every transaction above must have changed its row and written its outbox row.
echo "outbox rows written: $(psql -tA "${pg[@]}" -d "$db" -c 'SELECT count(*) FROM session_events')"
