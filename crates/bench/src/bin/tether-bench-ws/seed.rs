//! Sessions written straight into a database before its server starts, through the same persistence
//! code the server uses (each insert writes the session and its `session_created` event to the
//! outbox in one transaction). Several MiB of backlog over HTTP would take longer than the rest of
//! a round; here it takes a second or two, and no dashboard is connected to receive it live.

use std::time::Duration;

use tether_domain::{
    Change, Clock, EventKind, Metadata, NewSession, Session, SessionId, SessionStore, SystemClock,
};
use tether_persistence::{Database, Options};

use crate::BoxError;

/// Inserts a session named after each of `ids`, in order, with `client_type`.
///
/// # Errors
/// When the database cannot be opened or migrated, an id is invalid, or an insert fails.
pub fn sessions(url: &str, ids: Vec<String>, client_type: &str) -> Result<(), BoxError> {
    let (url, client_type) = (url.to_owned(), client_type.to_owned());
    // A thread of its own: the caller is inside the controller's runtime, which cannot block on
    // another, and migrations need a multi-threaded runtime (see PITFALLS).
    let worker =
        std::thread::Builder::new()
            .name("seed".into())
            .spawn(move || -> Result<(), String> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(insert_all(&url, ids, &client_type))
            })?;
    worker
        .join()
        .map_err(|_| "the seeding thread panicked")?
        .map_err(Into::into)
}

async fn insert_all(url: &str, ids: Vec<String>, client_type: &str) -> Result<(), String> {
    let db = Database::connect(
        url,
        Options {
            max_connections: 2,
            timeout: Duration::from_secs(10),
        },
    )
    .await
    .map_err(|e| format!("seed: {e}"))?;
    for id in ids {
        let now = SystemClock.now();
        let session = Session::open(
            NewSession {
                session_id: SessionId::parse(&id).map_err(|e| format!("seed {id}: {e}"))?,
                client_type: client_type.to_owned(),
                client_version: None,
                principal: None,
                metadata: Metadata::default(),
            },
            now,
        )
        .map_err(|e| format!("seed {id}: {e}"))?;
        let change = Change {
            at: now,
            event: EventKind::Created,
        };
        db.insert(&session, change)
            .await
            .map_err(|e| format!("seed {id}: {e}"))?;
    }
    Ok(())
}
