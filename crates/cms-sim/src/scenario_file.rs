//! The TOML scenario file of `cms-sim run`: every flag can be set here,
//! and the servers and the load described in more detail. Flags given on
//! the command line win over the file.
//!
//! ```toml
//! speed = 1440
//! seed = 7
//! syslog = ["udp://127.0.0.1:5514"]
//! cdr = ["http://127.0.0.1:9000/cdr"]   # at most 4
//! api_port = 8443
//!
//! [[server]]
//! name = "cms01"
//! release = "2.9"
//!
//! [load]
//! peak_sessions = 160
//! leak_probability = 0.05
//! # "office" (default): quiet nights and weekends; "24h": a deployment
//! # busy day and night (never below `night` of peak_sessions, weekends too).
//! profile = "24h"
//! # The 24-hour profile's quietest hours, a share of peak_sessions
//! # (0 to 1, default 0.7); issue 14 measured nights at 0.4.
//! night = 0.4
//! # Joins reach the web bridges through a load balancer (as HAProxy's
//! # leastconn: the web bridge with the fewest real sessions among those up,
//! # not drained and not full; refused only when none is) instead of DNS
//! # round robin (default false).
//! pool = true
//! ```
//!
//! Unknown keys are errors, and every error names the line and the field.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::scenario::{Release, Scenario, Server};

/// The file, as written; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Number of servers named `cms1`..`cmsN` (when `[[server]]` is absent).
    pub servers: Option<usize>,
    /// The servers by name.
    #[serde(default, rename = "server")]
    pub server: Vec<ServerEntry>,
    /// Release of servers that do not name one.
    pub release: Option<String>,
    /// Virtual seconds per real second.
    pub speed: Option<f64>,
    /// Seed of all randomness.
    pub seed: Option<u64>,
    /// First SSH port.
    pub ssh_port: Option<u16>,
    /// First HTTP port.
    pub http_port: Option<u16>,
    /// Truth API port.
    pub control_port: Option<u16>,
    /// Syslog destinations.
    pub syslog: Option<Vec<String>>,
    /// CDR receivers (`--cdr`).
    pub cdr: Option<Vec<String>>,
    /// CA file for https CDR receivers (`--cdr-ca`).
    pub cdr_ca: Option<PathBuf>,
    /// Accept any certificate from https CDR receivers (`--cdr-insecure`).
    pub cdr_insecure: Option<bool>,
    /// First Call Bridge API port (`--api-port`).
    pub api_port: Option<u16>,
    /// Host key directory.
    pub state_dir: Option<PathBuf>,
    /// MMP user.
    pub user: Option<String>,
    /// File of public keys allowed to log in.
    pub authorized_key: Option<PathBuf>,
    /// About one line in this many is a record.
    pub lines_per_record: Option<u32>,
    /// Seconds a restarting web bridge stays down (real time).
    pub restart_downtime_seconds: Option<f64>,
    /// Virtual hours simulated silently before the start.
    pub warm_up_hours: Option<f64>,
    /// The load.
    pub load: Option<Load>,
}

/// One `[[server]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    /// Host name.
    pub name: String,
    /// `2.8`, `2.9` or `3.x`.
    pub release: Option<String>,
    /// Offer only old SSH algorithms on this server's MMP.
    #[serde(default)]
    pub legacy_ssh: bool,
}

/// `[load]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Concurrent sessions in the cluster at the busiest weekday hour.
    pub peak_sessions: Option<f64>,
    /// Mean session length in minutes.
    pub mean_session_minutes: Option<f64>,
    /// Share of CMA desktop/iOS sessions.
    pub desktop_share: Option<f64>,
    /// Probability that an ended Web Bridge 2 session leaks.
    pub leak_probability: Option<f64>,
    /// Sessions at which a web bridge refuses joins.
    pub limit: Option<u32>,
    /// Weekend load relative to weekdays.
    pub weekend_factor: Option<f64>,
    /// Seconds between web bridge Stats lines.
    pub stats_interval_seconds: Option<i64>,
    /// `office` (default) or `24h` (busy nights, see [`crate::scenario::Profile`]).
    pub profile: Option<String>,
    /// The 24-hour profile's quietest level, a share of the peak (0..=1).
    pub night: Option<f64>,
    /// Joins go through a load balancer (the web bridge pool).
    pub pool: Option<bool>,
}

