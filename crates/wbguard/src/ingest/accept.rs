//! Accepting connections, the same way for the syslog listeners (TCP,
//! TLS) and the guard's HTTP side: a place is taken first, then a
//! connection accepted; an accept that fails pauses before the next try.
//!
//! Place first: with every place taken, new connections wait in the
//! kernel's listen backlog (their senders wait, TCP pushes back) instead
//! of being accepted into sockets nobody serves, each costing a file
//! descriptor. Pause on failure: `accept` fails again at once for as long
//! as its cause lasts (EMFILE and ENFILE until descriptors are freed,
//! ENOBUFS/ENOMEM under memory pressure), so retrying at once would spin a
//! core and flood the log; the pause starts at [`BACKOFF_FIRST`] and
//! doubles to [`BACKOFF_MAX`]. The first failure of a run is logged, the
//! rest only counted, and the end of the run is logged with its count; a
//! run that starts within [`QUIET`] of the last warning is not logged
//! again (recovering from EMFILE, accepts fail and succeed by turns as
//! descriptors come and go).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The first pause after a failed accept: short, since a single failure
/// (a client that gave up while waiting, ECONNABORTED) is usually gone at
/// once.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// The longest pause: descriptors freed are used within a second.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// After a warning about failed accepts, how long the next runs of
/// failures stay unlogged.
pub const QUIET: Duration = Duration::from_secs(60);

/// Where connections come from: a TCP listener (tests use a stand-in).
pub trait Incoming: Send + 'static {
    /// One connection.
    type Stream: Send + 'static;
    /// Accepts one connection (cancel-safe, as `TcpListener::accept` is).
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
}

impl Incoming for TcpListener {
    type Stream = tokio::net::TcpStream;

    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send {
        TcpListener::accept(self)
    }
}

/// A connection accepted, and the place it holds until it is dropped.
#[derive(Debug)]
pub struct Accepted<S> {
    /// The connection.
    pub stream: S,
    /// Its peer.
    pub from: SocketAddr,
    /// Its place: dropping it lets the next connection in.
    pub place: OwnedSemaphorePermit,
}

/// A listener with a bound on the connections served at once and a
/// back-off on failed accepts.
#[derive(Debug)]
pub struct Gate<L = TcpListener> {
    /// The listener.
    incoming: L,
    /// Places for connections: one is taken before each accept and held by
    /// the connection ([`Accepted::place`]), so at most as many as it was
    /// made with are open at once.
    places: Arc<Semaphore>,
    /// The pause after the next failed accept.
    backoff: Duration,
    /// Failed accepts in a row: only the first of a run is logged (EMFILE
    /// repeats for as long as descriptors are short).
    failures: u64,
    /// When failed accepts were last warned about (see [`QUIET`]).
    warned_at: Option<tokio::time::Instant>,
    /// This run of failures was warned about: its end is logged too.
    run_warned: bool,
    /// What it accepts for, in log messages.
    what: &'static str,
}

impl<L: Incoming> Gate<L> {
    /// A gate of `places` connections at once on `incoming`; `what` names
    /// it in log messages ("syslog over TCP").
    pub fn new(incoming: L, places: usize, what: &'static str) -> Gate<L> {
        Gate {
            incoming,
            places: Arc::new(Semaphore::new(places)),
            backoff: BACKOFF_FIRST,
            failures: 0,
            warned_at: None,
            run_warned: false,
            what,
        }
    }

    /// The listener.
    pub fn incoming(&self) -> &L {
        &self.incoming
    }

