//! The guard task: messages in, the leak model fed, decisions taken once
//! per round and published once, restarts started and verified.
//!
//! One task owns the model (no lock around it); it publishes an immutable
//! [`Snapshot`] after every change, which readers clone cheaply. Decisions
//! are taken every [`DECIDE_EVERY`] on the latest data, with `now` from the
//! guard's clock ([`super::clock`]): the core stays pure, time enters here.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use wbguard_core::log::scan::parse_line;
use wbguard_core::log::ParseContext;
use wbguard_core::model::Deployment;
use wbguard_core::policy::{self, Decision, Mode, Policy};

use super::alerts::Alarms;
use super::api::JournalAhead;
use super::clock::{GuardClock, Verdict};
use super::clusters::{ClusterEvent, Clusters, Makings};
use super::enforce::{Enforcer, Finished};
use super::history::History;
use super::hosts::OpenHosts;
use super::metrics::RestartResult;
use super::notify::{Notice, Notifier};
use super::precheck::{CheckLive, Checked};
use super::snapshot::{Shared, Snapshot};
use super::Setup;
use crate::config::guard_settings::{ApiUnreachable, Event};
use crate::config::Config;
use crate::ingest::metrics::MessageResult;
use crate::ingest::{Batch, Origin};
use crate::store::{Estimate, Sample};

/// How often decisions are taken.
const DECIDE_EVERY: Duration = Duration::from_secs(1);
/// The status is rebuilt from new data at most this often between
/// decisions: a rebuild costs a part per host, so rebuilding per batch
/// made each record as slow as the hosts were many.
const PUBLISH_EVERY: Duration = Duration::from_millis(200);
/// How long a stopping guard waits for a restart in flight (systemd's
/// stop timeout in deploy/ is longer).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
/// The API's count of live calls stands in for the logs this long (the
/// guard's clock); every restart asks again anyway.
const API_FRESH: chrono::Duration = chrono::Duration::seconds(60);
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

/// What a reload (SIGHUP) may change while the guard runs (the clock is
/// set by the command line and stays).
#[derive(Debug, Clone)]
pub struct Rules {
    /// The policy.
    pub policy: Policy,
    /// Zone of timestamps without one.
    pub zone: chrono_tz::Tz,
    /// How long history is kept.
    pub retention: chrono::Duration,
    /// The configuration (servers to restart, log hosts to accept); none:
    /// observe only, any host accepted up to `max_hosts`.
    pub config: Option<Config>,
    /// Without a configuration, the most hosts tracked (`--max-hosts`).
    pub max_hosts: usize,
    /// What an API that does not answer before a restart means.
    pub api_unreachable: ApiUnreachable,
    /// `[[cluster]]` (none: one cluster of everything, with `policy`).
    pub clusters: Vec<crate::config::cluster::Cluster>,
    /// The configured servers' log hosts (lower case), looked up per
    /// record: a fleet's list is too long to go through each time.
    log_hosts: std::collections::HashSet<String>,
}

impl Rules {
    /// The rules of a setup.
    pub fn of(setup: &Setup) -> Rules {
        let settings = &setup.settings;
        Rules {
            policy: settings.policy.clone(),
            zone: settings.log_timezone,
            retention: settings.retention,
            config: setup.config.clone(),
            max_hosts: settings.max_hosts,
            api_unreachable: settings.api_unreachable,
            clusters: settings.clusters.clone(),
            log_hosts: setup.config.iter().flat_map(|c| &c.servers).map(|s| s.log_host.clone()).collect(),
        }
    }

