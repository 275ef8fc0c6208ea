//! The decision: restart a web bridge only when it is needed and safe.
//!
//! Following `DOMAIN.md`, "The decision": a restart is *needed* when the
//! leak's lower bound reached a threshold, when the lockout forecast comes
//! before the next maintenance window, or when the web bridge sits at its
//! limit; it is *safe* when the real calls it could drop are at most the
//! allowed number (default 0), which a window may raise. Never two web
//! bridges of one cluster at once, never the same one twice within the
//! minimum interval, never on stale data.
//!
//! Where it is needed and not safe, two more rules (issue 14): a web
//! bridge behind a load balancer is first drained, so that its calls end
//! without new ones; and a lockout is worse than a few drops, so a web
//! bridge at its limit, or locking out before any moment the guard expects
//! to be harmless, is restarted at the quietest moment before the lockout
//! ([`lockout`]), within `lockout_max_dropped_calls`.
//!
//! [`decide`] is pure: the model, the policy, what the guard is doing
//! ([`Situation`]) and `now` in, one [`Decision`] per web bridge out, each
//! with its reason and numbers.

pub mod lockout;
pub mod window;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{CallSource, Deployment};
pub use lockout::LockoutPlan;
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
    /// Real calls a restart that prevents or ends a lockout may drop, as
    /// the guard can bound them: `None` for any (the default: a web bridge
    /// at its limit is an outage for everyone behind it); `Some(0)` never
    /// drops a call for it.
    pub lockout_max_dropped_calls: Option<u32>,
    /// How long a drained web bridge is given for its calls to end; then
    /// the lockout rule decides. Default 30 minutes.
    pub drain_timeout: Duration,
    /// The model's [`crate::model::ModelConfig::connection_lead`], from
    /// `policy.call_connection_lead`: `None` (the default) places no call
    /// by the `c:` counter.
    pub call_connection_lead: Option<Duration>,
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
            lockout_max_dropped_calls: None,
            drain_timeout: Duration::minutes(30),
            call_connection_lead: None,
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
    /// Drain it through its load balancer, so that its calls end without
    /// new ones; it is restarted once harmless (then made ready again).
    Drain,
    /// Make it ready again in its load balancer: the drain did not make it
    /// harmless in time, and no restart follows now.
    Undrain,
}

/// What the guard is doing, as far as the decision needs to know.
#[derive(Debug, Clone, Default)]
pub struct Situation {
    /// The restarts wbguard made itself, by web bridge (the logs may not
    /// show them yet).
    pub restarted: BTreeMap<String, DateTime<Utc>>,
    /// A restart is in flight in this cluster.
    pub busy: bool,
    /// The web bridges with a drain hook (a load balancer in front).
    pub drainable: BTreeSet<String>,
    /// The web bridges drained now, and since when.
    pub draining: BTreeMap<String, DateTime<Utc>>,
    /// The last drain of each web bridge that ended without a restart (it
    /// timed out, or the hook failed): no new drain within the minimum
    /// interval.
    pub drain_ended: BTreeMap<String, DateTime<Utc>>,
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
    /// A restart for a lockout: its plan and numbers (the restart, or the
    /// hold until the planned moment).
    #[serde(default)]
    pub lockout: Option<LockoutPlan>,
    /// Drained through its load balancer since then.
    #[serde(default)]
    pub draining_since: Option<DateTime<Utc>>,
}

