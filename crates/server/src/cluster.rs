//! What several `serve` processes on one PostgreSQL agree on: which one
//! runs settlement, and which one streams each client.
//!
//! - **One settler.** Settlement and event following run in the process
//!   that holds a PostgreSQL session-level advisory lock, taken on a
//!   connection of its own and held as long as that connection lives. When
//!   the process dies its connection closes, PostgreSQL releases the lock,
//!   and another process takes it within [`LEADER_POLL`]; the new settler
//!   starts from the store, where every close the old one signed is
//!   recorded before it was sent, so it sees each through at its nonce.
//! - **One streaming session per client across the fleet.** A process that
//!   starts a client's session says so with `NOTIFY` on
//!   [`SESSIONS_CHANNEL`]; every other process listens (sqlx's
//!   `PgListener`) and ends its own session of that client with
//!   `session_replaced`. (socketioxide's PostgreSQL adapter would broadcast
//!   Socket.IO packets between processes, but it needs sqlx 0.9 and we only
//!   need this one message.) The store's compare-and-swap on the sequence
//!   keeps payments from forking whatever the timing.
//!
//! On SQLite there is one process, so the settler is always this one and
//! there is nobody to tell.

use crate::state::AppState;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tollstream_protocol::PublicKey;

/// The advisory lock key of the settler: "tollstrm" in ASCII.
pub const SETTLER_LOCK: i64 = 0x746f_6c6c_7374_726d;
/// The channel on which processes announce the sessions they start.
pub const SESSIONS_CHANNEL: &str = "tollstream_sessions";
/// How often a process that is not the settler tries the lock, and how
/// often the settler checks that its lock connection is alive.
pub const LEADER_POLL: Duration = Duration::from_secs(2);

/// How this process coordinates with others.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The PostgreSQL URL shared by the fleet, and a small pool for
    /// announcements; `None` on SQLite.
    postgres: Option<(String, PgPool)>,
    /// This process's name in the fleet: random per start, so a process
    /// ignores its own announcements.
    pub id: String,
}

impl Cluster {
    /// One process alone (SQLite).
    pub fn single() -> Self {
        Cluster { postgres: None, id: process_id() }
    }

    /// A fleet sharing the PostgreSQL database at `url`.
    ///
    /// # Errors
    /// When `url` is not a PostgreSQL URL.
    pub fn postgres(url: &str) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new().max_connections(2).connect_lazy(url)?;
        Ok(Cluster { postgres: Some((url.to_owned(), pool)), id: process_id() })
    }

    /// Whether other processes may share the database.
    pub fn is_fleet(&self) -> bool {
        self.postgres.is_some()
    }

    /// Runs `work` whenever this process is the settler, until `cancel`.
    /// `work` gets a token that is cancelled when leadership is lost (its
    /// lock connection failed); it must stop then, as another process may
    /// take over.
    pub async fn run_as_settler<F, Fut>(&self, cancel: CancellationToken, work: F)
    where
        F: Fn(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some((url, _)) = &self.postgres else {
            work(cancel).await;
            return;
        };
        let mut announced_waiting = false;
        while !cancel.is_cancelled() {
            match take_lock(url).await {
                Ok(Some(mut connection)) => {
                    tracing::info!(process = %self.id, "this process now runs settlement (settler lock taken)");
                    announced_waiting = false;
                    let lost = cancel.child_token();
                    let task = tokio::spawn(work(lost.clone()));
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            _ = tokio::time::sleep(LEADER_POLL) => {}
                        }
                        if let Err(error) = sqlx::query("SELECT 1").execute(&mut connection).await {
                            tracing::warn!(%error, "lost the settler lock's connection; settlement stops here");
                            break;
                        }
                    }
                    lost.cancel();
                    let _ = task.await;
                }
                Ok(None) => {
                    if !announced_waiting {
                        tracing::info!(process = %self.id, "another process runs settlement; standing by");
                        announced_waiting = true;
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot reach PostgreSQL for the settler lock; retrying"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(LEADER_POLL) => {}
            }
        }
    }

    /// Tells the other processes that `client` now streams here.
    pub async fn announce_session(&self, client: &PublicKey) {
        let Some((_, pool)) = &self.postgres else { return };
        let payload = format!("{} {}", self.id, client);
        let result = sqlx::query("SELECT pg_notify($1, $2)").bind(SESSIONS_CHANNEL).bind(&payload).execute(pool).await;
        if let Err(error) = result {
            // The store's compare-and-swap still keeps payments safe.
            tracing::warn!(%error, %client, "cannot tell the other processes about a new session");
        }
    }

    /// Ends this process's session of every client that starts streaming
    /// on another process, until `cancel`.
    pub async fn follow_sessions(&self, state: AppState, cancel: CancellationToken) {
        let Some((url, _)) = &self.postgres else { return };
        while !cancel.is_cancelled() {
            let mut listener = match PgListener::connect(url).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for other processes' sessions; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(LEADER_POLL) => continue,
                    }
                }
            };
            if let Err(error) = listener.listen(SESSIONS_CHANNEL).await {
                tracing::warn!(%error, "cannot listen for other processes' sessions; retrying");
                continue;
            }
            loop {
                let notification = tokio::select! {
                    _ = cancel.cancelled() => return,
                    received = listener.recv() => received,
                };
                match notification {
                    Ok(notification) => self.on_announcement(&state, notification.payload()).await,
                    Err(error) => {
                        tracing::warn!(%error, "lost the sessions listener; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    async fn on_announcement(&self, state: &AppState, payload: &str) {
        let Some((from, client)) = payload.split_once(' ') else { return };
        if from == self.id {
            return;
        }
        let Ok(client) = client.parse::<PublicKey>() else {
            tracing::warn!(payload, "unreadable session announcement");
            return;
        };
        crate::socket::replaced_elsewhere(state, client).await;
    }
}

/// Tries the settler lock on a connection of its own; the connection
/// (which holds the lock) when it was free.
async fn take_lock(url: &str) -> Result<Option<PgConnection>, sqlx::Error> {
    let mut connection = PgConnection::connect(url).await?;
    let taken: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(SETTLER_LOCK).fetch_one(&mut connection).await?;
    Ok(taken.then_some(connection))
}

/// A name for this process that no other process shares.
fn process_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}
