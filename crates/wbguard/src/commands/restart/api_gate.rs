//! `wbguard restart`'s check of the Call Bridge API before each web bridge:
//! Cisco's cron job with the check their document says it lacks.
//!
//! The cluster is every configured server with `api` (whatever `--only`
//! picks: a call on any call bridge may come through any web bridge). Just
//! before each restart the cluster is asked for its live CMA legs: none,
//! and the restart goes ahead; some, and it waits up to `--wait-idle`,
//! asking every [`POLL`], then skips that web bridge (exit 3) saying why
//! ("API: 2 CMA calls live on cms2"). An API that does not answer is
//! asked again within the same wait, then the web bridge is skipped; a
//! refused certificate or password skips at once. `--force` restarts
//! anyway and says what it overrode.

use std::time::{Duration, Instant};

use crate::cms_api::{self, ApiTrust};
use crate::config::duration::show;
use crate::config::{Config, Server};

/// How often the API is asked again while calls are live.
pub const POLL: Duration = Duration::from_secs(2);

/// The check, set up once for a run.
#[derive(Clone)]
pub struct ApiGate {
    /// The servers with `api`.
    cluster: Vec<Server>,
    /// Pinned certificates and policy.
    trust: ApiTrust,
    /// `--wait-idle`.
    wait_idle: Duration,
    /// `--force`.
    force: bool,
}

/// What the check says about one restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No CMA call is live: go ahead.
    Go,
    /// Calls are live or the API did not answer, and `--force` overrides
    /// it (why).
    Forced(String),
    /// Skip this web bridge (why).
    Hold(String),
}

impl ApiGate {
    /// The gate of `config`, or `None` when no server has `api`.
    pub fn new(config: &Config, wait_idle: Duration, force: bool) -> Option<ApiGate> {
        let cluster: Vec<Server> = cms_api::cluster(&config.servers).into_iter().cloned().collect();
        (!cluster.is_empty()).then(|| ApiGate { cluster, trust: ApiTrust::from_config(config), wait_idle, force })
    }

    /// The plan, in lines (for the run's head).
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "API: before each restart, asks the Call Bridge API of {} for live CMA calls{}",
            self.cluster.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
            if self.wait_idle.is_zero() {
                String::new()
            } else {
                format!(", waiting up to {} for them to end", show(self.wait_idle))
            }
        )];
        for server in &self.cluster {
            let Some(api) = &server.api else { continue };
            lines.push(format!("  {}: {}", server.name, api.describe()));
            if !api.endpoint.tls {
                lines.push(format!(
                    "  warning: {}: the API is plain http://: its password and answers cross the network unprotected (for a lab only)",
                    server.name
                ));
            }
        }
        lines
    }

    /// What the check of the servers' API passwords finds without reading
    /// them (for a dry run): `(server, problem)`.
    pub fn problems(&self) -> Vec<(String, crate::secret::Problem)> {
        self.cluster.iter().filter_map(|s| Some((s.name.clone(), s.api.as_ref()?.password.problem()?))).collect()
    }

    /// Asks the cluster, waiting while calls are live; `report` hears each
    /// step.
    pub async fn ask(&self, report: &(dyn Fn(&str) + Sync)) -> Verdict {
        let started = Instant::now();
        loop {
            report("asking the Call Bridge API");
            let why = match cms_api::check_cluster(&self.cluster, &self.trust, cms_api::CHECK_DEADLINE).await {
                Ok(check) => {
                    for (server, print) in &check.recorded {
                        report(&format!(
                            "recorded the API certificate of {server} ({print}) on first sight (host_key_policy = \"accept-new\")"
                        ));
                    }
                    match check.live_calls() {
                        None => return Verdict::Go,
                        Some(why) => why,
                    }
                }
                Err(error) if !error.is_unreachable() => {
                    // It will not mend while we wait.
                    let why = format!("API: {error}");
                    return if self.force { Verdict::Forced(why) } else { Verdict::Hold(why) };
                }
                Err(error) => format!("API: {error}"),
            };
            if self.force {
                return Verdict::Forced(why);
            }
            let waited = started.elapsed();
            if waited + POLL > self.wait_idle {
                return Verdict::Hold(if self.wait_idle.is_zero() {
                    why
                } else {
                    format!("{why} (after waiting {})", show(Duration::from_secs(waited.as_secs())))
                });
            }
            report(&format!("waiting: {why}"));
            tokio::time::sleep(POLL).await;
        }
    }
}
