//! OpenAPI schemas of the values the domain validates or serializes (feature `openapi`, off by
//! default; `tether-api` enables it for its description at `/api/mcp/openapi.json`). They are built
//! from the same constants and spellings the rules use, so the description follows the code.

use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

use crate::session::{MAX_SESSION_ID_LEN, SessionStatus};

/// Every status, in the order of a session's life.
const STATUSES: [SessionStatus; 3] = [
    SessionStatus::Active,
    SessionStatus::Idle,
    SessionStatus::Disconnected,
];

/// Where `status` stands in [`STATUSES`]: a status added to the enum does not compile here until
/// it is listed there too.
const fn position(status: SessionStatus) -> usize {
    match status {
        SessionStatus::Active => 0,
        SessionStatus::Idle => 1,
        SessionStatus::Disconnected => 2,
    }
}

/// The schema of a session's `status`: one of the wire spellings of [`SessionStatus`].
pub fn status_schema() -> Object {
    let mut names = [""; STATUSES.len()];
    for status in STATUSES {
        names[position(status)] = status.as_str();
    }
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names))
        .build()
}

/// The schema of a session id as [`SessionId::parse`](crate::SessionId::parse) accepts it: 1–128
/// characters of `[A-Za-z0-9._:-]`, and neither `.` nor `..`.
pub fn session_id_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "A session's id: 1-128 characters of `[A-Za-z0-9._:-]`, not `.` or `..`.",
        ))
        .min_length(Some(1))
        .max_length(Some(MAX_SESSION_ID_LEN))
        .pattern(Some(SESSION_ID_PATTERN))
        .build()
}

/// The ECMA-262 pattern of a session id (the length is in the schema's bounds).
pub const SESSION_ID_PATTERN: &str = r"^(?!\.\.?$)[A-Za-z0-9._:-]+$";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_listed_in_order() {
        for (i, status) in STATUSES.iter().enumerate() {
            assert_eq!(position(*status), i);
            assert_eq!(SessionStatus::parse(status.as_str()).ok(), Some(*status));
        }
    }
}
