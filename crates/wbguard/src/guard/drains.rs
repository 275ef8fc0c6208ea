//! The enforcer's drains: web bridges taken out of their load balancer
//! through their server's hook ([`crate::drain`]) while their calls end,
//! and made ready again.
//!
//! The flow of one drain: the policy says `drain`; the drain is journaled
//! (committed before the hook runs: [`crate::store::drain`]); the hook runs
//! in its own task and reports back ([`HookDone`]). From then on the policy
//! restarts the web bridge once harmless (the normal restart flow), or
//! says `undrain` (the drain timed out, or no restart is needed now). The
//! web bridge is made ready again after its restart (whatever the restart's
//! result: the restarter has waited for its page), on `undrain`, after a
//! failed drain (the hook may have half-worked), and in observe mode (a
//! guard switched to observe leaves nothing drained). The journal row is
//! closed only once the undrain hook confirmed.
//!
//! Invariants: at most one hook runs per web bridge; a failed drain is an
//! alert and counts as a drain that ended (no new drain within
//! `min_interval`); a failed undrain is an alert and is tried again every
//! [`UNDRAIN_RETRY`], for as long as it takes: a web bridge is never left
//! drained on purpose. At start, the journal's open drains are taken up
//! again as drains in progress with their original start ([`Drains::resume`]).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use tokio::sync::mpsc;
use wbguard_core::policy::{Action, Decision};

use super::api::{DrainState, DrainView};
use super::history::History;
use super::notify::{Notice, Notifier};
use crate::config::guard_settings::Event;
use crate::config::Config;
use crate::drain::Direction;
use crate::store::drain::OpenDrain;

/// How soon a failed undrain is tried again.
pub const UNDRAIN_RETRY: Duration = Duration::minutes(1);
/// Hook results waiting for the guard task: at most one hook runs per web
/// bridge, so this only fills with more web bridges than places, and then
/// a hook task waits to report.
const RESULTS: usize = 16;

/// A hook's end, reported back to the guard task.
pub struct HookDone {
    webbridge: String,
    direction: Direction,
    result: Result<String, String>,
}

/// One drain in progress.
struct Entry {
    /// Journal id.
    id: i64,
    /// The configured server's name.
    server: String,
    /// When it was decided.
    since: DateTime<Utc>,
    /// What the status says.
    state: DrainState,
    /// The hook running, if any.
    running: Option<Direction>,
    /// It is to be made ready again.
    want_ready: bool,
    /// It was restarted while drained (the drain did its job).
    restarted: bool,
    /// A failed undrain is tried again from then.
    retry_at: Option<DateTime<Utc>>,
    /// The last thing its hook said.
    detail: String,
    /// Undrains failed in a row (only the first is told to webhooks).
    undrain_failures: u32,
}

/// A drained web bridge without a decision for this long (no Stats) is
/// made ready again.
const UNDECIDED_FOR: chrono::Duration = chrono::Duration::minutes(15);

/// The drains of one guard.
pub struct Drains {
    history: History,
    notifier: Notifier,
    done: mpsc::Sender<HookDone>,
    /// By web bridge.
    entries: BTreeMap<String, Entry>,
    /// The last drain of each web bridge that ended without a restart.
    ended: BTreeMap<String, DateTime<Utc>>,
}

impl Drains {
    /// No drains; hook results come back through the receiver.
    pub fn new(history: History, notifier: Notifier) -> (Drains, mpsc::Receiver<HookDone>) {
        let (done, results) = mpsc::channel(RESULTS);
        (Drains { history, notifier, done, entries: BTreeMap::new(), ended: BTreeMap::new() }, results)
    }

    /// Takes up the journal's open drains (a previous guard stopped while
    /// they were drained): drains in progress since their start, state
    /// unknown; the policy decides what comes next.
    pub fn resume(&mut self, open: Vec<OpenDrain>) {
        for drain in open {
            tracing::warn!(
                "journal: {} was drained through {}'s hook at {} and never made ready: taken up again",
                drain.webbridge,
                drain.server,
                drain.started
            );
            self.entries.insert(
                drain.webbridge.to_ascii_lowercase(),
                Entry {
                    id: drain.id,
                    server: drain.server,
                    since: drain.started,
                    state: DrainState::Resumed,
                    running: None,
                    want_ready: false,
                    restarted: false,
                    retry_at: None,
                    detail: "taken up again from the journal at start".into(),
                    undrain_failures: 0,
                },
            );
        }
    }

