//! The guard's clusters: each `[[cluster]]` ([`crate::config::cluster`])
//! gets its own leak model, its own enforcer (one restart at a time within
//! the cluster; clusters act in parallel), its own count of live calls and
//! its own policy. Records are routed to a cluster by their host.
//!
//! Each enforcer reports finished restarts, API answers and drain hooks on
//! channels of its own; they are forwarded, tagged with their cluster, into
//! the one channel the guard task waits on ([`ClusterEvent`]).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use wbguard_core::model::{Deployment, LiveCalls, ModelConfig};
use wbguard_core::policy::{Decision, Policy};

use super::drains::HookDone;
use super::enforce::{Enforcer, Finished, Restart};
use super::event_loop::Rules;
use super::history::History;
use super::notify::Notifier;
use super::precheck::{CheckLive, Checked};
use crate::config::cluster::DEFAULT_CLUSTER;
use crate::config::guard_settings::ApiUnreachable;
use crate::config::Config;
use crate::store::drain::OpenDrain;

/// What one cluster is made of, from the rules.
#[derive(Debug, Clone)]
struct Plan {
    name: String,
    /// Its servers' log hosts (lower case); none: every host (the one
    /// cluster of a file without `[[cluster]]`, or of open mode).
    log_hosts: Option<Vec<String>>,
    /// Its servers' names in the configuration.
    servers: Vec<String>,
    policy: Policy,
    api_unreachable: ApiUnreachable,
}

impl Plan {
    /// What decides whether a reload can apply in place: the names and
    /// the members.
    fn shape(&self) -> (&str, &Option<Vec<String>>) {
        (&self.name, &self.log_hosts)
    }
}

/// The clusters the rules describe, in the file's order.
fn plans(rules: &Rules) -> Vec<Plan> {
    let config = rules.config.as_ref();
    if rules.clusters.is_empty() {
        return vec![Plan {
            name: DEFAULT_CLUSTER.to_owned(),
            log_hosts: None,
            servers: config.map(|c| c.servers.iter().map(|s| s.name.clone()).collect()).unwrap_or_default(),
            policy: rules.policy.clone(),
            api_unreachable: rules.api_unreachable,
        }];
    }
    rules
        .clusters
        .iter()
        .map(|cluster| {
            let log_hosts = cluster
                .servers
                .iter()
                .filter_map(|name| config?.servers.iter().find(|s| &s.name == name).map(|s| s.log_host.clone()))
                .collect();
            Plan {
                name: cluster.name.clone(),
                log_hosts: Some(log_hosts),
                servers: cluster.servers.clone(),
                policy: cluster.policy.clone(),
                api_unreachable: cluster.api_unreachable,
            }
        })
        .collect()
}

/// The configuration as one cluster's enforcer sees it: its servers only
/// (so that its API check asks its call bridges, and it restarts its own).
fn scoped(config: Option<&Config>, servers: &[String]) -> Option<Config> {
    let config = config?;
    let mut scoped = config.clone();
    scoped.servers.retain(|s| servers.contains(&s.name));
    Some(scoped)
}

/// One cluster's part of the guard.
pub struct Cluster {
    /// Its name (the `cluster` label).
    pub name: String,
    /// Its policy.
    pub policy: Policy,
    /// What an API that does not answer before a restart means here.
    pub api_unreachable: ApiUnreachable,
    /// The configuration with its servers only.
    pub config: Option<Config>,
    /// Its leak model.
    pub model: Deployment,
    /// Its restarts, API checks and drains: one at a time.
    pub enforcer: Enforcer,
    /// The live calls its Call Bridge API counted last.
    pub api_live: Option<LiveCalls>,
    /// Its decisions of the last round.
    pub decisions: Vec<Decision>,
}

/// Something one cluster's enforcer reports, tagged with the cluster's index.
pub enum ClusterEvent {
    /// A restart ended.
    Finished(usize, Finished),
    /// The Call Bridge API answered.
    Checked(usize, Checked),
    /// A drain hook ended.
    Hook(usize, HookDone),
}

/// What every cluster's enforcer is built with.
pub struct Makings {
    /// The history writer.
    pub history: History,
    /// Webhooks.
    pub notifier: Notifier,
    /// Makes one restart.
    pub restart: Restart,
    /// Asks the Call Bridge API.
    pub check: CheckLive,
    /// Sessions at which a web bridge refuses new ones.
    pub limit: u32,
}

/// Every cluster, and which one a host belongs to.
pub struct Clusters {
    /// In the configuration's order.
    pub all: Vec<Cluster>,
    /// What they were made from (a reload that changes it waits for a
    /// restart of the guard).
    plans: Vec<Plan>,
    /// Log host -> index in `all`; a host in none goes to the first.
    of_host: HashMap<String, usize>,
}

/// Forwards what `receiver` gets into `events`, tagged by `tag`.
fn forward<T: Send + 'static>(
    mut receiver: mpsc::Receiver<T>,
    events: mpsc::Sender<ClusterEvent>,
    tag: impl Fn(T) -> ClusterEvent + Send + 'static,
) {
    tokio::spawn(async move {
        while let Some(item) = receiver.recv().await {
            if events.send(tag(item)).await.is_err() {
                break;
            }
        }
    });
}

