//! Which client streams on which connection: at most one streaming
//! connection per client key, and at most one streaming client per
//! connection.

use dashmap::DashMap;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollstream_protocol::PublicKey;

/// One client's streaming session.
pub struct Session {
    /// Tells sessions apart when a client replaces its own.
    pub generation: u64,
    pub socket: SocketRef,
    pub cancel: CancellationToken,
    pub task: Option<JoinHandle<()>>,
}

/// The live sessions.
#[derive(Default)]
pub struct Sessions {
    by_client: DashMap<PublicKey, Session>,
    by_socket: DashMap<Sid, PublicKey>,
    generations: AtomicU64,
}

impl Sessions {
    pub fn next_generation(&self) -> u64 {
        self.generations.fetch_add(1, Ordering::Relaxed)
    }

    /// Removes and returns the client's session, if any.
    pub fn take(&self, client: &PublicKey) -> Option<Session> {
        let (_, session) = self.by_client.remove(client)?;
        self.by_socket.remove_if(&session.socket.id, |_, streaming| streaming == client);
        Some(session)
    }

    /// Registers a new session; a session that raced in meanwhile is
    /// cancelled (the store's compare-and-swap keeps its payments safe).
    pub fn insert(&self, client: PublicKey, session: Session) {
        let sid = session.socket.id;
        if let Some(previous_client) = self.by_socket.insert(sid, client)
            && previous_client != client
            && let Some(previous) = self.take(&previous_client)
        {
            previous.cancel.cancel();
        }
        if let Some(raced) = self.by_client.insert(client, session) {
            raced.cancel.cancel();
        }
    }

    /// Hands the session its task, so whoever replaces it can wait for it.
    pub fn attach(&self, client: &PublicKey, generation: u64, task: JoinHandle<()>) {
        if let Some(mut session) = self.by_client.get_mut(client)
            && session.generation == generation
        {
            session.task = Some(task);
        }
    }

    /// Removes the session `generation` of `client` when it ends by itself.
    pub fn finish(&self, client: &PublicKey, generation: u64) {
        if let Some((_, session)) = self.by_client.remove_if(client, |_, s| s.generation == generation) {
            self.by_socket.remove_if(&session.socket.id, |_, streaming| streaming == client);
        }
    }

    /// Ends the session of `client` if it streams on connection `sid`.
    pub fn stop(&self, client: &PublicKey, sid: Sid) -> bool {
        match self.by_client.remove_if(client, |_, s| s.socket.id == sid) {
            Some((_, session)) => {
                self.by_socket.remove(&sid);
                session.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Ends whatever streams on the closed connection `sid`.
    pub fn disconnected(&self, sid: Sid) {
        if let Some((_, client)) = self.by_socket.remove(&sid) {
            self.stop(&client, sid);
        }
    }

    /// How many clients are streaming.
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }
}
