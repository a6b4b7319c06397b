//! The server's front door: accepts TCP connections, turns away what the
//! connection limits forbid, terminates TLS, and hands the rest to axum.
//!
//! A server that sells keys takes connections from anyone, so the limits
//! are applied before a connection costs anything beyond its `accept`:
//! - at most `--max-connections-per-address` open connections from one
//!   client address (an IPv4 address, or an IPv6 /64, which is what one
//!   IPv6 host is usually given);
//! - at most [`NEW_CONNECTIONS_PER_ADDRESS`] new connections a second from
//!   one client address once it has opened as many as its cap at once, so
//!   that one address churning connections cannot use up everyone's share
//!   of the next limit;
//! - at most `--new-connections-per-second` new connections over all
//!   addresses (a token bucket whose burst equals its rate).
//!
//! A connection over a limit is closed at once, without a reply, and
//! counted in `tollstream_connections_refused_total{reason}`. A connection
//! on which nothing arrives for [`IDLE_TIMEOUT`] while the server waits to
//! read (a request never finished, a keep-alive nobody uses, a peer that
//! stopped answering Engine.IO's pings), or that takes as long to accept
//! what the server writes (a peer that stopped reading), is closed.
//!
//! TLS handshakes run in a task per connection, bounded by
//! [`HANDSHAKE_TIMEOUT`], so one slow or silent client cannot hold up the
//! accept loop; axum sees only connections whose handshake finished.

use crate::metrics::Metrics;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus::IntGauge;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may leave a read or a write of the server's
/// pending. Longer than Engine.IO's ping interval plus its timeout (25 s +
/// 20 s), so a live Socket.IO connection, which answers every ping, never
/// meets it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// New connections a second from one client address, beyond a burst as
/// large as its cap.
pub const NEW_CONNECTIONS_PER_ADDRESS: u32 = 10;
/// Connections accepted (and, with TLS, shaken hands with) but not yet
/// taken by axum.
const READY_CAPACITY: usize = 256;
/// How long the accept loop rests after an error such as running out of
/// file descriptors, instead of spinning on it.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The limits on accepting connections (`serve` flags).
#[derive(Debug, Clone, Copy)]
pub struct AcceptLimits {
    /// `--max-connections-per-address`; `None` for no cap (and then no
    /// per-address rate of new connections either: the server is behind a
    /// proxy, or under a load generator).
    pub per_address: Option<NonZeroU32>,
    /// `--new-connections-per-second`; `None` for no cap.
    pub new_per_second: Option<NonZeroU32>,
}

/// Errors of reading `--tls-cert` / `--tls-key`.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    // The causes are `source`s, not part of the messages: an error chain
    // printed whole (`{:#}`) would say them twice.
    #[error("cannot read the TLS certificate chain {path}")]
    Certificates { path: String, source: rustls_pki_types::pem::Error },
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: String },
    #[error(
        "cannot read the TLS private key {path} (an unencrypted PEM key: PKCS#8, PKCS#1 or SEC1; \
         `openssl pkey -in KEY -out KEY.pem` decrypts one)"
    )]
    Key { path: String, source: rustls_pki_types::pem::Error },
    #[error("the TLS certificate and key do not go together")]
    Rustls(#[from] rustls::Error),
}

