//! Syslog in: UDP datagrams, TCP and TLS streams, and log files a local
//! syslog server writes ([`follow`]). Streams are cut into messages by one
//! codec ([`codec`]: newline framing, or RFC 6587 octet counting where a
//! frame opens with a count and a PRI); connections are accepted through
//! [`accept`] (a place first, a pause after a failed accept); what becomes
//! of each message is counted in [`metrics`].
//!
//! Sockets only: parsing is the core's. Each message's source address is
//! looked up in [`Sources`] before anything else; messages from elsewhere
//! and oversized ones are counted and dropped. Streams wait when the guard's
//! queue is full (TCP pushes back on the sender, nothing is lost); UDP
//! cannot wait, so a datagram that finds the queue full is dropped and
//! counted.

pub mod accept;
pub mod codec;
pub mod descriptors;
pub mod follow;
pub mod metrics;

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::address::Listen;
use crate::config::Config;
use accept::{Accepted, Gate};
use codec::{Framer, Framing};
use metrics::{MessageResult, Messages};

/// Messages longer than this are dropped (and counted).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// The UDP socket's receive buffer asked of the kernel.
const UDP_RECEIVE_BUFFER: usize = 8 << 20;
/// TCP and TLS senders served at once, per listener; more wait for a
/// place, unaccepted, in the listen backlog. A sender is one connection of
/// a CMS server or a relay, so a few dozen is plenty; the bound keeps a
/// flood of connections from using up the guard's file descriptors (the
/// HTTP side needs some). Fewer when the file limit is low
/// ([`descriptors`]).
pub const MAX_CONNECTIONS: usize = 256;
/// A TCP or TLS sender silent this long is closed and gives its place
/// back. Senders keep their connection open between messages, and a CMS
/// server logs its call bridge's `STATS` every 5 minutes: three of them
/// missed means the sender has nothing to say (it connects again when it
/// has).
pub const IDLE: Duration = Duration::from_secs(15 * 60);
/// A message begun must be whole within this: a sender writes a message
/// at once, so one that stops in the middle holds its place for nothing.
pub const PARTIAL: Duration = Duration::from_secs(60);
/// A TLS handshake must be done within this.
pub const HANDSHAKE: Duration = Duration::from_secs(10);

/// Who a message may speak for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Anyone (no configuration): it names itself.
    Anyone,
    /// Configured servers at this address (usually one): only their own
    /// lines (these log hosts).
    Servers(Arc<[Arc<str>]>),
    /// A relay or a followed file: any configured server's lines.
    Relay,
}

/// Messages of one sender, as they came (a datagram, or what one read of a
/// stream held): one queue entry for many messages keeps up with a sender
/// that writes hundreds of thousands a second.
#[derive(Debug)]
pub struct Batch {
    /// The sender's address.
    pub source: IpAddr,
    /// Who it may speak for.
    pub origin: Origin,
    /// The raw messages, without framing, one after another.
    data: Vec<u8>,
    /// Where each message ends in `data`.
    ends: Vec<usize>,
}

/// A batch is sent once it holds about this much.
const BATCH_BYTES: usize = 64 * 1024;

impl Batch {
    /// An empty batch.
    pub fn new(source: IpAddr, origin: Origin) -> Batch {
        Batch { source, origin, data: Vec::with_capacity(BATCH_BYTES), ends: Vec::new() }
    }

    /// Adds a message.
    pub fn push(&mut self, message: &[u8]) {
        self.data.extend_from_slice(message);
        self.ends.push(self.data.len());
    }

    /// Messages in it.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds no message.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The messages, in order.
    pub fn messages(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(start, end)| &self.data[start..end])
    }

    /// Hands the messages over, leaving it empty for the next round.
    fn take(&mut self) -> Batch {
        let mut next = Batch::new(self.source, self.origin.clone());
        std::mem::swap(self, &mut next);
        next
    }
}

