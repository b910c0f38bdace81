//! `schema.rs` against the migrations, on both backends: migrate a fresh database, read its columns
//! back from the database's own catalogue, and compare them with the `diesel::table!` definitions,
//! column by column (name, type, nullability). A migration that adds, drops or retypes a column
//! without the schema following (or the reverse) fails here, not at a query in production.

use std::collections::BTreeMap;

use diesel::sql_types::{Integer, Text};
use diesel::{Connection as _, QueryableByName, RunQueryDsl as _};

use crate::support::{Connect as _, TestDb};

/// A column as declared or as found: its type family and whether it may be NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    kind: &'static str,
    nullable: bool,
}

type Tables = BTreeMap<String, BTreeMap<String, Column>>;

/// The tables of `schema.rs`, read from its text: `name (pk) { col -> Type, ... }` blocks.
fn declared() -> Tables {
    let text = include_str!("../../src/schema.rs");
    let mut tables = Tables::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with("///") || line.starts_with("//") || line.is_empty() {
            continue;
        }
        if let Some((name, _)) = line.split_once(" (")
            && line.ends_with('{')
        {
            current = Some(name.trim().to_owned());
            tables.entry(name.trim().to_owned()).or_default();
            continue;
        }
        if line == "}" {
            current = None;
            continue;
        }
        if let (Some(table), Some((col, ty))) = (&current, line.split_once("->")) {
            let ty = ty.trim().trim_end_matches(',');
            let (nullable, ty) = match ty.strip_prefix("Nullable<") {
                Some(inner) => (true, inner.trim_end_matches('>')),
                None => (false, ty),
            };
            let kind = match ty {
                "Text" => "text",
                "BigInt" => "bigint",
                "Binary" => "binary",
                other => panic!("schema.rs uses {other}: teach this test its SQL family"),
            };
            tables
                .get_mut(table)
                .unwrap()
                .insert(col.trim().to_owned(), Column { kind, nullable });
        }
    }
    assert!(tables.len() >= 3, "parsed {tables:?}");
    tables
}

#[derive(QueryableByName)]
struct SqliteColumn {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    r#type: String,
    #[diesel(sql_type = Integer)]
    notnull: i32,
    #[diesel(sql_type = Integer)]
    pk: i32,
}

#[derive(QueryableByName)]
struct Named {
    #[diesel(sql_type = Text)]
    name: String,
}

fn sqlite_found(path: &str) -> Tables {
    let mut conn = diesel::sqlite::SqliteConnection::establish(path).unwrap();
    let names: Vec<Named> = diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '__diesel%'",
    )
    .load(&mut conn)
    .unwrap();
    let mut tables = Tables::new();
    for Named { name } in names {
        let cols: Vec<SqliteColumn> = diesel::sql_query(format!("PRAGMA table_info({name})"))
            .load(&mut conn)
            .unwrap();
        let cols = cols
            .into_iter()
            .map(|c| {
                let kind = match c.r#type.to_ascii_uppercase().as_str() {
                    "TEXT" => "text",
                    // An INTEGER PRIMARY KEY is SQLite's 64-bit rowid.
                    "BIGINT" | "INTEGER" => "bigint",
                    "BLOB" => "binary",
                    other => panic!("{name}.{}: SQLite type {other}", c.name),
                };
                let nullable = c.notnull == 0 && c.pk == 0;
                (c.name, Column { kind, nullable })
            })
            .collect();
        tables.insert(name, cols);
    }
    tables
}

#[derive(QueryableByName)]
struct PgColumn {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = Text)]
    is_nullable: String,
}

async fn postgres_found(url: &str) -> Tables {
    use diesel_async::AsyncConnection as _;
    let mut conn = diesel_async::AsyncPgConnection::establish(url)
        .await
        .unwrap();
    let query = diesel::sql_query(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name NOT LIKE '__diesel%'",
    );
    let cols: Vec<PgColumn> = diesel_async::RunQueryDsl::load(query, &mut conn)
        .await
        .unwrap();
    let mut tables = Tables::new();
    for c in cols {
        let kind = match c.data_type.as_str() {
            "text" => "text",
            "bigint" => "bigint",
            "bytea" => "binary",
            other => panic!(
                "{}.{}: PostgreSQL type {other}",
                c.table_name, c.column_name
            ),
        };
        tables.entry(c.table_name).or_default().insert(
            c.column_name,
            Column {
                kind,
                nullable: c.is_nullable == "YES",
            },
        );
    }
    tables
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_migrations_match_the_schema() {
    let db = TestDb::sqlite();
    drop(db.connect().await);
    let path = db.url().trim_start_matches("sqlite://").to_owned();
    let found = tokio::task::spawn_blocking(move || sqlite_found(&path))
        .await
        .unwrap();
    assert_eq!(found, declared(), "migrations/sqlite vs schema.rs");
    db.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrations_match_the_schema() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    drop(db.connect().await);
    let found = postgres_found(db.url()).await;
    assert_eq!(found, declared(), "migrations/postgres vs schema.rs");
    db.remove().await;
}

#[test]
fn the_parser_reads_what_schema_rs_declares() {
    let tables = declared();
    let sessions = &tables["sessions"];
    assert_eq!(
        sessions["session_id"],
        Column {
            kind: "text",
            nullable: false
        }
    );
    assert_eq!(
        sessions["token_hash"],
        Column {
            kind: "binary",
            nullable: true
        }
    );
    assert_eq!(tables["session_events"]["seq"].kind, "bigint");
    assert_eq!(tables["settings"].len(), 2);
}
