//! The decision: restart a web bridge only when it is needed and safe.
//!
//! Following `DOMAIN.md`, "The decision": a restart is *needed* when the
//! leak's lower bound reached a threshold, when the lockout forecast comes
//! before the next maintenance window, or when the web bridge sits at its
//! limit; it is *safe* when the real calls it could drop are at most the
//! allowed number (default 0), which a window may raise. Never two web
//! bridges of one cluster at once, never the same one twice within the
//! minimum interval, never on stale data. [`decide`] is pure: the model,
//! the policy, the restarts wbguard made itself and `now` in, one
//! [`Decision`] per web bridge out, each with its reason and numbers.

pub mod window;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{CallSource, Deployment};
pub use window::{Window, WindowError};

/// Whether the guard acts on its decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Decide and report, never act (the default).
    Observe,
    /// Act on restart decisions.
    Enforce,
}

/// When a restart is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triggers {
    /// The leak's lower bound is at or over this. Default 100.
    pub leak_at_least: Option<u32>,
    /// The lockout forecast comes before the next window opens (or within
    /// a day when there are no windows). Default on.
    pub lockout_before_next_window: bool,
    /// The web bridge is at its limit. Default on.
    pub at_limit: bool,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers { leak_at_least: Some(100), lockout_before_next_window: true, at_limit: true }
    }
}

/// The policy, from the configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Observe or enforce.
    pub mode: Mode,
    /// When a restart is needed.
    pub triggers: Triggers,
    /// Real calls a restart may drop outside windows. Default 0.
    pub max_dropped_calls: u32,
    /// Maintenance windows.
    pub windows: Vec<Window>,
    /// The least time between two restarts of one web bridge. Default 1 h.
    pub min_interval: Duration,
    /// Data older than this decides nothing. Default 10 minutes.
    pub stale_after: Duration,
    /// Without windows, a forecast lockout this close is acted on. Default 1 day.
    pub horizon_without_windows: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            mode: Mode::Observe,
            triggers: Triggers::default(),
            max_dropped_calls: 0,
            windows: Vec::new(),
            min_interval: Duration::hours(1),
            stale_after: Duration::minutes(10),
            horizon_without_windows: Duration::days(1),
        }
    }
}

/// Why a restart is needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Need {
    /// At the limit: users are refused now.
    AtLimit,
    /// Lockout is forecast before the next window (or the horizon).
    LockoutSoon {
        /// The forecast.
        at: DateTime<Utc>,
    },
    /// The leak's lower bound reached the threshold.
    LeakAtLeast {
        /// The threshold.
        threshold: u32,
    },
}

/// What to do about one web bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Restart it now (in observe mode: it would be restarted).
    Restart,
    /// It is needed, but not now (not safe, too soon, another one first).
    Hold,
    /// Nothing to do.
    None,
}

/// One decision, with its reason and the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The web bridge (its log host name).
    pub webbridge: String,
    /// What to do.
    pub action: Action,
    /// Why, in words.
    pub reason: String,
    /// Why a restart is needed, if it is.
    pub needs: Vec<Need>,
    /// Sessions now.
    pub active: u32,
    /// Leak, lower bound.
    pub leaked_lower: u32,
    /// Leak, upper bound.
    pub leaked_upper: u32,
    /// Real calls a restart could drop, at most.
    pub droppable_upper: u32,
    /// Where `droppable_upper` came from: `logs`, `cdr` or `api`.
    pub calls_source: CallSource,
    /// How fresh that figure is.
    pub calls_as_of: DateTime<Utc>,
    /// Real calls allowed to drop now (`None`: any, inside a window that allows it).
    pub allowed_drops: Option<u32>,
    /// Inside a maintenance window now.
    pub in_window: bool,
    /// The lockout forecast.
    pub lockout_forecast: Option<DateTime<Utc>>,
    /// When the next window opens.
    pub next_window: Option<DateTime<Utc>>,
}

