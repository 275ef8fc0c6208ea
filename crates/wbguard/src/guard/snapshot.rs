//! What the guard task publishes for its readers (the HTTP side, the
//! metrics): an immutable [`Snapshot`] behind a lock that is only held to
//! swap or clone an `Arc`, and the metrics registry the task, the
//! listeners, the history and the webhooks count in.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use wbguard_core::model::{ClusterEstimate, Deployment, ModelConfig};
use wbguard_core::policy::{Decision, Mode};

pub use super::api::{Snapshot, WebBridgeView};
use super::metrics::{Latest, Metrics, RestartResult};
use crate::secret::Token;

impl Snapshot {
    /// Before any data.
    pub fn empty(mode: Mode) -> Snapshot {
        Snapshot {
            now: Utc::now(),
            clock: super::clock::Clock::Wall,
            future_tolerance_seconds: 0,
            servers_ahead: Vec::new(),
            journal_ahead: Vec::new(),
            mode,
            limit: ModelConfig::default().limit,
            webbridges: Vec::new(),
            callbridges: BTreeMap::new(),
            cluster: ClusterEstimate { active_total: 0, cma_total: None, leaked_lower: 0, leaked_upper: 0 },
            decisions: Vec::new(),
            live_calls: None,
            api_check: None,
            cdr: Vec::new(),
            drains: Vec::new(),
        }
    }

    /// The model as of `now`, with the decisions taken on it (the clock's
    /// fields are the caller's to fill).
    pub fn build(model: &Deployment, mode: Mode, now: DateTime<Utc>, mut decisions: Vec<Decision>) -> Snapshot {
        let mut webbridges = model
            .webbridges()
            .filter_map(|state| {
                let last = state.last()?;
                let estimate = model.estimate(&state.host, now)?;
                Some(WebBridgeView {
                    webbridge: state.host.clone(),
                    last_seen: last.time,
                    estimate,
                    restarts: state.restarts.iter().map(|r| r.time).collect(),
                    restarts_total: state.restart_count,
                })
            })
            .collect::<Vec<WebBridgeView>>();
        // Names in the order people count them: cms2 before cms10.
        webbridges.sort_by(|a, b| natural_order(&a.webbridge, &b.webbridge));
        decisions.sort_by(|a, b| natural_order(&a.webbridge, &b.webbridge));
        let callbridges =
            model.callbridges().filter_map(|cb| Some((cb.host.clone(), cb.last.cma()?.current))).collect();
        Snapshot {
            now,
            clock: super::clock::Clock::Wall,
            future_tolerance_seconds: 0,
            servers_ahead: Vec::new(),
            journal_ahead: Vec::new(),
            mode,
            limit: model.config().limit,
            webbridges,
            callbridges,
            cluster: model.cluster_estimate(now),
            decisions,
            live_calls: model.live_calls(),
            api_check: None,
            cdr: Vec::new(),
            drains: Vec::new(),
        }
    }
}

/// Shared between the guard task and its readers.
pub struct Shared {
    /// The latest snapshot (the metrics collector reads it too).
    snapshot: Latest,
    /// Every metric, and the handles counted on.
    pub metrics: Metrics,
    /// The page's "restart now" token (replaced on reload).
    pub restart_token: RwLock<Option<Token>>,
}

impl Shared {
    /// A fresh state, showing `first` until the guard publishes.
    pub fn new(first: Snapshot) -> Shared {
        let snapshot: Latest = Arc::new(RwLock::new(Arc::new(first)));
        Shared { metrics: Metrics::new(snapshot.clone()), snapshot, restart_token: RwLock::new(None) }
    }

    /// Counts one outcome of the guard's own restart of `webbridge`.
    pub fn count_restart(&self, webbridge: &str, result: RestartResult) {
        self.metrics.count_restart(webbridge, result);
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

/// `a` against `b` with runs of digits compared as numbers (`cms2` before
/// `cms10`), the rest as text; names equal that way by their text.
fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn runs(text: &str) -> impl Iterator<Item = (bool, &str)> {
        let mut rest = text;
        std::iter::from_fn(move || {
            let first = rest.chars().next()?;
            let digits = first.is_ascii_digit();
            let end = rest.find(|c: char| c.is_ascii_digit() != digits).unwrap_or(rest.len());
            let (run, tail) = rest.split_at(end);
            rest = tail;
            Some((digits, run))
        })
    }
    let mut by_runs = runs(a).zip(runs(b)).map(|((a_digits, a), (b_digits, b))| {
        if a_digits && b_digits {
            // Leading zeros aside, the longer run is the larger number.
            let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
            a.len().cmp(&b.len()).then_with(|| a.cmp(b))
        } else {
            a.cmp(b)
        }
    });
    by_runs.find(|order| order.is_ne()).unwrap_or_else(|| runs(a).count().cmp(&runs(b).count())).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::natural_order;

    #[test]
    fn names_are_in_the_order_people_count_them() {
        let mut names = ["cms10", "cms2", "cms1", "cms100", "a", "cms02", "cms", "cms2b", "CMS3"];
        names.sort_by(|a, b| natural_order(a, b));
        assert_eq!(names, ["CMS3", "a", "cms", "cms1", "cms02", "cms2", "cms2b", "cms10", "cms100"]);
    }
}
