//! One web bridge: its samples, restarts and leak bound.
//!
//! Invariants: `lower` only grows within a restart epoch and holds only
//! samples from it; a sample whose `active` is below `lower` proves a
//! restart (leaks never shrink otherwise), so the bound can never be left
//! above a web bridge's count by a restart nobody announced.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::profile::DailyProfile;
use super::{CallSource, ModelConfig};
use crate::log::WebBridgeStats;

/// How a restart was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartSignal {
    /// A `cli:` audit line: `webbridge restart`, permission granted.
    Audit,
    /// The `c:`/`d:` counters went down.
    CountersReset,
    /// `active` fell below the known leak, or collapsed to about zero.
    ActiveDrop,
}

/// One restart of a web bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restart {
    /// When it happened (the audit line's time, or the first sample after).
    pub time: DateTime<Utc>,
    /// The first signal that showed it.
    pub signal: RestartSignal,
    /// The MMP user who issued it, when an audit line says.
    pub by: Option<String>,
}

/// One Stats sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WebBridgeSample {
    /// When it was logged.
    pub time: DateTime<Utc>,
    /// What it said.
    pub stats: WebBridgeStats,
}

/// The model's answer for one web bridge at one time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebBridgeEstimate {
    /// Sessions now, leaked ones included (the latest sample).
    pub active: u32,
    /// At least this many sessions are leaked.
    pub leaked_lower: u32,
    /// At most this many sessions are leaked.
    pub leaked_upper: u32,
    /// At most this many real sessions would be dropped by a restart now.
    pub droppable_upper: u32,
    /// Which source gave `droppable_upper`: the logs, or the live calls
    /// from CDRs or the API where those are tighter.
    pub calls_source: CallSource,
    /// How fresh that figure is: the latest sample for the logs, the time
    /// the live count was last known right otherwise.
    pub calls_as_of: DateTime<Utc>,
    /// Growth of the lower bound per day since the last restart (or since
    /// the first bound), when that spans long enough.
    pub leak_rate_per_day: Option<f64>,
    /// When users will be (or first were) locked out, if foreseeable.
    pub lockout_forecast: Option<DateTime<Utc>>,
    /// Start of the current restart epoch: the last restart, or first sight.
    pub since: DateTime<Utc>,
    /// The live CMA calls that may be on this web bridge, when it is known
    /// when each began: those that began while it saw no new connection are
    /// not counted.
    #[serde(default)]
    pub attributable_calls: Option<u32>,
}

/// Sessions dropping from at least this many to about zero in one sample
/// interval is a restart even without any other signal.
const COLLAPSE_FROM: u32 = 20;
/// "About zero".
const COLLAPSE_TO: u32 = 1;
/// Slots for the recent samples over one `peak_window`: samples closer in
/// time than `peak_window / RECENT_SLOTS` (21 s for a day) share one, so a
/// log whose clock stands still cannot grow them.
pub const RECENT_SLOTS: i32 = 4096;
/// Restarts kept per web bridge (the latest); older ones are only counted.
pub const RESTARTS_KEPT: usize = 1000;
/// Stretches without a new connection kept per web bridge (the latest):
/// with a Stats line a minute, about three days of them.
pub const QUIET_KEPT: usize = 4096;

/// What the model keeps about one web bridge.
#[derive(Debug, Clone)]
pub struct WebBridgeState {
    /// Host name of the server.
    pub host: String,
    /// Stats samples seen.
    pub samples: u64,
    /// Time of the first sample.
    pub first_seen: Option<DateTime<Utc>>,
    /// The largest `active` seen.
    pub max_active: u32,
    /// Time spent at the limit (gaps in the log longer than
    /// `at_limit_max_gap` count only up to it).
    pub at_limit: Duration,
    /// The latest restarts recognised (at most [`RESTARTS_KEPT`]), in order.
    pub restarts: VecDeque<Restart>,
    /// Every restart recognised, including those no longer kept.
    pub restart_count: u64,
    last: Option<WebBridgeSample>,
    epoch: u64,
    epoch_start: DateTime<Utc>,
    lower: u32,
    /// The first bound of this epoch: `(restart time, 0)` after a restart,
    /// else the first paired sample. The leak rate is measured from it.
    first_lower: Option<(DateTime<Utc>, u32)>,
    /// First time at the limit in this epoch: users were refused from then.
    at_limit_since: Option<DateTime<Utc>>,
    /// `(time, active, active - lower)`: upper bounds of the real sessions
    /// over the last `peak_window`, for the usual daily peak. The bound of
    /// a sample tightens when a later-paired sample proves a larger leak
    /// (leaks only grow within an epoch). Samples in one slot are merged:
    /// the slot keeps its first time and the largest of each figure.
    recent_real: VecDeque<(DateTime<Utc>, u32, u32)>,
    /// Stretches of time `(from, to)` between two Stats lines whose `c:`
    /// did not move: no session began on this web bridge then, so no call
    /// that began then is on it. The latest [`QUIET_KEPT`], in order;
    /// touching ones merged.
    quiet: VecDeque<(DateTime<Utc>, DateTime<Utc>)>,
    /// Its day as history shows it, for planning restarts.
    pub profile: DailyProfile,
}

