//! Edge detection for webhook notices: a web bridge is announced when it
//! comes to need a restart (restarting, or held and why; a restart for a
//! lockout as `lockout_restart`) and when it reaches its limit, not at
//! every evaluation.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use wbguard_core::policy::{self, Decision, Mode};

use super::notify::{Notice, Notifier};
use crate::config::guard_settings::Event;

/// What was announced, per web bridge.
#[derive(Default)]
pub struct Alarms {
    /// Web bridges whose need was announced, with the action announced.
    needed: BTreeMap<String, policy::Action>,
    /// Web bridges announced at their limit.
    at_limit: BTreeSet<String>,
}

impl Alarms {
    /// Sends what changed since the last call.
    pub fn notify(&mut self, decisions: &[Decision], mode: Mode, now: DateTime<Utc>, notifier: &Notifier) {
        for decision in decisions {
            let details = serde_json::to_value(decision).unwrap_or_default();
            let at_limit = decision.needs.contains(&policy::Need::AtLimit);
            if at_limit && self.at_limit.insert(decision.webbridge.clone()) {
                notifier.send(Notice {
                    event: Event::Lockout,
                    webbridge: decision.webbridge.clone(),
                    time: now,
                    text: format!("at its limit ({} sessions): users cannot join through it", decision.active),
                    details: details.clone(),
                });
            } else if !at_limit {
                self.at_limit.remove(&decision.webbridge);
            }
            if decision.action == policy::Action::None {
                self.needed.remove(&decision.webbridge);
            } else if self.needed.get(&decision.webbridge) != Some(&decision.action) {
                self.needed.insert(decision.webbridge.clone(), decision.action);
                let text = match (decision.action, mode) {
                    (policy::Action::Restart, Mode::Observe) => {
                        format!("would be restarted (observe mode): {}", decision.reason)
                    }
                    _ => decision.reason.clone(),
                };
                // A restart that may drop calls for a lockout has its own
                // event: operators page on it.
                let forced = decision.action == policy::Action::Restart && decision.lockout.is_some();
                notifier.send(Notice {
                    event: if forced { Event::LockoutRestart } else { Event::Decision },
                    webbridge: decision.webbridge.clone(),
                    time: now,
                    text,
                    details,
                });
            }
        }
    }
}
