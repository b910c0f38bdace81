DROP TRIGGER session_events_notify ON session_events;
DROP FUNCTION tether_notify_events();
DROP TABLE session_events;
