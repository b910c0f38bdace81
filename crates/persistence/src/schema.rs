//! The tables, as diesel sees them. One definition serves both backends: the migrations use only
//! types that map to the same diesel SQL types on SQLite and PostgreSQL.

diesel::table! {
    /// One row per session.
    sessions (session_id) {
        /// Id.
        session_id -> Text,
        /// Kind of client.
        client_type -> Text,
        /// Client version.
        client_version -> Nullable<Text>,
        /// Owner.
        principal -> Nullable<Text>,
        /// `active`, `idle` or `disconnected`.
        status -> Text,
        /// Microseconds since the epoch.
        connected_at -> BigInt,
        /// Microseconds since the epoch.
        last_activity -> BigInt,
        /// Microseconds since the epoch.
        idle_since -> Nullable<BigInt>,
        /// Microseconds since the epoch.
        disconnected_at -> Nullable<BigInt>,
        /// Why it ended.
        disconnect_reason -> Nullable<Text>,
        /// Successful reconnects.
        reconnect_count -> BigInt,
        /// JSON object.
        metadata -> Text,
        /// SHA-256 of the live token.
        token_hash -> Nullable<Binary>,
        /// Microseconds since the epoch.
        token_expires_at -> Nullable<BigInt>,
        /// SHA-256 of the token consumed by the last reconnect.
        prev_token_hash -> Nullable<Binary>,
        /// Microseconds since the epoch.
        token_rotated_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// Service-wide settings.
    settings (name) {
        /// Setting name.
        name -> Text,
        /// Its value.
        value -> Text,
    }
}

diesel::table! {
    /// The outbox: one row per lifecycle event, written with its change.
    session_events (seq) {
        /// Position; increasing.
        seq -> BigInt,
        /// Session the event is about.
        session_id -> Text,
        /// `session_created`, `session_updated`, ...
        kind -> Text,
        /// For `session_updated`.
        update_type -> Nullable<Text>,
        /// Microseconds since the epoch.
        at -> BigInt,
        /// Session state after the change.
        status -> Text,
        /// Session client type.
        client_type -> Text,
        /// Session reconnect count after the change.
        reconnect_count -> BigInt,
        /// For `session_disconnected`.
        reason -> Nullable<Text>,
    }
}
