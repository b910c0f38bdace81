CREATE FUNCTION tether_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tether_events', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER session_events_notify
    AFTER INSERT ON session_events
    FOR EACH STATEMENT EXECUTE FUNCTION tether_notify_events();
