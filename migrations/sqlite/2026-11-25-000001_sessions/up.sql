-- Sessions: times are microseconds since the Unix epoch (BIGINT) so both backends store and order them
-- identically; token hashes are raw SHA-256 (32 bytes). No plaintext token is ever stored.
CREATE TABLE sessions (
    session_id        TEXT PRIMARY KEY NOT NULL,
    client_type       TEXT NOT NULL,
    client_version    TEXT,
    principal         TEXT,
    status            TEXT NOT NULL CHECK (status IN ('active', 'idle', 'disconnected')),
    connected_at      BIGINT NOT NULL,
    last_activity     BIGINT NOT NULL,
    idle_since        BIGINT,
    disconnected_at   BIGINT,
    disconnect_reason TEXT,
    reconnect_count   BIGINT NOT NULL DEFAULT 0,
    metadata          TEXT NOT NULL DEFAULT '{}',
    token_hash        BLOB,
    token_expires_at  BIGINT,
    prev_token_hash   BLOB,
    token_rotated_at  BIGINT
);

-- The list order (newest activity first, id as tie-breaker) and the sweep's scans.
CREATE INDEX sessions_by_activity ON sessions (last_activity DESC, session_id DESC);
CREATE INDEX sessions_by_status_activity ON sessions (status, last_activity);

-- Service-wide settings, such as the generated signing secret every instance must share.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
