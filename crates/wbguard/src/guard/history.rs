//! The guard's history: one thread owns the SQLite store and writes, so
//! that disk writes never stall the async tasks, and `/api/history` reads
//! on their own read-only connections (WAL: a reader never blocks the
//! writer), a few at a time.
//!
//! Commands go through one bounded queue. Batches of samples and estimates
//! take at most [`BATCHES`] places; the ingest waits up to [`ROOM_WAIT`]
//! for one (a replayed log slows to the writer's pace instead of losing
//! history), then drops the batch, counted (the model has it already);
//! everything else never waits for the writer. The journal
//! (decisions, restarts, alerts) has [`JOURNAL`] places of its own, and past
//! those (a disk that stopped answering) an entry is dropped, counted and
//! logged, and a restart whose intent cannot be queued is not made.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::store::history::Query;
use crate::store::{Estimate, Sample, Store};

/// Batches of samples or estimates queued for the writer, at most: a flood
/// of samples (a replayed log) must not grow memory.
const BATCHES: usize = 24;
/// How long the guard waits for a place for a batch of samples, at most.
const ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Journal entries (decisions, restarts, alerts) queued, at most, besides.
const JOURNAL: usize = 256;

/// `/api/history` answers built at once (each on its own connection);
/// more requests wait up to [`READ_WAIT`], then are refused (503). Each
/// answer is a few MB at most (see [`crate::store::history`]).
pub const READS: usize = 2;
/// How long a request waits for one of the [`READS`].
pub const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A drain to journal: which web bridge, through which server's hook, why, when.
struct DrainEntry {
    webbridge: String,
    server: String,
    reason: String,
    at: DateTime<Utc>,
}

enum Command {
    /// Samples, with the place in the queue they hold until written.
    Samples(Vec<Sample>, OwnedSemaphorePermit),
    Estimates(Vec<Estimate>, OwnedSemaphorePermit),
    Decision {
        at: DateTime<Utc>,
        webbridge: String,
        action: String,
        reason: String,
        numbers: serde_json::Value,
    },
    Prune(DateTime<Utc>, Option<DateTime<Utc>>),
    Intent {
        webbridge: String,
        reason: String,
        at: DateTime<Utc>,
        reply: oneshot::Sender<anyhow::Result<i64>>,
    },
    Outcome {
        id: i64,
        result: String,
        detail: Option<String>,
        at: DateTime<Utc>,
    },
    Alert {
        at: DateTime<Utc>,
        webbridge: Option<String>,
        kind: String,
        message: String,
    },
    DrainStarted {
        drain: DrainEntry,
        reply: oneshot::Sender<anyhow::Result<i64>>,
    },
    DrainEnded {
        id: i64,
        result: String,
        detail: String,
        at: DateTime<Utc>,
    },
    Flush(oneshot::Sender<()>),
}

/// The handle the guard and the HTTP side use.
#[derive(Clone)]
pub struct History {
    queue: SyncSender<Command>,
    /// Places for batches of samples or estimates in the queue (one
    /// permit each, given back once written).
    batches: Arc<Semaphore>,
    /// Batches of samples or estimates, or journal entries, dropped because
    /// the writer was behind (`wbguard_history_dropped_batches_total`).
    dropped: Counter,
    /// The connections `/api/history` reads on, one per permit.
    readers: Arc<Mutex<Vec<Store>>>,
    reads: Arc<Semaphore>,
}

/// Why `/api/history` has no answer.
pub enum ReadError {
    /// Every reader is busy: try again later.
    Busy,
    /// The store failed.
    Failed(anyhow::Error),
}

/// An answer, as JSON, and its place among the [`READS`], held until the
/// answer is sent.
pub struct Read {
    /// The JSON.
    pub json: Vec<u8>,
    /// The place.
    pub place: OwnedSemaphorePermit,
}

