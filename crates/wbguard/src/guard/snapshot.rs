//! What the guard task publishes for its readers (the HTTP side, the
//! metrics): an immutable [`Snapshot`] behind a lock that is only held to
//! swap or clone an `Arc`, and the counters the task and the listeners
//! keep.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use wbguard_core::model::{ClusterEstimate, Deployment, ModelConfig};
use wbguard_core::policy::{Decision, Mode};

pub use super::api::{Snapshot, WebBridgeView};
use super::notify::NotifyCounters;
use crate::ingest::IngestCounters;
use crate::secret::Token;

/// Parse outcomes, exported with the ingest's as `wbguard_syslog_messages_total`.
#[derive(Debug, Default)]
pub struct ParseCounters {
    /// Messages that became records.
    pub parsed: AtomicU64,
    /// Messages that are not records.
    pub noise: AtomicU64,
    /// Messages that looked like records and were not.
    pub malformed: AtomicU64,
}

impl Snapshot {
    /// Before any data.
    pub fn empty(mode: Mode) -> Snapshot {
        Snapshot {
            now: Utc::now(),
            mode,
            limit: ModelConfig::default().limit,
            webbridges: Vec::new(),
            callbridges: BTreeMap::new(),
            cluster: ClusterEstimate { active_total: 0, cma_total: None, leaked_lower: 0, leaked_upper: 0 },
            decisions: Vec::new(),
        }
    }

    /// The model as of `now`, with the decisions taken on it.
    pub fn build(model: &Deployment, mode: Mode, now: DateTime<Utc>, decisions: Vec<Decision>) -> Snapshot {
        let webbridges = model
            .webbridges()
            .filter_map(|state| {
                let last = state.last()?;
                let estimate = model.estimate(&state.host, now)?;
                Some(WebBridgeView {
                    webbridge: state.host.clone(),
                    last_seen: last.time,
                    estimate,
                    restarts: state.restarts.iter().map(|r| r.time).collect(),
                })
            })
            .collect();
        let callbridges =
            model.callbridges().filter_map(|cb| Some((cb.host.clone(), cb.last.cma()?.current))).collect();
        Snapshot {
            now,
            mode,
            limit: model.config().limit,
            webbridges,
            callbridges,
            cluster: model.cluster_estimate(now),
            decisions,
        }
    }
}

/// Shared between the guard task and its readers.
pub struct Shared {
    /// The latest snapshot.
    snapshot: RwLock<Arc<Snapshot>>,
    /// Parse outcomes.
    pub parse: ParseCounters,
    /// Ingest outcomes.
    pub ingest: Arc<IngestCounters>,
    /// Webhook outcomes.
    pub notify: Arc<NotifyCounters>,
    /// The page's "restart now" token (replaced on reload).
    pub restart_token: RwLock<Option<Token>>,
    /// Restarts by web bridge and result, for `wbguard_restarts_total`.
    pub restarts: std::sync::Mutex<BTreeMap<(String, String), u64>>,
}

impl Shared {
    /// A fresh state for `mode`.
    pub fn new(mode: Mode, ingest: Arc<IngestCounters>, notify: Arc<NotifyCounters>) -> Shared {
        Shared {
            snapshot: RwLock::new(Arc::new(Snapshot::empty(mode))),
            parse: ParseCounters::default(),
            ingest,
            notify,
            restart_token: RwLock::new(None),
            restarts: Default::default(),
        }
    }

    /// Counts one restart outcome.
    pub fn count_restart(&self, webbridge: &str, result: &str) {
        *self.restarts.lock().expect("never poisoned").entry((webbridge.to_owned(), result.to_owned())).or_default() +=
            1;
    }

    /// Publishes a new snapshot.
    pub fn publish(&self, snapshot: Snapshot) {
        *self.snapshot.write().expect("the snapshot lock is never poisoned") = Arc::new(snapshot);
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("the snapshot lock is never poisoned").clone()
    }
}
