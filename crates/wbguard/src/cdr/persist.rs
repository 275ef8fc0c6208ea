//! The CDR receiver's writes to the history file, on a thread of their
//! own (SQLite blocks; the async workers must not): each body's change is
//! queued in the order it was applied, written in one transaction, and the
//! listener that queued it is told when it is durable; only then is the
//! Call Bridge answered 200.
//!
//! The queue holds [`WRITES`] changes; a body that finds it full is
//! answered 503 (the Call Bridge sends it again). A change that could not
//! be queued or written leaves its call bridge "dirty": the next write for
//! it replaces everything stored for it with the state in memory, so the
//! file catches up however many writes were lost. A reconcile is written
//! the same way.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Weak;

use tokio::sync::oneshot;

use super::LiveLegs;
use crate::store::cdr::CdrChange;
use crate::store::Store;

/// Changes waiting for the writer, at most.
pub const WRITES: usize = 64;

enum Command {
    /// One body's change, and whom to tell.
    Write { change: CdrChange, reply: oneshot::Sender<Result<(), String>> },
    /// A call bridge's state changed outside a body (a reconcile).
    Flush(String),
}

/// The handle the receiver queues changes on.
#[derive(Debug)]
pub struct Writer {
    queue: SyncSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Write { change, .. } => write!(f, "Write({})", change.row.source),
            Command::Flush(name) => write!(f, "Flush({name})"),
        }
    }
}

impl Writer {
    /// Starts the writer thread on `store`; it stops when `live` is gone.
    pub fn start(store: Store, live: Weak<LiveLegs>) -> anyhow::Result<Writer> {
        let (queue, commands) = sync_channel(WRITES);
        std::thread::Builder::new().name("wbguard-cdr".into()).spawn(move || run(store, commands, live))?;
        Ok(Writer { queue })
    }

    /// Queues a change; the receiver hears when it is durable. Err when
    /// the queue is full or the writer gone.
    pub fn write(&self, change: CdrChange) -> Result<oneshot::Receiver<Result<(), String>>, String> {
        let (reply, answer) = oneshot::channel();
        match self.queue.try_send(Command::Write { change, reply }) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_)) => Err(format!("the CDR store is behind ({WRITES} writes waiting)")),
            Err(TrySendError::Disconnected(_)) => Err("the CDR store's writer stopped".into()),
        }
    }

    /// Queues a rewrite of `name`'s state (after a reconcile); when the
    /// queue is full, its next write does it.
    pub fn flush(&self, name: String) {
        let _ = self.queue.try_send(Command::Flush(name));
    }
}

fn run(mut store: Store, commands: Receiver<Command>, live: Weak<LiveLegs>) {
    // Failures in a row: the first is logged, the rest only answered 503.
    let mut failing = false;
    for command in commands {
        let Some(live) = live.upgrade() else { return };
        let (name, change, reply) = match command {
            Command::Write { change, reply } => (change.row.source.clone(), Some(change), Some(reply)),
            Command::Flush(name) => (name, None, None),
        };
        let whole = live.tracker().take_dirty(&name);
        let written = match (whole, &change) {
            (Some((row, legs)), _) => store.cdr_replace(&row, &legs),
            (None, Some(change)) => store.cdr_apply(change),
            (None, None) => Ok(()),
        };
        let result = match written {
            Ok(()) => {
                if failing {
                    tracing::info!("CDR: the history file takes writes again");
                    failing = false;
                }
                Ok(())
            }
            Err(error) => {
                live.tracker().mark_dirty(&name);
                if !failing {
                    tracing::error!("CDR: cannot write to the history file: {error:#}; answering 503 until it can");
                    failing = true;
                }
                Err(format!("the CDR store failed: {error:#}"))
            }
        };
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
}