impl History {
    /// Opens the store, closes journal entries left open by a previous run
    /// (they may have happened: the minimum interval counts them), and
    /// starts the writer thread; batches it drops are counted in `dropped`.
    /// Returns the handle and the last restart of each web bridge.
    pub fn start(
        store: Store,
        retention: Duration,
        dropped: Counter,
    ) -> anyhow::Result<(History, BTreeMap<String, DateTime<Utc>>)> {
        let (queue, commands) = sync_channel(BATCHES + JOURNAL);
        let mut store = store;
        for open in store.unfinished()? {
            let message = format!(
                "restart {} of {} decided at {} was interrupted; it may have happened",
                open.id, open.webbridge, open.intent
            );
            tracing::warn!("{message}");
            store.restart_outcome(
                open.id,
                "interrupted",
                Some("the guard stopped before the outcome was known"),
                Utc::now(),
            )?;
            store.alert(Utc::now(), Some(&open.webbridge), "restart_interrupted", &message)?;
        }
        store.prune(Utc::now() - retention, None)?;
        let last_restarts = store.last_restarts()?;
        let readers = (0..READS).map(|_| store.reader()).collect::<anyhow::Result<Vec<_>>>()?;
        let batches = Arc::new(Semaphore::new(BATCHES));
        std::thread::Builder::new().name("wbguard-history".into()).spawn(move || write(store, commands))?;
        let readers = Arc::new(Mutex::new(readers));
        Ok((History { queue, batches, dropped, readers, reads: Arc::new(Semaphore::new(READS)) }, last_restarts))
    }

    /// Queues samples; drops them (counted) when the writer is behind.
    pub fn samples(&self, samples: Vec<Sample>) {
        if !samples.is_empty() {
            let place = self.batches.clone().try_acquire_owned().ok();
            self.queue_or_drop(place.map(|place| Command::Samples(samples, place)));
        }
    }

    /// Queues samples, waiting up to [`ROOM_WAIT`] for a place when the
    /// writer is behind (a log replayed faster than SQLite stores it: the
    /// guard slows, its stream inputs with it, rather than lose history),
    /// then drops them, counted (a disk that stopped answering).
    pub async fn samples_or_wait(&self, samples: Vec<Sample>) {
        if !samples.is_empty() {
            let place = tokio::time::timeout(ROOM_WAIT, self.batches.clone().acquire_owned()).await;
            self.queue_or_drop(place.ok().and_then(Result::ok).map(|place| Command::Samples(samples, place)));
        }
    }

    /// Queues estimates, dropped and counted like samples.
    pub fn estimates(&self, estimates: Vec<Estimate>) {
        if !estimates.is_empty() {
            let place = self.batches.clone().try_acquire_owned().ok();
            self.queue_or_drop(place.map(|place| Command::Estimates(estimates, place)));
        }
    }

    /// What the model already holds may be lost when the writer is behind
    /// (no place: `None`): counted.
    fn queue_or_drop(&self, command: Option<Command>) {
        if command.is_none_or(|command| self.queue.try_send(command).is_err()) {
            self.dropped.inc();
        }
    }

    /// Queues a journal entry; when the writer is so far behind that its
    /// places are taken, drops it, counted and logged (`what` says which).
    fn journal(&self, command: Command, what: &str) -> bool {
        match self.queue.try_send(command) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.inc();
                tracing::error!("history: the writer is behind (a slow or stuck disk?): {what} not recorded");
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Records a decision.
    pub fn decision(&self, at: DateTime<Utc>, webbridge: &str, action: &str, reason: &str, numbers: serde_json::Value) {
        let command = Command::Decision {
            at,
            webbridge: webbridge.into(),
            action: action.into(),
            reason: reason.into(),
            numbers,
        };
        self.journal(command, "a decision");
    }

    /// Journals the intent to restart; returns once it is on disk.
    pub async fn intent(&self, webbridge: &str, reason: &str, at: DateTime<Utc>) -> anyhow::Result<i64> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Intent { webbridge: webbridge.into(), reason: reason.into(), at, reply };
        anyhow::ensure!(self.journal(command, "a restart's intent"), "the history writer is behind or stopped");
        answer.await.map_err(|_| anyhow::anyhow!("the history writer stopped"))?
    }

    /// Journals how a restart ended.
    pub fn outcome(&self, id: i64, result: &str, detail: Option<String>, at: DateTime<Utc>) {
        self.journal(Command::Outcome { id, result: result.into(), detail, at }, "a restart's outcome");
    }

    /// Records an alert.
    pub fn alert(&self, at: DateTime<Utc>, webbridge: Option<&str>, kind: &str, message: &str) {
        tracing::warn!("alert: {message}");
        let command =
            Command::Alert { at, webbridge: webbridge.map(str::to_owned), kind: kind.into(), message: message.into() };
        self.journal(command, "an alert");
    }

