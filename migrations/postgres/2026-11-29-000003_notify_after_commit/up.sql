-- NOTIFY leaves the commit path. A trigger that notified on every insert made each writing
-- transaction take PostgreSQL's global notify lock from pre-commit to commit end (on this kind of
-- machine, pgbench's update + insert dropped from ~8,800 to ~3,600 tps). Each instance now sends one
-- NOTIFY tether_events from a connection of its own after its commits, coalesced: at most one in
-- flight per instance. Readers still take the events from the outbox by seq; the notification is
-- only a wake-up (and every reader re-reads each second anyway).
DROP TRIGGER IF EXISTS session_events_notify ON session_events;
DROP FUNCTION IF EXISTS tether_notify_events();
