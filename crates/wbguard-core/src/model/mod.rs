//! The leak model: records in, leak bounds, rates and forecasts out.
//!
//! This follows `DOMAIN.md`, "The model". For web bridge `i`,
//! `active_i = real_i + leaked_i`; leaked sessions only grow between
//! restarts; and the real sessions of all web bridges together never exceed
//! the cluster's CMA count. Hence:
//!
//! - lower bound `L_i`: the largest `active_i - CMA` over the samples since
//!   the last restart of `i` (a quiet night keeps it tight all next day);
//! - upper bound `U_i = active_i`;
//! - real sessions a restart would drop, at most `min(active_i - L_i, CMA)`;
//! - leak rate: the growth of `L_i` per day since the last restart, and the
//!   lockout forecast from it.
//!
//! Pairing a web bridge sample with a CMA figure is where care is needed:
//! a call bridge reports every five minutes, and sessions that join between
//! its report and the sample would be counted as leaked. So a sample at `t`
//! is paired with each call bridge's *next* report after `t`, whose 5-minute
//! peak covers `t` ([`pairing`]). The bound then holds whatever happens
//! between reports, at the price of a few minutes' delay.
//!
//! The model never reads the clock: records carry their time, and queries
//! take `now`. Records should arrive in time order; small disorder only
//! costs tightness.
//!
//! Its memory does not grow with the number of records, even when their
//! time stands still: the samples waiting for a pairing are at most
//! [`PENDING_PER_TARGET`] per web bridge (the oldest give way, and simply
//! give no bound), and each web bridge's own state is bounded too
//! ([`RECENT_SLOTS`], [`RESTARTS_KEPT`]).

mod live;
mod pairing;
pub mod profile;
mod webbridge;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::log::{AuditCommand, CallBridgeStats, Record, RecordBody, WebBridgeStats};
pub use live::{CallSource, LiveCalls};
pub use pairing::CallBridgeState;
use pairing::{CallBridges, Pending, Target};
pub use webbridge::{
    Restart, RestartSignal, WebBridgeEstimate, WebBridgeSample, WebBridgeState, QUIET_KEPT, RECENT_SLOTS, RESTARTS_KEPT,
};

/// Samples waiting for a pairing, per web bridge (and one more for the
/// cluster), on average: they wait in one pool, in arrival order, and
/// beyond `PENDING_PER_TARGET` times the targets the oldest give way,
/// whichever web bridge's they are. A sample waits one call bridge
/// interval (5 minutes), so this is reached only by Stats lines less than
/// 5 s apart, or by a clock that stands still.
pub const PENDING_PER_TARGET: usize = 64;

/// The numbers the model works with. Every field has a default that fits
/// CMS as documented; change them only with a reason.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Sessions at which a web bridge refuses new ones. Default 149.
    pub limit: u32,
    /// How long a call bridge report counts as current: one reporting
    /// interval (5 minutes) plus slack. Default 6.5 minutes.
    pub cma_fresh: Duration,
    /// A call bridge silent for longer than this is taken as down (it carries
    /// no calls) and no longer holds up the pairing. Default 1 hour.
    pub callbridge_gone_after: Duration,
    /// Signals of one restart (audit line, counters reset) within this of
    /// each other are one restart. Default 5 minutes.
    pub restart_merge: Duration,
    /// Web bridge samples this close in time form one cluster snapshot for
    /// the cluster-wide bound. Default 2 seconds.
    pub cluster_skew: Duration,
    /// Gaps between samples longer than this do not count as time at the
    /// limit (the log has a hole). Default 15 minutes.
    pub at_limit_max_gap: Duration,
    /// The window over which the usual daily peak of real sessions is taken
    /// for the lockout forecast. Default 1 day.
    pub peak_window: Duration,
    /// The shortest time since the last restart (or the first bound) over
    /// which a leak rate is given. Default 6 hours.
    pub min_rate_span: Duration,
    /// How far apart the clocks of a cluster's servers may be, for telling
    /// which web bridge a call can be on: a call that began more than this
    /// inside a stretch without a new connection on a web bridge is not on
    /// it. CMS clusters run on NTP; CDR times are whole seconds. Default 5 s.
    pub clock_margin: Duration,
    /// How long before its call a user may have connected to a web bridge
    /// (sign-in, a lobby), for placing calls by the `c:` counter: a call is
    /// not on a web bridge that saw no new connection from this long before
    /// it began until it began. `None` (the default): calls are not placed,
    /// as the time is not bounded by anything CMS documents.
    pub connection_lead: Option<Duration>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            limit: 149,
            cma_fresh: Duration::seconds(390),
            callbridge_gone_after: Duration::hours(1),
            restart_merge: Duration::minutes(5),
            cluster_skew: Duration::seconds(2),
            at_limit_max_gap: Duration::minutes(15),
            peak_window: Duration::days(1),
            min_rate_span: Duration::hours(6),
            clock_margin: Duration::seconds(5),
            connection_lead: None,
        }
    }
}

