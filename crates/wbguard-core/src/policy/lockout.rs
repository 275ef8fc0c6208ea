//! The lockout rule: a lockout is worse than a few dropped calls.
//!
//! Under load around the clock no restart is ever provably harmless, and
//! waiting for one locks everybody out. So when a web bridge is at its
//! limit, or its lockout is expected before any moment the guard expects
//! to be harmless (its daily profile, or a maintenance window), the guard
//! plans its restart at the quietest moment before the lockout: the bucket
//! of the day in which history bounded the fewest droppable calls. At the
//! limit that moment is now. Whether the restart may then go ahead is
//! decided on the bound the guard has at that second, against
//! `policy.lockout_max_dropped_calls`, never on the profile's guess.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::Policy;
use crate::model::{WebBridgeEstimate, WebBridgeState};

/// How far ahead a lockout is planned for: one day (a later one is planned
/// when it comes closer, with a day more of history).
const PLAN_AHEAD: Duration = Duration::days(1);

/// A restart planned to prevent (or end) a lockout, with its numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutPlan {
    /// When users are locked out: now when at the limit, else the earlier
    /// of the model's forecast and the daily profile's guess.
    pub lockout_at: DateTime<Utc>,
    /// At the limit now: users are refused.
    pub at_limit: bool,
    /// The quietest moment found before the lockout (now, when it has come).
    pub planned_at: DateTime<Utc>,
    /// The droppable calls history bounds at that moment, when the daily
    /// profile knows it.
    pub expected_calls: Option<u32>,
    /// `policy.lockout_max_dropped_calls`: `None` for any.
    pub max_dropped_calls: Option<u32>,
}

impl LockoutPlan {
    /// Whether the planned moment has come.
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        self.planned_at <= now
    }

    /// Whether a restart that could drop `droppable` calls may go ahead.
    pub fn allows(&self, droppable: u32) -> bool {
        self.max_dropped_calls.is_none_or(|max| droppable <= max)
    }
}

/// The plan for a web bridge whose restart is needed but not harmless, if
/// the lockout rule applies: `None` when no lockout is expected within a
/// day, or when a harmless moment (the profile's, or a window's) is
/// expected before it.
pub fn plan(
    state: &WebBridgeState,
    estimate: &WebBridgeEstimate,
    at_limit: bool,
    policy: &Policy,
    limit: u32,
    next_window: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<LockoutPlan> {
    let plan = |lockout_at, planned_at, expected_calls| LockoutPlan {
        lockout_at,
        at_limit,
        planned_at,
        expected_calls,
        max_dropped_calls: policy.lockout_max_dropped_calls,
    };
    if at_limit {
        return Some(plan(now, now, None));
    }
    let guess = state.profile.lockout_guess(now, state.epoch_start(), limit);
    let lockout_at = estimate.lockout_forecast.into_iter().chain(guess).min()?.max(now);
    if lockout_at > now + PLAN_AHEAD {
        return None;
    }
    if next_window.is_some_and(|window| window < lockout_at) {
        return None;
    }
    let harmless = state.profile.next_harmless(now, policy.max_dropped_calls, lockout_at - now);
    if harmless.is_some_and(|at| at < lockout_at) {
        return None;
    }
    Some(match state.profile.quietest_before(now, lockout_at) {
        Some(quiet) => plan(lockout_at, quiet.at, Some(quiet.expected_calls)),
        // No day of history yet: nothing is known to be quieter than the
        // lockout itself, so the restart waits for it.
        None => plan(lockout_at, lockout_at, None),
    })
}

/// The plan in words, for a decision's reason.
pub fn describe(plan: &LockoutPlan, droppable: u32, now: DateTime<Utc>) -> String {
    let max = plan.max_dropped_calls.map_or("any".to_owned(), |m| m.to_string());
    let lockout = if plan.at_limit {
        "at its limit, users are refused".to_owned()
    } else {
        format!("lockout expected {}", plan.lockout_at.format("%Y-%m-%d %H:%M UTC"))
    };
    let moment = match plan.expected_calls {
        Some(expected) if plan.due(now) => format!("the quietest moment before it (about {expected} call(s) by history)"),
        Some(expected) => format!(
            "planned for the quietest moment before it, {} (about {expected} call(s) by history)",
            plan.planned_at.format("%Y-%m-%d %H:%M UTC")
        ),
        None if plan.due(now) => "now".to_owned(),
        None => "no day of history yet: waiting for the lockout itself".to_owned(),
    };
    format!("{lockout}; {moment}; up to {droppable} real call(s) could drop (lockout_max_dropped_calls {max})")
}
