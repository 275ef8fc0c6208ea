//! `[[cluster]]`: which servers form one CMS cluster.
//!
//! A cluster is what the leak model adds up: its call bridges' CMA
//! sessions bound the real calls on its web bridges, and one of its web
//! bridges restarts at a time. Independent clusters under one guard must
//! not share either, so each gets its own model and its own lock. A file
//! without `[[cluster]]` is one cluster of every server, named
//! [`DEFAULT_CLUSTER`], as before clusters existed.
//!
//! ```toml
//! [[cluster]]
//! name = "eu"
//! servers = ["cms1", "cms2"]     # [[server]] names
//! [cluster.policy]               # optional: keys over [policy]'s, one by one
//! max_dropped_calls = 1
//! [[cluster.policy.window]]      # windows given here replace [policy]'s
//! cron = "0 1 * * *"
//! duration = "2h"
//! ```

use anyhow::bail;
use serde::{Deserialize, Serialize};
use wbguard_core::policy::Policy;

use super::guard_settings::{policy, ApiUnreachable, RawPolicy};
use super::Server;

/// The one cluster of a file without `[[cluster]]`, and of a guard without
/// a configuration.
pub const DEFAULT_CLUSTER: &str = "default";

/// The most clusters one guard takes (each is a model and a lock).
pub const MAX_CLUSTERS: usize = 1000;

/// One `[[cluster]]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// Its name: the `cluster` label of metrics, the status's grouping.
    pub name: String,
    /// Its servers, by their `[[server]]` names.
    pub servers: Vec<String>,
    /// Its own policy keys, over `[policy]`'s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<RawPolicy>,
}

/// One cluster, checked.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Its name.
    pub name: String,
    /// Its servers' names, in the order given.
    pub servers: Vec<String>,
    /// `[policy]` with the cluster's own keys over it.
    pub policy: Policy,
    /// `policy.api_unreachable`, the cluster's or `[policy]`'s.
    pub api_unreachable: ApiUnreachable,
}

/// `raw` over `base`, key by key; windows given in `raw` replace `base`'s.
fn over(raw: &RawPolicy, base: &RawPolicy) -> RawPolicy {
    RawPolicy {
        mode: raw.mode.or(base.mode),
        leak_at_least: raw.leak_at_least.or(base.leak_at_least),
        lockout_before_next_window: raw.lockout_before_next_window.or(base.lockout_before_next_window),
        at_limit: raw.at_limit.or(base.at_limit),
        max_dropped_calls: raw.max_dropped_calls.or(base.max_dropped_calls),
        lockout_max_dropped_calls: raw
            .lockout_max_dropped_calls
            .clone()
            .or_else(|| base.lockout_max_dropped_calls.clone()),
        drain_timeout: raw.drain_timeout.clone().or_else(|| base.drain_timeout.clone()),
        call_connection_lead: raw.call_connection_lead.clone().or_else(|| base.call_connection_lead.clone()),
        min_interval: raw.min_interval.clone().or_else(|| base.min_interval.clone()),
        stale_after: raw.stale_after.clone().or_else(|| base.stale_after.clone()),
        limit: base.limit,
        api_unreachable: raw.api_unreachable.or(base.api_unreachable),
        windows: if raw.windows.is_empty() { base.windows.clone() } else { raw.windows.clone() },
    }
}

/// A cluster's name goes into metric labels and URLs: a plain word.
fn check_name(name: &str, key: &str) -> anyhow::Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 64 || !name.chars().all(plain) {
        bail!("{key}: '{}': a cluster name is 1 to 64 of A-Z, a-z, 0-9, '-', '_' and '.'", name.escape_debug());
    }
    Ok(())
}