/// The cluster-wide figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterEstimate {
    /// Sum of every web bridge's latest active count.
    pub active_total: u32,
    /// Sum of every live call bridge's current CMA count, when all are fresh.
    pub cma_total: Option<u32>,
    /// Lower bound of the leaked sessions in the whole cluster.
    pub leaked_lower: u32,
    /// Upper bound of the leaked sessions in the whole cluster.
    pub leaked_upper: u32,
}

/// Everything the model knows about one deployment (one cluster).
#[derive(Debug, Clone)]
pub struct Deployment {
    config: ModelConfig,
    webbridges: BTreeMap<String, WebBridgeState>,
    callbridges: CallBridges,
    pending: Vec<Pending>,
    /// The earliest record seen: call bridges not yet heard from may still
    /// report within `cma_fresh` of it, so samples before then get no bound.
    started: Option<DateTime<Utc>>,
    /// The latest record time seen.
    latest: Option<DateTime<Utc>>,
    /// Bumped at every restart of any web bridge: the cluster-wide bound
    /// holds only since the last one.
    cluster_epoch: u64,
    /// Largest `sum(active) - CMA` over cluster snapshots in this epoch.
    cluster_lower: u32,
    /// The cluster's live CMA calls from CDRs or the API, when known.
    live: Option<LiveCalls>,
    /// When each of those calls began, when known for every one of them.
    live_starts: Vec<DateTime<Utc>>,
}

impl Deployment {
    /// An empty deployment.
    pub fn new(config: ModelConfig) -> Self {
        Deployment {
            config,
            webbridges: BTreeMap::new(),
            callbridges: CallBridges::default(),
            pending: Vec::new(),
            started: None,
            latest: None,
            cluster_epoch: 0,
            cluster_lower: 0,
            live: None,
            live_starts: Vec::new(),
        }
    }

    /// Sets (or, with `None`, forgets) the cluster's live CMA calls as CDRs
    /// or the API count them: from now on they bound what a restart can
    /// drop, wherever they are tighter than the logs.
    pub fn set_live_calls(&mut self, live: Option<LiveCalls>) {
        self.live = live;
    }

    /// Sets when each of the live CMA calls began (CDRs' `callLegStart`
    /// times, or the API's durations). Used only while it names as many
    /// calls as [`Deployment::set_live_calls`] counts: a call that began
    /// while a web bridge saw no new connection is not on that web bridge,
    /// so a long call on one web bridge no longer holds up the others.
    pub fn set_live_leg_starts(&mut self, mut starts: Vec<DateTime<Utc>>) {
        starts.sort_unstable();
        self.live_starts = starts;
    }

    /// The cluster's live CMA calls, when CDRs or the API know them.
    pub fn live_calls(&self) -> Option<LiveCalls> {
        self.live
    }

    /// The configuration in force.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Folds one record into the state.
    pub fn observe(&mut self, record: &Record) {
        let time = record.time;
        self.started = Some(self.started.map_or(time, |s| s.min(time)));
        self.latest = Some(self.latest.map_or(time, |l| l.max(time)));
        match &record.body {
            RecordBody::WebBridgeStats(stats) => self.observe_webbridge(&record.host, time, stats),
            RecordBody::CallBridgeStats(stats) => self.observe_callbridge(&record.host, time, stats),
            RecordBody::Audit(audit) => self.observe_audit(&record.host, time, audit),
        }
        self.expire_pending(time);
    }