    /// Journals a drain before its hook runs; returns once it is on disk.
    pub async fn drain_started(
        &self,
        webbridge: &str,
        server: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<i64> {
        let (reply, answer) = oneshot::channel();
        let drain = DrainEntry { webbridge: webbridge.into(), server: server.into(), reason: reason.into(), at };
        anyhow::ensure!(
            self.journal(Command::DrainStarted { drain, reply }, "a drain's start"),
            "the history writer is behind or stopped"
        );
        answer.await.map_err(|_| anyhow::anyhow!("the history writer stopped"))?
    }

    /// Journals how a drain ended.
    pub fn drain_ended(&self, id: i64, result: &str, detail: &str, at: DateTime<Utc>) {
        let command = Command::DrainEnded { id, result: result.into(), detail: detail.into(), at };
        self.journal(command, "a drain's end");
    }

    /// Deletes history older than `before`, and newer than `after` if given.
    pub fn prune(&self, before: DateTime<Utc>, after: Option<DateTime<Utc>>) {
        let _ = self.queue.try_send(Command::Prune(before, after));
    }

    /// Waits until everything queued so far is written (before exiting).
    pub async fn flush(&self) {
        let (reply, done) = oneshot::channel();
        if self.queue.send(Command::Flush(reply)).is_ok() {
            let _ = done.await;
        }
    }

    /// `/api/history`'s answer to `query`, as JSON, built on a blocking
    /// thread; [`ReadError::Busy`] when every reader stayed busy for [`READ_WAIT`].
    pub async fn read(&self, query: Query) -> Result<Read, ReadError> {
        let place = tokio::time::timeout(READ_WAIT, self.reads.clone().acquire_owned())
            .await
            .map_err(|_| ReadError::Busy)?
            .map_err(|_| ReadError::Busy)?;
        let readers = self.readers.clone();
        // The place travels with the read: a client that goes away drops
        // this future, not the blocking read, which keeps its place (and
        // its reader) until it ends, so places and readers stay one to one.
        let (json, place) = tokio::task::spawn_blocking(move || {
            let taken = readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
            let Some(reader) = taken else {
                return (Err(anyhow::anyhow!("no history reader free")), place);
            };
            let json = reader.history(&query).and_then(|answer| Ok(serde_json::to_vec(&answer)?));
            readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(reader);
            (json, place)
        })
        .await
        .map_err(|error| ReadError::Failed(anyhow::anyhow!("the history read stopped: {error}")))?;
        Ok(Read { json: json.map_err(ReadError::Failed)?, place })
    }
}

/// Batches of samples or estimates written in one transaction, at most.
const GROUP: usize = 8;

fn write(mut store: Store, commands: Receiver<Command>) {
    let mut next = None;
    while let Some(command) = next.take().or_else(|| commands.recv().ok()) {
        let outcome = match command {
            Command::Samples(..) | Command::Estimates(..) => {
                // The batches waiting behind this one go in the same
                // transaction (one commit, one sync: the writer keeps up with
                // a replayed log); the first other command ends the group and
                // is handled next, in its order.
                let (mut samples, mut estimates, mut places) = (Vec::new(), Vec::new(), Vec::new());
                let mut waiting = Some(command);
                while let Some(command) = waiting.take() {
                    match command {
                        Command::Samples(more, place) => {
                            samples.extend(more);
                            places.push(place);
                        }
                        Command::Estimates(more, place) => {
                            estimates.extend(more);
                            places.push(place);
                        }
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                    if places.len() < GROUP {
                        waiting = commands.try_recv().ok();
                    }
                }
                // The places are given back once written (dropped here).
                store.record(&samples, &estimates)
            }
            Command::Decision { at, webbridge, action, reason, numbers } => {
                store.record_decision(at, &webbridge, &action, &reason, &numbers)
            }
            Command::Prune(before, after) => store.prune(before, after).map(|_| ()),
            Command::Intent { webbridge, reason, at, reply } => {
                let _ = reply.send(store.restart_intent(&webbridge, &reason, at));
                Ok(())
            }
            Command::Outcome { id, result, detail, at } => store.restart_outcome(id, &result, detail.as_deref(), at),
            Command::Alert { at, webbridge, kind, message } => store.alert(at, webbridge.as_deref(), &kind, &message),
            Command::DrainStarted { drain, reply } => {
                let DrainEntry { webbridge, server, reason, at } = drain;
                let _ = reply.send(store.drain_started(&webbridge, &server, &reason, at));
                Ok(())
            }
            Command::DrainEnded { id, result, detail, at } => store.drain_ended(id, &result, &detail, at),
            Command::Flush(reply) => {
                let _ = reply.send(());
                Ok(())
            }
        };
        if let Err(error) = outcome {
            tracing::error!("history: {error:#}");
        }
    }
}
