//! The guard's state: messages in, the leak model fed, decisions made, and
//! a snapshot for the HTTP side.
//!
//! One task owns the model (no lock around it); it publishes an immutable
//! [`Snapshot`] after every change, which readers clone cheaply. Decisions
//! are taken every few seconds on the latest data, with `now` from the
//! clock: the core stays pure, time enters here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use wbguard_core::log::scan::parse_line;
use wbguard_core::log::ParseContext;
use wbguard_core::model::{ClusterEstimate, Deployment, ModelConfig, WebBridgeEstimate};
use wbguard_core::policy::{self, Decision, Mode, Policy};

use super::history::History;
use super::ingest::{Batch, IngestCounters, Origin};
use super::notify::{Notice, Notifier, NotifyCounters};
use crate::config::watch::Event;
use crate::store::Sample;

/// How often decisions are taken.
const DECIDE_EVERY: Duration = Duration::from_secs(1);
/// How long a stopping guard waits for a restart in flight (systemd's
/// stop timeout in deploy/ is longer).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
/// Samples handed to the history writer at once, at most.
const SAMPLES_PER_WRITE: usize = 4096;

/// A record as a stored sample, if it is one.
fn sample(record: &wbguard_core::log::Record) -> Option<Sample> {
    use wbguard_core::log::RecordBody;
    let (kind, active, cma) = match &record.body {
        RecordBody::WebBridgeStats(stats) => ("webbridge", Some(stats.active), None),
        RecordBody::CallBridgeStats(stats) => ("callbridge", None, stats.cma()),
        RecordBody::Audit(_) => return None,
    };
    Some(Sample {
        time: record.time,
        host: record.host.clone(),
        kind,
        active,
        cma_current: cma.map(|p| p.current),
        cma_peak: cma.map(|p| p.peak),
    })
}

/// Parse outcomes, exported with the ingest's as `wbguard_syslog_messages_total`.
#[derive(Debug, Default)]
pub struct ParseCounters {
    /// Messages that became records.
    pub parsed: AtomicU64,
    /// Messages that are not records.
    pub noise: AtomicU64,
    /// Messages that looked like records and were not.
    pub malformed: AtomicU64,
}

/// One web bridge as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WebBridgeView {
    /// Log host name.
    pub webbridge: String,
    /// Time of its last Stats line.
    pub last_seen: DateTime<Utc>,
    /// The model's estimate (sessions, leak bounds, droppable calls, rate,
    /// forecast), flattened into the same JSON object.
    #[serde(flatten)]
    pub estimate: WebBridgeEstimate,
    /// Restarts seen (any cause), by the time they happened.
    pub restarts: Vec<DateTime<Utc>>,
}

/// What the guard knows, as of `now`.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// When it was taken.
    pub now: DateTime<Utc>,
    /// Observe or enforce.
    pub mode: Mode,
    /// Sessions at which a web bridge refuses new ones.
    pub limit: u32,
    /// Per web bridge.
    pub webbridges: Vec<WebBridgeView>,
    /// CMA sessions per call bridge (the latest report).
    pub callbridges: BTreeMap<String, u32>,
    /// The cluster.
    pub cluster: ClusterEstimate,
    /// The latest decisions.
    pub decisions: Vec<Decision>,
}

impl Snapshot {
    fn empty(mode: Mode) -> Snapshot {
        Snapshot {
            now: Utc::now(),
            mode,
            limit: ModelConfig::default().limit,
            webbridges: Vec::new(),
            callbridges: BTreeMap::new(),
            cluster: ClusterEstimate { active_total: 0, cma_total: None, leaked_lower: 0, leaked_upper: 0 },
            decisions: Vec::new(),
        }
    }
}

/// Shared between the guard task and its readers.
pub struct Shared {
    /// The latest snapshot.
    pub snapshot: RwLock<Arc<Snapshot>>,
    /// Parse outcomes.
    pub parse: ParseCounters,
    /// Ingest outcomes.
    pub ingest: Arc<IngestCounters>,
    /// Webhook outcomes.
    pub notify: Arc<NotifyCounters>,
    /// The page's "restart now" token (replaced on reload).
    pub restart_token: RwLock<Option<crate::config::watch::Token>>,
    /// Restarts by web bridge and result, for `wbguard_restarts_total`.
    pub restarts: std::sync::Mutex<BTreeMap<(String, String), u64>>,
}

impl Shared {
    /// A fresh state for `mode`.
    pub fn new(mode: Mode, ingest: Arc<IngestCounters>, notify: Arc<NotifyCounters>) -> Shared {
        Shared {
            snapshot: RwLock::new(Arc::new(Snapshot::empty(mode))),
            parse: ParseCounters::default(),
            ingest,
            notify,
            restart_token: RwLock::new(None),
            restarts: Default::default(),
        }
    }