/// Decides, for every web bridge of the cluster, what to do at `now`.
pub fn decide(model: &Deployment, policy: &Policy, situation: &Situation, now: DateTime<Utc>) -> Vec<Decision> {
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
        let draining = situation.draining.get(&state.host).copied();
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
            lockout: None,
            draining_since: draining,
        };
        if now - last.time > policy.stale_after {
            decision.reason = format!(
                "no fresh Stats since {}: nothing is decided on old data",
                last.time.format("%Y-%m-%d %H:%M UTC")
            );
            decisions.push(undrained(decision));
            continue;
        }
        if policy.triggers.at_limit && estimate.active >= limit {
            decision.needs.push(Need::AtLimit);
        }
        if policy.triggers.lockout_before_next_window {
            let deadline = next_window.unwrap_or(now + policy.horizon_without_windows);
            // The model's forecast, or else the guard's guess from history.
            let forecast = estimate.lockout_forecast.or_else(|| lockout::expected(state, limit, now));
            if let Some(at) = forecast.filter(|&at| at <= deadline) {
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
            decisions.push(undrained(decision));
            continue;
        }
        let last_restart = last_restart(model, &situation.restarted, &state.host);
        let safe = allowed_drops.is_none_or(|allowed| estimate.droppable_upper <= allowed);
        decision.action = Action::Hold;
        if let Some(when) = last_restart.filter(|&t| now - t < policy.min_interval) {
            decision.reason = format!(
                "needed, but restarted {} min ago (minimum interval {} min)",
                // A restart logged by a server whose clock runs a little ahead.
                (now - when).num_minutes().max(0),
                policy.min_interval.num_minutes()
            );
            // Not made ready here: a drained web bridge just restarted is
            // made ready once its page answers (the enforcer does), not
            // while it is still down; once the logs show the restart it is
            // no longer needed, and made ready then at the latest.
            decisions.push(decision);
            continue;
        }
        if safe {
            decision.action = Action::Restart;
            decisions.push(decision);
            continue;
        }
        let droppable = estimate.droppable_upper;
        let drain_ended_lately = situation.drain_ended.get(&state.host).is_some_and(|&t| now - t < policy.min_interval);
        if draining.is_none() && situation.drainable.contains(&state.host) && !drain_ended_lately {
            decision.action = Action::Drain;
            decision.reason = format!(
                "needed, but up to {droppable} real call(s) could be dropped: draining it through its load balancer \
                 first, so that they end without new ones"
            );
            decisions.push(decision);
            continue;
        }
        if let Some(since) = draining.filter(|&since| now - since < policy.drain_timeout) {
            decision.reason = format!(
                "drained since {}; waiting for its calls to end (up to {droppable} real call(s), until {})",
                since.format("%H:%M:%S UTC"),
                (since + policy.drain_timeout).format("%H:%M UTC")
            );
            decisions.push(decision);
            continue;
        }
        let at_limit = decision.needs.contains(&Need::AtLimit);
        let plan = lockout::plan(state, at_limit, policy, limit, next_window, now);
        decision.reason = match &plan {
            Some(plan) if plan.due(now) && plan.allows(droppable) => {
                decision.action = Action::Restart;
                String::new()
            }
            Some(plan) if plan.due(now) => format!(
                "needed, but a restart for the lockout may drop at most {} real call(s) and up to {droppable} could \
                 drop; waiting for them to end",
                plan.max_dropped_calls.unwrap_or(0)
            ),
            Some(plan) => format!("needed: {}", lockout::describe(plan, droppable, now)),
            None => {
                let wait = next_window
                    .map_or(String::new(), |t| format!(", or for the window at {}", t.format("%Y-%m-%d %H:%M UTC")));
                format!(
                    "needed, but up to {droppable} real call(s) could be dropped (allowed {}); waiting for them to end{wait}",
                    allowed_drops.unwrap_or(0)
                )
            }
        };
        decision.lockout = plan;
        if draining.is_some() && decision.action != Action::Restart {
            decision.action = Action::Undrain;
            decision.reason = format!("the drain did not make it harmless in time; {}", decision.reason);
        }
        decisions.push(decision);
    }
    // One web bridge of the cluster at a time: the most urgent first.
    let urgency = |d: &Decision| {
        let at_limit = d.needs.contains(&Need::AtLimit);
        (!at_limit, d.lockout_forecast.unwrap_or(DateTime::<Utc>::MAX_UTC), std::cmp::Reverse(d.leaked_lower))
    };
    let mut candidates: Vec<usize> =
        (0..decisions.len()).filter(|&i| matches!(decisions[i].action, Action::Restart | Action::Drain)).collect();
    candidates.sort_by_key(|&i| urgency(&decisions[i]));
    let another_drained = |webbridge: &str| situation.draining.keys().any(|w| w != webbridge);
    for (rank, &i) in candidates.iter().enumerate() {
        let decision = &mut decisions[i];
        let needs: Vec<String> = decision.needs.iter().map(describe_need).collect();
        let drain = decision.action == Action::Drain;
        if situation.busy {
            decision.action = Action::Hold;
            decision.reason =
                format!("needed ({}), but another restart of this cluster is in progress", needs.join(", "));
        } else if rank > 0 {
            decision.action = Action::Hold;
            decision.reason = format!(
                "needed ({}), after the more urgent one: one web bridge of a cluster at a time",
                needs.join(", ")
            );
        } else if drain && another_drained(&decision.webbridge) {
            decision.action = Action::Hold;
            decision.reason =
                format!("needed ({}), but another web bridge of this cluster is drained", needs.join(", "));
        } else if drain {
            decision.reason = format!("{} ({})", decision.reason, needs.join(", "));
        } else {
            let safety = match (&decision.lockout, decision.allowed_drops) {
                (Some(plan), _) => format!(
                    "a lockout is worse than a few drops: {}",
                    lockout::describe(plan, decision.droppable_upper, plan.planned_at)
                ),
                _ if decision.droppable_upper == 0 => "harmless: every session is a known leak".to_owned(),
                (None, Some(allowed)) => {
                    format!("at most {} real call(s) dropped, {allowed} allowed", decision.droppable_upper)
                }
                (None, None) => {
                    format!("at most {} real call(s) dropped, inside a maintenance window", decision.droppable_upper)
                }
            };
            decision.reason = format!("restart: {}; {safety}", needs.join(", "));
        }
    }
    decisions
}

/// A decision for a web bridge that needs no restart (now): if it is
/// drained, it is made ready again.
fn undrained(mut decision: Decision) -> Decision {
    if decision.draining_since.is_some() {
        decision.action = Action::Undrain;
        decision.reason = format!("{}; made ready again in its load balancer", decision.reason);
    }
    decision
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
