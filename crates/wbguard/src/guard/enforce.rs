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
//!
//! Web bridges behind a load balancer are drained first when the policy
//! says so ([`super::drains`]): a drained web bridge's restart is the same
//! restart, and once it ends (the restarter waited for the page) the web
//! bridge is made ready again.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tokio::sync::mpsc;
use wbguard_core::model::Deployment;
use wbguard_core::policy::{Action, Decision, Situation};

use super::drains::{Drains, HookDone};
use super::history::History;
use super::metrics::RestartResult;
use super::notify::{Notice, Notifier};
use super::precheck::{CheckLive, Checked, Gate, PreCheck};
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
    /// The Call Bridge API, asked before each restart.
    pub precheck: PreCheck,
    /// Web bridges drained through their load balancer.
    pub drains: Drains,
}

impl Enforcer {
    /// Enforcement; finished restarts, the API's answers and the drain
    /// hooks' results come back through the returned receivers.
    pub fn new(
        history: History,
        notifier: Notifier,
        restart: Restart,
        check: CheckLive,
    ) -> (Enforcer, mpsc::Receiver<Finished>, mpsc::Receiver<Checked>, mpsc::Receiver<HookDone>) {
        let (done, finished) = mpsc::channel(16);
        let (precheck, checked) = PreCheck::new(check);
        let (drains, hooks) = Drains::new(history.clone(), notifier.clone());
        let enforcer = Enforcer {
            history,
            notifier,
            restart,
            done,
            busy: false,
            unverified: BTreeMap::new(),
            backoff: BTreeMap::new(),
            unknown: Default::default(),
            precheck,
            drains,
        };
        (enforcer, finished, checked, hooks)
    }

    /// A restart, the API check before one, or a drain hook is running:
    /// one at a time.
    pub fn in_progress(&self) -> bool {
        self.busy || self.precheck.running() || self.drains.draining_now()
    }