impl ScenarioFile {
    /// Reads and checks a scenario file.
    pub fn read(path: &Path) -> anyhow::Result<ScenarioFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read scenario {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("scenario {}: {e}", path.display()))
    }

    /// Parses scenario text; errors name the line, column and field.
    pub fn parse(text: &str) -> Result<ScenarioFile, String> {
        let file: ScenarioFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |span| line_and_column(text, span.start));
            format!("line {line}, column {column}: {}", e.message())
        })?;
        if let Some(load) = &file.load {
            check_range("load.desktop_share", load.desktop_share, 0.0, 1.0)?;
            check_range("load.leak_probability", load.leak_probability, 0.0, 1.0)?;
            check_range("load.peak_sessions", load.peak_sessions, 0.0, 1e6)?;
            check_range("load.mean_session_minutes", load.mean_session_minutes, 1.0, 1440.0)?;
            check_range("load.night", load.night, 0.0, 1.0)?;
        }
        check_range("speed", file.speed, 0.001, 1e6)?;
        Ok(file)
    }

    /// The scenario: the servers and load, over `base` (built from flags).
    pub fn scenario(&self, default_servers: usize, default_release: Release) -> Result<Scenario, String> {
        let release = match &self.release {
            Some(text) => text.parse::<Release>().map_err(|e| format!("release: {e}"))?,
            None => default_release,
        };
        let mut scenario = Scenario::with_servers(self.servers.unwrap_or(default_servers).max(1));
        if !self.server.is_empty() {
            scenario = Scenario::with_servers(self.server.len());
            for (i, (entry, server)) in self.server.iter().zip(scenario.servers.iter_mut()).enumerate() {
                let release = match &entry.release {
                    Some(text) => text.parse::<Release>().map_err(|e| format!("server[{i}].release: {e}"))?,
                    None => release,
                };
                if entry.name.is_empty() || entry.name.contains(char::is_whitespace) {
                    return Err(format!("server[{i}].name: '{}' is not a host name", entry.name));
                }
                *server = Server { name: entry.name.clone(), release, address: server.address.clone() };
            }
            scenario.peak_sessions = 40.0 * scenario.servers.len() as f64;
        }
        for server in scenario.servers.iter_mut().skip(self.server.len()) {
            server.release = release;
        }
        if let Some(load) = &self.load {
            if let Some(v) = load.peak_sessions {
                scenario.peak_sessions = v;
            }
            if let Some(v) = load.mean_session_minutes {
                scenario.mean_session = chrono::Duration::seconds((v * 60.0) as i64);
            }
            if let Some(v) = load.desktop_share {
                scenario.desktop_share = v;
            }
            if let Some(v) = load.leak_probability {
                scenario.leak_probability = v;
            }
            if let Some(v) = load.limit {
                scenario.limit = v;
            }
            if let Some(v) = load.weekend_factor {
                scenario.weekend_factor = v;
            }
            if let Some(text) = &load.profile {
                scenario.profile = text.parse().map_err(|e| format!("load.profile: {e}"))?;
            }
            if let Some(v) = load.night {
                scenario.night = v;
            }
            if let Some(v) = load.pool {
                scenario.pool = v;
            }
            if let Some(v) = load.stats_interval_seconds {
                if v < 1 {
                    return Err("load.stats_interval_seconds: must be at least 1".into());
                }
                scenario.stats_interval = chrono::Duration::seconds(v);
            }
        }
        Ok(scenario)
    }
}

fn check_range(field: &str, value: Option<f64>, low: f64, high: f64) -> Result<(), String> {
    match value {
        Some(v) if !(low..=high).contains(&v) => Err(format!("{field}: {v} is outside {low}..={high}")),
        _ => Ok(()),
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |nl| nl + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_scenario() {
        let file = ScenarioFile::parse(
            "speed = 1440\nseed = 7\nsyslog = [\"udp://127.0.0.1:5514\"]\n\n[[server]]\nname = \"cms01\"\n\n[[server]]\nname = \"cms02\"\nrelease = \"3.x\"\n\n[load]\nleak_probability = 0.05\n",
        )
        .unwrap();
        let scenario = file.scenario(4, Release::V2_9).unwrap();
        assert_eq!(scenario.servers.len(), 2);
        assert_eq!(scenario.servers[0].name, "cms01");
        assert_eq!(scenario.servers[1].release, Release::V3);
        assert_eq!(scenario.leak_probability, 0.05);
        assert_eq!(file.speed, Some(1440.0));
    }

    #[test]
    fn errors_name_line_and_field() {
        let error = ScenarioFile::parse("speed = 1440\n[load]\nleak_probabilty = 0.1\n").unwrap_err();
        assert!(error.contains("line 3") && error.contains("leak_probabilty"), "{error}");
        let error = ScenarioFile::parse("seed = \"seven\"\n").unwrap_err();
        assert!(error.contains("line 1"), "{error}");
        let error = ScenarioFile::parse("[load]\nleak_probability = 2.0\n").unwrap_err();
        assert!(error.contains("load.leak_probability"), "{error}");
        let error = ScenarioFile::parse("[[server]]\nname = \"a\"\nrelease = \"4\"\n")
            .unwrap()
            .scenario(1, Release::V2_9)
            .unwrap_err();
        assert!(error.contains("server[0].release"), "{error}");
        let error =
            ScenarioFile::parse("[load]\nprofile = \"nights\"\n").unwrap().scenario(1, Release::V2_9).unwrap_err();
        assert!(error.contains("load.profile") && error.contains("24h"), "{error}");
        let busy = ScenarioFile::parse("[load]\nprofile = \"24h\"\n").unwrap().scenario(1, Release::V2_9).unwrap();
        assert_eq!(busy.profile, crate::scenario::Profile::AllDay);
        assert_eq!(busy.night, crate::scenario::DEFAULT_NIGHT);
        assert!(!busy.pool);
    }

    #[test]
    fn nights_and_the_pool() {
        let file = ScenarioFile::parse("[load]\nprofile = \"24h\"\nnight = 0.4\npool = true\n").unwrap();
        let scenario = file.scenario(4, Release::V2_9).unwrap();
        assert_eq!((scenario.night, scenario.pool), (0.4, true));
        let error = ScenarioFile::parse("[load]\nnight = 1.5\n").unwrap_err();
        assert!(error.contains("load.night") && error.contains("1.5"), "{error}");
        let error = ScenarioFile::parse("[load]\npool = \"yes\"\n").unwrap_err();
        assert!(error.contains("line 2") && error.contains("bool"), "{error}");
    }
}