    /// Counts one restart outcome.
    pub fn count_restart(&self, webbridge: &str, result: &str) {
        *self.restarts.lock().expect("never poisoned").entry((webbridge.to_owned(), result.to_owned())).or_default() +=
            1;
    }

    /// Replaces the latest decisions (after enforcement adjusted them).
    pub fn set_decisions(&self, decisions: Vec<Decision>) {
        let mut slot = self.snapshot.write().expect("the snapshot lock is never poisoned");
        let mut snapshot = (**slot).clone();
        snapshot.decisions = decisions;
        *slot = Arc::new(snapshot);
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("the snapshot lock is never poisoned").clone()
    }
}

/// What a reload (SIGHUP) may change while the guard runs.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The policy.
    pub policy: Policy,
    /// Zone of timestamps without one.
    pub zone: chrono_tz::Tz,
    /// How long history is kept.
    pub retention: chrono::Duration,
    /// The configuration (servers to restart, log hosts to accept); none:
    /// observe only, every host accepted.
    pub config: Option<crate::config::Config>,
}

impl Rules {
    /// Whether a record of `host`, arrived with `origin`, may be used.
    fn accepts(&self, origin: &Origin, host: &str) -> bool {
        match origin {
            Origin::Anyone => true,
            Origin::Servers(own) => own.iter().any(|h| h.eq_ignore_ascii_case(host)),
            Origin::Relay => self
                .config
                .as_ref()
                .is_some_and(|config| config.servers.iter().any(|s| s.log_host.eq_ignore_ascii_case(host))),
        }
    }
}

/// An operator's "restart now" from the status page, and where the answer goes.
pub struct Manual {
    /// The web bridge.
    pub webbridge: String,
    /// Started (a message), or refused (an HTTP status and why).
    pub reply: tokio::sync::oneshot::Sender<Result<String, (u16, String)>>,
}

/// The guard task's inputs.
pub struct Guard {
    /// What may change on reload.
    pub rules: Rules,
    /// Sessions at which a web bridge refuses new ones.
    pub limit: u32,
    /// What readers see.
    pub shared: Arc<Shared>,
    /// The history writer.
    pub history: History,
    /// The last restart the guard made (or may have made) of each web bridge.
    pub restarted: BTreeMap<String, DateTime<Utc>>,
    /// Webhooks.
    pub notifier: Notifier,
}

impl Guard {
    /// Runs the guard until the queue closes or `shutdown` turns true; new
    /// rules arrive through `reloads`, the page's "restart now" through `manual`.
    pub async fn run(
        self,
        mut messages: mpsc::Receiver<Batch>,
        mut reloads: mpsc::Receiver<Rules>,
        mut manual: mpsc::Receiver<Manual>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let Guard { rules, limit, shared, history, restarted, notifier } = self;
        let (enforcer, mut finished) = super::enforce::Enforcer::new(history.clone(), notifier.clone());
        let mut task = Task {
            rules,
            shared,
            history,
            restarted,
            notifier,
            enforcer,
            model: Deployment::new(ModelConfig { limit, ..ModelConfig::default() }),
            dirty: false,
            samples: Vec::new(),
            recorded: BTreeMap::new(),
            alarms: Alarms::default(),
            estimated: None,
        };
        let mut decide_tick = tokio::time::interval(DECIDE_EVERY);
        let mut prune_tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                batch = messages.recv() => {
                    let Some(batch) = batch else { break };
                    task.ingest(&batch);
                    // Keep the status current without rebuilding it per message.
                    if task.dirty && messages.is_empty() {
                        task.publish();
                    }
                }
                Some(rules) = reloads.recv() => task.reload(rules),
                Some(request) = manual.recv() => task.manual(request).await,
                Some(done) = finished.recv() => task.finished(done),
                _ = decide_tick.tick() => task.decide().await,
                _ = prune_tick.tick() => task.history.prune(Utc::now() - task.rules.retention),
                _ = shutdown.changed() => break,
            }
        }
        // Stopping: a restart in flight gets time to finish (its intent is
        // journaled either way), and everything seen is written.
        if task.enforcer.busy {
            tracing::info!("waiting up to {} s for the restart in flight", SHUTDOWN_GRACE.as_secs());
            if let Ok(Some(done)) = tokio::time::timeout(SHUTDOWN_GRACE, finished.recv()).await {
                task.finished(done);
            }
        }
        task.history.samples(std::mem::take(&mut task.samples));
        task.history.flush().await;
    }
}

