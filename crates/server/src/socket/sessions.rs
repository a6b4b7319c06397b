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

    /// Registers a new session and returns the sessions it displaces, each
    /// with its client and already cancelled: the client's own session on
    /// any connection, and another client's session on this connection
    /// (one client per connection). The caller waits for their tasks and
    /// tells their clients.
    #[must_use = "the displaced sessions' clients must be told and their tasks awaited"]
    pub fn insert(&self, client: PublicKey, session: Session) -> Vec<(PublicKey, Session)> {
        let sid = session.socket.id;
        let mut displaced = Vec::new();
        if let Some(previous_client) = self.by_socket.insert(sid, client)
            && previous_client != client
            && let Some(previous) = self.take(&previous_client)
        {
            displaced.push((previous_client, previous));
        }
        if let Some(previous) = self.by_client.insert(client, session) {
            // Its connection no longer streams for this client, unless it
            // is this one, which does again.
            if previous.socket.id != sid {
                self.by_socket.remove_if(&previous.socket.id, |_, streaming| *streaming == client);
            }
            displaced.push((client, previous));
        }
        for (_, previous) in &displaced {
            previous.cancel.cancel();
        }
        displaced
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
