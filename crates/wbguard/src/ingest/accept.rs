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
//!
//! A gate may also take places back ([`Gate::evicting`]): with every place
//! taken, the next connection is accepted anyway (one over the bound, at
//! most) and the holder silent longest is asked to leave ([`Place::moved`]
//! says when a holder last did something, [`Place::asked_to_leave`] tells
//! it to go). Idle or half-sent connections then cannot keep a newcomer
//! waiting for their timeouts: it is served at once.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
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
    pub place: Place,
}

/// How long a newcomer waits for the place of a holder asked to leave
/// before the next one is asked too (a holder busy in a handler notices
/// only when it next reads or writes).
const EVICTION_WAIT: Duration = Duration::from_millis(200);

/// What the gate knows of one holder: when it last moved, whether it was
/// asked to leave, and how to wake it to tell it so.
#[derive(Debug, Default)]
struct Holder {
    /// Milliseconds since the gate's start when it last moved.
    moved: AtomicU64,
    /// Asked to leave: it closes the next time it is polled.
    asked: AtomicBool,
    /// Serving a request (a restart asked for, an answer being built):
    /// never asked to leave, however long it has been silent.
    busy: AtomicBool,
    /// Its task, woken when it is asked to leave.
    waker: Mutex<Option<Waker>>,
}

/// Every place's holder, by place (only kept by evicting gates).
#[derive(Debug)]
struct Holders {
    /// When the gate started: holders' times are counted from it.
    started: tokio::time::Instant,
    /// One slot per place; `None` when free.
    slots: Mutex<Vec<Option<Arc<Holder>>>>,
}

impl Holders {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Asks the holder silent longest, not yet asked, to leave.
    fn evict_one(&self) {
        let slots = self.slots.lock().expect("never poisoned");
        let silent_longest = slots
            .iter()
            .flatten()
            .filter(|h| !h.asked.load(Ordering::Relaxed) && !h.busy.load(Ordering::Relaxed))
            .min_by_key(|h| h.moved.load(Ordering::Relaxed));
        if let Some(holder) = silent_longest {
            holder.asked.store(true, Ordering::Relaxed);
            if let Some(waker) = holder.waker.lock().expect("never poisoned").take() {
                waker.wake();
            }
        }
    }
}

/// A place at a gate, held by one connection until dropped.
#[derive(Debug)]
pub struct Place {
    _permit: OwnedSemaphorePermit,
    /// For an evicting gate: this holder, its slot and the slots.
    holder: Option<(Arc<Holder>, usize, Arc<Holders>)>,
}

impl Place {
    /// The holder did something (read or wrote): it is not silent.
    pub fn moved(&self) {
        if let Some((holder, _, holders)) = &self.holder {
            holder.moved.store(holders.now(), Ordering::Relaxed);
        }
    }

    /// The holder is serving a request (`true`) or waiting for the next
    /// (`false`): only a waiting one may be asked to leave.
    pub fn busy(&self, busy: bool) {
        if let Some((holder, _, _)) = &self.holder {
            holder.busy.store(busy, Ordering::Relaxed);
        }
    }

