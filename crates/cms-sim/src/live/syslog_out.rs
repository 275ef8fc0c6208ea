//! Sending the simulated servers' syslog to destinations: UDP, or TCP with
//! newline or octet-counting (RFC 6587) framing.
//!
//! Each destination has its own bounded queue; when a destination cannot
//! keep up (or a TCP peer is away), new lines are dropped and counted, and
//! the simulation never waits for it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};

/// Lines a destination may queue before new ones are dropped.
const QUEUE: usize = 10_000;

/// Where syslog goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `udp://ADDR:PORT`
    Udp(SocketAddr),
    /// `tcp://ADDR:PORT`, or with `?framing=octet-counting`.
    Tcp {
        /// Peer address.
        address: SocketAddr,
        /// RFC 6587 octet counting instead of newline framing.
        octet_counting: bool,
    },
}

impl std::str::FromStr for Destination {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "bad syslog destination '{text}': {why} (udp://HOST:PORT or tcp://HOST:PORT[?framing=octet-counting])"
            )
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
        let address: SocketAddr = address.parse().map_err(|_| bad("the address must be IP:PORT"))?;
        let octet_counting = match query {
            "" | "framing=newline" => false,
            "framing=octet-counting" => true,
            _ => return Err(bad("unknown option")),
        };
        match scheme {
            "udp" if !octet_counting => Ok(Destination::Udp(address)),
            "udp" => Err(bad("framing is for tcp")),
            "tcp" => Ok(Destination::Tcp { address, octet_counting }),
            _ => Err(bad("unknown scheme")),
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Udp(address) => write!(f, "udp://{address}"),
            Destination::Tcp { address, octet_counting: false } => write!(f, "tcp://{address}"),
            Destination::Tcp { address, octet_counting: true } => write!(f, "tcp://{address}?framing=octet-counting"),
        }
    }
}

/// Fans lines out to every destination's queue.
#[derive(Clone, Default)]
pub struct Outbox {
    queues: Vec<mpsc::Sender<Arc<[u8]>>>,
    dropped: Arc<AtomicU64>,
}

impl Outbox {
    /// Queues each line (without its newline) for every destination.
    pub fn send_all(&self, lines: Vec<Vec<u8>>) {
        for line in lines {
            let line: Arc<[u8]> = line.into();
            for queue in &self.queues {
                if queue.try_send(line.clone()).is_err() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Lines dropped because a destination's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Starts one sender task per destination; returns the outbox feeding them.
pub fn start(
    destinations: &[Destination],
    shutdown: &watch::Receiver<bool>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Outbox {
    let mut outbox = Outbox::default();
    for destination in destinations {
        let (sender, receiver) = mpsc::channel(QUEUE);
        outbox.queues.push(sender);
        let destination = destination.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            match destination {
                Destination::Udp(address) => udp(address, receiver, shutdown).await,
                Destination::Tcp { address, octet_counting } => tcp(address, octet_counting, receiver, shutdown).await,
            }
        });
    }
    outbox
}

async fn udp(address: SocketAddr, mut lines: mpsc::Receiver<Arc<[u8]>>, mut shutdown: watch::Receiver<bool>) {
    let local: SocketAddr =
        if address.is_ipv4() { ([127, 0, 0, 1], 0).into() } else { "[::1]:0".parse().expect("valid") };
    let local = if address.ip().is_loopback() {
        local
    } else if address.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        "[::]:0".parse().expect("valid")
    };
    let Ok(socket) = UdpSocket::bind(local).await else { return };
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => { let _ = socket.send_to(&line, address).await; }
                None => return,
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn tcp(
    address: SocketAddr,
    octet_counting: bool,
    mut lines: mpsc::Receiver<Arc<[u8]>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut stream: Option<TcpStream> = None;
    let mut frame = Vec::with_capacity(512);
    loop {
        if stream.is_none() {
            match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(address)).await {
                Ok(Ok(connected)) => stream = Some(connected),
                _ => {
                    // Away: try again in a second; lines pile up in the queue
                    // meanwhile, and past its bound they are dropped.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
        let line = tokio::select! {
            line = lines.recv() => match line { Some(line) => line, None => return },
            _ = shutdown.changed() => return,
        };
        frame.clear();
        if octet_counting {
            frame.extend_from_slice(format!("{} ", line.len()).as_bytes());
            frame.extend_from_slice(&line);
        } else {
            frame.extend_from_slice(&line);
            frame.push(b'\n');
        }
        if let Some(connected) = stream.as_mut() {
            if connected.write_all(&frame).await.is_err() {
                stream = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_print() {
        for text in ["udp://127.0.0.1:514", "tcp://127.0.0.1:601", "tcp://127.0.0.1:601?framing=octet-counting"] {
            assert_eq!(text.parse::<Destination>().unwrap().to_string(), text);
        }
        assert!("udp://localhost:514".parse::<Destination>().unwrap_err().contains("IP:PORT"));
        assert!("http://127.0.0.1:1".parse::<Destination>().is_err());
        assert!("udp://127.0.0.1:1?framing=octet-counting".parse::<Destination>().is_err());
    }
}
