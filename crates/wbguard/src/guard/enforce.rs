//! Acting on decisions (enforce mode): one restart at a time, journaled
//! before the command goes out, verified in the logs afterwards.
//!
//! The flow of one restart: the intent is committed to the journal, the
//! restart runs through the restart machinery that `wbguard restart` uses
//! ([`crate::restarter`]: host keys, timeouts, never re-sent, the audit and
//! Cisco-format log), the outcome is journaled, and then the guard waits for
//! the logs to show it (an audit line, the counters reset). A restart that
//! fails, or that the logs never show, raises an alert and backs the web
//! bridge off for a while: the guard never loops on a web bridge.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tokio::sync::mpsc;
use wbguard_core::model::Deployment;
use wbguard_core::policy::{Action, Decision};

use super::history::History;
use super::metrics::RestartResult;
use super::notify::{Notice, Notifier};
use crate::config::guard_settings::Event;
use crate::config::{Config, Server};
use crate::restarter::audit::RestartLog;
use crate::restarter::{self, Attempt, Requester};

/// Makes one restart of a server, for a reason: the real machinery in the
/// guard, a stand-in in tests.
pub type Restart = Arc<dyn Fn(Server, Config, String) -> Pin<Box<dyn Future<Output = Attempt> + Send>> + Send + Sync>;

/// The real restart: over SSH, verified by the page, and written to the
/// same audit file and Cisco-format log as `wbguard restart` writes.
pub fn restart_and_audit() -> Restart {
    Arc::new(|server: Server, config: Config, reason: String| {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let attempt = restarter::restart_one(&server, &config, false, &|_| {}).await;
            let took = started.elapsed();
            let requester = Requester { operator: "wbguard watch".into(), reason };
            let audited = attempt.clone();
            let written = tokio::task::spawn_blocking(move || {
                RestartLog::open(&config.state_dir)
                    .and_then(|mut log| restarter::record(&mut log, &server, &audited, took, &requester))
            })
            .await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!("the restart log: {error:#}"),
                Err(error) => tracing::warn!("the restart log: {error}"),
            }
            attempt
        })
    })
}

/// How long the logs get to show a restart.
const VERIFY_WITHIN: Duration = Duration::minutes(5);
/// How long a web bridge is left alone after a failed or unseen restart.
const BACKOFF: Duration = Duration::hours(6);

/// A restart's end, reported back to the guard.
pub struct Finished {
    webbridge: String,
    id: i64,
    started: DateTime<Utc>,
    attempt: Attempt,
}

impl Finished {
    /// The web bridge restarted.
    pub fn webbridge(&self) -> &str {
        &self.webbridge
    }
}

/// What the guard's enforcement knows between rounds.
pub struct Enforcer {
    history: History,
    notifier: Notifier,
    restart: Restart,
    done: mpsc::Sender<Finished>,
    /// A restart is running (one per cluster).
    pub busy: bool,
    /// Restarts waiting to be seen in the logs: web bridge -> (journal id, since).
    unverified: BTreeMap<String, (i64, DateTime<Utc>)>,
    /// Web bridges left alone until then, after a failure.
    backoff: BTreeMap<String, DateTime<Utc>>,
    /// Alerts already raised about web bridges that are not configured.
    unknown: std::collections::BTreeSet<String>,
}

impl Enforcer {
    /// Enforcement; finished restarts come back through the returned receiver.
    pub fn new(history: History, notifier: Notifier, restart: Restart) -> (Enforcer, mpsc::Receiver<Finished>) {
        let (done, finished) = mpsc::channel(16);
        let enforcer = Enforcer {
            history,
            notifier,
            restart,
            done,
            busy: false,
            unverified: BTreeMap::new(),
            backoff: BTreeMap::new(),
            unknown: Default::default(),
        };
        (enforcer, finished)
    }

    /// Turns restart decisions of web bridges in back-off into holds.
    pub fn hold_backed_off(&self, decisions: &mut [Decision], now: DateTime<Utc>) {
        for decision in decisions.iter_mut().filter(|d| d.action == Action::Restart) {
            if let Some(until) = self.backoff.get(&decision.webbridge).filter(|&&until| now < until) {
                decision.action = Action::Hold;
                decision.reason = format!(
                    "backing off after a failed or unseen restart until {}",
                    until.format("%Y-%m-%d %H:%M UTC")
                );
            }
        }
    }

