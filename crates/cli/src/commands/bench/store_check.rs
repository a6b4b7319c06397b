//! `--verify-store`: after the run, compare what every viewer was
//! acknowledged (the secrets it received) with the server's database. A
//! server may store a payment and die before its secret leaves (the store
//! is then ahead, which the next `play` repairs by re-sending the secret),
//! but it must never release a secret for a payment it has not stored (the
//! store behind the viewer): that payment would be lost with the server.
//!
//! This reads a Tollstream server's own SQLite file, so unlike the rest of
//! the bench it works only against this implementation, on the same machine.

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

/// Compares `outcomes` with the store in `data_dir`.
///
/// # Errors
/// When the directory holds no server database or it cannot be read.
pub async fn check(data_dir: &Path, outcomes: &[Outcome]) -> anyhow::Result<StoreCheck> {
    // A database URL (a fleet on PostgreSQL), or the server's data directory.
    let database = match data_dir.to_str() {
        Some(url) if url.contains("://") => url.parse::<DatabaseUrl>()?,
        _ => {
            let path = data_dir.join("tollstream.sqlite");
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