/// Builds the TLS acceptor from a PEM certificate chain (leaf first) and
/// its PEM private key, with rustls's safe defaults (TLS 1.2 and 1.3,
/// the ring provider) and ALPN for HTTP/1.1 only: Socket.IO's WebSocket
/// upgrade is an HTTP/1.1 mechanism.
///
/// # Errors
/// [`TlsConfigError`] when a file is missing, holds no certificate or key,
/// or the key does not match the certificate.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let cert_path = cert.display().to_string();
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsConfigError::Certificates { path: cert_path.clone(), source })?;
    if chain.is_empty() {
        return Err(TlsConfigError::NoCertificate { path: cert_path });
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|source| TlsConfigError::Key { path: key.display().to_string(), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A listening socket behind the connection limits and, optionally, TLS:
/// what `axum::serve` accepts from.
pub struct Listener {
    ready: mpsc::Receiver<(Connection, SocketAddr)>,
    local: SocketAddr,
}

impl Listener {
    /// Starts accepting on `tcp`. The accept loop runs until this
    /// `Listener` is dropped.
    pub fn new(
        tcp: TcpListener,
        tls: Option<TlsAcceptor>,
        limits: AcceptLimits,
        slots: Arc<AddressSlots>,
        open: Arc<OpenConnections>,
        metrics: Metrics,
    ) -> io::Result<Listener> {
        let local = tcp.local_addr()?;
        let (sender, ready) = mpsc::channel(READY_CAPACITY);
        let new_connections = limits.new_per_second.map(|rate| RateLimiter::direct(Quota::per_second(rate)));
        let per_address = limits.per_address.map(|cap| {
            let rate = NonZeroU32::new(NEW_CONNECTIONS_PER_ADDRESS).expect("positive");
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(cap))
        });
        let accept = AcceptLoop { tcp, tls, new_connections, per_address, slots, open, metrics, ready: sender };
        tokio::spawn(accept.run());
        Ok(Listener { ready, local })
    }
}

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends once this receiver is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

struct AcceptLoop {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    new_connections: Option<DefaultDirectRateLimiter>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    slots: Arc<AddressSlots>,
    open: Arc<OpenConnections>,
    metrics: Metrics,
    ready: mpsc::Sender<(Connection, SocketAddr)>,
}

impl AcceptLoop {
    async fn run(self) {
        let mut accepted_since_purge = 0u32;
        loop {
            let accepted = tokio::select! {
                accepted = self.tcp.accept() => accepted,
                () = self.ready.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: the listener
                    // itself is fine, so wait a little and go on.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let Some(slot) = self.slots.take(peer.ip()) else {
                self.metrics.connections_refused.with_label_values(&["per_address"]).inc();
                tracing::debug!(%peer, "connection refused: too many connections from this address");
                continue;
            };
            if let Some(buckets) = &self.per_address {
                if buckets.check_key(&client_key(peer.ip())).is_err() {
                    self.metrics.connections_refused.with_label_values(&["address_rate"]).inc();
                    tracing::debug!(%peer, "connection refused: too many new connections a second from this address");
                    continue;
                }
                // The keyed buckets of addresses gone quiet are full again:
                // drop them now and then, or the map only grows.
                accepted_since_purge += 1;
                if accepted_since_purge >= 10_000 {
                    accepted_since_purge = 0;
                    buckets.retain_recent();
                    buckets.shrink_to_fit();
                }
            }
            if self.new_connections.as_ref().is_some_and(|bucket| bucket.check().is_err()) {
                self.metrics.connections_refused.with_label_values(&["rate"]).inc();
                tracing::debug!(%peer, "connection refused: too many new connections a second");
                continue;
            }
            // Every message is a small frame that someone waits for:
            // Nagle's algorithm would hold one back until the previous one
            // is acknowledged.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
            let closer = self.open.register(peer);
            let mut stream = TimeoutStream::new(stream);
            stream.set_read_timeout(Some(IDLE_TIMEOUT));
            stream.set_write_timeout(Some(IDLE_TIMEOUT));
            let stream = Box::pin(stream);
            match &self.tls {
                None => {
                    let connection = Connection { stream: Either::Left(stream), closer, _slot: slot };
                    if self.ready.send((connection, peer)).await.is_err() {
                        return;
                    }
                }
                Some(acceptor) => {
                    let (acceptor, ready, metrics) = (acceptor.clone(), self.ready.clone(), self.metrics.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                let connection =
                                    Connection { stream: Either::Right(Box::new(tls)), closer, _slot: slot };
                                let _ = ready.send((connection, peer)).await;
                            }
                            Ok(Err(error)) => {
                                metrics.tls_handshake_failures.inc();
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                            }
                            Err(_) => {
                                metrics.tls_handshake_failures.inc();
                                tracing::debug!(%peer, "TLS handshake timed out");
                            }
                        }
                    });
                }
            }
        }
    }
}

/// The open connections of each client address, shared by every listener
/// of the process so that the cap holds over all of them.
pub struct AddressSlots {
    cap: Option<NonZeroU32>,
    open: Mutex<HashMap<IpAddr, u32>>,
    /// The gauge of everything held, over all addresses.
    gauge: IntGauge,
}

impl AddressSlots {
    /// Counts of TCP connections, or of Socket.IO sessions, per address,
    /// capped at `cap`; `gauge` shows the total.
    pub fn new(cap: Option<NonZeroU32>, gauge: IntGauge) -> Arc<AddressSlots> {
        Arc::new(AddressSlots { cap, open: Mutex::new(HashMap::new()), gauge })
    }

