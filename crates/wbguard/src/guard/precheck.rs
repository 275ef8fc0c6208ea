//! The last look before a restart: the Call Bridge API, seconds before
//! `webbridge restart` goes out.
//!
//! Log samples are minutes old; somebody who joined after the last one is
//! dropped by a restart the model called harmless. So when the servers
//! have `api` configured, a restart the policy asks for first asks every
//! call bridge of the cluster for its live CMA legs ([`CheckLive`], in its
//! own task: the guard task never waits on the network). The answer comes
//! back through a channel ([`Checked`]):
//!
//! - within the allowance (the decision's `allowed_drops`), the restart is
//!   *cleared* for [`CLEARED_FOR`] and the enforcer starts it at once;
//! - otherwise it is *held* with the API's words ("API: 2 CMA call(s) live
//!   on cms2"), and asked again after [`ASK_AGAIN_AFTER`];
//! - an API that does not answer holds too, unless `policy.api_unreachable
//!   = "logs"` says the logs alone may decide.
//!
//! Every answer is also a live count for the model (source `api`), so the
//! decisions and the page show it. One check at a time; the timing is the
//! machine's (the API answers in real time, whatever clock the data has).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};
use wbguard_core::model::{CallSource, LiveCalls};
use wbguard_core::policy::{Action, Decision};

pub use super::api::{ApiCheckView, CallBridgeCalls};
use crate::cdr::legs::LegKind;
use crate::cdr::OpenLeg;
use crate::cms_api;
use crate::config::Config;

/// How long a check that found the cluster within the allowance lets a
/// restart go ahead: the command must follow within seconds.
pub const CLEARED_FOR: Duration = Duration::from_secs(10);
/// After a hold (live calls, or no answer), the API is asked again this
/// much later, while the restart is still needed.
pub const ASK_AGAIN_AFTER: Duration = Duration::from_secs(5);
/// While the CDR count of a call bridge is unknown (first heard, records
/// lost), its API is asked for its legs at most this often.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// What the API said about the whole cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiveCheck {
    /// Every call bridge asked.
    pub callbridges: Vec<CallBridgeCalls>,
    /// Each call bridge's live legs by its log host: what the CDR count
    /// is reconciled with.
    pub legs: Vec<ListedLegs>,
}

/// One call bridge's live legs as its API listed them: its log host, and
/// the legs.
pub type ListedLegs = (String, Vec<OpenLeg>);

/// Why a check has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailed {
    /// In words, naming the server.
    pub why: String,
    /// The API simply did not answer (down, timed out): what
    /// `policy.api_unreachable` is about. A refused certificate or password
    /// holds whatever the policy: it will not mend by itself.
    pub unreachable: bool,
}

/// The real check: every server of the configuration that has `api`,
/// within [`cms_api::CHECK_DEADLINE`].
pub fn through_api() -> CheckLive {
    Arc::new(|config: &Config| {
        if cms_api::cluster(&config.servers).is_empty() {
            return None;
        }
        let servers = config.servers.clone();
        let trust = cms_api::trust::ApiTrust::from_config(config);
        Some(Box::pin(async move {
            let check = cms_api::check_cluster(&servers, &trust, cms_api::CHECK_DEADLINE)
                .await
                .map_err(|e| CheckFailed { why: e.to_string(), unreachable: e.is_unreachable() })?;
            let log_host =
                |name: &str| servers.iter().find(|s| s.name == name).map_or(name.to_owned(), |s| s.log_host.clone());
            Ok(LiveCheck {
                callbridges: check
                    .per_callbridge
                    .iter()
                    .map(|c| CallBridgeCalls { server: c.server.clone(), cma_live: c.cma_live })
                    .collect(),
                legs: check
                    .per_callbridge
                    .iter()
                    .map(|c| {
                        let legs = c
                            .legs
                            .iter()
                            .map(|leg| OpenLeg {
                                id: leg.id.clone(),
                                kind: LegKind::of(Some(&leg.kind), leg.sub_type.as_deref()),
                                call: None,
                                guest: false,
                            })
                            .collect();
                        (log_host(&c.server), legs)
                    })
                    .collect(),
            })
        }) as CheckFuture)
    })
}

impl LiveCheck {
    /// Live CMA calls in the cluster.
    pub fn cma_live(&self) -> u32 {
        self.callbridges.iter().map(|c| c.cma_live).sum()
    }