    fn observe_webbridge(&mut self, host: &str, time: DateTime<Utc>, stats: &WebBridgeStats) {
        let config = self.config.clone();
        let state = self.webbridges.entry(host.to_owned()).or_insert_with(|| WebBridgeState::new(host, time));
        if state.observe(time, stats, &config).is_some() {
            self.cluster_epoch += 1;
            self.cluster_lower = 0;
        }
        let epoch = state.epoch();
        let active = stats.active;
        // The bound alone, not a whole estimate (its forecast walks the
        // day's samples): this runs for every Stats line.
        let state = &self.webbridges[host];
        let logs_bound = state.logs_bound(self.cma_now(time)).unwrap_or(active);
        let calls = self.live_on(state).map_or(logs_bound, |(_, here, _)| here.min(logs_bound));
        let state = self.webbridges.get_mut(host).expect("observed above");
        let age = time - state.epoch_start();
        state.profile.observe(time, active, calls, age);
        if self.warmed_up(time) {
            let target = Target::WebBridge { host: host.to_owned(), epoch };
            if let Some(pending) = self.callbridges.pending_for(target, time, active, &config) {
                self.push_pending(pending);
            }
            self.maybe_snapshot_cluster(time);
        }
        self.resolve_pending();
    }

    /// When every web bridge's latest sample lies within `cluster_skew` of
    /// `time`, their sum can be paired with the cluster's CMA as one sample.
    fn maybe_snapshot_cluster(&mut self, time: DateTime<Utc>) {
        if self.webbridges.len() < 2 {
            return; // the per web bridge bound already says it all
        }
        let skew = self.config.cluster_skew;
        let mut total = 0u32;
        for state in self.webbridges.values() {
            match state.last() {
                Some(last) if (time - last.time).abs() <= skew => total += last.stats.active,
                _ => return,
            }
        }
        let target = Target::Cluster { epoch: self.cluster_epoch };
        if let Some(pending) = self.callbridges.pending_for(target, time, total, &self.config) {
            self.push_pending(pending);
        }
    }

    /// Queues a sample for pairing; beyond the bound the oldest gives way.
    fn push_pending(&mut self, pending: Pending) {
        let bound = PENDING_PER_TARGET * (self.webbridges.len() + 1);
        if self.pending.len() >= bound {
            // Pending samples are kept in arrival order (see resolve_pending).
            self.pending.drain(..=self.pending.len() - bound);
        }
        self.pending.push(pending);
    }

    fn observe_callbridge(&mut self, host: &str, time: DateTime<Utc>, stats: &CallBridgeStats) {
        self.callbridges.report(host, time, stats, &mut self.pending, &self.config);
        self.resolve_pending();
    }

    fn observe_audit(&mut self, host: &str, time: DateTime<Utc>, audit: &AuditCommand) {
        if !audit.is_webbridge_restart() {
            return;
        }
        let config = self.config.clone();
        let state = self.webbridges.entry(host.to_owned()).or_insert_with(|| WebBridgeState::new(host, time));
        let by = audit.user.clone();
        if state.restart_by_audit(time, by, &config) {
            self.cluster_epoch += 1;
            self.cluster_lower = 0;
        }
    }

    /// Applies every pending sample whose CMA figures are all in; the rest
    /// stay in arrival order.
    fn resolve_pending(&mut self) {
        if !self.pending.iter().any(Pending::complete) {
            return;
        }
        let (complete, waiting) = std::mem::take(&mut self.pending).into_iter().partition(Pending::complete);
        self.pending = waiting;
        for pending in complete {
            let cma = pending.cma().expect("partitioned on it");
            let candidate = pending.active.saturating_sub(cma);
            match pending.target {
                Target::WebBridge { host, epoch } => {
                    if let Some(state) = self.webbridges.get_mut(&host) {
                        state.raise_lower(epoch, pending.time, candidate);
                    }
                }
                Target::Cluster { epoch } if epoch == self.cluster_epoch => {
                    self.cluster_lower = self.cluster_lower.max(candidate);
                }
                Target::Cluster { .. } => {}
            }
        }
    }