impl WebBridgeState {
    pub(super) fn new(host: &str, time: DateTime<Utc>) -> Self {
        WebBridgeState {
            host: host.to_owned(),
            samples: 0,
            first_seen: None,
            max_active: 0,
            at_limit: Duration::zero(),
            restarts: VecDeque::new(),
            restart_count: 0,
            last: None,
            epoch: 0,
            epoch_start: time,
            lower: 0,
            first_lower: None,
            at_limit_since: None,
            recent_real: VecDeque::new(),
            quiet: VecDeque::new(),
            profile: DailyProfile::default(),
        }
    }

    /// Whether a call that began at `start` may be on this web bridge: not
    /// when one stretch without a new connection covers `lead` before it
    /// (a user connects, then signs in or waits in a lobby before the call
    /// begins) to just after it, with `margin` on both ends (clocks of CMS
    /// servers differ a little, and CDR times are whole seconds).
    pub fn may_hold_call_from(&self, start: DateTime<Utc>, lead: Duration, margin: Duration) -> bool {
        let first = start - lead - margin;
        // The stretches are in order and do not overlap: find the last one
        // that began before `first`.
        let after = self.quiet.partition_point(|&(from, _)| from < first);
        after.checked_sub(1).is_none_or(|i| start + margin >= self.quiet[i].1)
    }

    /// The start of the current restart epoch: the last restart, or first sight.
    pub fn epoch_start(&self) -> DateTime<Utc> {
        self.epoch_start
    }

    /// The latest sample.
    pub fn last(&self) -> Option<&WebBridgeSample> {
        self.last.as_ref()
    }