    /// Waits for a place, then for a connection. Cancel-safe: dropped while
    /// waiting, it takes nothing.
    pub async fn accept(&mut self) -> Accepted<L::Stream> {
        let place = self.places.clone().acquire_owned().await.expect("the places are never closed");
        loop {
            match self.incoming.accept().await {
                Ok((stream, from)) => {
                    if self.run_warned {
                        tracing::info!(
                            "{}: accepting connections again, after {} failed tries",
                            self.what,
                            self.failures
                        );
                    }
                    self.failures = 0;
                    self.run_warned = false;
                    self.backoff = BACKOFF_FIRST;
                    return Accepted { stream, from, place };
                }
                Err(error) => {
                    // A client that gave up before it was accepted is its
                    // own business; anything else is ours, said once.
                    let theirs =
                        matches!(error.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset);
                    let quiet = self.warned_at.is_some_and(|at| at.elapsed() < QUIET);
                    if theirs {
                        tracing::debug!("{}: a connection was gone before it was accepted: {error}", self.what);
                    } else if !self.run_warned && !quiet {
                        tracing::warn!(
                            "{}: cannot accept connections: {error}; trying again, pausing up to {} ms between tries",
                            self.what,
                            BACKOFF_MAX.as_millis()
                        );
                        self.warned_at = Some(tokio::time::Instant::now());
                        self.run_warned = true;
                    }
                    self.failures += 1;
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    /// Connections and failures in a given order, then failures forever;
    /// counts the tries.
    struct Scripted {
        script: VecDeque<io::Result<()>>,
        tries: Arc<AtomicUsize>,
    }

    impl Incoming for Scripted {
        type Stream = ();

        fn accept(&mut self) -> impl Future<Output = io::Result<((), SocketAddr)>> + Send {
            self.tries.fetch_add(1, Ordering::Relaxed);
            let next = self.script.pop_front().unwrap_or_else(|| Err(io::Error::from_raw_os_error(24)));
            std::future::ready(next.map(|()| ((), "127.0.0.1:9".parse().unwrap())))
        }
    }

    fn scripted(script: Vec<io::Result<()>>) -> (Scripted, Arc<AtomicUsize>) {
        let tries = Arc::new(AtomicUsize::new(0));
        (Scripted { script: script.into(), tries: tries.clone() }, tries)
    }

    /// EMFILE for good: a handful of tries a second, not a spinning core.
    #[tokio::test]
    async fn failed_accepts_pause_instead_of_spinning() {
        let (incoming, tries) = scripted(Vec::new());
        let mut gate = Gate::new(incoming, 4, "test");
        let waited = tokio::time::timeout(Duration::from_millis(500), gate.accept()).await;
        assert!(waited.is_err());
        // 10 + 20 + 40 + 80 + 160 ms: the sixth try comes at 310 ms, the seventh at 630 ms.
        let tries = tries.load(Ordering::Relaxed);
        assert!((5..=7).contains(&tries), "{tries} tries in 500 ms");
        assert_eq!(gate.failures, tries as u64);
    }

    #[tokio::test]
    async fn a_success_ends_the_pauses() {
        let emfile = || Err(io::Error::from_raw_os_error(24));
        let (incoming, tries) = scripted(vec![emfile(), emfile(), Ok(()), emfile(), Ok(())]);
        let mut gate = Gate::new(incoming, 4, "test");
        let started = Instant::now();
        let _first = gate.accept().await;
        assert_eq!((gate.failures, gate.backoff), (0, BACKOFF_FIRST));
        let warned = gate.warned_at;
        assert!(warned.is_some());
        let _second = gate.accept().await;
        // 10 + 20 ms, then 10 ms again: the pause started over.
        assert!(started.elapsed() < Duration::from_millis(200), "{:?}", started.elapsed());
        assert_eq!(tries.load(Ordering::Relaxed), 5);
        // The second run came within a minute of the warning: not warned about.
        assert_eq!(gate.warned_at, warned);
    }

    /// With every place taken, nothing is accepted until one is given back.
    #[tokio::test]
    async fn the_place_comes_before_the_accept() {
        let (incoming, tries) = scripted(vec![Ok(()), Ok(())]);
        let mut gate = Gate::new(incoming, 1, "test");
        let first = gate.accept().await;
        assert!(tokio::time::timeout(Duration::from_millis(100), gate.accept()).await.is_err());
        assert_eq!(tries.load(Ordering::Relaxed), 1, "accepted without a place");
        drop(first);
        let _second = gate.accept().await;
        assert_eq!(tries.load(Ordering::Relaxed), 2);
    }
}