    /// Drops samples that can no longer be paired: some live call bridge
    /// did not report in time. They simply give no bound.
    fn expire_pending(&mut self, now: DateTime<Utc>) {
        let fresh = self.config.cma_fresh;
        self.pending.retain(|p| !p.failed && now - p.time <= fresh);
    }

    fn warmed_up(&self, time: DateTime<Utc>) -> bool {
        self.started.is_some_and(|start| time - start >= self.config.cma_fresh)
    }

    /// The web bridges seen, by host name.
    pub fn webbridges(&self) -> impl Iterator<Item = &WebBridgeState> {
        self.webbridges.values()
    }

    /// One web bridge by host name.
    pub fn webbridge(&self, host: &str) -> Option<&WebBridgeState> {
        self.webbridges.get(host)
    }

    /// The call bridges seen, by host name.
    pub fn callbridges(&self) -> impl Iterator<Item = &CallBridgeState> {
        self.callbridges.iter()
    }

    /// The latest record time seen, if any.
    pub fn latest(&self) -> Option<DateTime<Utc>> {
        self.latest
    }

    /// The cluster's current CMA count: the sum of every live call bridge's
    /// latest figure (the larger of current and peak), when none is stale.
    pub fn cma_now(&self, now: DateTime<Utc>) -> Option<u32> {
        self.callbridges.cma_now(now, &self.config)
    }

    /// The estimate for web bridge `host` at `now`: the log bound on the
    /// calls a restart can drop, tightened by the live calls when known.
    pub fn estimate(&self, host: &str, now: DateTime<Utc>) -> Option<WebBridgeEstimate> {
        let state = self.webbridges.get(host)?;
        let mut estimate = state.estimate(now, self.cma_now(now), &self.config)?;
        if let Some((live, calls, placed)) = self.live_on(state) {
            estimate.attributable_calls = placed;
            if calls <= estimate.droppable_upper {
                estimate.droppable_upper = calls;
                estimate.calls_source = live.source;
                estimate.calls_as_of = live.as_of;
            }
        }
        Some(estimate)
    }

    /// Whether a call that began at `start` may be on `host`'s web bridge:
    /// always, unless calls are placed by the `c:` counter
    /// (`connection_lead`) and that counter stood still around `start`.
    pub fn may_hold_call(&self, host: &str, start: DateTime<Utc>) -> bool {
        let (Some(lead), Some(state)) = (self.config.connection_lead, self.webbridges.get(host)) else { return true };
        state.may_hold_call_from(start, lead, self.config.clock_margin)
    }

    /// The live calls that may be on `state`'s web bridge, when the live
    /// count is known: all of them, unless calls are placed by the `c:`
    /// counter (then also that count, as the third).
    fn live_on(&self, state: &WebBridgeState) -> Option<(LiveCalls, u32, Option<u32>)> {
        let live = self.live?;
        let Some(lead) = self.config.connection_lead.filter(|_| self.live_starts.len() == live.cma as usize) else {
            return Some((live, live.cma, None));
        };
        let margin = self.config.clock_margin;
        let here = self.live_starts.iter().filter(|&&start| state.may_hold_call_from(start, lead, margin)).count();
        let here = u32::try_from(here).unwrap_or(u32::MAX);
        Some((live, here, Some(here)))
    }

    /// The cluster-wide estimate at `now`.
    pub fn cluster_estimate(&self, now: DateTime<Utc>) -> ClusterEstimate {
        let mut active_total = 0u32;
        let mut lower_sum = 0u32;
        for state in self.webbridges.values() {
            if let Some(last) = state.last() {
                active_total += last.stats.active;
                lower_sum += state.leaked_lower();
            }
        }
        ClusterEstimate {
            active_total,
            cma_total: self.callbridges.cma_current(now, &self.config),
            leaked_lower: lower_sum.max(self.cluster_lower).min(active_total),
            leaked_upper: active_total,
        }
    }
}

#[cfg(test)]
mod tests;
