//! `--verify-store`: after the run, compare what every viewer was
//! acknowledged (the secrets it received) with the server's database. A
//! server may store a payment and die before its secret leaves (the store
//! is then ahead, which the next `play` repairs by re-sending the secret),
//! but it must never release a secret for a payment it has not stored (the
//! store behind the viewer): that payment would be lost with the server.
//!
//! The store is read through the server's own store API
//! ([`tollstream_server::store`]), opened read-only by database URL:
//! SQLite (the server's `--data-dir`, or `sqlite://PATH`) or PostgreSQL
//! (`postgres://…`, a fleet's shared database). Unlike the rest of the
//! bench it works only against this implementation, and a SQLite store
//! only on the same machine.

use super::viewer::Outcome;
use anyhow::{Context, bail};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use tollstream_server::store::DatabaseUrl;

/// The most examples of a store behind a viewer kept for the report.
const EXAMPLES: usize = 5;

#[derive(Debug, Serialize)]
pub struct StoreCheck {
    /// Viewers with at least one acknowledged payment.
    pub viewers_checked: u64,
    /// Their channels whose stored sequence equals the highest acknowledged.
    pub stored_equal: u64,
    /// Stored beyond the highest acknowledged: stored, secret not received.
    pub stored_ahead: u64,
    /// Stored below the highest acknowledged, or not stored at all: lost.
    pub stored_behind: u64,
    /// A few of the channels behind, with both sequences.
    pub behind_examples: Vec<String>,
}

/// Compares `outcomes` with the store at `store`: a database URL, or the
/// server's data directory (its default SQLite file).
///
/// # Errors
/// When the URL is malformed, the directory holds no server database, or
/// the store cannot be read.
pub async fn check(store: &Path, outcomes: &[Outcome]) -> anyhow::Result<StoreCheck> {
    let database = match store.to_str() {
        Some(url) if is_database_url(url) => url.parse::<DatabaseUrl>()?,
        _ => {
            let path = store.join("tollstream.sqlite");
            if !path.exists() {
                bail!("no server database at {}: pass the server's --data-dir or database URL", path.display());
            }
            DatabaseUrl::Sqlite(path)
        }
    };
    let store = database.open_read_only().await.with_context(|| format!("cannot open {database}"))?;
    let stored: HashMap<_, u64> = store
        .list()
        .await
        .context("cannot list the stored channels")?
        .into_iter()
        .map(|channel| (channel.state.channel_id, channel.state.client_sequence_number))
        .collect();
    let mut check = StoreCheck {
        viewers_checked: 0,
        stored_equal: 0,
        stored_ahead: 0,
        stored_behind: 0,
        behind_examples: Vec::new(),
    };
    for outcome in outcomes {
        let acknowledged = outcome.highest_acknowledged();
        if acknowledged == 0 {
            continue;
        }
        check.viewers_checked += 1;
        match stored.get(&outcome.channel_id).copied() {
            Some(sequence) if sequence == acknowledged => check.stored_equal += 1,
            Some(sequence) if sequence > acknowledged => check.stored_ahead += 1,
            found => {
                check.stored_behind += 1;
                if check.behind_examples.len() < EXAMPLES {
                    let stored = found.map_or("nothing".to_owned(), |s| format!("sequence {s}"));
                    check
                        .behind_examples
                        .push(format!("{:#x}: acknowledged {acknowledged}, stored {stored}", outcome.channel_id));
                }
            }
        }
    }
    Ok(check)
}

/// Whether `text` names a database (`postgres://…`, `sqlite:PATH`, or any
/// other URL, which the store refuses by name) rather than a data directory.
fn is_database_url(text: &str) -> bool {
    text.contains("://") || text.starts_with("sqlite:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_directories_are_told_apart() {
        assert!(is_database_url("postgres://tollstream@127.0.0.1:5432/postgres"));
        assert!(is_database_url("postgresql://tollstream@127.0.0.1/postgres"));
        assert!(is_database_url("sqlite:///tmp/x/tollstream.sqlite"));
        assert!(is_database_url("sqlite:data/tollstream.sqlite"));
        assert!(!is_database_url("/tmp/server"));
        assert!(is_database_url("mysql://host/db"), "refused by the store, with its reason");
        assert!(!is_database_url("server-data"));
    }

    #[tokio::test]
    async fn a_directory_without_a_database_is_an_error() {
        let dir = std::env::temp_dir().join(format!("tollstream-bench-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let error = check(&dir, &[]).await.unwrap_err();
        assert!(error.to_string().contains("no server database"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