/// Who may send: the configured servers (by address) and relays; without
/// a configuration, everyone.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// No configuration: every source is accepted.
    pub open: bool,
    /// Each address with the log hosts of the servers there.
    pub servers: Vec<(IpAddr, Arc<[Arc<str>]>)>,
    /// Addresses that forward for any configured server.
    pub relays: Vec<IpAddr>,
}

impl Sources {
    /// Everyone may send.
    pub fn open() -> Sources {
        Sources { open: true, ..Sources::default() }
    }

    /// The allow list of a configuration: each server's `syslog_from`, else
    /// the addresses its MMP host resolves to; and the relays.
    pub fn from_config(config: &Config) -> anyhow::Result<Sources> {
        let mut by_address: std::collections::BTreeMap<IpAddr, Vec<Arc<str>>> = Default::default();
        for server in &config.servers {
            let addresses: Vec<IpAddr> = if server.syslog_from.is_empty() {
                std::net::ToSocketAddrs::to_socket_addrs(&(server.host.as_str(), server.port))
                    .with_context(|| format!("server {}: cannot resolve {}", server.name, server.host))?
                    .map(|a| a.ip())
                    .collect()
            } else {
                server.syslog_from.clone()
            };
            for ip in addresses {
                let hosts = by_address.entry(canonical(ip)).or_default();
                if !hosts.iter().any(|h| **h == *server.log_host) {
                    hosts.push(server.log_host.as_str().into());
                }
            }
        }
        // Each address's hosts in order: a record's host is looked up among
        // them by a binary search (a fleet may sit behind one address).
        let servers = by_address
            .into_iter()
            .map(|(ip, mut hosts)| {
                hosts.sort();
                (ip, hosts.into())
            })
            .collect();
        let relays = config.guard.relays.iter().map(|&ip| canonical(ip)).collect();
        Ok(Sources { open: false, servers, relays })
    }