    /// Whether the gate wants the place back for a newcomer; if not yet,
    /// the task of `cx` is woken when it does.
    pub fn asked_to_leave(&self, cx: &mut Context<'_>) -> bool {
        let Some((holder, _, _)) = &self.holder else { return false };
        if holder.asked.load(Ordering::Relaxed) {
            return true;
        }
        *holder.waker.lock().expect("never poisoned") = Some(cx.waker().clone());
        // Asked while the waker was being stored: it may have found none.
        holder.asked.load(Ordering::Relaxed)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some((_, slot, holders)) = &self.holder {
            holders.slots.lock().expect("never poisoned")[*slot] = None;
        }
    }
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
    /// For an evicting gate, who holds each place.
    holders: Option<Arc<Holders>>,
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
            holders: None,
        }
    }

    /// A gate that takes a place back for a newcomer when all are taken:
    /// the holder silent longest is asked to leave (see the module's doc).
    pub fn evicting(incoming: L, places: usize, what: &'static str) -> Gate<L> {
        let holders = Holders { started: tokio::time::Instant::now(), slots: Mutex::new(vec![None; places]) };
        Gate { holders: Some(Arc::new(holders)), ..Gate::new(incoming, places, what) }
    }

    /// The listener.
    pub fn incoming(&self) -> &L {
        &self.incoming
    }

    /// Waits for a place, then for a connection; an evicting gate with
    /// every place taken accepts first, then asks for a place back.
    /// Cancel-safe: dropped while waiting, it takes nothing (but the
    /// newcomer of an evicting gate, if already accepted).
    pub async fn accept(&mut self) -> Accepted<L::Stream> {
        let Some(holders) = self.holders.clone() else {
            let permit = self.places.clone().acquire_owned().await.expect("the places are never closed");
            let (stream, from) = self.connection().await;
            return Accepted { stream, from, place: Place { _permit: permit, holder: None } };
        };
        let permit = self.places.clone().try_acquire_owned().ok();
        let (stream, from) = self.connection().await;
        let permit = match permit {
            Some(permit) => permit,
            None => loop {
                holders.evict_one();
                let freed = tokio::time::timeout(EVICTION_WAIT, self.places.clone().acquire_owned()).await;
                if let Ok(permit) = freed {
                    break permit.expect("the places are never closed");
                }
            },
        };
        let holder = Arc::new(Holder::default());
        holder.moved.store(holders.now(), Ordering::Relaxed);
        let mut slots = holders.slots.lock().expect("never poisoned");
        let slot = slots.iter().position(Option::is_none).expect("a place was free, so is its slot");
        slots[slot] = Some(holder.clone());
        drop(slots);
        Accepted { stream, from, place: Place { _permit: permit, holder: Some((holder, slot, holders)) } }
    }

    /// The next connection, pausing after failed accepts.
    async fn connection(&mut self) -> (L::Stream, SocketAddr) {
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
                    return (stream, from);
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

    /// An evicting gate with every place taken accepts the newcomer and
    /// asks the holder silent longest to leave; the newcomer has its place
    /// once that one is gone.
    #[tokio::test(start_paused = true)]
    async fn an_evicting_gate_asks_the_holder_silent_longest_to_leave() {
        let (incoming, _) = scripted(vec![Ok(()), Ok(()), Ok(())]);
        let mut gate = Gate::evicting(incoming, 2, "test");
        let older = gate.accept().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let newer = gate.accept().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        older.place.moved(); // the older one spoke last: the newer is silent longest
        let mut cx = Context::from_waker(Waker::noop());
        assert!(!older.place.asked_to_leave(&mut cx) && !newer.place.asked_to_leave(&mut cx));
        let newcomer = tokio::spawn(async move { gate.accept().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(newer.place.asked_to_leave(&mut cx), "the silent one is asked");
        assert!(!older.place.asked_to_leave(&mut cx));
        assert!(!newcomer.is_finished(), "placed before a place was given back");
        drop(newer);
        let placed = tokio::time::timeout(Duration::from_secs(1), newcomer).await.unwrap().unwrap();
        assert!(!placed.place.asked_to_leave(&mut cx));
    }

    /// A holder being served (a restart asked for, an answer being built)
    /// is never the one asked to leave, however long it has been silent.
    #[tokio::test(start_paused = true)]
    async fn a_holder_being_served_is_not_asked_to_leave() {
        let (incoming, _) = scripted(vec![Ok(()), Ok(()), Ok(())]);
        let mut gate = Gate::evicting(incoming, 2, "test");
        let serving = gate.accept().await;
        serving.place.busy(true);
        tokio::time::advance(Duration::from_secs(5)).await;
        let waiting = gate.accept().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let mut cx = Context::from_waker(Waker::noop());
        let _newcomer = tokio::spawn(async move { gate.accept().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!serving.place.asked_to_leave(&mut cx), "the one being served was asked");
        assert!(waiting.place.asked_to_leave(&mut cx));
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
