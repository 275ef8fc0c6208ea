//! What the guard task publishes for its readers (the HTTP side, the
//! metrics): an immutable [`Snapshot`] behind a lock that is only held to
//! swap or clone an `Arc`, and the metrics registry the task, the
//! listeners, the history and the webhooks count in.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use wbguard_core::model::{ClusterEstimate, Deployment, ModelConfig};
use wbguard_core::policy::{Decision, Mode};

pub use super::api::{ApiCheckView, ClusterView, DrainView, Snapshot, WebBridgeView};
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
            clusters: Vec::new(),
            decisions: Vec::new(),
            live_calls: None,
            api_check: None,
            cdr: Vec::new(),
            drains: Vec::new(),
        }
    }

    /// Every cluster's model as of `now`, with the decisions taken on it
    /// (the clock's fields and the CDRs are the caller's to fill); `mode`
    /// is the guard's own (each cluster says its own).
    pub fn build<'a>(parts: impl Iterator<Item = Part<'a>>, mode: Mode, now: DateTime<Utc>) -> Snapshot {
        let mut snapshot = Snapshot::empty(mode);
        snapshot.now = now;
        let mut estimates = Vec::new();
        for part in parts {
            let mut names = Vec::new();
            for state in part.model.webbridges() {
                let (Some(last), Some(estimate)) = (state.last(), part.model.estimate(&state.host, now)) else {
                    continue;
                };
                names.push(state.host.clone());
                snapshot.webbridges.push(WebBridgeView {
                    webbridge: state.host.clone(),
                    cluster: part.name.to_owned(),
                    last_seen: last.time,
                    silent: now - last.time > part.stale_after,
                    estimate,
                    restarts: state.restarts.iter().map(|r| r.time).collect(),
                    restarts_total: state.restart_count,
                });
            }
            names.sort_by(|a, b| natural_order(a, b));
            let mut callbridges = Vec::new();
            for cb in part.model.callbridges() {
                callbridges.push(cb.host.clone());
                if let Some(cma) = cb.last.cma() {
                    snapshot.callbridges.insert(cb.host.clone(), cma.current);
                }
            }
            let estimate = part.model.cluster_estimate(now);
            estimates.push(estimate.clone());
            snapshot.limit = part.model.config().limit;
            snapshot.live_calls = part.model.live_calls();
            snapshot.decisions.extend(part.decisions.iter().cloned());
            snapshot.drains.extend(part.drains);
            if let Some(check) = part.api_check {
                if snapshot.api_check.as_ref().is_none_or(|latest| latest.time < check.time) {
                    snapshot.api_check = Some(check.clone());
                }
            }
            snapshot.clusters.push(ClusterView {
                name: part.name.to_owned(),
                mode: part.mode,
                estimate,
                live_calls: part.model.live_calls(),
                webbridges: names,
                callbridges,
                busy: part.busy,
            });
        }
        // Several clusters: their live calls are each cluster's own.
        if snapshot.clusters.len() > 1 {
            snapshot.live_calls = None;
        }
        snapshot.cluster = ClusterEstimate {
            active_total: estimates.iter().map(|e| e.active_total).sum(),
            cma_total: estimates.iter().map(|e| e.cma_total).sum(),
            leaked_lower: estimates.iter().map(|e| e.leaked_lower).sum(),
            leaked_upper: estimates.iter().map(|e| e.leaked_upper).sum(),
        };
        // Names in the order people count them: cms2 before cms10.
        snapshot.webbridges.sort_by(|a, b| natural_order(&a.webbridge, &b.webbridge));
        snapshot.decisions.sort_by(|a, b| natural_order(&a.webbridge, &b.webbridge));
        snapshot
    }
}

/// One cluster's part of a snapshot.
pub struct Part<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its model.
    pub model: &'a Deployment,
    /// Its policy's mode.
    pub mode: Mode,
    /// Its policy's `stale_after`: a web bridge silent longer is `silent`.
    pub stale_after: chrono::Duration,
    /// Its last decisions.
    pub decisions: &'a [Decision],
    /// Its last API check.
    pub api_check: Option<&'a ApiCheckView>,
    /// Its drains.
    pub drains: Vec<DrainView>,
    /// A restart, an API check or a drain hook runs in it.
    pub busy: bool,
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

    /// Counts one outcome of the guard's own restart of `webbridge` in `cluster`.
    pub fn count_restart(&self, cluster: &str, webbridge: &str, result: RestartResult) {
        self.metrics.count_restart(cluster, webbridge, result);
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