    /// "2 CMA call(s) live on cms2, 1 on cms3".
    fn describe(&self) -> String {
        let busy: Vec<String> = self
            .callbridges
            .iter()
            .filter(|c| c.cma_live > 0)
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    format!("{} CMA call(s) live on {}", c.cma_live, c.server)
                } else {
                    format!("{} on {}", c.cma_live, c.server)
                }
            })
            .collect();
        if busy.is_empty() {
            "no CMA call live".to_owned()
        } else {
            busy.join(", ")
        }
    }
}

/// A check in flight: the API of every server of the configuration that
/// has one. `None` when none has: there is nothing to ask.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<LiveCheck, CheckFailed>> + Send>>;
/// Asks the API of a configuration's servers (a stand-in in tests).
pub type CheckLive = Arc<dyn Fn(&Config) -> Option<CheckFuture> + Send + Sync>;

/// A check's answer, back in the guard task.
pub struct Checked {
    /// The restart that asked (its web bridge and allowance); none: a
    /// reconcile of the CDR counts.
    restart: Option<(String, Option<u32>)>,
    result: Result<LiveCheck, CheckFailed>,
    asked: DateTime<Utc>,
    /// When it was asked by the machine's clock (CDR posts are timed so).
    asked_wall: DateTime<Utc>,
}

impl Checked {
    /// When the check was asked, by the machine's clock.
    pub fn asked_wall(&self) -> DateTime<Utc> {
        self.asked_wall
    }

    /// The web bridge whose restart asked; none for a reconcile.
    pub fn webbridge(&self) -> Option<&str> {
        self.restart.as_ref().map(|(webbridge, _)| webbridge.as_str())
    }
}

/// What became of a restart the policy asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Go ahead now; what the API said, when it was asked.
    Go(Option<String>),
    /// Not now: a check runs, or the last one held it.
    Wait,
}

/// Why the API is being asked.
enum Asking {
    /// Before this web bridge's restart.
    Restart(String),
    /// To make unknown CDR counts known.
    Reconcile,
}

/// A hold the API asked for.
struct Held {
    webbridge: String,
    reason: String,
    since: Instant,
}

/// The state of the checks between rounds.
pub struct PreCheck {
    check: CheckLive,
    answers: mpsc::Sender<Checked>,
    /// The check in flight, if any (one at a time).
    running: Option<Asking>,
    /// A restart the API cleared, and when.
    cleared: Option<(String, Instant)>,
    held: Option<Held>,
    /// The last check, for the status.
    pub last: Option<ApiCheckView>,
    /// When the CDR counts were last reconciled through the API.
    reconciled: Option<Instant>,
}

impl PreCheck {
    /// Checks made with `check`; answers come back through the receiver.
    pub fn new(check: CheckLive) -> (PreCheck, mpsc::Receiver<Checked>) {
        let (answers, receiver) = mpsc::channel(4);
        let precheck =
            PreCheck { check, answers, running: None, cleared: None, held: None, last: None, reconciled: None };
        (precheck, receiver)
    }

    /// A check before a restart is in flight (a reconcile does not count:
    /// it holds no restart up).
    pub fn running(&self) -> bool {
        matches!(self.running, Some(Asking::Restart(_)))
    }

    /// Whether `decision`'s restart may go out now; starts a check when
    /// one is due. Without an API configured, always.
    pub fn before_restart(&mut self, config: &Config, decision: &Decision, now: DateTime<Utc>) -> Gate {
        if self.running.is_some() {
            return Gate::Wait;
        }
        if let Some((webbridge, at)) = &self.cleared {
            if *webbridge == decision.webbridge && at.elapsed() <= CLEARED_FOR {
                self.cleared = None;
                return Gate::Go(self.last.as_ref().map(|last| last.text.clone()));
            }
        }
        if self.held.as_ref().is_some_and(|h| h.webbridge == decision.webbridge && h.since.elapsed() < ASK_AGAIN_AFTER)
        {
            return Gate::Wait;
        }
        let Some(check) = (self.check)(config) else { return Gate::Go(None) };
        self.running = Some(Asking::Restart(decision.webbridge.clone()));
        tracing::debug!("{}: asking the Call Bridge API for live calls before the restart", decision.webbridge);
        self.ask(check, Some((decision.webbridge.clone(), decision.allowed_drops)), now);
        Gate::Wait
    }

    /// Asks the API for every call bridge's legs, to make unknown CDR
    /// counts known again, unless a check runs or one was made less than
    /// [`RECONCILE_EVERY`] ago. Without an API configured, nothing.
    pub fn reconcile(&mut self, config: &Config, now: DateTime<Utc>) {
        if self.running.is_some() || self.reconciled.is_some_and(|at| at.elapsed() < RECONCILE_EVERY) {
            return;
        }
        let Some(check) = (self.check)(config) else { return };
        self.reconciled = Some(Instant::now());
        self.running = Some(Asking::Reconcile);
        tracing::debug!("asking the Call Bridge API for its legs: a CDR count is unknown");
        self.ask(check, None, now);
    }

