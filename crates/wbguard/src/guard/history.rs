//! The guard's writer: one thread owns the SQLite store, so that disk
//! writes never stall the async tasks. Commands come through a bounded
//! queue; when it is full, samples are dropped and counted (the model has
//! them already), while decisions and restarts wait for a place.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

use chrono::{DateTime, Duration, Utc};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::oneshot;

use crate::store::{Estimate, Sample, Store};

/// Commands queued for the writer. Small: a flood of samples (a replayed
/// log) must not grow memory; past this, sample batches are dropped and
/// counted (decisions, restarts and alerts wait for a place instead).
const QUEUE: usize = 64;

enum Command {
    Samples(Vec<Sample>),
    Estimates(Vec<Estimate>),
    Decision { at: DateTime<Utc>, webbridge: String, action: String, reason: String, numbers: serde_json::Value },
    Prune(DateTime<Utc>, Option<DateTime<Utc>>),
    Intent { webbridge: String, reason: String, at: DateTime<Utc>, reply: oneshot::Sender<anyhow::Result<i64>> },
    Outcome { id: i64, result: String, detail: Option<String>, at: DateTime<Utc> },
    Alert { at: DateTime<Utc>, webbridge: Option<String>, kind: String, message: String },
    History { from: DateTime<Utc>, to: DateTime<Utc>, reply: oneshot::Sender<anyhow::Result<serde_json::Value>> },
    Flush(oneshot::Sender<()>),
}

/// The handle the guard and the HTTP side use.
#[derive(Clone)]
pub struct History {
    queue: SyncSender<Command>,
    /// Batches of samples or estimates dropped because the writer was
    /// behind (`wbguard_history_dropped_batches_total`).
    dropped: Counter,
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
        let (queue, commands) = sync_channel(QUEUE);
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
        std::thread::Builder::new().name("wbguard-history".into()).spawn(move || write(store, commands))?;
        Ok((History { queue, dropped }, last_restarts))
    }

    /// Queues samples; drops them (counted) when the writer is behind.
    pub fn samples(&self, samples: Vec<Sample>) {
        if !samples.is_empty() {
            self.queue_or_drop(Command::Samples(samples));
        }
    }

    /// Queues estimates, dropped and counted like samples.
    pub fn estimates(&self, estimates: Vec<Estimate>) {
        if !estimates.is_empty() {
            self.queue_or_drop(Command::Estimates(estimates));
        }
    }

    /// What the model already holds may be lost when the writer is behind:
    /// counted, never waited for.
    fn queue_or_drop(&self, command: Command) {
        if let Err(TrySendError::Full(_)) = self.queue.try_send(command) {
            self.dropped.inc();
        }
    }

    /// Records a decision (waits for a place: decisions are never dropped).
    pub fn decision(&self, at: DateTime<Utc>, webbridge: &str, action: &str, reason: &str, numbers: serde_json::Value) {
        let _ = self.queue.send(Command::Decision {
            at,
            webbridge: webbridge.into(),
            action: action.into(),
            reason: reason.into(),
            numbers,
        });
    }

    /// Journals the intent to restart; returns once it is on disk.
    pub async fn intent(&self, webbridge: &str, reason: &str, at: DateTime<Utc>) -> anyhow::Result<i64> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Intent { webbridge: webbridge.into(), reason: reason.into(), at, reply };
        self.queue.send(command).map_err(|_| anyhow::anyhow!("the history writer stopped"))?;
        answer.await.map_err(|_| anyhow::anyhow!("the history writer stopped"))?
    }

    /// Journals how a restart ended.
    pub fn outcome(&self, id: i64, result: &str, detail: Option<String>, at: DateTime<Utc>) {
        let _ = self.queue.send(Command::Outcome { id, result: result.into(), detail, at });
    }

    /// Records an alert.
    pub fn alert(&self, at: DateTime<Utc>, webbridge: Option<&str>, kind: &str, message: &str) {
        tracing::warn!("alert: {message}");
        let command =
            Command::Alert { at, webbridge: webbridge.map(str::to_owned), kind: kind.into(), message: message.into() };
        let _ = self.queue.send(command);
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

    /// Reads the history between `from` and `to`.
    pub async fn read(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> anyhow::Result<serde_json::Value> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Command::History { from, to, reply })
            .map_err(|_| anyhow::anyhow!("the history writer stopped"))?;
        answer.await.map_err(|_| anyhow::anyhow!("the history writer stopped"))?
    }
}

fn write(mut store: Store, commands: Receiver<Command>) {
    for command in commands {
        let outcome = match command {
            Command::Samples(samples) => store.record_samples(&samples),
            Command::Estimates(estimates) => store.record_estimates(&estimates),
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
            Command::History { from, to, reply } => {
                let _ = reply.send(store.history(from, to));
                Ok(())
            }
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
