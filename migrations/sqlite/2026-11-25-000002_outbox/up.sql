-- The outbox: every state change writes its event here in the same transaction. `seq` is the event's
-- position for dashboards (resume with ?since=seq). AUTOINCREMENT so that ids of pruned rows are never
-- handed out again.
CREATE TABLE session_events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id      TEXT NOT NULL,
    kind            TEXT NOT NULL,
    update_type     TEXT,
    at              BIGINT NOT NULL,
    status          TEXT NOT NULL,
    client_type     TEXT NOT NULL,
    reconnect_count BIGINT NOT NULL,
    reason          TEXT
);

-- Pruning by age.
CREATE INDEX session_events_by_time ON session_events (at);