    /// A slot for one more connection from `ip`, or `None` at the cap.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if self.cap.is_some_and(|cap| *count >= cap.get()) {
            return None;
        }
        *count += 1;
        self.gauge.inc();
        Some(Slot { slots: self.clone(), key })
    }

    /// Open connections from `ip`'s client address.
    pub fn open_from(&self, ip: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&client_key(ip)).copied().unwrap_or(0)
    }
}

/// What counts as one client address: an IPv4 address, or the /64 of an
/// IPv6 address (an IPv4-mapped IPv6 address counts as its IPv4 address).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
    }
}

/// One connection's place under its address's cap, given back on drop.
pub struct Slot {
    slots: Arc<AddressSlots>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
        self.slots.gauge.dec();
    }
}

/// An accepted connection, plain or TLS, holding its address slot until
/// it is closed.
pub struct Connection {
    stream: Either<TimedStream, Box<TlsStream<TimedStream>>>,
    closer: Closer,
    _slot: Slot,
}

/// Every open connection by its peer's address, so that a handler that
/// finds a connection misbehaving (flooding) can close it: Socket.IO can
/// only take a client out of a namespace, which leaves its transport open.
#[derive(Default)]
pub struct OpenConnections {
    by_peer: dashmap::DashMap<SocketAddr, CancellationToken>,
}

impl OpenConnections {
    pub fn new() -> Arc<OpenConnections> {
        Arc::default()
    }

    fn register(self: &Arc<Self>, peer: SocketAddr) -> Closer {
        let token = CancellationToken::new();
        self.by_peer.insert(peer, token.clone());
        Closer { closed: Box::pin(token.cancelled_owned()), peer, open: self.clone() }
    }

    /// Closes the connection from `peer`, if it is open: its next read or
    /// write fails, and a pending one is woken to fail.
    pub fn close(&self, peer: SocketAddr) {
        if let Some(token) = self.by_peer.get(&peer) {
            token.cancel();
        }
    }
}

/// A connection's entry in [`OpenConnections`], removed when it closes.
struct Closer {
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    peer: SocketAddr,
    open: Arc<OpenConnections>,
}

impl Closer {
    /// `Ready` with an error once the connection was told to close.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        self.closed.as_mut().poll(cx).map(|()| io::Error::new(io::ErrorKind::ConnectionAborted, "closed by the server"))
    }
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.open.by_peer.remove(&self.peer);
    }
}

/// A TCP stream whose reads and writes may not stay pending beyond
/// [`IDLE_TIMEOUT`].
type TimedStream = Pin<Box<TimeoutStream<TcpStream>>>;

/// The peer's address, for handlers (`ConnectInfo<PeerAddr>` in a request's
/// extensions): the address the connection came from, before TLS.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> PeerAddr {
        PeerAddr(*stream.remote_addr())
    }
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Poll::Ready(closed) = self.closer.poll_closed(cx) {
            return Poll::Ready(Err(closed));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Poll::Ready(closed) = self.closer.poll_closed(cx) {
            return Poll::Ready(Err(closed));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Poll::Ready(closed) = self.closer.poll_closed(cx) {
            return Poll::Ready(Err(closed));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_host_counts_as_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn an_address_gets_its_cap_and_a_closed_connection_frees_its_slot() {
        let metrics = Metrics::new();
        let slots = AddressSlots::new(NonZeroU32::new(2), metrics.connections_open.clone());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let first = slots.take(ip).expect("first");
        let _second = slots.take(ip).expect("second");
        assert!(slots.take(ip).is_none(), "a third connection is over the cap");
        assert!(slots.take("192.0.2.2".parse().unwrap()).is_some(), "other addresses have their own");
        assert_eq!(metrics.connections_open.get(), 2, "the dropped temporary slot was given back");
        drop(first);
        assert_eq!(slots.open_from(ip), 1);
        assert!(slots.take(ip).is_some(), "a closed connection frees its slot");
    }

    #[test]
    fn no_cap_takes_any_number() {
        let metrics = Metrics::new();
        let slots = AddressSlots::new(None, metrics.connections_open.clone());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..1000).map(|_| slots.take(ip).expect("no cap")).collect();
        assert_eq!(slots.open_from(ip), 1000);
        drop(held);
        assert_eq!(slots.open_from(ip), 0);
        assert_eq!(metrics.connections_open.get(), 0);
    }
}