/// Checks `raw` against the servers and `[policy]` (`global`, already
/// checked). Without `[[cluster]]`: none (the guard makes one cluster of
/// everything, named [`DEFAULT_CLUSTER`]).
pub fn clusters(raw: &[RawCluster], servers: &[Server], global: &RawPolicy) -> anyhow::Result<Vec<Cluster>> {
    if raw.len() > MAX_CLUSTERS {
        bail!("cluster: {} clusters; one guard takes at most {MAX_CLUSTERS}", raw.len());
    }
    let mut clusters: Vec<Cluster> = Vec::new();
    // Server name -> the cluster that has it.
    let mut owner: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for (i, c) in raw.iter().enumerate() {
        let key = |name: &str| format!("cluster[{i}].{name}");
        check_name(&c.name, &key("name"))?;
        if clusters.iter().any(|other| other.name.eq_ignore_ascii_case(&c.name)) {
            bail!("{}: the name '{}' is used twice", key("name"), c.name);
        }
        if c.servers.is_empty() {
            bail!("{}: cluster '{}' has no servers", key("servers"), c.name);
        }
        for name in &c.servers {
            if !servers.iter().any(|s| &s.name == name) {
                bail!("{}: '{}' is not the name of a [[server]]", key("servers"), name.escape_debug());
            }
            if let Some(other) = owner.insert(name, &c.name) {
                bail!("{}: '{name}' is already in cluster '{other}': a server belongs to one cluster", key("servers"));
            }
        }
        let own = c.policy.clone().unwrap_or_default();
        if own.limit.is_some() {
            bail!(
                "{}: the session limit is the web bridge's, one for the guard: set it in [policy]",
                key("policy.limit")
            );
        }
        let merged = over(&own, global);
        clusters.push(Cluster {
            name: c.name.clone(),
            servers: c.servers.clone(),
            policy: policy(&merged, &key("policy"))?,
            api_unreachable: merged.api_unreachable.unwrap_or_default(),
        });
    }
    if let Some(left) = servers.iter().find(|s| !clusters.is_empty() && !owner.contains_key(s.name.as_str())) {
        bail!("cluster: server '{}' is in no [[cluster]]: with [[cluster]], every server belongs to one", left.name);
    }
    Ok(clusters)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Dirs};

    fn parse(text: &str) -> anyhow::Result<Config> {
        let servers = "[[server]]\nname = \"cms1\"\nmmp = \"10.0.0.1\"\n\
                       [[server]]\nname = \"cms2\"\nmmp = \"10.0.0.2\"\n\
                       [[server]]\nname = \"cms3\"\nmmp = \"10.0.0.3\"\n";
        Config::parse(&format!("{servers}{text}"), std::path::Path::new("/etc/wbguard/config.toml"), &Dirs::default())
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).expect_err("refused"))
    }

    #[test]
    fn a_cluster_takes_policy_keys_over_the_files_own() {
        let config = parse(
            "[policy]\nmode = \"enforce\"\nmax_dropped_calls = 2\nmin_interval = \"2h\"\n\
             [[policy.window]]\ncron = \"0 2 * * 6\"\nduration = \"2h\"\n\
             [[cluster]]\nname = \"eu\"\nservers = [\"cms1\", \"cms2\"]\n\
             [cluster.policy]\nmax_dropped_calls = 0\nmode = \"observe\"\n\
             [[cluster.policy.window]]\ncron = \"0 1 * * *\"\nduration = \"1h\"\n\
             [[cluster]]\nname = \"us\"\nservers = [\"cms3\"]\n",
        )
        .unwrap();
        let clusters = &config.guard.clusters;
        assert_eq!(clusters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["eu", "us"]);
        let (eu, us) = (&clusters[0], &clusters[1]);
        assert_eq!(eu.servers, ["cms1", "cms2"]);
        assert_eq!((eu.policy.max_dropped_calls, us.policy.max_dropped_calls), (0, 2));
        assert_eq!((eu.policy.mode, us.policy.mode), (Mode::Observe, Mode::Enforce));
        // Inherited where the cluster says nothing; its windows replace.
        assert_eq!(eu.policy.min_interval, chrono::Duration::hours(2));
        assert_eq!(eu.policy.windows[0].pattern, "0 1 * * *");
        assert_eq!(us.policy.windows[0].pattern, "0 2 * * 6");
        assert_eq!(format!("{:?}", us.policy), format!("{:?}", config.guard.policy));
    }

    use wbguard_core::policy::Mode;

    #[test]
    fn without_clusters_there_is_none_to_split() {
        assert!(parse("").unwrap().guard.clusters.is_empty());
    }

    #[test]
    fn mistakes_name_the_key_at_fault() {
        let two = "[[cluster]]\nname = \"eu\"\nservers = [\"cms1\", \"cms2\"]\n";
        for (text, expected) in [
            ("[[cluster]]\nname = \"e u\"\nservers = [\"cms1\"]\n", "cluster[0].name: 'e u'"),
            (
                &format!("{two}[[cluster]]\nname = \"EU\"\nservers = [\"cms3\"]\n"),
                "cluster[1].name: the name 'EU' is used twice",
            ),
            ("[[cluster]]\nname = \"eu\"\nservers = []\n", "cluster[0].servers: cluster 'eu' has no servers"),
            ("[[cluster]]\nname = \"eu\"\nservers = [\"cms9\"]\n", "cluster[0].servers: 'cms9' is not the name"),
            (
                &format!("{two}[[cluster]]\nname = \"us\"\nservers = [\"cms2\", \"cms3\"]\n"),
                "cluster[1].servers: 'cms2' is already in cluster 'eu'",
            ),
            (two, "server 'cms3' is in no [[cluster]]"),
            (
                &format!(
                    "{two}[[cluster]]\nname = \"us\"\nservers = [\"cms3\"]\n[cluster.policy]\nmin_interval = \"1s\"\n"
                ),
                "cluster[1].policy.min_interval",
            ),
            (
                &format!("{two}[[cluster]]\nname = \"us\"\nservers = [\"cms3\"]\n[cluster.policy]\nlimit = 100\n"),
                "cluster[1].policy.limit",
            ),
            ("[[cluster]]\nname = \"eu\"\nservers = [\"cms1\"]\nserver = [\"cms2\"]\n", "unknown field `server`"),
        ] {
            let error = error(text);
            assert!(error.contains(expected), "{text}\n=> {error}");
        }
    }
}