    /// The web bridges drained now, and since when.
    pub fn draining(&self) -> BTreeMap<String, DateTime<Utc>> {
        self.entries.iter().map(|(webbridge, entry)| (webbridge.clone(), entry.since)).collect()
    }

    /// The last drain of each web bridge that ended without a restart.
    pub fn ended(&self) -> BTreeMap<String, DateTime<Utc>> {
        self.ended.clone()
    }

    /// The web bridges whose server has a drain hook.
    pub fn drainable(config: Option<&Config>) -> BTreeSet<String> {
        config.iter().flat_map(|c| &c.servers).filter(|s| s.drain.is_some()).map(|s| s.log_host.clone()).collect()
    }

    /// A drain hook is running: nothing else starts in the cluster until
    /// it has reported (its web bridge is then drained, or not).
    pub fn draining_now(&self) -> bool {
        self.entries.values().any(|e| e.running == Some(Direction::Drain))
    }

    /// For the status.
    pub fn views(&self) -> Vec<DrainView> {
        self.entries
            .iter()
            .map(|(webbridge, e)| DrainView {
                webbridge: webbridge.clone(),
                server: e.server.clone(),
                since: e.since,
                state: e.state,
                detail: e.detail.clone(),
            })
            .collect()
    }

    /// The restart of `webbridge` ended (whatever its result): if it is
    /// drained, it is made ready again at the next round.
    pub fn restarted(&mut self, webbridge: &str) {
        if let Some(entry) = self.entries.get_mut(webbridge) {
            entry.want_ready = true;
            entry.restarted = true;
            entry.retry_at = None;
        }
    }

    /// One round: drains the decisions ask for are started (in enforce
    /// mode, when nothing else runs: `busy`), and undrains that are due
    /// are run (in any mode: observe mode makes every web bridge ready).
    pub async fn act(
        &mut self,
        config: Option<&Config>,
        decisions: &[Decision],
        enforce: bool,
        busy: bool,
        now: DateTime<Utc>,
    ) {
        for decision in decisions {
            match (decision.action, self.entries.get_mut(&decision.webbridge)) {
                (Action::Undrain, Some(entry)) => entry.want_ready = true,
                (Action::Drain, None) if enforce && !busy => {
                    if let Some(config) = config {
                        self.start(config, decision, now).await;
                    }
                }
                _ => {}
            }
        }
        let due: Vec<String> = self
            .entries
            .iter_mut()
            .filter_map(|(webbridge, entry)| {
                entry.want_ready |= !enforce;
                // A drained web bridge nothing is decided about any more (its
                // logs stopped, or never came after a resume) is not left
                // out of its pool: after a while it is made ready again.
                let decided = decisions.iter().any(|d| &d.webbridge == webbridge);
                entry.want_ready |= !decided && now - entry.since > UNDECIDED_FOR;
                let due = entry.want_ready && entry.running.is_none() && entry.retry_at.is_none_or(|at| at <= now);
                due.then(|| webbridge.clone())
            })
            .collect();
        for webbridge in due {
            self.undrain(config, &webbridge, now);
        }
    }

    /// Journals and starts the drain of `decision`'s web bridge.
    async fn start(&mut self, config: &Config, decision: &Decision, now: DateTime<Utc>) {
        let webbridge = &decision.webbridge;
        let Some(server) = config.servers.iter().find(|s| &s.log_host == webbridge && s.drain.is_some()) else {
            return;
        };
        let id = match self.history.drain_started(webbridge, &server.name, &decision.reason, now).await {
            Ok(id) => id,
            Err(error) => {
                // Without a journal entry, no drain: a crash could leave it drained.
                let message = format!("not draining {webbridge}: {error:#}");
                self.history.alert(now, Some(webbridge), "journal", &message);
                return;
            }
        };
        tracing::info!("draining {webbridge} through {}'s hook ({})", server.name, decision.reason);
        self.entries.insert(
            webbridge.clone(),
            Entry {
                id,
                server: server.name.clone(),
                since: now,
                state: DrainState::Draining,
                running: Some(Direction::Drain),
                want_ready: false,
                restarted: false,
                retry_at: None,
                detail: String::new(),
                undrain_failures: 0,
            },
        );
        self.spawn(server.clone(), webbridge.clone(), Direction::Drain);
    }

