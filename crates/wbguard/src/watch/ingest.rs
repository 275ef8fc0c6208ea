//! Syslog in: UDP datagrams, TCP and TLS streams (newline or RFC 6587
//! octet counting, told apart by the first byte of each frame), and log
//! files a local syslog server writes ([`follow`]).
//!
//! Sockets only: parsing is the core's. Each message's source address is
//! looked up in [`Sources`] before anything else; messages from elsewhere
//! and oversized ones are counted and dropped. Streams wait when the guard's
//! queue is full (TCP pushes back on the sender, nothing is lost); UDP
//! cannot wait, so a datagram that finds the queue full is dropped and
//! counted.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// Messages longer than this are dropped (and counted).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// TCP and TLS senders served at once; more wait for a place.
pub const MAX_CONNECTIONS: usize = 256;

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `udp://ADDR:PORT`
    Udp(SocketAddr),
    /// `tcp://ADDR:PORT`
    Tcp(SocketAddr),
    /// `tls://ADDR:PORT` (RFC 5425; certificate and key from the configuration)
    Tls(SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("bad syslog listener '{text}': {why} (udp://ADDR:PORT, tcp://ADDR:PORT or tls://ADDR:PORT)")
        };
        let (scheme, address) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let address: SocketAddr = address.parse().map_err(|_| bad("the address must be IP:PORT"))?;
        match scheme {
            "udp" => Ok(Listen::Udp(address)),
            "tcp" => Ok(Listen::Tcp(address)),
            "tls" => Ok(Listen::Tls(address)),
            _ => Err(bad("unknown scheme")),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Udp(address) => write!(f, "udp://{address}"),
            Listen::Tcp(address) => write!(f, "tcp://{address}"),
            Listen::Tls(address) => write!(f, "tls://{address}"),
        }
    }
}

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

/// One message and where it came from.
#[derive(Debug)]
pub struct Message {
    /// The sender's address.
    pub source: IpAddr,
    /// Who it may speak for.
    pub origin: Origin,
    /// The raw message, without framing.
    pub bytes: Vec<u8>,
}

/// Counters of the ingest, exported as `wbguard_syslog_messages_total`.
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Messages from sources not on the allow list, or speaking for a
    /// server they are not.
    pub rejected: AtomicU64,
    /// Messages over [`MAX_MESSAGE`].
    pub oversize: AtomicU64,
    /// UDP messages dropped because the guard's queue was full.
    pub dropped: AtomicU64,
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
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<Sources> {
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
        let servers = by_address.into_iter().map(|(ip, hosts)| (ip, hosts.into())).collect();
        let relays = config.watch.relays.iter().map(|&ip| canonical(ip)).collect();
        Ok(Sources { open: false, servers, relays })
    }

    /// Who `source` may speak for, if anyone.
    fn origin(&self, source: IpAddr) -> Option<Origin> {
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
    pub queue: mpsc::Sender<Message>,
    /// Who may send (replaced on reload).
    pub sources: Arc<RwLock<Arc<Sources>>>,
    /// Counters.
    pub counters: Arc<IngestCounters>,
}

impl Intake {
    /// The allow list as of now.
    fn sources(&self) -> Arc<Sources> {
        self.sources.read().expect("the sources lock is never poisoned").clone()
    }

