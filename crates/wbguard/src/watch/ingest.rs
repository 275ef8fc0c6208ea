//! Syslog in: UDP datagrams and TCP streams (newline or RFC 6587 octet
//! counting, told apart by the first byte of each frame).
//!
//! Sockets only: parsing is the core's. Each message's source address is
//! checked against the allow list before anything else; rejected and
//! oversized messages are counted and dropped. The queue to the guard is
//! bounded: when it is full, messages are dropped and counted rather than
//! slowing the senders (UDP would lose them anyway).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch, Semaphore};

/// Messages longer than this are dropped (and counted).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// TCP senders served at once; more wait for a place.
pub const MAX_CONNECTIONS: usize = 256;

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `udp://ADDR:PORT`
    Udp(SocketAddr),
    /// `tcp://ADDR:PORT`
    Tcp(SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("bad syslog listener '{text}': {why} (udp://ADDR:PORT or tcp://ADDR:PORT)");
        let (scheme, address) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let address: SocketAddr = address.parse().map_err(|_| bad("the address must be IP:PORT"))?;
        match scheme {
            "udp" => Ok(Listen::Udp(address)),
            "tcp" => Ok(Listen::Tcp(address)),
            "tls" => Err(bad("TLS is not available yet")),
            _ => Err(bad("unknown scheme")),
        }
    }
}

/// One message and where it came from.
#[derive(Debug)]
pub struct Message {
    /// The sender's address.
    pub source: IpAddr,
    /// The raw message, without framing.
    pub bytes: Vec<u8>,
}

/// Counters of the ingest, exported as `wbguard_syslog_messages_total`.
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Messages from sources not on the allow list.
    pub rejected: AtomicU64,
    /// Messages over [`MAX_MESSAGE`].
    pub oversize: AtomicU64,
    /// Messages dropped because the guard's queue was full.
    pub dropped: AtomicU64,
}

/// Who may send: `None` accepts everyone (observe mode without a config).
#[derive(Debug, Clone)]
pub struct AllowList(pub Option<Vec<IpAddr>>);

impl AllowList {
    fn allows(&self, source: IpAddr) -> bool {
        self.0.as_ref().is_none_or(|list| {
            list.iter().any(|allowed| *allowed == source || canonical(*allowed) == canonical(source))
        })
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
    /// Who may send.
    pub allow: AllowList,
    /// Counters.
    pub counters: Arc<IngestCounters>,
}

impl Intake {
    fn offer(&self, source: IpAddr, bytes: &[u8]) {
        if !self.allow.allows(source) {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if bytes.len() > MAX_MESSAGE {
            self.counters.oversize.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let message = Message { source, bytes: bytes.to_vec() };
        if self.queue.try_send(message).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Binds a listener (errors name the address).
pub async fn bind(listen: &Listen) -> anyhow::Result<Bound> {
    use anyhow::Context;
    Ok(match listen {
        Listen::Udp(address) => {
            let socket = UdpSocket::bind(address)
                .await
                .with_context(|| format!("cannot listen for syslog on udp://{address}"))?;
            Bound::Udp(socket)
        }
        Listen::Tcp(address) => {
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for syslog on tcp://{address}"))?;
            Bound::Tcp(listener)
        }
    })
}

/// A bound listener.
pub enum Bound {
    /// UDP.
    Udp(UdpSocket),
    /// TCP.
    Tcp(TcpListener),
}

impl Bound {
    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Bound::Udp(socket) => socket.local_addr(),
            Bound::Tcp(listener) => listener.local_addr(),
        }
    }

    /// Serves until `shutdown` turns true.
    pub async fn serve(self, intake: Intake, mut shutdown: watch::Receiver<bool>) {
        match self {
            Bound::Udp(socket) => {
                let mut buffer = vec![0u8; 65_536];
                loop {
                    tokio::select! {
                        received = socket.recv_from(&mut buffer) => {
                            if let Ok((n, from)) = received {
                                let datagram = &buffer[..n];
                                let datagram = datagram.strip_suffix(b"\n").unwrap_or(datagram);
                                intake.offer(from.ip(), datagram);
                            }
                        }
                        _ = shutdown.changed() => return,
                    }
                }
            }
            Bound::Tcp(listener) => {
                let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((stream, from)) = accepted else { continue };
                            let Ok(place) = places.clone().acquire_owned().await else { return };
                            let intake = intake.clone();
                            let shutdown = shutdown.clone();
                            tokio::spawn(async move {
                                let _place = place;
                                stream_messages(stream, from.ip(), intake, shutdown).await;
                            });
                        }
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }
}

/// One TCP sender: frames by octet counting (`LEN SP MSG`) when a frame
/// starts with a digit, else by newline.
async fn stream_messages(stream: TcpStream, source: IpAddr, intake: Intake, mut shutdown: watch::Receiver<bool>) {
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
        intake.offer(source, &frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_parse() {
        assert_eq!("udp://127.0.0.1:514".parse(), Ok(Listen::Udp("127.0.0.1:514".parse().unwrap())));
        assert_eq!("tcp://[::1]:601".parse(), Ok(Listen::Tcp("[::1]:601".parse().unwrap())));
        assert!("tls://127.0.0.1:6514".parse::<Listen>().unwrap_err().contains("TLS"));
        assert!("udp://localhost:514".parse::<Listen>().is_err());
    }

    #[test]
    fn the_allow_list() {
        let list = AllowList(Some(vec!["10.0.0.1".parse().unwrap()]));
        assert!(list.allows("10.0.0.1".parse().unwrap()));
        assert!(list.allows("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!list.allows("10.0.0.2".parse().unwrap()));
        assert!(AllowList(None).allows("192.0.2.9".parse().unwrap()));
    }
}