    /// Starts the undrain of `webbridge`; a server that lost its hook (a
    /// reload) cannot be: the drain is abandoned, with an alert.
    fn undrain(&mut self, config: Option<&Config>, webbridge: &str, now: DateTime<Utc>) {
        let Some(entry) = self.entries.get_mut(webbridge) else { return };
        let server = config.and_then(|c| c.servers.iter().find(|s| s.name == entry.server && s.drain.is_some()));
        let Some(server) = server.cloned() else {
            let message = format!(
                "{webbridge} was drained through server {}'s hook, which the configuration no longer has: \
                 make it ready in its load balancer by hand",
                entry.server
            );
            self.history.alert(now, Some(webbridge), "drain_abandoned", &message);
            self.history.drain_ended(entry.id, "abandoned", &message, now);
            self.notify_failure(webbridge, message, now);
            self.entries.remove(webbridge);
            return;
        };
        tracing::info!("making {webbridge} ready again in its load balancer");
        entry.running = Some(Direction::Undrain);
        entry.state = DrainState::Undraining;
        self.spawn(server, webbridge.to_owned(), Direction::Undrain);
    }

    fn spawn(&self, server: crate::config::Server, webbridge: String, direction: Direction) {
        let done = self.done.clone();
        tokio::spawn(async move {
            let result = crate::drain::run(&server, direction).await.map_err(|e| format!("{e:#}"));
            let _ = done.send(HookDone { webbridge, direction, result }).await;
        });
    }

    /// A hook reported.
    pub fn hook_done(&mut self, done: HookDone, now: DateTime<Utc>) {
        let HookDone { webbridge, direction, result } = done;
        let Some(entry) = self.entries.get_mut(&webbridge) else { return };
        entry.running = None;
        match (direction, result) {
            (Direction::Drain, Ok(said)) => {
                tracing::info!("{webbridge} drained: {said}");
                entry.state = DrainState::Drained;
                entry.detail = said;
            }
            (Direction::Drain, Err(why)) => {
                // It may have half-worked: made ready again, and no new
                // drain within min_interval.
                let message = format!("the drain of {webbridge} failed: {why}; making it ready again");
                entry.detail = why;
                entry.want_ready = true;
                self.ended.insert(webbridge.clone(), now);
                self.history.alert(now, Some(&webbridge), "drain_failed", &message);
                self.notify_failure(&webbridge, message, now);
            }
            (Direction::Undrain, Ok(said)) => {
                tracing::info!("{webbridge} is ready again: {said}");
                let result = if entry.restarted { "undrained_after_restart" } else { "undrained" };
                self.history.drain_ended(entry.id, result, &said, now);
                if !entry.restarted {
                    self.ended.insert(webbridge.clone(), now);
                }
                self.entries.remove(&webbridge);
            }
            (Direction::Undrain, Err(why)) => {
                let retry = now + UNDRAIN_RETRY;
                let message = format!(
                    "{webbridge} could not be made ready again: {why}; trying again from {}",
                    retry.format("%H:%M:%S UTC")
                );
                entry.state = DrainState::UndrainFailed;
                entry.detail = why;
                entry.retry_at = Some(retry);
                entry.undrain_failures += 1;
                let first = entry.undrain_failures == 1;
                self.history.alert(now, Some(&webbridge), "undrain_failed", &message);
                if first {
                    self.notify_failure(&webbridge, message, now);
                }
            }
        }
    }

    fn notify_failure(&self, webbridge: &str, text: String, now: DateTime<Utc>) {
        tracing::warn!("{text}");
        self.notifier.send(Notice {
            event: Event::Failure,
            webbridge: webbridge.to_owned(),
            time: now,
            text,
            details: serde_json::json!({ "drain": true }),
        });
    }
}