/// The guard task's state between events (owned by the task: no lock).
struct Task {
    rules: Rules,
    shared: Arc<Shared>,
    history: History,
    /// The last restart the guard made (or may have made) of each web bridge.
    restarted: BTreeMap<String, DateTime<Utc>>,
    notifier: Notifier,
    enforcer: super::enforce::Enforcer,
    model: Deployment,
    /// The model changed since the snapshot was published.
    dirty: bool,
    /// Samples not yet handed to the history writer.
    samples: Vec<Sample>,
    /// The last decision recorded per web bridge: only changes are stored.
    recorded: BTreeMap<String, (policy::Action, String)>,
    alarms: Alarms,
    /// When estimates were last stored (data time).
    estimated: Option<DateTime<Utc>>,
}

impl Task {
    /// Parses a batch and feeds the model.
    fn ingest(&mut self, batch: &Batch) {
        // A line without a host is named by its server, else by where it
        // came from; a year is inferred against the data's own time when it
        // runs ahead of the clock (a fast simulator).
        let default_host = match &batch.origin {
            Origin::Servers(hosts) if hosts.len() == 1 => hosts[0].to_string(),
            _ => batch.source.to_string(),
        };
        let ctx =
            ParseContext { zone: self.rules.zone, reference: data_now(&self.model), default_host: Some(default_host) };
        let (mut parsed, mut noise, mut malformed, mut rejected) = (0, 0, 0, 0);
        for message in batch.messages() {
            match parse_line(message, &ctx) {
                // Speaking for a server it is not: never moves a decision.
                Ok(Some(record)) if !self.rules.accepts(&batch.origin, &record.host) => rejected += 1,
                Ok(Some(record)) => {
                    parsed += 1;
                    self.model.observe(&record);
                    self.samples.extend(sample(&record));
                    self.dirty = true;
                }
                Ok(None) => noise += 1,
                Err(_) => malformed += 1,
            }
        }
        let shared = &self.shared;
        shared.parse.parsed.fetch_add(parsed, Ordering::Relaxed);
        shared.parse.noise.fetch_add(noise, Ordering::Relaxed);
        shared.parse.malformed.fetch_add(malformed, Ordering::Relaxed);
        shared.ingest.rejected.fetch_add(rejected, Ordering::Relaxed);
        // Samples go to the history writer in bounded batches.
        if self.samples.len() >= SAMPLES_PER_WRITE {
            self.history.samples(std::mem::take(&mut self.samples));
        }
    }

    /// Publishes the status (without new decisions) and hands over samples.
    fn publish(&mut self) {
        publish(&self.model, &self.rules.policy, &self.restarted, &self.shared, None);
        self.history.samples(std::mem::take(&mut self.samples));
        self.dirty = false;
    }

    fn reload(&mut self, rules: Rules) {
        tracing::info!(
            "reloaded: {:?} mode, {} server(s)",
            rules.policy.mode,
            rules.config.as_ref().map_or(0, |c| c.servers.len())
        );
        self.rules = rules;
        self.recorded.clear();
    }

    /// An operator's "restart now": through the journal and the restart
    /// machinery like any other, bypassing only the need and the safety.
    async fn manual(&mut self, Manual { webbridge, reply }: Manual) {
        let now = data_now(&self.model);
        let answer = match (&self.rules.config, self.rules.policy.mode) {
            (Some(config), Mode::Enforce) => {
                let current = self.shared.snapshot().decisions.iter().find(|d| d.webbridge == webbridge).cloned();
                match current {
                    None => Err((404, format!("no web bridge {webbridge} in the guard's data"))),
                    Some(_) if self.enforcer.busy => Err((409, "a restart is in progress: one at a time".to_owned())),
                    Some(mut decision) => {
                        decision.action = policy::Action::Restart;
                        decision.reason = "requested by an operator on the status page".into();
                        tracing::warn!("{webbridge}: restart requested by an operator");
                        self.enforcer.act(config, &[decision], now, &mut self.restarted).await;
                        if self.enforcer.busy {
                            Ok(format!("restarting {webbridge}"))
                        } else {
                            Err((409, format!("{webbridge} could not be restarted: see the alerts")))
                        }
                    }
                }
            }
            _ => Err((403, "restart now needs enforce mode and a configuration".to_owned())),
        };
        let _ = reply.send(answer);
    }

    fn finished(&mut self, done: super::enforce::Finished) {
        let webbridge = done.webbridge().to_owned();
        let result = self.enforcer.finished(done, data_now(&self.model));
        tracing::info!("the restart of {webbridge} ended: {result}");
        self.shared.count_restart(&webbridge, result);
    }

