//! Creating and dropping whole PostgreSQL databases: for tests and benchmarks that need a fresh
//! database of their own, and for operators scripting a first install.

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

use crate::error::Error;

/// Whether `name` is safe to splice into `CREATE DATABASE` (identifiers cannot be bound parameters).
fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Url(format!(
            "database name {name:?} must be 1-63 of [a-z0-9_]"
        )))
    }
}

/// `url` with its database name replaced by `name`.
///
/// # Errors
/// [`Error::Url`] when `url` has no path part to replace.
pub fn with_database(url: &str, name: &str) -> Result<String, Error> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let slash = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .ok_or_else(|| Error::Url("the PostgreSQL URL names no database".into()))?;
    let mut out = format!("{}/{name}", &base[..slash]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// Creates database `name` through the server that `admin_url` points at, and returns its URL.
///
/// # Errors
/// [`Error::Connect`] or [`Error::Query`] when the server refuses.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, Error> {
    check_name(name)?;
    let mut conn = AsyncPgConnection::establish(admin_url)
        .await
        .map_err(|e| Error::Connect(Box::new(e)))?;
    conn.batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    with_database(admin_url, name)
}

/// Drops database `name`, closing its connections first.
///
/// # Errors
/// [`Error::Connect`] or [`Error::Query`] when the server refuses.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), Error> {
    check_name(name)?;
    let mut conn = AsyncPgConnection::establish(admin_url)
        .await
        .map_err(|e| Error::Connect(Box::new(e)))?;
    conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced_and_checked() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x1").unwrap(),
            "postgres://u@h:5432/x1"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x").unwrap(),
            "postgres://u@h/x?sslmode=disable"
        );
        assert!(with_database("postgres://u@h", "x").is_err());
        assert!(check_name("a; DROP").is_err());
        assert!(check_name("Upper").is_err());
    }
}