    /// Who `source` may speak for, if anyone.
    pub fn origin(&self, source: IpAddr) -> Option<Origin> {
        if self.open {
            return Some(Origin::Anyone);
        }
        let source = canonical(source);
        if let Some((_, hosts)) = self.servers.iter().find(|(ip, _)| *ip == source) {
            return Some(Origin::Servers(hosts.clone()));
        }
        self.relays.contains(&source).then_some(Origin::Relay)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Everything a listener needs.
#[derive(Clone)]
pub struct Intake {
    /// To the guard.
    pub queue: mpsc::Sender<Batch>,
    /// Who may send (replaced on reload).
    pub sources: Arc<RwLock<Arc<Sources>>>,
    /// What became of the messages (`wbguard_syslog_messages_total`).
    pub counts: Messages,
}

impl Intake {
    /// The allow list as of now.
    pub fn sources(&self) -> Arc<Sources> {
        self.sources.read().expect("the sources lock is never poisoned").clone()
    }

    /// A batch of datagrams: dropped and counted when the queue is full.
    fn offer_datagrams(&self, batch: Batch) {
        let n = batch.len() as u64;
        if n > 0 && self.queue.try_send(batch).is_err() {
            self.counts.add(MessageResult::Dropped, n);
        }
    }

    /// A batch of a stream: waits for room (the sender is slowed, never
    /// loses a message). False when the guard is gone.
    pub async fn offer_stream(&self, batch: Batch) -> bool {
        batch.is_empty() || self.queue.send(batch).await.is_ok()
    }
}

/// Loads the certificate chain and private key (PEM) for `tls://` listeners.
pub fn tls_acceptor(certificate: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .with_context(|| format!("cannot read the TLS certificate {}", certificate.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", certificate.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{}: no certificate in it", certificate.display());
    }
    crate::secret::check_private(key).context("the TLS key")?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("{}: not a PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds a listener (errors name the address).
pub async fn bind(listen: &Listen, tls: Option<&TlsAcceptor>) -> anyhow::Result<Bound> {
    Ok(match listen {
        Listen::Udp(address) => {
            let socket = UdpSocket::bind(address)
                .await
                .with_context(|| format!("cannot listen for syslog on udp://{address}"))?;
            // A deep receive buffer rides out bursts (the kernel caps it at net.core.rmem_max).
            let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(UDP_RECEIVE_BUFFER);
            Bound::Udp(socket)
        }
        Listen::Tcp(address) | Listen::Tls(address) => {
            let listener =
                TcpListener::bind(address).await.with_context(|| format!("cannot listen for syslog on {listen}"))?;
            match listen {
                Listen::Tls(_) => Bound::Tls(listener, tls.context("tls:// needs a certificate and key")?.clone()),
                _ => Bound::Tcp(listener),
            }
        }
    })
}

/// A bound listener.
pub enum Bound {
    /// UDP.
    Udp(UdpSocket),
    /// TCP.
    Tcp(TcpListener),
    /// TLS over TCP.
    Tls(TcpListener, TlsAcceptor),
}

impl Bound {
    /// What it listens on, as a URL (port 0 is replaced by the port bound).
    pub fn url(&self) -> std::io::Result<String> {
        Ok(match self {
            Bound::Udp(socket) => format!("udp://{}", socket.local_addr()?),
            Bound::Tcp(listener) => format!("tcp://{}", listener.local_addr()?),
            Bound::Tls(listener, _) => format!("tls://{}", listener.local_addr()?),
        })
    }

    /// Serves until `shutdown` turns true, at most `places` senders at once
    /// (TCP and TLS).
    pub async fn serve(self, intake: Intake, places: usize, mut shutdown: watch::Receiver<bool>) {
        let (listener, tls) = match self {
            Bound::Udp(socket) => {
                let mut buffer = vec![0u8; 65_536];
                loop {
                    tokio::select! {
                        ready = socket.readable() => {
                            if ready.is_err() {
                                continue;
                            }
                            // Everything waiting, in one batch per sender.
                            let sources = intake.sources();
                            let mut batches: Vec<Batch> = Vec::new();
                            let mut taken = 0;
                            while taken < BATCH_BYTES {
                                let Ok((n, from)) = socket.try_recv_from(&mut buffer) else { break };
                                taken += n;
                                let datagram = &buffer[..n];
                                let datagram = datagram.strip_suffix(b"\n").unwrap_or(datagram);
                                let Some(origin) = sources.origin(from.ip()) else {
                                    intake.counts.count(MessageResult::Rejected);
                                    continue;
                                };
                                if datagram.len() > MAX_MESSAGE {
                                    intake.counts.count(MessageResult::Oversize);
                                    continue;
                                }
                                match batches.iter_mut().find(|b| b.source == from.ip()) {
                                    Some(batch) => batch.push(datagram),
                                    None => {
                                        let mut batch = Batch::new(from.ip(), origin);
                                        batch.push(datagram);
                                        batches.push(batch);
                                    }
                                }
                            }
                            for batch in batches {
                                intake.offer_datagrams(batch);
                            }
                        }
                        _ = shutdown.changed() => return,
                    }
                }
            }
            Bound::Tcp(listener) => (listener, None),
            Bound::Tls(listener, acceptor) => (listener, Some(acceptor)),
        };
        let what = if tls.is_some() { "syslog over TLS" } else { "syslog over TCP" };
        let mut gate = Gate::new(listener, places, what);
        loop {
            tokio::select! {
                Accepted { stream, from, place } = gate.accept() => {
                    // The allow list first, as the connection opens (a reload
                    // applies to new ones): a source not on it is closed at
                    // once, unread and before any TLS handshake, so it costs
                    // nothing and holds no place a sender needs.
                    let Some(origin) = intake.sources().origin(from.ip()) else {
                        intake.counts.count(MessageResult::Rejected);
                        tracing::debug!("{what} from {from}: not on the allow list, closed");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let intake = intake.clone();
                    let shutdown = shutdown.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        // The place is given back when the sender is done.
                        let _place = place;
                        let sender = Sender { source: from.ip(), origin, what };
                        match tls {
                            None => stream_messages(stream, sender, intake, shutdown).await,
                            Some(acceptor) => match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => stream_messages(stream, sender, intake, shutdown).await,
                                Ok(Err(e)) => tracing::warn!("{what} from {from}: handshake failed: {e}"),
                                Err(_) => tracing::warn!(
                                    "{what} from {from}: no handshake within {} s, closed",
                                    HANDSHAKE.as_secs()
                                ),
                            },
                        }
                    });
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// A TCP or TLS sender on the allow list.
struct Sender {
    /// Its address.
    source: IpAddr,
    /// Who it may speak for (as the connection opened).
    origin: Origin,
    /// The listener, in log messages.
    what: &'static str,
}

/// One TCP or TLS sender, framed by the [`codec`] (RFC 6587), until it
/// closes, stays silent for [`IDLE`], leaves a message unfinished for
/// [`PARTIAL`], or the guard stops.
async fn stream_messages<S: AsyncRead + Unpin>(
    mut stream: S,
    sender: Sender,
    intake: Intake,
    mut shutdown: watch::Receiver<bool>,
) {
    let Sender { source, origin, what } = sender;
    let oversize = intake.counts.counter(MessageResult::Oversize).clone();
    let mut framer = Framer::new(Framing::Syslog);
    let mut batch = Batch::new(source, origin);
    // When the message begun must be whole (none begun: no bound but IDLE).
    // A sender connects to send (CMS, rsyslog): one that says nothing at
    // all gives its place back as soon as an unfinished message would.
    let mut partial_until = Some(tokio::time::Instant::now() + PARTIAL);
    let mut heard = false;
    loop {
        let buffer = framer.buffer();
        buffer.reserve(BATCH_BYTES);
        let idle_until = tokio::time::Instant::now() + IDLE;
        let until = partial_until.map_or(idle_until, |partial| partial.min(idle_until));
        let read = tokio::select! {
            read = tokio::time::timeout_at(until, stream.read_buf(buffer)) => read,
            _ = shutdown.changed() => return,
        };
        let read = match read {
            Ok(read) => read,
            Err(_) if partial_until.is_some_and(|partial| partial <= idle_until) => {
                let why = if heard { "a message left unfinished" } else { "nothing sent" };
                tracing::info!("{what} from {source}: {why} for {} s, closed", PARTIAL.as_secs());
                return;
            }
            Err(_) => {
                tracing::info!("{what} from {source}: silent for {} min, closed", IDLE.as_secs() / 60);
                return;
            }
        };
        match read {
            Ok(0) | Err(_) => {
                framer.finish(&mut batch, &oversize);
                intake.offer_stream(batch).await;
                return;
            }
            Ok(_) => {}
        }
        heard = true;
        let before = batch.len();
        framer.frame(&mut batch, &oversize);
        // The bound is on one message: a busy sender whose reads end
        // mid-message (segments cut at the MSS) completes others meanwhile.
        let completed = batch.len() > before;
        partial_until = match (framer.partial(), partial_until) {
            (false, _) => None,
            (true, Some(begun)) if !completed => Some(begun),
            (true, _) => Some(tokio::time::Instant::now() + PARTIAL),
        };
        if !intake.offer_stream(batch.take()).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A sender served by [`stream_messages`] on an in-memory stream: its
    /// end to write on, the guard's queue, and the task (done when closed).
    fn served() -> (tokio::io::DuplexStream, mpsc::Receiver<Batch>, tokio::task::JoinHandle<()>) {
        let (ours, theirs) = tokio::io::duplex(4096);
        let (queue, received) = mpsc::channel(64);
        let intake = Intake { queue, sources: Default::default(), counts: Messages::default() };
        let sender = Sender { source: "127.0.0.1".parse().unwrap(), origin: Origin::Anyone, what: "test" };
        let (_stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(async move {
            let _stop = _stop;
            stream_messages(ours, sender, intake, shutdown).await;
        });
        (theirs, received, task)
    }

    /// A sender that writes now and then keeps its connection; once silent
    /// for [`IDLE`], it is closed (in paused time: no waiting).
    #[tokio::test(start_paused = true)]
    async fn a_silent_sender_is_closed_after_idle() {
        let (mut sender, mut received, task) = served();
        for _ in 0..12 {
            sender.write_all(b"<14>a CMS server's STATS\n").await.unwrap();
            assert_eq!(received.recv().await.unwrap().len(), 1);
            tokio::time::sleep(Duration::from_secs(5 * 60)).await;
            assert!(!task.is_finished(), "a sender writing every 5 minutes was closed");
        }
        let silent = tokio::time::Instant::now();
        task.await.unwrap();
        assert!(silent.elapsed() >= IDLE - Duration::from_secs(5 * 60), "{:?}", silent.elapsed());
    }

    /// A message begun and never finished gives the place back after
    /// [`PARTIAL`], whatever keeps trickling in.
    #[tokio::test(start_paused = true)]
    async fn a_message_left_unfinished_is_closed_after_partial() {
        let (mut sender, _received, task) = served();
        let started = tokio::time::Instant::now();
        let trickle = tokio::spawn(async move {
            while sender.write_all(b"x").await.is_ok() {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        });
        task.await.unwrap();
        let took = started.elapsed();
        assert!(took >= PARTIAL && took < PARTIAL + Duration::from_secs(11), "{took:?}");
        trickle.abort();
    }

    /// A connection on which nothing is ever sent gives its place back
    /// after [`PARTIAL`], not [`IDLE`].
    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_speaks_is_closed_after_partial() {
        let (_sender, _received, task) = served();
        let started = tokio::time::Instant::now();
        task.await.unwrap();
        assert!(started.elapsed() >= PARTIAL && started.elapsed() < IDLE, "{:?}", started.elapsed());
    }

    /// A busy sender whose reads always end mid-message (a relay's
    /// segments cut at the MSS) finishes a message at every read: never
    /// closed as "unfinished", however long it sends.
    #[tokio::test(start_paused = true)]
    async fn a_busy_sender_cut_mid_message_is_never_closed() {
        let (mut sender, mut received, task) = served();
        sender.write_all(b"<14>first half").await.unwrap();
        for _ in 0..(3 * PARTIAL.as_secs() / 10) {
            tokio::time::sleep(Duration::from_secs(10)).await;
            sender.write_all(b" done\n<14>next half").await.unwrap();
            assert_eq!(received.recv().await.unwrap().len(), 1);
            assert!(!task.is_finished(), "a busy sender was closed");
        }
        drop(sender);
        task.await.unwrap();
    }

    #[test]
    fn the_allow_list() {
        let cms1: Arc<[Arc<str>]> = vec!["cms1".into()].into();
        let sources = Sources {
            open: false,
            servers: vec![("10.0.0.1".parse().unwrap(), cms1.clone())],
            relays: vec!["10.0.0.5".parse().unwrap()],
        };
        assert_eq!(sources.origin("10.0.0.1".parse().unwrap()), Some(Origin::Servers(cms1.clone())));
        assert_eq!(sources.origin("::ffff:10.0.0.1".parse().unwrap()), Some(Origin::Servers(cms1)));
        assert_eq!(sources.origin("10.0.0.5".parse().unwrap()), Some(Origin::Relay));
        assert_eq!(sources.origin("10.0.0.2".parse().unwrap()), None);
        assert_eq!(Sources::open().origin("192.0.2.9".parse().unwrap()), Some(Origin::Anyone));
    }
}