    /// Starts the restart the decisions ask for, if any and none runs,
    /// on a server of `config`.
    pub async fn act(
        &mut self,
        config: &Config,
        decisions: &[Decision],
        now: DateTime<Utc>,
        restarted: &mut BTreeMap<String, DateTime<Utc>>,
    ) {
        if self.busy {
            return;
        }
        let Some(decision) = decisions.iter().find(|d| d.action == Action::Restart) else { return };
        let Some(server) = config.servers.iter().find(|s| s.log_host == decision.webbridge).cloned() else {
            if self.unknown.insert(decision.webbridge.clone()) {
                let message = format!("{} needs a restart, but no configured server logs as {0}", decision.webbridge);
                self.history.alert(now, Some(&decision.webbridge), "unknown_webbridge", &message);
            }
            return;
        };
        let id = match self.history.intent(&decision.webbridge, &decision.reason, now).await {
            Ok(id) => id,
            Err(error) => {
                // Without a journal entry, no restart: it could be repeated after a crash.
                self.history.alert(
                    now,
                    Some(&decision.webbridge),
                    "journal",
                    &format!("not restarting {}: {error:#}", decision.webbridge),
                );
                return;
            }
        };
        self.busy = true;
        restarted.insert(decision.webbridge.clone(), now);
        let done = self.done.clone();
        let webbridge = decision.webbridge.clone();
        tracing::info!("restarting {webbridge} ({})", decision.reason);
        let restart = (self.restart)(server, config.clone(), decision.reason.clone());
        tokio::spawn(async move {
            let attempt = restart.await;
            let _ = done.send(Finished { webbridge, id, started: now, attempt }).await;
        });
    }

    /// Records how a restart ended; returns it for the metrics.
    pub fn finished(&mut self, finished: Finished, now: DateTime<Utc>) -> RestartResult {
        self.busy = false;
        let Finished { webbridge, id, started, attempt } = finished;
        let (result, detail) = (attempt.result(), attempt.detail());
        self.history.outcome(id, result, Some(detail.clone()), now);
        if matches!(attempt, Attempt::Restarted { .. }) {
            self.unverified.insert(webbridge, (id, started));
        } else {
            let message = format!("restart of {webbridge} {result}: {detail}");
            self.history.alert(now, Some(&webbridge), "restart_failed", &message);
            self.fail(&webbridge, message, now);
        }
        RestartResult::of(&attempt)
    }

    /// Checks the logs for the restarts made; returns those seen and those
    /// given up on.
    pub fn verify(&mut self, model: &Deployment, now: DateTime<Utc>) -> (Vec<String>, Vec<String>) {
        let mut seen = Vec::new();
        let mut unseen = Vec::new();
        self.unverified.retain(|webbridge, (_, since)| {
            let shown = model.webbridge(webbridge).is_some_and(|state| {
                // Clocks differ a little: a restart logged just before counts.
                state.restarts.iter().any(|r| r.time >= *since - Duration::minutes(1))
            });
            if shown {
                seen.push(webbridge.clone());
                false
            } else if now - *since > VERIFY_WITHIN {
                unseen.push(webbridge.clone());
                false
            } else {
                true
            }
        });
        for webbridge in &unseen {
            let message = format!("the logs never showed the restart of {webbridge}: no audit line, no counter reset");
            self.history.alert(now, Some(webbridge), "restart_unverified", &message);
            self.fail(webbridge, message, now);
        }
        for webbridge in &seen {
            tracing::info!("the logs show the restart of {webbridge}");
            self.notifier.send(Notice {
                event: Event::Restart,
                webbridge: webbridge.clone(),
                time: now,
                text: "restarted; the logs show it (audit line, counters reset)".into(),
                details: serde_json::json!({ "verified": true }),
            });
        }
        (seen, unseen)
    }

    /// A failed or unseen restart: warned, told, and the web bridge left alone for a while.
    fn fail(&mut self, webbridge: &str, message: String, now: DateTime<Utc>) {
        let until = now + BACKOFF;
        tracing::warn!("{message}; leaving {webbridge} alone until {until}");
        self.notifier.send(Notice {
            event: Event::Failure,
            webbridge: webbridge.to_owned(),
            time: now,
            text: format!("{message}; no further restart before {}", until.format("%Y-%m-%d %H:%M UTC")),
            details: serde_json::json!({ "backoff_until": until }),
        });
        self.backoff.insert(webbridge.to_owned(), until);
    }
}