    /// What the policy needs to know of the guard's doings; `config` says
    /// which web bridges have a drain hook.
    pub fn situation(&self, restarted: &BTreeMap<String, DateTime<Utc>>, config: Option<&Config>) -> Situation {
        Situation {
            restarted: restarted.clone(),
            busy: self.in_progress(),
            drainable: Drains::drainable(config),
            draining: self.drains.draining(),
            drain_ended: self.drains.ended(),
        }
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
    /// on a server of `config`; when the servers have an API, only once it
    /// says the live calls are within the allowance.
    pub async fn act(
        &mut self,
        config: &Config,
        decisions: &[Decision],
        now: DateTime<Utc>,
        restarted: &mut BTreeMap<String, DateTime<Utc>>,
    ) {
        self.start(config, decisions, now, restarted, true).await;
    }

    /// An operator's restart: like [`Enforcer::act`], without asking the
    /// API (the operator chose to drop what is live).
    pub async fn act_unchecked(
        &mut self,
        config: &Config,
        decision: Decision,
        now: DateTime<Utc>,
        restarted: &mut BTreeMap<String, DateTime<Utc>>,
    ) {
        self.start(config, &[decision], now, restarted, false).await;
    }

    async fn start(
        &mut self,
        config: &Config,
        decisions: &[Decision],
        now: DateTime<Utc>,
        restarted: &mut BTreeMap<String, DateTime<Utc>>,
        ask_api: bool,
    ) {
        if self.in_progress() {
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
        let mut reason = decision.reason.clone();
        if ask_api {
            match self.precheck.before_restart(config, decision, now) {
                Gate::Wait => return,
                // Cleared by the API seconds ago: the journal says so.
                Gate::Go(Some(api)) => reason = format!("{reason}; {api}"),
                Gate::Go(None) => {}
            }
        }
        let id = match self.history.intent(&decision.webbridge, &reason, now).await {
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
        tracing::info!("restarting {webbridge} ({reason})");
        let restart = (self.restart)(server, config.clone(), reason);
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
        // Drained for this restart: ready again, whatever its result.
        self.drains.restarted(&webbridge);
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

#[cfg(test)]
mod tests {
    //! The enforcer against a stand-in restarter and a clock the test
    //! moves: back-off, verification in the logs, one at a time, and the
    //! journal in a real SQLite file.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use chrono::{DurationRound, TimeZone};
    use wbguard_core::log::{AuditCommand, Record, RecordBody, WebBridgeStats};
    use wbguard_core::model::ModelConfig;
    use wbguard_core::policy::Need;

    use super::*;
    use crate::config::{Channel, HostKeyPolicy, Timeouts};
    use crate::restarter::verify::Verification;
    use crate::store::history::Query;
    use crate::store::Store;

    /// The test's clock: whole minutes from a fixed recent moment (recent,
    /// so that the store's retention keeps what the test writes).
    fn at(minutes: i64) -> DateTime<Utc> {
        let start = Utc::now().duration_trunc(Duration::days(1)).unwrap() - Duration::days(1);
        start + Duration::minutes(minutes)
    }

    fn config(dir: &std::path::Path) -> Config {
        let server = Server {
            name: "cms1".into(),
            host: "127.0.0.1".into(),
            port: 22,
            log_host: "cms1".into(),
            webbridge_url: None,
            user: "admin".into(),
            channel: Channel::Exec,
            legacy_algorithms: false,
            auth: Vec::new(),
            syslog_from: Vec::new(),
            api: None,
            drain: None,
        };
        Config {
            servers: vec![server],
            host_key_policy: HostKeyPolicy::Strict,
            known_hosts: dir.join("known_hosts"),
            state_dir: dir.to_path_buf(),
            timeouts: Timeouts::default(),
            guard: Default::default(),
        }
    }

    fn restart(webbridge: &str) -> Decision {
        Decision {
            webbridge: webbridge.into(),
            action: Action::Restart,
            reason: "leak at least 100".into(),
            needs: vec![Need::LeakAtLeast { threshold: 100 }],
            active: 120,
            leaked_lower: 110,
            leaked_upper: 120,
            droppable_upper: 0,
            calls_source: wbguard_core::model::CallSource::Logs,
            calls_as_of: chrono::Utc::now(),
            allowed_drops: Some(0),
            in_window: false,
            lockout_forecast: None,
            next_window: None,
            lockout: None,
            draining_since: None,
        }
    }

    /// A restarter that answers `attempt` and counts its calls (and the
    /// reasons it was given).
    fn stand_in(attempt: Attempt) -> (Restart, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let reasons = Arc::new(Mutex::new(Vec::new()));
        let (counted, heard) = (calls.clone(), reasons.clone());
        let restart: Restart = Arc::new(move |server: Server, _config: Config, reason: String| {
            counted.fetch_add(1, Ordering::SeqCst);
            heard.lock().unwrap().push(format!("{}: {reason}", server.name));
            let attempt = attempt.clone();
            Box::pin(async move { attempt })
        });
        (restart, calls, reasons)
    }

    struct Bench {
        dir: tempfile::TempDir,
        history: History,
        enforcer: Enforcer,
        finished: mpsc::Receiver<Finished>,
        calls: Arc<AtomicUsize>,
    }

    fn bench(attempt: Attempt) -> (Bench, Arc<Mutex<Vec<String>>>) {
        let dir = tempfile::tempdir().unwrap();
        let (history, _) =
            History::start(Store::open(dir.path()).unwrap(), Duration::days(90), Default::default()).unwrap();
        let (restart, calls, reasons) = stand_in(attempt);
        let (enforcer, finished, _, _) = Enforcer::new(
            history.clone(),
            Notifier::start(Vec::new(), Default::default()),
            restart,
            Arc::new(|_| None),
        );
        (Bench { dir, history, enforcer, finished, calls }, reasons)
    }

    /// The journal's restarts, as the store has them.
    async fn journal(bench: &Bench) -> Vec<serde_json::Value> {
        bench.history.flush().await;
        let store = Store::open(bench.dir.path()).unwrap();
        let history = store.history(&Query::new(at(-60), at(24 * 60))).unwrap();
        serde_json::to_value(history.restarts).unwrap().as_array().unwrap().clone()
    }

    /// Alerts of `kind` in the store, read as an operator would, with SQL.
    fn alerts(dir: &std::path::Path, kind: &str) -> i64 {
        let connection = rusqlite::Connection::open(dir.join(crate::store::FILE)).unwrap();
        connection.query_row("SELECT count(*) FROM alerts WHERE kind = ?1", [kind], |row| row.get(0)).unwrap()
    }

    #[tokio::test]
    async fn a_failed_restart_is_journaled_and_backs_off_for_six_hours() {
        let (mut bench, reasons) = bench(Attempt::Failed("connection refused".into()));
        let config = config(bench.dir.path());
        let mut restarted = BTreeMap::new();
        bench.enforcer.act(&config, &[restart("cms1")], at(0), &mut restarted).await;
        assert!(bench.enforcer.busy);
        assert_eq!(restarted.get("cms1"), Some(&at(0)));
        assert_eq!(*reasons.lock().unwrap(), ["cms1: leak at least 100"]);
        // One at a time: a second decision meanwhile starts nothing.
        bench.enforcer.act(&config, &[restart("cms1")], at(0), &mut restarted).await;
        assert_eq!(bench.calls.load(Ordering::SeqCst), 1);

        let done = bench.finished.recv().await.unwrap();
        assert_eq!(bench.enforcer.finished(done, at(1)), RestartResult::Failed);
        assert!(!bench.enforcer.busy);
        let journal = journal(&bench).await;
        assert_eq!(journal.len(), 1, "{journal:?}");
        assert_eq!(journal[0]["result"], "failed");
        assert_eq!(journal[0]["detail"], "connection refused");
        assert_eq!(journal[0]["intent"], serde_json::json!(at(0)));

        // Held while backing off, whatever the policy says...
        for minutes in [2, 60, 6 * 60] {
            let mut decisions = vec![restart("cms1")];
            bench.enforcer.hold_backed_off(&mut decisions, at(minutes));
            assert_eq!(decisions[0].action, Action::Hold, "at {minutes} min");
            assert!(decisions[0].reason.contains("backing off"), "{}", decisions[0].reason);
            bench.enforcer.act(&config, &decisions, at(minutes), &mut restarted).await;
        }
        assert_eq!(bench.calls.load(Ordering::SeqCst), 1, "no restart while backing off");
        // ...and free again once six hours have passed.
        let mut decisions = vec![restart("cms1")];
        bench.enforcer.hold_backed_off(&mut decisions, at(6 * 60 + 2));
        assert_eq!(decisions[0].action, Action::Restart);
    }

    fn stats(time: DateTime<Utc>, active: u32, connections: u64) -> Record {
        let stats = WebBridgeStats { active, connections, disconnections: connections - u64::from(active) };
        Record { time, host: "cms1".into(), body: RecordBody::WebBridgeStats(stats) }
    }

    #[tokio::test]
    async fn a_restart_is_verified_when_the_logs_show_it_and_given_up_when_they_never_do() {
        let restarted_ok = Attempt::Restarted { verification: Verification::NotConfigured };
        let (mut bench, _) = bench(restarted_ok.clone());
        let config = config(bench.dir.path());
        let mut model = Deployment::new(ModelConfig::default());
        model.observe(&stats(at(-1), 120, 900));
        let mut restarted = BTreeMap::new();

        bench.enforcer.act(&config, &[restart("cms1")], at(0), &mut restarted).await;
        let done = bench.finished.recv().await.unwrap();
        assert_eq!(bench.enforcer.finished(done, at(0)), RestartResult::Restarted);
        // Not in the logs yet, and not overdue: still waiting.
        assert_eq!(bench.enforcer.verify(&model, at(2)), (vec![], vec![]));
        // The audit line and the counters reset show it.
        let audit = AuditCommand {
            user: "admin".into(),
            source: Some("10.0.0.9:5000".into()),
            command: "webbridge restart".into(),
            granted: true,
        };
        model.observe(&Record { time: at(0), host: "cms1".into(), body: RecordBody::Audit(audit) });
        model.observe(&stats(at(1), 0, 0));
        assert_eq!(bench.enforcer.verify(&model, at(3)), (vec!["cms1".to_owned()], vec![]));
        // Seen once is enough: nothing left to verify.
        assert_eq!(bench.enforcer.verify(&model, at(20)), (vec![], vec![]));

        // A second restart that the logs never show is given up after five
        // minutes, and backs off.
        bench.enforcer.act(&config, &[restart("cms1")], at(120), &mut restarted).await;
        let done = bench.finished.recv().await.unwrap();
        bench.enforcer.finished(done, at(120));
        assert_eq!(bench.enforcer.verify(&model, at(124)), (vec![], vec![]));
        assert_eq!(bench.enforcer.verify(&model, at(126)), (vec![], vec!["cms1".to_owned()]));
        let mut decisions = vec![restart("cms1")];
        bench.enforcer.hold_backed_off(&mut decisions, at(130));
        assert_eq!(decisions[0].action, Action::Hold);
        let journal = journal(&bench).await;
        let results: Vec<&str> = journal.iter().map(|r| r["result"].as_str().unwrap()).collect();
        assert_eq!(results, ["restarted", "restarted"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_api_holds_a_restart_while_a_cma_call_is_live_and_clears_it_once_it_ends() {
        use super::super::precheck::{CallBridgeCalls, LiveCheck};
        let dir = tempfile::tempdir().unwrap();
        let (history, _) =
            History::start(Store::open(dir.path()).unwrap(), Duration::days(90), Default::default()).unwrap();
        let (restarter, calls, reasons) = stand_in(Attempt::Restarted { verification: Verification::NotConfigured });
        // The API's answer, as the test sets it; every question is counted.
        let live = Arc::new(Mutex::new(1u32));
        let asked = Arc::new(AtomicUsize::new(0));
        let (answer, counted) = (live.clone(), asked.clone());
        let check: super::super::precheck::CheckLive = Arc::new(move |_config: &Config| {
            counted.fetch_add(1, Ordering::SeqCst);
            let cma_live = *answer.lock().unwrap();
            Some(Box::pin(async move {
                Ok(LiveCheck {
                    callbridges: vec![CallBridgeCalls { server: "cms2".into(), cma_live }],
                    legs: Vec::new(),
                })
            }) as super::super::precheck::CheckFuture)
        });
        let (mut enforcer, mut finished, mut checked, _) =
            Enforcer::new(history, Notifier::start(Vec::new(), Default::default()), restarter, check);
        let config = config(dir.path());
        let mut restarted = BTreeMap::new();

        // The policy asks; the API is asked first, and nothing goes out.
        enforcer.act(&config, &[restart("cms1")], at(0), &mut restarted).await;
        assert!(enforcer.in_progress() && !enforcer.busy);
        let answer = checked.recv().await.unwrap();
        let (counted_live, _) = enforcer.precheck.answered(answer, false, &Default::default()).unwrap();
        assert_eq!((counted_live.cma, counted_live.source), (1, wbguard_core::model::CallSource::Api));
        // Held, in words, and not asked again for a few seconds.
        let mut decisions = vec![restart("cms1")];
        enforcer.act(&config, &decisions, at(0), &mut restarted).await;
        enforcer.precheck.annotate(&mut decisions);
        assert_eq!(decisions[0].action, Action::Hold);
        assert!(decisions[0].reason.contains("API: 1 CMA call(s) live on cms2 (allowed 0)"), "{}", decisions[0].reason);
        assert_eq!((asked.load(Ordering::SeqCst), calls.load(Ordering::SeqCst)), (1, 0));
        assert!(restarted.is_empty(), "a held restart is not journaled");

        // The call ends; the next question clears the restart, which goes out.
        *live.lock().unwrap() = 0;
        tokio::time::advance(super::super::precheck::ASK_AGAIN_AFTER).await;
        enforcer.act(&config, &[restart("cms1")], at(1), &mut restarted).await;
        let answer = checked.recv().await.unwrap();
        assert_eq!(enforcer.precheck.answered(answer, false, &Default::default()).map(|(l, _)| l.cma), Some(0));
        enforcer.act(&config, &[restart("cms1")], at(1), &mut restarted).await;
        assert!(enforcer.busy);
        finished.recv().await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        assert_eq!(*reasons.lock().unwrap(), ["cms1: leak at least 100; API: no CMA call live"]);
    }

    #[tokio::test]
    async fn a_web_bridge_that_no_server_logs_as_is_never_restarted() {
        let (mut bench, _) = bench(Attempt::Restarted { verification: Verification::NotConfigured });
        let config = config(bench.dir.path());
        let mut restarted = BTreeMap::new();
        for minute in 0..3 {
            bench.enforcer.act(&config, &[restart("cms9")], at(minute), &mut restarted).await;
        }
        assert_eq!(bench.calls.load(Ordering::SeqCst), 0);
        assert!(!bench.enforcer.busy && restarted.is_empty());
        assert!(journal(&bench).await.is_empty());
        assert_eq!(alerts(bench.dir.path(), "unknown_webbridge"), 1, "alerted once, not every round");
    }

    #[test]
    fn a_restart_interrupted_by_a_crash_is_closed_and_counted_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let intent = Utc.timestamp_opt(Utc::now().timestamp() - 600, 0).unwrap();
        {
            let mut store = Store::open(dir.path()).unwrap();
            store.restart_intent("cms1", "leak at least 100", intent).unwrap();
            // The guard dies here: no outcome.
        }
        let (history, restarted) =
            History::start(Store::open(dir.path()).unwrap(), Duration::days(90), Default::default()).unwrap();
        // The minimum interval counts it: it may have happened.
        assert_eq!(restarted.get("cms1"), Some(&intent));
        drop(history);
        let store = Store::open(dir.path()).unwrap();
        assert!(store.unfinished().unwrap().is_empty());
        let journal = store.history(&Query::new(intent - Duration::hours(1), intent + Duration::hours(1))).unwrap();
        assert_eq!(journal.restarts[0].result.as_deref(), Some("interrupted"));
        assert_eq!(alerts(dir.path(), "restart_interrupted"), 1);
        // A second start finds nothing left to close.
        let (_history, again) =
            History::start(Store::open(dir.path()).unwrap(), Duration::days(90), Default::default()).unwrap();
        assert_eq!(again.get("cms1"), Some(&intent));
        assert_eq!(alerts(dir.path(), "restart_interrupted"), 1);
    }
}