    /// Checks a message; `None` when it is dropped (and counted).
    fn admit(&self, sources: &Sources, source: IpAddr, bytes: &[u8]) -> Option<Message> {
        let Some(origin) = sources.origin(source) else {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if bytes.len() > MAX_MESSAGE {
            self.counters.oversize.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Message { source, origin, bytes: bytes.to_vec() })
    }

    /// A datagram: dropped and counted when the queue is full.
    fn offer_datagram(&self, source: IpAddr, bytes: &[u8]) {
        let Some(message) = self.admit(&self.sources(), source, bytes) else { return };
        if self.queue.try_send(message).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A message of a stream: waits for room (the sender is slowed, never
    /// loses a message). False when the guard is gone.
    async fn offer_stream(&self, sources: &Sources, source: IpAddr, bytes: &[u8]) -> bool {
        match self.admit(sources, source, bytes) {
            Some(message) => self.queue.send(message).await.is_ok(),
            None => true,
        }
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
    crate::mmp::credentials::check_private(key).context("the TLS key")?;
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

    /// Serves until `shutdown` turns true.
    pub async fn serve(self, intake: Intake, mut shutdown: watch::Receiver<bool>) {
        let (listener, tls) = match self {
            Bound::Udp(socket) => {
                let mut buffer = vec![0u8; 65_536];
                loop {
                    tokio::select! {
                        received = socket.recv_from(&mut buffer) => {
                            if let Ok((n, from)) = received {
                                let datagram = &buffer[..n];
                                let datagram = datagram.strip_suffix(b"\n").unwrap_or(datagram);
                                intake.offer_datagram(from.ip(), datagram);
                            }
                        }
                        _ = shutdown.changed() => return,
                    }
                }
            }
            Bound::Tcp(listener) => (listener, None),
            Bound::Tls(listener, acceptor) => (listener, Some(acceptor)),
        };
        let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, from)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let Ok(place) = places.clone().acquire_owned().await else { return };
                    let intake = intake.clone();
                    let shutdown = shutdown.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let _place = place;
                        match tls {
                            None => stream_messages(stream, from.ip(), intake, shutdown).await,
                            Some(acceptor) => {
                                let handshake = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream));
                                match handshake.await {
                                    Ok(Ok(stream)) => stream_messages(stream, from.ip(), intake, shutdown).await,
                                    Ok(Err(e)) => tracing::warn!("syslog over TLS from {from}: handshake failed: {e}"),
                                    Err(_) => tracing::warn!("syslog over TLS from {from}: no handshake within 10 s"),
                                }
                            }
                        }
                    });
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// One TCP sender: frames by octet counting (`LEN SP MSG`) when a frame
/// starts with a digit, else by newline.
async fn stream_messages<S: AsyncRead + Unpin>(
    stream: S,
    source: IpAddr,
    intake: Intake,
    mut shutdown: watch::Receiver<bool>,
) {
    // The allow list as the connection opened: a reload applies to new ones.
    let sources = intake.sources();
    if sources.origin(source).is_none() {
        intake.counters.rejected.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut frame = Vec::with_capacity(1024);
    loop {
        let first = tokio::select! {
            buffered = reader.fill_buf() => match buffered {
                Ok([]) | Err(_) => return,
                Ok(bytes) => bytes[0],
            },
            _ = shutdown.changed() => return,
        };
        frame.clear();
        if first.is_ascii_digit() {
            // Octet counting: digits, a space, then exactly that many bytes.
            let mut length = Vec::new();
            if reader.read_until(b' ', &mut length).await.is_err() {
                return;
            }
            let Some(length) = std::str::from_utf8(&length).ok().and_then(|l| l.trim_end().parse::<usize>().ok())
            else {
                return; // not a syslog stream: drop the connection
            };
            if length > MAX_MESSAGE {
                intake.counters.oversize.fetch_add(1, Ordering::Relaxed);
                let mut skip = (&mut reader).take(length as u64);
                if tokio::io::copy(&mut skip, &mut tokio::io::sink()).await.is_err() {
                    return;
                }
                continue;
            }
            frame.resize(length, 0);
            if reader.read_exact(&mut frame).await.is_err() {
                return;
            }
        } else {
            // Newline framing, bounded: an endless line is cut and dropped.
            let mut limited = (&mut reader).take(MAX_MESSAGE as u64 + 1);
            match limited.read_until(b'\n', &mut frame).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if frame.last() != Some(&b'\n') && frame.len() > MAX_MESSAGE {
                intake.counters.oversize.fetch_add(1, Ordering::Relaxed);
                let mut rest = Vec::new();
                while !rest.ends_with(b"\n") {
                    rest.clear();
                    let mut chunk = (&mut reader).take(MAX_MESSAGE as u64);
                    match chunk.read_until(b'\n', &mut rest).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
                continue;
            }
            while frame.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
                frame.pop();
            }
        }
        if !intake.offer_stream(&sources, source, &frame).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_parse() {
        assert_eq!("udp://127.0.0.1:514".parse(), Ok(Listen::Udp("127.0.0.1:514".parse().unwrap())));
        assert_eq!("tcp://[::1]:601".parse(), Ok(Listen::Tcp("[::1]:601".parse().unwrap())));
        assert_eq!("tls://127.0.0.1:6514".parse(), Ok(Listen::Tls("127.0.0.1:6514".parse().unwrap())));
        assert_eq!("tls://127.0.0.1:6514".parse::<Listen>().unwrap().to_string(), "tls://127.0.0.1:6514");
        assert!("udp://localhost:514".parse::<Listen>().is_err());
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