    /// The lower bound of the leak now.
    pub fn leaked_lower(&self) -> u32 {
        self.last.map_or(0, |last| self.lower.min(last.stats.active))
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Folds in a sample; returns the restart it revealed, if any.
    pub(super) fn observe(
        &mut self,
        time: DateTime<Utc>,
        stats: &WebBridgeStats,
        config: &ModelConfig,
    ) -> Option<Restart> {
        let mut revealed = None;
        if let Some(last) = self.last {
            let signal = if stats.connections < last.stats.connections
                || stats.disconnections < last.stats.disconnections
            {
                Some(RestartSignal::CountersReset)
            } else if stats.active < self.lower || (last.stats.active >= COLLAPSE_FROM && stats.active <= COLLAPSE_TO) {
                Some(RestartSignal::ActiveDrop)
            } else {
                None
            };
            // An audit line since the previous sample already told of it.
            let known =
                self.restarts.back().is_some_and(|r| r.time > last.time || time - r.time <= config.restart_merge);
            if let Some(signal) = signal.filter(|_| !known) {
                revealed = Some(self.begin_epoch(time, signal, None));
            }
            if last.stats.active >= config.limit {
                self.at_limit += (time - last.time).min(config.at_limit_max_gap).max(Duration::zero());
            }
            let in_order = self.quiet.back().is_none_or(|&(_, to)| last.time >= to);
            if stats.connections == last.stats.connections && time > last.time && in_order {
                match self.quiet.back_mut() {
                    Some((_, to)) if *to == last.time => *to = time,
                    _ => {
                        if self.quiet.len() == QUIET_KEPT {
                            self.quiet.pop_front();
                        }
                        self.quiet.push_back((last.time, time));
                    }
                }
            }
        }
        self.samples += 1;
        self.first_seen.get_or_insert(time);
        self.max_active = self.max_active.max(stats.active);
        if stats.active >= config.limit && self.at_limit_since.is_none() {
            self.at_limit_since = Some(time);
        }
        self.last = Some(WebBridgeSample { time, stats: *stats });
        let real = stats.active.saturating_sub(self.lower);
        let slot = config.peak_window / RECENT_SLOTS;
        match self.recent_real.back_mut() {
            // The same slot as the previous sample (or earlier: a disorder).
            Some((t, active, upper)) if time - *t < slot => {
                *active = (*active).max(stats.active);
                *upper = (*upper).max(real);
            }
            _ => self.recent_real.push_back((time, stats.active, real)),
        }
        while self.recent_real.front().is_some_and(|&(t, _, _)| time - t > config.peak_window) {
            self.recent_real.pop_front();
        }
        revealed
    }

    /// A `webbridge restart` audit line; returns whether it began a new
    /// epoch (false when the samples already showed this restart).
    pub(super) fn restart_by_audit(&mut self, time: DateTime<Utc>, by: String, config: &ModelConfig) -> bool {
        if let Some(seen) = self.restarts.back_mut() {
            if seen.signal != RestartSignal::Audit && (time - seen.time).abs() <= config.restart_merge {
                seen.by = Some(by);
                return false;
            }
        }
        self.begin_epoch(time, RestartSignal::Audit, Some(by));
        true
    }

    fn begin_epoch(&mut self, time: DateTime<Utc>, signal: RestartSignal, by: Option<String>) -> Restart {
        self.epoch += 1;
        self.epoch_start = time;
        self.lower = 0;
        self.first_lower = Some((time, 0));
        self.at_limit_since = None;
        let restart = Restart { time, signal, by };
        self.restart_count += 1;
        if self.restarts.len() == RESTARTS_KEPT {
            self.restarts.pop_front();
        }
        self.restarts.push_back(restart.clone());
        restart
    }

    /// A paired sample from `epoch` proves at least `candidate` leaked.
    pub(super) fn raise_lower(&mut self, epoch: u64, time: DateTime<Utc>, candidate: u32) {
        if epoch != self.epoch {
            return;
        }
        self.first_lower.get_or_insert((time, candidate));
        self.lower = self.lower.max(candidate);
        // Every later sample of this epoch carried at least this leak.
        let from = time.max(self.epoch_start);
        for (t, active, real) in self.recent_real.iter_mut().rev() {
            if *t < from {
                break;
            }
            *real = (*real).min(active.saturating_sub(candidate));
        }
    }

    /// The real calls a restart could drop as the logs bound them: the
    /// sessions not known to be leaked, at most the cluster's CMA now.
    pub fn logs_bound(&self, cma_now: Option<u32>) -> Option<u32> {
        let unknown = self.last?.stats.active - self.leaked_lower();
        Some(cma_now.map_or(unknown, |cma| unknown.min(cma)))
    }

    /// The estimate at `now`, given the cluster's CMA upper bound now.
    pub fn estimate(
        &self,
        now: DateTime<Utc>,
        cma_now: Option<u32>,
        config: &ModelConfig,
    ) -> Option<WebBridgeEstimate> {
        let active = self.last?.stats.active;
        let lower = self.leaked_lower();
        let droppable_upper = self.logs_bound(cma_now)?;
        let leak_rate_per_day = self.first_lower.and_then(|(since, base)| {
            let span = now - since;
            (span >= config.min_rate_span).then(|| f64::from(lower.saturating_sub(base)) / days(span))
        });
        let lockout_forecast = self.at_limit_since.or_else(|| {
            // Samples from before the first bound say nothing about real
            // sessions (all of them could be leaks or calls).
            let known_from = self.first_lower.map(|(t, _)| t)?;
            let window_start = (now - config.peak_window).max(known_from);
            let peak_real =
                self.recent_real.iter().filter(|&&(t, _, _)| t >= window_start).map(|&(_, _, r)| r).max()?;
            let headroom = i64::from(config.limit) - i64::from(lower) - i64::from(peak_real);
            if headroom <= 0 {
                return Some(now);
            }
            let rate = leak_rate_per_day.filter(|&r| r > 0.0)?;
            let seconds = headroom as f64 / rate * 86_400.0;
            // Beyond ~30 years is "not foreseeable", and keeps chrono in range.
            (seconds < 1e9).then(|| now + Duration::seconds(seconds as i64))
        });
        Some(WebBridgeEstimate {
            active,
            leaked_lower: lower,
            leaked_upper: active,
            droppable_upper,
            calls_source: CallSource::Logs,
            calls_as_of: self.last?.time,
            leak_rate_per_day,
            lockout_forecast,
            since: self.epoch_start,
            attributable_calls: None,
        })
    }
}

fn days(span: Duration) -> f64 {
    span.num_milliseconds() as f64 / 86_400_000.0
}