    fn ask(&self, check: CheckFuture, restart: Option<(String, Option<u32>)>, asked: DateTime<Utc>) {
        let answers = self.answers.clone();
        let asked_wall = Utc::now();
        tokio::spawn(async move {
            let result = check.await;
            let _ = answers.send(Checked { restart, result, asked, asked_wall }).await;
        });
    }

    /// Takes a check's answer: clears or holds the restart, and returns the
    /// live count it gives the model and the legs each call bridge listed,
    /// if any. `logs_if_unreachable`: an API that does not answer leaves
    /// the decision to the logs. `elsewhere`: the ids of legs that cannot
    /// be on the web bridge to restart (they began while its `c:` counter
    /// stood still, `policy.call_connection_lead`); listed, they do not
    /// count against its allowance.
    pub fn answered(
        &mut self,
        checked: Checked,
        logs_if_unreachable: bool,
        elsewhere: &HashSet<String>,
    ) -> Option<(LiveCalls, Vec<ListedLegs>)> {
        self.running = None;
        let Checked { restart, result, asked, .. } = checked;
        let Some((webbridge, allowed)) = restart else {
            // A reconcile: only the legs matter.
            return match result {
                Ok(mut check) => {
                    let legs = std::mem::take(&mut check.legs);
                    Some((LiveCalls { cma: check.cma_live(), source: CallSource::Api, as_of: asked }, legs))
                }
                Err(CheckFailed { why, .. }) => {
                    tracing::info!("the CDR counts could not be reconciled through the API: {why}");
                    None
                }
            };
        };
        let (view, live) = match result {
            Ok(mut check) => {
                let legs = std::mem::take(&mut check.legs);
                let cma = check.cma_live();
                let not_here = legs
                    .iter()
                    .flat_map(|(_, listed)| listed)
                    .filter(|leg| leg.kind.is_cma() && elsewhere.contains(&leg.id))
                    .count();
                let not_here = u32::try_from(not_here).unwrap_or(u32::MAX).min(cma);
                let within = allowed.is_none_or(|allowed| cma - not_here <= allowed);
                let text = format!(
                    "API: {}{}{}",
                    check.describe(),
                    match not_here {
                        0 => String::new(),
                        n => format!("; {n} began while {webbridge} saw no new connection"),
                    },
                    match allowed {
                        Some(allowed) if !within => format!(" (allowed {allowed})"),
                        _ => String::new(),
                    }
                );
                let verdict = if within { "cleared" } else { "held" };
                let view = ApiCheckView {
                    webbridge: webbridge.clone(),
                    time: asked,
                    cma_live: Some(cma),
                    callbridges: check.callbridges,
                    verdict: verdict.into(),
                    text,
                };
                (view, Some((LiveCalls { cma, source: CallSource::Api, as_of: asked }, legs)))
            }
            Err(CheckFailed { why, unreachable }) => {
                let logs = logs_if_unreachable && unreachable;
                let verdict = if logs { "cleared" } else { "unreachable" };
                let text = if logs {
                    format!("API did not answer ({why}); the logs decide (policy.api_unreachable = \"logs\")")
                } else if unreachable {
                    format!("API did not answer ({why}); holding (policy.api_unreachable = \"hold\")")
                } else {
                    format!("API check failed ({why}); holding")
                };
                let view = ApiCheckView {
                    webbridge: webbridge.clone(),
                    time: asked,
                    cma_live: None,
                    callbridges: Vec::new(),
                    verdict: verdict.into(),
                    text,
                };
                (view, None)
            }
        };
        if view.verdict == "cleared" {
            tracing::info!("{webbridge}: {}; restarting", view.text);
            self.cleared = Some((webbridge, Instant::now()));
            self.held = None;
        } else {
            if self.held.as_ref().is_none_or(|h| h.reason != view.text) {
                tracing::info!("{webbridge}: restart held: {}", view.text);
            }
            self.held = Some(Held { webbridge, reason: view.text.clone(), since: Instant::now() });
        }
        self.last = Some(view);
        live
    }

