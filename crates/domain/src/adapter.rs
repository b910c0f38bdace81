//! For store adapters only: rebuilding a [`Session`] from a stored row without the checks that
//! [`Session::open`] makes (the row was valid when written). Everything else builds sessions through
//! `open` and changes them only through a store's atomic operations, whose rules the store contract
//! (`tether_domain::contract`, feature `contract`) checks.

use crate::session::{Session, SessionParts};

/// A session from its stored fields, as a store reads it back.
pub fn restore(parts: SessionParts) -> Session {
    Session::from_parts(parts)
}