impl Clusters {
    /// The clusters of `rules`, each with a fresh model and enforcer whose
    /// reports arrive on the returned receiver; `open_drains` (from the
    /// journal) go to the clusters of their web bridges.
    pub fn new(
        rules: &Rules,
        makings: &Makings,
        open_drains: Vec<OpenDrain>,
    ) -> (Clusters, mpsc::Receiver<ClusterEvent>) {
        let (events, receiver) = mpsc::channel(64);
        let plans = plans(rules);
        let mut all = Vec::with_capacity(plans.len());
        let mut of_host = HashMap::new();
        for (index, plan) in plans.iter().enumerate() {
            let (enforcer, finished, checked, hooks) = Enforcer::new(
                makings.history.clone(),
                makings.notifier.clone(),
                makings.restart.clone(),
                makings.check.clone(),
            );
            forward(finished, events.clone(), move |done| ClusterEvent::Finished(index, done));
            forward(checked, events.clone(), move |answer| ClusterEvent::Checked(index, answer));
            forward(hooks, events.clone(), move |done| ClusterEvent::Hook(index, done));
            for host in plan.log_hosts.iter().flatten() {
                of_host.insert(host.clone(), index);
            }
            let model = Deployment::new(ModelConfig {
                limit: makings.limit,
                connection_lead: plan.policy.call_connection_lead,
                ..ModelConfig::default()
            });
            all.push(Cluster {
                name: plan.name.clone(),
                policy: plan.policy.clone(),
                api_unreachable: plan.api_unreachable,
                config: scoped(rules.config.as_ref(), &plan.servers),
                model,
                enforcer,
                api_live: None,
                decisions: Vec::new(),
            });
        }
        let mut clusters = Clusters { all, plans, of_host };
        let mut by_cluster: BTreeMap<usize, Vec<OpenDrain>> = BTreeMap::new();
        for drain in open_drains {
            by_cluster.entry(clusters.index_of(&drain.webbridge)).or_default().push(drain);
        }
        for (index, drains) in by_cluster {
            clusters.all[index].enforcer.drains.resume(drains);
        }
        (clusters, receiver)
    }

    /// Log host -> cluster name, for the CDR metrics' `cluster` label.
    pub fn names_by_host(&self) -> HashMap<String, String> {
        self.of_host.iter().map(|(host, &index)| (host.clone(), self.all[index].name.clone())).collect()
    }

    /// The index of the cluster `host` (a log host, lower case) belongs to.
    pub fn index_of(&self, host: &str) -> usize {
        self.of_host.get(host).copied().unwrap_or(0)
    }

    /// The cluster whose last decisions name `webbridge`, whatever its case.
    pub fn deciding(&self, webbridge: &str) -> Option<(usize, &Decision)> {
        self.all.iter().enumerate().find_map(|(index, cluster)| {
            cluster.decisions.iter().find(|d| d.webbridge.eq_ignore_ascii_case(webbridge)).map(|d| (index, d))
        })
    }

    /// The newest record in any cluster.
    pub fn latest(&self) -> Option<DateTime<Utc>> {
        self.all.iter().filter_map(|c| c.model.latest()).max()
    }

    /// A restart runs in some cluster.
    pub fn busy(&self) -> bool {
        self.all.iter().any(|c| c.enforcer.busy)
    }

    /// New rules: each cluster takes its new policy and servers in place.
    /// Clusters added, removed or given other servers need a restart of
    /// the guard (their models would have to be split or merged): until
    /// then the running clusters stay, with a warning.
    pub fn reload(&mut self, rules: &Rules) {
        let plans = plans(rules);
        let same_shape =
            plans.len() == self.plans.len() && plans.iter().zip(&self.plans).all(|(a, b)| a.shape() == b.shape());
        if !same_shape {
            tracing::warn!(
                "reload: the clusters changed (names or servers); they take effect when the guard is restarted"
            );
        }
        for plan in &plans {
            if let Some(cluster) = self.all.iter_mut().find(|c| c.name == plan.name) {
                cluster.policy = plan.policy.clone();
                cluster.api_unreachable = plan.api_unreachable;
                if same_shape {
                    cluster.config = scoped(rules.config.as_ref(), &plan.servers);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str) -> crate::config::Server {
        crate::config::Server {
            name: name.into(),
            host: "10.0.0.1".into(),
            port: 22,
            log_host: name.into(),
            webbridge_url: None,
            user: "admin".into(),
            channel: crate::config::Channel::Exec,
            legacy_algorithms: false,
            auth: Vec::new(),
            syslog_from: Vec::new(),
            api: None,
            drain: None,
        }
    }

    #[test]
    fn a_cluster_sees_only_its_servers() {
        let config = Config {
            servers: vec![server("cms1"), server("cms2"), server("cms3")],
            host_key_policy: crate::config::HostKeyPolicy::Strict,
            known_hosts: "/k".into(),
            state_dir: "/s".into(),
            timeouts: Default::default(),
            guard: Default::default(),
        };
        let scoped = scoped(Some(&config), &["cms3".to_owned(), "cms1".to_owned()]).unwrap();
        assert_eq!(scoped.servers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["cms1", "cms3"]);
        assert!(super::scoped(None, &[]).is_none());
    }
}