    /// Every [`DECIDE_EVERY`]: fresh decisions, restarts verified and
    /// started, changes recorded and announced, estimates stored.
    async fn decide(&mut self) {
        let now = data_now(&self.model);
        publish(&self.model, &self.rules.policy, &self.restarted, &self.shared, Some(self.enforcer.busy));
        let (seen, unseen) = self.enforcer.verify(&self.model, now);
        for webbridge in &seen {
            self.shared.count_restart(webbridge, "verified");
        }
        for webbridge in &unseen {
            self.shared.count_restart(webbridge, "unverified");
        }
        let mut decisions = self.shared.snapshot().decisions.clone();
        self.enforcer.hold_backed_off(&mut decisions, now);
        if let (Mode::Enforce, Some(config)) = (self.rules.policy.mode, &self.rules.config) {
            self.enforcer.act(config, &decisions, now, &mut self.restarted).await;
        }
        self.shared.set_decisions(decisions.clone());
        self.history.samples(std::mem::take(&mut self.samples));
        for decision in &decisions {
            let key = (decision.action, decision.reason.clone());
            if self.recorded.get(&decision.webbridge) != Some(&key) {
                let numbers = serde_json::to_value(decision).unwrap_or_default();
                let action = serde_json::to_value(decision.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                self.history.decision(now, &decision.webbridge, &action, &decision.reason, numbers);
                self.recorded.insert(decision.webbridge.clone(), key);
            }
        }
        self.alarms.notify(&decisions, self.rules.policy.mode, now, &self.notifier);
        // The leak range over time, for the page's chart: once a minute of data time.
        if self.estimated.is_none_or(|at| now - at >= chrono::Duration::minutes(1)) {
            let snapshot = self.shared.snapshot();
            let estimates = snapshot
                .webbridges
                .iter()
                .map(|w| crate::store::Estimate {
                    time: now,
                    webbridge: w.webbridge.clone(),
                    active: w.estimate.active,
                    leaked_lower: w.estimate.leaked_lower,
                    leaked_upper: w.estimate.leaked_upper,
                    droppable_upper: w.estimate.droppable_upper,
                    lockout_forecast: w.estimate.lockout_forecast,
                })
                .collect();
            self.history.estimates(estimates);
            self.estimated = Some(now);
        }
    }
}

/// Edge detection for notifications: a web bridge is announced when it
/// comes to need a restart, and when it reaches its limit, not every second.
#[derive(Default)]
struct Alarms {
    /// Web bridges whose need was announced, with the action announced.
    needed: BTreeMap<String, policy::Action>,
    /// Web bridges announced at their limit.
    at_limit: std::collections::BTreeSet<String>,
}

impl Alarms {
    fn notify(&mut self, decisions: &[Decision], mode: Mode, now: DateTime<Utc>, notifier: &Notifier) {
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
                notifier.send(Notice {
                    event: Event::Decision,
                    webbridge: decision.webbridge.clone(),
                    time: now,
                    text,
                    details,
                });
            }
        }
    }
}

/// The guard's "now": the wall clock, or the data's time when the data runs
/// ahead of it (a simulator at high speed, a server's clock ahead).
fn data_now(model: &Deployment) -> DateTime<Utc> {
    let wall = Utc::now();
    model.latest().map_or(wall, |latest| latest.max(wall))
}

/// Rebuilds the snapshot; with `decide` (whether a restart is in flight),
/// takes fresh decisions too.
fn publish(
    model: &Deployment,
    policy: &Policy,
    restarted: &BTreeMap<String, DateTime<Utc>>,
    shared: &Shared,
    decide: Option<bool>,
) {
    let now = data_now(model);
    let previous = shared.snapshot();
    let decisions = match decide {
        Some(busy) => policy::decide(model, policy, restarted, busy, now),
        None => previous.decisions.clone(),
    };
    let webbridges = model
        .webbridges()
        .filter_map(|state| {
            let last = state.last()?;
            let estimate = model.estimate(&state.host, now)?;
            Some(WebBridgeView {
                webbridge: state.host.clone(),
                last_seen: last.time,
                estimate,
                restarts: state.restarts.iter().map(|r| r.time).collect(),
            })
        })
        .collect();
    let callbridges = model.callbridges().filter_map(|cb| Some((cb.host.clone(), cb.last.cma()?.current))).collect();
    let snapshot = Snapshot {
        now,
        mode: policy.mode,
        limit: model.config().limit,
        webbridges,
        callbridges,
        cluster: model.cluster_estimate(now),
        decisions,
    };
    *shared.snapshot.write().expect("the snapshot lock is never poisoned") = Arc::new(snapshot);
}