    /// Whether a record of `host`, arrived with `origin`, may be used.
    fn accepts(&self, origin: &Origin, host: &str) -> bool {
        // Log hosts are configured in lower case.
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(host.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(host)
        };
        match origin {
            Origin::Anyone => true,
            // In order (see `Sources::from_config`).
            Origin::Servers(own) => own.binary_search_by(|h| (**h).cmp(&*host)).is_ok(),
            Origin::Relay => self.log_hosts.contains(&*host),
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
    /// Drains the journal says were never ended: taken up again.
    pub open_drains: Vec<crate::store::drain::OpenDrain>,
    /// Webhooks.
    pub notifier: Notifier,
    /// Wall or data, and how far ahead a record may be dated.
    pub clock: GuardClock,
    /// Asks the Call Bridge API for live calls before a restart.
    pub check: CheckLive,
    /// CDRs are received (`watch.listen_cdr`): unknown counts are
    /// reconciled through the API.
    pub cdr_on: bool,
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
        let Guard { rules, limit, shared, history, restarted, open_drains, notifier, clock, check, cdr_on } = self;
        // A journal written under a clock that ran ahead (or by a guard that
        // followed a forged line) would hold its web bridges for as long as
        // min_interval after a date that has not come yet.
        let (restarted, future) = clock.split_journal(fold_case(restarted), Utc::now());
        for (webbridge, time) in &future {
            tracing::warn!(
                "journal: the last restart of {webbridge} is dated {time}, in the future: not used for min_interval"
            );
        }
        let journal_ahead = future.into_iter().map(|(webbridge, time)| JournalAhead { webbridge, time }).collect();
        let makings = Makings {
            history: history.clone(),
            notifier: notifier.clone(),
            restart: super::enforce::restart_and_audit(),
            check,
            limit,
        };
        let (clusters, mut events) = Clusters::new(&rules, &makings, open_drains);
        shared.metrics.cdr.live.set_clusters(clusters.names_by_host());
        if clusters.all.len() > 1 {
            tracing::info!(
                "{} clusters: {}",
                clusters.all.len(),
                clusters.all.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        let mut task = Task {
            rules,
            shared,
            history,
            restarted,
            notifier,
            clusters,
            dirty: false,
            published: tokio::time::Instant::now(),
            open_hosts: OpenHosts::default(),
            samples: Vec::new(),
            recorded: BTreeMap::new(),
            alarms: Alarms::default(),
            estimated: None,
            clock,
            journal_ahead,
            cdr_on,
        };
        tracing::info!(
            "clock: {}",
            match task.clock.source {
                super::clock::Clock::Wall =>
                    format!("wall (records dated more than {} s ahead are ignored)", task.clock.tolerance.num_seconds()),
                super::clock::Clock::Data =>
                    "data: \"now\" follows the newest record, for simulations faster than real time".to_owned(),
            }
        );
        task.publish();
        let mut decide_tick = tokio::time::interval(DECIDE_EVERY);
        let mut prune_tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                batch = messages.recv() => {
                    let Some(batch) = batch else { break };
                    task.ingest(&batch);
                    // Samples go to the history writer in bounded batches; a
                    // writer behind is waited for (bounded), not outrun.
                    if task.samples.len() >= SAMPLES_PER_WRITE {
                        task.history.samples_or_wait(std::mem::take(&mut task.samples)).await;
                    }
                    // Keep the status current without rebuilding it per message.
                    if task.dirty && messages.is_empty() && task.published.elapsed() >= PUBLISH_EVERY {
                        task.publish();
                    }
                }
                Some(rules) = reloads.recv() => task.reload(rules),
                Some(request) = manual.recv() => task.manual(request).await,
                Some(event) = events.recv() => match event {
                    ClusterEvent::Finished(index, done) => task.finished(index, done),
                    ClusterEvent::Checked(index, answer) => task.api_answered(index, answer).await,
                    ClusterEvent::Hook(index, done) => {
                        let now = task.now();
                        task.clusters.all[index].enforcer.drains.hook_done(done, now);
                    }
                },
                _ = decide_tick.tick() => task.decide().await,
                _ = prune_tick.tick() => task.prune(),
                _ = shutdown.changed() => break,
            }
        }
        // Stopping: restarts in flight get time to finish (their intents
        // are journaled either way), and everything seen is written.
        if task.clusters.busy() {
            tracing::info!("waiting up to {} s for the restarts in flight", SHUTDOWN_GRACE.as_secs());
            let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
            while task.clusters.busy() {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Ok(Some(ClusterEvent::Finished(index, done))) => task.finished(index, done),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
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
    /// Each cluster's model, enforcer, live calls and decisions.
    clusters: Clusters,
    /// A model changed since the snapshot was published.
    dirty: bool,
    /// When new data was last published.
    published: tokio::time::Instant,
    /// Without a configuration, the hosts tracked.
    open_hosts: OpenHosts,
    /// Samples not yet handed to the history writer.
    samples: Vec<Sample>,
    /// The last decision recorded per web bridge, its reason's numbers
    /// masked ([`reason_shape`]): only changes are stored.
    recorded: BTreeMap<String, (policy::Action, String)>,
    alarms: Alarms,
    /// When estimates were last stored (the guard's time).
    estimated: Option<DateTime<Utc>>,
    /// "Now", and the servers whose records come from the future.
    clock: GuardClock,
    /// Journaled restarts dated in the future at start.
    journal_ahead: Vec<JournalAhead>,
    /// CDRs are received.
    cdr_on: bool,
}

impl Task {
    /// The guard's "now": the wall clock, or with the data clock the newest
    /// record of any cluster.
    fn now(&self) -> DateTime<Utc> {
        self.clock.now(self.clusters.latest())
    }

    /// Parses a batch and feeds each record to its cluster's model.
    fn ingest(&mut self, batch: &Batch) {
        // A line without a host is named by its server, else by where it
        // came from; a year is inferred against the guard's "now".
        let default_host = match &batch.origin {
            Origin::Servers(hosts) if hosts.len() == 1 => hosts[0].to_string(),
            _ => batch.source.to_string(),
        };
        let wall = Utc::now();
        let mut ctx = ParseContext { zone: self.rules.zone, reference: self.now(), default_host: Some(default_host) };
        // With the data clock "now" is the newest record, so the year of a
        // BSD stamp is inferred against it record by record: a batch of a
        // simulation running far ahead spans more than the day of slack.
        let follow_data = self.clock.source == super::clock::Clock::Data;
        let (mut parsed, mut noise, mut malformed, mut rejected, mut future) = (0, 0, 0, 0, 0);
        for message in batch.messages() {
            match parse_line(message, &ctx) {
                // Speaking for a server it is not: never moves a decision.
                Ok(Some(record)) if !self.rules.accepts(&batch.origin, &record.host) => rejected += 1,
                // Dated in the future: never moves the clock or a decision,
                // nor takes one of the hosts tracked without a configuration.
                // (The status names the servers ahead, so it is republished.)
                Ok(Some(record)) if self.dated_ahead(&record, wall) => {
                    future += 1;
                    self.dirty = true;
                }
                // Without a configuration: beyond max_hosts, a new host costs nothing.
                Ok(Some(record))
                    if matches!(batch.origin, Origin::Anyone)
                        && !self.open_hosts.admits(&record.host, self.rules.max_hosts) =>
                {
                    rejected += 1
                }
                Ok(Some(record)) => {
                    parsed += 1;
                    if follow_data {
                        ctx.reference = ctx.reference.max(record.time);
                    }
                    let index = self.clusters.index_of(&record.host);
                    self.clusters.all[index].model.observe(&record);
                    self.samples.extend(sample(&record));
                    self.dirty = true;
                }
                Ok(None) => noise += 1,
                Err(_) => malformed += 1,
            }
        }
        let counts = &self.shared.metrics.syslog;
        counts.add(MessageResult::Parsed, parsed);
        counts.add(MessageResult::Noise, noise);
        counts.add(MessageResult::Malformed, malformed);
        counts.add(MessageResult::Rejected, rejected);
        counts.add(MessageResult::Future, future);
    }

    /// Whether `record` is dated in the future (and so ignored); the first
    /// from a server in a while is logged and announced.
    fn dated_ahead(&mut self, record: &wbguard_core::log::Record, wall: DateTime<Utc>) -> bool {
        match self.clock.judge(&record.host, record.time, wall) {
            Verdict::Admitted => false,
            Verdict::Future => true,
            Verdict::NewlyAhead(server) => {
                let text = format!(
                    "its records are dated {} s ahead of the guard's clock (latest {}): they are ignored until its clock is right",
                    server.ahead_seconds,
                    record.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
                tracing::warn!("{}: {text}", server.host);
                self.notifier.send(Notice {
                    event: Event::Clock,
                    webbridge: server.host.clone(),
                    time: wall,
                    text,
                    details: serde_json::to_value(&server).unwrap_or_default(),
                });
                true
            }
        }
    }

    /// The snapshot of every cluster as of `now` with its last decisions,
    /// and the clock.
    fn snapshot(&self, now: DateTime<Utc>) -> Snapshot {
        let parts = self.clusters.all.iter().map(|cluster| super::snapshot::Part {
            name: &cluster.name,
            model: &cluster.model,
            mode: cluster.policy.mode,
            stale_after: cluster.policy.stale_after,
            decisions: &cluster.decisions,
            api_check: cluster.enforcer.precheck.last.as_ref(),
            drains: cluster.enforcer.drains.views(),
            busy: cluster.enforcer.in_progress(),
        });
        let mut snapshot = Snapshot::build(parts, self.rules.policy.mode, now);
        snapshot.clock = self.clock.source;
        snapshot.future_tolerance_seconds = self.clock.tolerance.num_seconds();
        snapshot.servers_ahead = self.clock.ahead();
        snapshot.journal_ahead = self.journal_ahead.clone();
        snapshot.cdr = self.shared.metrics.cdr.live.callbridges();
        snapshot
    }

    /// Drops history older than the retention and, with the wall clock,
    /// anything dated in the future (left by a guard that trusted a
    /// forged line): otherwise it would never be pruned.
    fn prune(&mut self) {
        let wall = Utc::now();
        self.history.prune(wall - self.rules.retention, self.clock.horizon(wall));
    }

    /// Publishes the status (without new decisions) and hands over samples.
    fn publish(&mut self) {
        let now = self.now();
        self.shared.publish(self.snapshot(now));
        self.history.samples(std::mem::take(&mut self.samples));
        self.dirty = false;
        self.published = tokio::time::Instant::now();
    }

    fn reload(&mut self, rules: Rules) {
        tracing::info!(
            "reloaded: {:?} mode, {} server(s)",
            rules.policy.mode,
            rules.config.as_ref().map_or(0, |c| c.servers.len())
        );
        self.clusters.reload(&rules);
        self.rules = rules;
        self.recorded.clear();
    }

    /// An operator's "restart now": through the journal and the restart
    /// machinery like any other, and under the same rules of the policy
    /// (one restart at a time in its cluster, `min_interval`); it bypasses
    /// only the need, the safety and a back-off.
    async fn manual(&mut self, Manual { webbridge, reply }: Manual) {
        let now = self.now();
        let _ = reply.send(self.restart_now(&webbridge, now).await);
    }

    /// Starts the restart an operator asked for, or says why not.
    async fn restart_now(&mut self, webbridge: &str, now: DateTime<Utc>) -> Result<String, (u16, String)> {
        // The name comes from the network: quoted and escaped wherever it is shown.
        // Host names are lower case where records are made; an operator may type CMS1.
        let found = self.clusters.deciding(webbridge).map(|(index, decision)| (index, decision.clone()));
        let cluster_mode = found.as_ref().map(|(index, _)| self.clusters.all[*index].policy.mode);
        let enforce = cluster_mode.unwrap_or(self.rules.policy.mode) == Mode::Enforce;
        if self.rules.config.is_none() || !enforce {
            return Err((403, "restart now needs enforce mode and a configuration".to_owned()));
        }
        let Some((index, mut decision)) = found else {
            return Err((404, format!("no web bridge {webbridge:?} in the guard's data")));
        };
        let cluster = &mut self.clusters.all[index];
        let Some(config) = cluster.config.as_ref() else {
            return Err((403, "restart now needs enforce mode and a configuration".to_owned()));
        };
        let webbridge = decision.webbridge.clone();
        let webbridge = webbridge.as_str();
        if cluster.enforcer.in_progress() {
            return Err((409, format!("a restart is in progress in cluster {}: one at a time", cluster.name)));
        }
        let interval = cluster.policy.min_interval;
        if let Some(last) =
            policy::last_restart(&cluster.model, &self.restarted, webbridge).filter(|&t| now - t < interval)
        {
            let allowed = last + interval;
            // Whole minutes, rounded up: "in 0 min" would invite a retry that fails.
            let wait = ((allowed - now).num_seconds() + 59) / 60;
            return Err((
                409,
                format!(
                    "{webbridge} was restarted {} min ago; min_interval is {} min: allowed again in {wait} min, at {}",
                    (now - last).num_minutes().max(0),
                    interval.num_minutes(),
                    allowed.format("%Y-%m-%d %H:%M:%S UTC")
                ),
            ));
        }
        decision.action = policy::Action::Restart;
        decision.reason = "requested by an operator on the status page".into();
        tracing::warn!("{webbridge}: restart requested by an operator");
        cluster.enforcer.act_unchecked(config, decision, now, &mut self.restarted).await;
        if cluster.enforcer.busy {
            Ok(format!("restarting {webbridge}"))
        } else {
            Err((409, format!("{webbridge} could not be restarted: see the alerts")))
        }
    }

    fn finished(&mut self, index: usize, done: Finished) {
        let now = self.now();
        let webbridge = done.webbridge().to_owned();
        let cluster = &mut self.clusters.all[index];
        let result = cluster.enforcer.finished(done, now);
        tracing::info!("the restart of {webbridge} ended: {result}");
        self.shared.count_restart(&cluster.name, &webbridge, result);
    }

    /// A cluster's Call Bridge API answered before a restart: its count
    /// goes to the cluster's model, and the round is taken again at once,
    /// so that a cleared restart goes out seconds after the answer.
    async fn api_answered(&mut self, index: usize, answer: Checked) {
        let cluster = &mut self.clusters.all[index];
        let logs_if_unreachable = cluster.api_unreachable == ApiUnreachable::Logs;
        let asked_wall = answer.asked_wall();
        // Calls the CDRs say began while the web bridge to restart saw no
        // new connection cannot be on it (policy.call_connection_lead).
        let elsewhere: HashSet<String> = match answer.webbridge() {
            Some(webbridge) => {
                let starts = self.shared.metrics.cdr.live.cma_starts();
                starts
                    .into_iter()
                    .filter(|&(_, start)| !cluster.model.may_hold_call(webbridge, start))
                    .map(|(id, _)| id)
                    .collect()
            }
            None => HashSet::new(),
        };
        if let Some((live, legs)) = cluster.enforcer.precheck.answered(answer, logs_if_unreachable, &elsewhere) {
            cluster.api_live = Some(live);
            // What the API lists is what is live: the CDR count of each
            // call bridge that answered is right again (after lost records).
            // Without CDRs nothing would keep those legs current: no reconcile.
            if self.cdr_on {
                for (callbridge, legs) in legs {
                    self.shared.metrics.cdr.live.reconcile(&callbridge, legs, asked_wall);
                }
            }
        }
        self.decide().await;
    }

    /// A cluster's call bridges: those the logs show alive, and those that
    /// post CDRs (one not known from CDRs leaves the CDR figure unknown:
    /// never assumed zero).
    fn cluster_callbridges(&self, index: usize, now: DateTime<Utc>) -> Vec<String> {
        let model = &self.clusters.all[index].model;
        let gone_after = model.config().callbridge_gone_after;
        let mut names: Vec<String> =
            model.callbridges().filter(|cb| now - cb.last_time <= gone_after).map(|cb| cb.host.clone()).collect();
        names.extend(
            self.shared.metrics.cdr.live.names().into_iter().filter(|name| self.clusters.index_of(name) == index),
        );
        names.sort();
        names.dedup();
        names
    }

    /// Every [`DECIDE_EVERY`]: fresh decisions in every cluster, restarts
    /// verified and started (one at a time per cluster), changes recorded
    /// and announced, estimates stored.
    async fn decide(&mut self) {
        let now = self.now();
        for index in 0..self.clusters.all.len() {
            let callbridges = self.cluster_callbridges(index, now);
            let cluster = &mut self.clusters.all[index];
            // The cluster's live calls as the best source knows them: the
            // CDRs when every call bridge is known from them, else the
            // API's last count while it is fresh; none: the logs alone.
            let from_cdr = self.shared.metrics.cdr.live.cluster_calls(&callbridges);
            let from_api = cluster.api_live.filter(|live| now - live.as_of <= API_FRESH);
            // When each call began (CDRs only): calls that began while a web
            // bridge saw no new connection are not counted on it.
            let starts = from_cdr.as_ref().and_then(|(_, starts)| starts.clone()).unwrap_or_default();
            let from_cdr = from_cdr.map(|(live, _)| live);
            cluster.model.set_live_calls(from_cdr.or(from_api));
            cluster.model.set_live_leg_starts(starts);
            let (seen, unseen) = cluster.enforcer.verify(&cluster.model, now);
            for webbridge in &seen {
                self.shared.count_restart(&cluster.name, webbridge, RestartResult::Verified);
            }
            for webbridge in &unseen {
                self.shared.count_restart(&cluster.name, webbridge, RestartResult::Unverified);
            }
            let config = cluster.config.as_ref();
            let mut decisions =
                decide(&cluster.model, &cluster.policy, &self.restarted, &cluster.enforcer, config, now);
            let enforce = cluster.policy.mode == Mode::Enforce;
            if let (true, Some(config)) = (enforce, config) {
                cluster.enforcer.act(config, &decisions, now, &mut self.restarted).await;
            }
            // Drains asked for, and web bridges to make ready again (in any mode).
            let busy = cluster.enforcer.in_progress();
            cluster.enforcer.drains.act(config, &decisions, enforce, busy, now).await;
            // A call bridge first heard, with records lost, or silent: its API
            // vouches for what is live.
            if let (true, Some(config)) = (self.cdr_on, config) {
                if !callbridges.is_empty() && from_cdr.is_none() {
                    cluster.enforcer.precheck.reconcile(config, now);
                }
            }
            cluster.enforcer.precheck.annotate(&mut decisions);
            self.alarms.notify(&decisions, cluster.policy.mode, now, &self.notifier);
            cluster.decisions = decisions;
        }
        self.clock.forgive(Utc::now());
        let snapshot = self.snapshot(now);
        self.history.samples(std::mem::take(&mut self.samples));
        for decision in self.clusters.all.iter().flat_map(|c| &c.decisions) {
            // A change of action or of wording, not of the numbers in it
            // ("not needed: 91 sessions" then 92): a fleet's every round
            // would otherwise be a row per web bridge.
            let key = (decision.action, reason_shape(&decision.reason));
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
        // The leak range over time, for the page's chart: once a minute of data time.
        if self.estimated.is_none_or(|at| now - at >= chrono::Duration::minutes(1)) {
            let estimates = snapshot
                .webbridges
                .iter()
                .map(|w| Estimate {
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
        self.shared.publish(snapshot);
    }
}

/// One round's decisions: the core's policy, then the enforcer's holds
/// (web bridges backing off after a failure).
fn decide(
    model: &Deployment,
    policy: &Policy,
    restarted: &BTreeMap<String, DateTime<Utc>>,
    enforcer: &Enforcer,
    config: Option<&Config>,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let mut decisions = policy::decide(model, policy, &enforcer.situation(restarted, config), now);
    enforcer.hold_backed_off(&mut decisions, now);
    decisions
}

/// The journal's web bridges in lower case, as records name them now (a
/// journal written before names were folded may say `CMS1`): the latest
/// restart of each.
fn fold_case(journal: BTreeMap<String, DateTime<Utc>>) -> BTreeMap<String, DateTime<Utc>> {
    let mut folded: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    for (webbridge, time) in journal {
        let latest = folded.entry(webbridge.to_ascii_lowercase()).or_insert(time);
        *latest = (*latest).max(time);
    }
    folded
}

/// A decision's reason with every number and time masked: what tells one
/// decision from another in the history. Numbers move at every round
/// ("91 sessions", "restarted 9 min ago", a forecast's minute); wording
/// changes when what the guard does or waits for does.
fn reason_shape(reason: &str) -> String {
    let mut shape = String::with_capacity(reason.len());
    let mut in_number = false;
    for c in reason.chars() {
        let digit = c.is_ascii_digit();
        if digit && !in_number {
            shape.push('#');
        } else if !digit {
            shape.push(c);
        }
        in_number = digit;
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_is_stored_when_its_wording_changes_not_its_numbers() {
        assert_eq!(
            reason_shape("not needed: 91 sessions, 0-91 leaked"),
            reason_shape("not needed: 104 sessions, 3-104 leaked")
        );
        assert_eq!(reason_shape("lockout expected 2024-03-06 08:15 UTC"), "lockout expected #-#-# #:# UTC");
        assert_ne!(
            reason_shape("needed, but up to 1 real call(s) could be dropped (allowed 0)"),
            reason_shape("needed, but restarted 9 min ago (minimum interval 60 min)")
        );
        assert_eq!(reason_shape(""), "");
    }

    #[test]
    fn an_old_journals_names_are_folded_keeping_the_latest_restart() {
        let at = |text: &str| text.parse::<DateTime<Utc>>().unwrap();
        let journal = BTreeMap::from([
            ("CMS1".to_owned(), at("2026-11-30T03:00:00Z")),
            ("cms1".to_owned(), at("2026-11-29T03:00:00Z")),
            ("cms2".to_owned(), at("2026-11-28T03:00:00Z")),
        ]);
        let folded = fold_case(journal);
        assert_eq!(folded.len(), 2);
        assert_eq!(folded["cms1"], at("2026-11-30T03:00:00Z"));
    }
}
