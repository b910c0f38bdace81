-- The outbox: every state change writes its event here in the same transaction. `seq` is the event's
-- position for dashboards (resume with ?since=seq).
CREATE TABLE session_events (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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

-- Every instance LISTENs on tether_events and reads new rows by seq. A statement trigger notifies once
-- per writing statement, at commit (NOTIFY is transactional), without a round trip of the writer's.
CREATE FUNCTION tether_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tether_events', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER session_events_notify
    AFTER INSERT ON session_events
    FOR EACH STATEMENT EXECUTE FUNCTION tether_notify_events();