/// Decides, for every web bridge of the cluster, what to do at `now`.
///
/// `restarted` holds the restarts wbguard made itself (the logs may not
/// show them yet); `busy` says a restart is in flight in this cluster.
pub fn decide(
    model: &Deployment,
    policy: &Policy,
    restarted: &BTreeMap<String, DateTime<Utc>>,
    busy: bool,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let limit = model.config().limit;
    let open_window = policy.windows.iter().find(|w| w.contains(now));
    let next_window = policy.windows.iter().filter_map(|w| w.next_opening(now)).min();
    let allowed_drops = match open_window {
        Some(window) => window.max_dropped_calls,
        None => Some(policy.max_dropped_calls),
    };
    let mut decisions: Vec<Decision> = Vec::new();
    for state in model.webbridges() {
        let Some(estimate) = model.estimate(&state.host, now) else { continue };
        let last = state.last().expect("an estimate needs a sample");
        let mut decision = Decision {
            webbridge: state.host.clone(),
            action: Action::None,
            reason: String::new(),
            needs: Vec::new(),
            active: estimate.active,
            leaked_lower: estimate.leaked_lower,
            leaked_upper: estimate.leaked_upper,
            droppable_upper: estimate.droppable_upper,
            calls_source: estimate.calls_source,
            calls_as_of: estimate.calls_as_of,
            allowed_drops,
            in_window: open_window.is_some(),
            lockout_forecast: estimate.lockout_forecast,
            next_window,
        };
        if now - last.time > policy.stale_after {
            decision.reason = format!(
                "no fresh Stats since {}: nothing is decided on old data",
                last.time.format("%Y-%m-%d %H:%M UTC")
            );
            decisions.push(decision);
            continue;
        }
        if policy.triggers.at_limit && estimate.active >= limit {
            decision.needs.push(Need::AtLimit);
        }
        if policy.triggers.lockout_before_next_window {
            let deadline = next_window.unwrap_or(now + policy.horizon_without_windows);
            if let Some(at) = estimate.lockout_forecast.filter(|&at| at <= deadline) {
                decision.needs.push(Need::LockoutSoon { at });
            }
        }
        if let Some(threshold) = policy.triggers.leak_at_least.filter(|&t| estimate.leaked_lower >= t) {
            decision.needs.push(Need::LeakAtLeast { threshold });
        }
        if decision.needs.is_empty() {
            decision.reason = format!(
                "not needed: {} sessions, {}-{} leaked",
                estimate.active, estimate.leaked_lower, estimate.leaked_upper
            );
            decisions.push(decision);
            continue;
        }
        let last_restart = last_restart(model, restarted, &state.host);
        let safe = allowed_drops.is_none_or(|allowed| estimate.droppable_upper <= allowed);
        decision.action = Action::Hold;
        decision.reason = if let Some(when) = last_restart.filter(|&t| now - t < policy.min_interval) {
            format!(
                "needed, but restarted {} min ago (minimum interval {} min)",
                // A restart logged by a server whose clock runs a little ahead.
                (now - when).num_minutes().max(0),
                policy.min_interval.num_minutes()
            )
        } else if !safe {
            let wait = next_window
                .map_or(String::new(), |t| format!(", or for the window at {}", t.format("%Y-%m-%d %H:%M UTC")));
            format!(
                "needed, but up to {} real call(s) could be dropped (allowed {}); waiting for them to end{wait}",
                estimate.droppable_upper,
                allowed_drops.unwrap_or(0)
            )
        } else {
            decision.action = Action::Restart;
            String::new()
        };
        decisions.push(decision);
    }
    // One web bridge of the cluster at a time: the most urgent first.
    let urgency = |d: &Decision| {
        let at_limit = d.needs.contains(&Need::AtLimit);
        (!at_limit, d.lockout_forecast.unwrap_or(DateTime::<Utc>::MAX_UTC), std::cmp::Reverse(d.leaked_lower))
    };
    let mut candidates: Vec<usize> = (0..decisions.len()).filter(|&i| decisions[i].action == Action::Restart).collect();
    candidates.sort_by_key(|&i| urgency(&decisions[i]));
    for (rank, &i) in candidates.iter().enumerate() {
        let decision = &mut decisions[i];
        let needs: Vec<String> = decision.needs.iter().map(describe_need).collect();
        if busy {
            decision.action = Action::Hold;
            decision.reason =
                format!("needed ({}), but another restart of this cluster is in progress", needs.join(", "));
        } else if rank > 0 {
            decision.action = Action::Hold;
            decision.reason = format!(
                "needed ({}), after the more urgent one: one web bridge of a cluster at a time",
                needs.join(", ")
            );
        } else {
            let safety = match decision.allowed_drops {
                _ if decision.droppable_upper == 0 => "harmless: every session is a known leak".to_owned(),
                Some(allowed) => {
                    format!("at most {} real call(s) dropped, {allowed} allowed", decision.droppable_upper)
                }
                None => {
                    format!("at most {} real call(s) dropped, inside a maintenance window", decision.droppable_upper)
                }
            };
            decision.reason = format!("restart: {}; {safety}", needs.join(", "));
        }
    }
    decisions
}

/// The last restart of `webbridge` that the minimum interval counts: the
/// later of the last one the logs show and the last one wbguard made
/// itself (`restarted`; the logs may not show it yet).
pub fn last_restart(
    model: &Deployment,
    restarted: &BTreeMap<String, DateTime<Utc>>,
    webbridge: &str,
) -> Option<DateTime<Utc>> {
    let logged = model.webbridge(webbridge).and_then(|state| state.restarts.back()).map(|r| r.time);
    logged.into_iter().chain(restarted.get(webbridge).copied()).max()
}

fn describe_need(need: &Need) -> String {
    match need {
        Need::AtLimit => "at its limit, users are refused".into(),
        Need::LockoutSoon { at } => format!("lockout forecast {}", at.format("%Y-%m-%d %H:%M UTC")),
        Need::LeakAtLeast { threshold } => format!("at least {threshold} sessions leaked"),
    }
}

#[cfg(test)]
mod tests;