    /// Says, in the decisions, why a restart the policy asks for waits on
    /// the API: held by its last answer, or asked right now.
    pub fn annotate(&self, decisions: &mut [Decision]) {
        for decision in decisions.iter_mut().filter(|d| d.action == Action::Restart) {
            if let Some(held) = self.held.as_ref().filter(|h| h.webbridge == decision.webbridge) {
                decision.action = Action::Hold;
                decision.reason =
                    format!("needed, but {}; asking again every {} s", held.reason, ASK_AGAIN_AFTER.as_secs());
            } else if matches!(&self.running, Some(Asking::Restart(w)) if *w == decision.webbridge) {
                decision.action = Action::Hold;
                decision.reason = "needed; asking the Call Bridge API for live calls first".to_owned();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unanswered(webbridge: &str) -> Checked {
        Checked {
            restart: Some((webbridge.into(), Some(0))),
            result: Err(CheckFailed { why: "connection refused".into(), unreachable: true }),
            asked: Utc::now(),
            asked_wall: Utc::now(),
        }
    }

    fn needed(webbridge: &str) -> Decision {
        Decision {
            webbridge: webbridge.into(),
            action: Action::Restart,
            reason: "restart: at its limit".into(),
            needs: Vec::new(),
            active: 149,
            leaked_lower: 149,
            leaked_upper: 149,
            droppable_upper: 0,
            calls_source: CallSource::Logs,
            calls_as_of: Utc::now(),
            allowed_drops: Some(0),
            in_window: false,
            lockout_forecast: None,
            next_window: None,
            lockout: None,
            draining_since: None,
        }
    }

    #[tokio::test]
    async fn an_api_that_does_not_answer_holds_unless_the_logs_may_decide() {
        let (mut precheck, _answers) = PreCheck::new(Arc::new(|_| None));
        assert_eq!(precheck.answered(unanswered("cms1"), false, &HashSet::new()), None);
        let mut decisions = [needed("cms1"), needed("cms2")];
        precheck.annotate(&mut decisions);
        assert_eq!((decisions[0].action, decisions[1].action), (Action::Hold, Action::Restart));
        assert!(
            decisions[0].reason.contains("API did not answer (connection refused); holding"),
            "{}",
            decisions[0].reason
        );
        assert_eq!(precheck.last.as_ref().unwrap().verdict, "unreachable");

        assert_eq!(precheck.answered(unanswered("cms1"), true, &HashSet::new()), None, "no answer is no count");
        let mut decisions = [needed("cms1")];
        precheck.annotate(&mut decisions);
        assert_eq!(decisions[0].action, Action::Restart);
        assert_eq!(precheck.last.as_ref().unwrap().verdict, "cleared");
    }

    /// A call the CDRs place elsewhere (it began while the web bridge saw
    /// no new connection) does not hold that web bridge's restart; any
    /// other listed call still does.
    #[test]
    fn a_listed_call_placed_elsewhere_does_not_hold_the_restart() {
        let answer = || Checked {
            restart: Some(("cms1".into(), Some(0))),
            result: Ok(LiveCheck {
                callbridges: vec![CallBridgeCalls { server: "cms2".into(), cma_live: 2 }],
                legs: vec![(
                    "cms2".into(),
                    ["long", "new"]
                        .map(|id| OpenLeg { id: id.into(), kind: LegKind::Acano, call: None, guest: false })
                        .to_vec(),
                )],
            }),
            asked: Utc::now(),
            asked_wall: Utc::now(),
        };
        let (mut precheck, _answers) = PreCheck::new(Arc::new(|_| None));
        let placed: HashSet<String> = ["long".to_owned()].into();
        precheck.answered(answer(), false, &placed);
        assert_eq!(precheck.last.as_ref().unwrap().verdict, "held");
        let both: HashSet<String> = ["long".to_owned(), "new".to_owned()].into();
        let (live, _) = precheck.answered(answer(), false, &both).unwrap();
        let last = precheck.last.as_ref().unwrap();
        assert_eq!(
            (last.verdict.as_str(), last.text.as_str()),
            ("cleared", "API: 2 CMA call(s) live on cms2; 2 began while cms1 saw no new connection")
        );
        // The model still hears the whole cluster's count.
        assert_eq!(live.cma, 2);
    }

    #[test]
    fn the_count_names_each_busy_call_bridge() {
        let check = LiveCheck {
            legs: Vec::new(),
            callbridges: vec![
                CallBridgeCalls { server: "cms1".into(), cma_live: 0 },
                CallBridgeCalls { server: "cms2".into(), cma_live: 2 },
                CallBridgeCalls { server: "cms3".into(), cma_live: 1 },
            ],
        };
        assert_eq!((check.cma_live(), check.describe().as_str()), (3, "2 CMA call(s) live on cms2, 1 on cms3"));
        assert_eq!(LiveCheck::default().describe(), "no CMA call live");
    }
}
