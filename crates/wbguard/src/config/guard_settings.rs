//! The guard's part of the configuration: `[watch]` (where it listens and
//! what it keeps), `[policy]` (when it restarts) and `[[webhook]]` (whom it
//! tells).
//!
//! ```toml
//! [watch]
//! listen_syslog = ["udp://0.0.0.0:514", "tcp://0.0.0.0:514", "tls://0.0.0.0:6514"]
//! listen_http = "127.0.0.1:9149"
//! listen_cdr = ["https://0.0.0.0:8444"]        # Call Bridges post CDRs to /cdr (default: off)
//! tls_certificate = "/etc/wbguard/syslog.crt"   # for tls:// listeners
//! tls_key = "/etc/wbguard/syslog.key"
//! follow = ["/var/log/cms/cms.log"]            # files a local syslog server writes
//! relays = ["10.0.0.5"]                        # may forward lines of any configured server
//! log_timezone = "UTC"                         # for timestamps that carry no zone
//! retention_days = 90
//! future_tolerance = "2m"                      # records dated further ahead are ignored
//! restart_token_env = "WBGUARD_RESTART_TOKEN"  # enables the page's "restart now" (enforce mode)
//!
//! [policy]
//! mode = "observe"            # or "enforce"
//! leak_at_least = 100         # 0 turns this trigger off
//! lockout_before_next_window = true
//! at_limit = true
//! max_dropped_calls = 0       # outside windows
//! lockout_max_dropped_calls = "any"  # or a number: a restart that prevents or ends a lockout
//! drain_timeout = "30m"       # a drained web bridge's calls get this long to end
//! call_connection_lead = "10m"  # opt-in: place calls by the c: counter (see docs)
//! min_interval = "1h"
//! api_unreachable = "hold"    # or "logs": when a server's Call Bridge API does not answer
//!
//! [[policy.window]]
//! cron = "0 2 * * 6"          # Saturday 02:00
//! duration = "2h"
//! timezone = "Europe/Berlin"
//! max_dropped_calls = 10      # omitted: any
//!
//! [[webhook]]
//! format = "slack"            # "generic" (default), "webex" or "slack"
//! url_env = "WBGUARD_SLACK_WEBHOOK"   # or url_file, or url (the URL is a secret)
//! events = ["restart", "failure", "lockout"]  # default: all six, with "decision", "lockout_restart" and "clock"
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::Duration;
use serde::{Deserialize, Serialize};
use wbguard_core::policy::{Mode, Policy, Triggers, Window, WindowError};

use super::address::{CdrListen, HttpUrl, Listen};
use super::Dirs;
use crate::secret::{redact_url, Location};

/// `[watch]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatch {
    /// Syslog listeners: `udp://`, `tcp://` or `tls://ADDR:PORT`.
    pub listen_syslog: Option<Vec<String>>,
    /// The HTTP side (metrics, API, page).
    pub listen_http: Option<String>,
    /// CDR listeners: `http://` or `https://ADDR:PORT` (Call Bridges post
    /// to `/cdr`).
    pub listen_cdr: Option<Vec<String>>,
    /// PEM certificate chain for `tls://` and `https://` listeners.
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key for `tls://` and `https://` listeners.
    pub tls_key: Option<PathBuf>,
    /// Log files to follow (written by a local syslog server).
    pub follow: Option<Vec<PathBuf>>,
    /// Addresses allowed to forward the lines of any configured server.
    pub relays: Option<Vec<IpAddr>>,
    /// Zone of timestamps that carry none.
    pub log_timezone: Option<String>,
    /// Days of history kept.
    pub retention_days: Option<u32>,
    /// How far ahead of the guard's clock a record may be dated (`2m`).
    pub future_tolerance: Option<String>,
    /// Environment variable holding the token that enables the status
    /// page's "restart now" (enforce mode only).
    pub restart_token_env: Option<String>,
}

/// `[policy]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// `observe` (default) or `enforce`.
    pub mode: Option<Mode>,
    /// Restart when the leak's lower bound reaches this (0: never on this ground).
    pub leak_at_least: Option<u32>,
    /// Restart when lockout is forecast before the next window.
    pub lockout_before_next_window: Option<bool>,
    /// Restart a web bridge at its limit.
    pub at_limit: Option<bool>,
    /// Real calls a restart may drop outside windows.
    pub max_dropped_calls: Option<u32>,
    /// Real calls a restart that prevents or ends a lockout may drop:
    /// `"any"` (default) or a number (0: never for a lockout).
    pub lockout_max_dropped_calls: Option<RawCalls>,
    /// How long a drained web bridge's calls get to end (`30m`).
    pub drain_timeout: Option<String>,
    /// How long before its call a user may connect to a web bridge
    /// (`10m`); unset: calls are not placed by the `c:` counter.
    pub call_connection_lead: Option<String>,
    /// The least time between two restarts of one web bridge (`90m`, `1h`).
    pub min_interval: Option<String>,
    /// Data older than this decides nothing.
    pub stale_after: Option<String>,
    /// Sessions at which a web bridge refuses new ones.
    pub limit: Option<u32>,
    /// What a restart does when the Call Bridge API does not answer:
    /// `hold` (default) or `logs`.
    pub api_unreachable: Option<ApiUnreachable>,
    /// Maintenance windows.
    #[serde(default, rename = "window")]
    pub windows: Vec<RawWindow>,
}

/// A number of calls, or `"any"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged, expecting = "expected \"any\" or a number of calls, 0 to 10000")]
pub enum RawCalls {
    /// At most this many.
    Count(u32),
    /// `"any"`.
    Word(String),
}

/// One `[[policy.window]]`.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    /// When it opens: five cron fields.
    pub cron: String,
    /// How long it stays open (`2h`).
    pub duration: String,
    /// IANA zone the expression is read in (default UTC).
    pub timezone: Option<String>,
    /// Real calls a restart may drop inside it (omitted: any).
    pub max_dropped_calls: Option<u32>,
}

/// One `[[webhook]]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// The URL itself (prefer `url_env` or `url_file`: it is a secret).
    pub url: Option<String>,
    /// Environment variable holding the URL.
    pub url_env: Option<String>,
    /// File holding the URL (mode 600 or stricter).
    pub url_file: Option<PathBuf>,
    /// `generic`, `webex` or `slack`.
    pub format: Option<WebhookFormat>,
    /// Which events: `decision`, `restart`, `failure`, `lockout`,
    /// `lockout_restart`, `clock`.
    pub events: Option<Vec<Event>>,
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// wbguard's own JSON: event, web bridge, text and the numbers.
    Generic,
    /// `{"markdown": ...}` for a Webex incoming webhook.
    Webex,
    /// `{"text": ...}` for a Slack incoming webhook.
    Slack,
}

/// What a webhook is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A web bridge needs a restart (decided, or held and why).
    Decision,
    /// A restart was made and the logs show it.
    Restart,
    /// A restart failed or the logs never showed it.
    Failure,
    /// A web bridge reached its limit: users are refused.
    Lockout,
    /// A server's records come from the future (its clock runs ahead, or
    /// its lines are forged): they are ignored.
    Clock,
    /// A restart that may drop calls, decided because a lockout is worse
    /// (the lockout rule), with its plan and numbers.
    LockoutRestart,
}

impl Event {
    /// Every event, in order.
    pub const ALL: [Event; 6] =
        [Event::Decision, Event::Restart, Event::Failure, Event::Lockout, Event::LockoutRestart, Event::Clock];

    /// Its name in the file and in the generic body.
    pub fn name(self) -> &'static str {
        match self {
            Event::Decision => "decision",
            Event::Restart => "restart",
            Event::Failure => "failure",
            Event::Lockout => "lockout",
            Event::Clock => "clock",
            Event::LockoutRestart => "lockout_restart",
        }
    }
}

/// A webhook as configured: where its URL is (a secret, fetched by the
/// guard when it starts), the body's shape and the events it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Where the URL is.
    pub url: Location,
    /// The body's shape.
    pub format: WebhookFormat,
    /// The events it receives.
    pub events: Vec<Event>,
}

impl WebhookSettings {
    /// Where the URL comes from, for messages (the host only, when the URL
    /// is in the file).
    pub fn describe(&self) -> String {
        match &self.url {
            Location::Inline(url) => format!("{} (URL in the configuration)", redact_url(url)),
            other => format!("URL from {}", other.describe()),
        }
    }
}

/// What the guard does before a restart when a configured Call Bridge API
/// does not answer (`policy.api_unreachable`). Only an API that cannot be
/// reached or timed out counts: a refused certificate or refused
/// credentials always hold, as they will not mend by themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiUnreachable {
    /// Hold the restart and say why (the default): no live call is
    /// dropped on a guess.
    #[default]
    Hold,
    /// Decide on the logs alone, as without an API.
    Logs,
}

/// What the guard's "now" is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    /// The machine's clock: records dated further ahead than the tolerance
    /// are ignored, so a forged line or a server whose clock runs ahead
    /// cannot move a decision.
    #[default]
    Wall,
    /// The newest accepted record, when it is ahead of the machine's clock:
    /// for simulations that run faster than real time. Trusts the senders.
    Data,
}

impl Clock {
    /// Its name on the command line and in `/api/status`.
    pub fn name(self) -> &'static str {
        match self {
            Clock::Wall => "wall",
            Clock::Data => "data",
        }
    }
}

/// The guard's settings, checked (defaults without a configuration file).
#[derive(Debug, Clone)]
pub struct GuardSettings {
    /// Syslog listeners.
    pub listen_syslog: Vec<Listen>,
    /// The HTTP side.
    pub listen_http: SocketAddr,
    /// CDR listeners (none: the receiver is off).
    pub listen_cdr: Vec<CdrListen>,
    /// Certificate chain and key for `tls://` and `https://` listeners.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Files to follow.
    pub follow: Vec<PathBuf>,
    /// Addresses that may forward for any configured server.
    pub relays: Vec<IpAddr>,
    /// Zone of timestamps that carry none.
    pub log_timezone: chrono_tz::Tz,
    /// How long history is kept.
    pub retention: Duration,
    /// What "now" is (`--clock`; not in the file: a simulation asks for
    /// the data's clock on its command line).
    pub clock: Clock,
    /// How far ahead of the wall clock a record may be dated.
    pub future_tolerance: Duration,
    /// When to restart.
    pub policy: Policy,
    /// Sessions at which a web bridge refuses new ones.
    pub limit: u32,
    /// Whom to tell.
    pub webhooks: Vec<WebhookSettings>,
    /// Where the token of the status page's "restart now" is (none:
    /// read-only page).
    pub restart_token: Option<Location>,
    /// Without a configuration (any host may send), the most hosts
    /// tracked; records of others are rejected (`--max-hosts`; not in the
    /// file: with one, only its servers are tracked).
    pub max_hosts: usize,
    /// When a Call Bridge API does not answer before a restart.
    pub api_unreachable: ApiUnreachable,
    /// `[[cluster]]`, each with its policy (none: one cluster of every
    /// server, [`super::cluster::DEFAULT_CLUSTER`], with `policy`).
    pub clusters: Vec<super::cluster::Cluster>,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            listen_syslog: vec![
                "udp://127.0.0.1:5514".parse().expect("valid"),
                "tcp://127.0.0.1:5514".parse().expect("valid"),
            ],
            listen_http: "127.0.0.1:9149".parse().expect("valid"),
            listen_cdr: Vec::new(),
            tls: None,
            follow: Vec::new(),
            relays: Vec::new(),
            log_timezone: chrono_tz::Tz::UTC,
            retention: Duration::days(90),
            clock: Clock::Wall,
            future_tolerance: Duration::minutes(2),
            policy: Policy::default(),
            limit: 149,
            webhooks: Vec::new(),
            restart_token: None,
            max_hosts: DEFAULT_MAX_HOSTS,
            api_unreachable: ApiUnreachable::Hold,
            clusters: Vec::new(),
        }
    }
}

/// Hosts tracked without a configuration, by default: far more than any
/// CMS deployment has servers.
pub const DEFAULT_MAX_HOSTS: usize = 1000;

/// The largest count any key takes (sessions, leaks, dropped calls): a web
/// bridge refuses new sessions at about 149, so anything near this bound
/// is already a typo.
const LARGEST_COUNT: u32 = 10_000;

/// The longest history kept: ten years.
const LONGEST_RETENTION_DAYS: u32 = 3650;

/// Windows are checked against this fixed instant (2026-01-01T00:00:00Z),
/// not the clock: the configuration is pure data, and a five-field cron
/// expression repeats the same way from any start.
const CRON_REFERENCE_SECONDS: i64 = 1_767_225_600;

/// A window must open at least once this many years after the reference.
const CRON_HORIZON_YEARS: i64 = 8;

const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);
const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

/// A duration key within `min..=max`, checked and named.
fn duration(text: &str, key: &str, min: std::time::Duration, max: std::time::Duration) -> anyhow::Result<Duration> {
    super::duration::parse_chrono_within(text, min, max).map_err(|why| anyhow::anyhow!("{key}: {why}"))
}

/// A count key, at most `max`.
fn count(value: Option<u32>, key: &str, min: u32, max: u32) -> anyhow::Result<Option<u32>> {
    match value {
        Some(n) if !(min..=max).contains(&n) => bail!("{key}: {n} is not between {min} and {max}"),
        other => Ok(other),
    }
}

/// Whether the window opens at all: a day that does not exist (31
/// February) parses, but never comes.
fn check_opens(window: &Window, key: &str) -> anyhow::Result<()> {
    let reference = chrono::DateTime::from_timestamp(CRON_REFERENCE_SECONDS, 0).unwrap_or_default();
    let horizon = reference + Duration::days(366 * CRON_HORIZON_YEARS);
    match window.next_opening(reference) {
        Some(opening) if opening <= horizon => Ok(()),
        _ => bail!(
            "{key}: '{}' never opens (not once in {CRON_HORIZON_YEARS} years; a day that does not exist, such as 31 February?)",
            window.pattern
        ),
    }
}

/// `raw` checked, its errors naming keys under `at` (`policy`, or
/// `cluster[0].policy` for a cluster's own).
pub(super) fn policy(raw: &RawPolicy, at: &str) -> anyhow::Result<Policy> {
    let defaults = Policy::default();
    let mut windows = Vec::new();
    for (i, w) in raw.windows.iter().enumerate() {
        let key = |name: &str| format!("{at}.window[{i}].{name}");
        let duration = duration(&w.duration, &key("duration"), MINUTE, 7 * DAY)?;
        let zone = w.timezone.as_deref().unwrap_or("UTC");
        let max_dropped_calls = count(w.max_dropped_calls, &key("max_dropped_calls"), 0, LARGEST_COUNT)?;
        let window = Window::new(&w.cron, duration, zone, max_dropped_calls).map_err(|e| {
            let name = match e {
                WindowError::Cron { .. } => "cron",
                WindowError::Zone(_) => "timezone",
                WindowError::Duration => "duration",
            };
            anyhow::anyhow!("{}: {e}", key(name))
        })?;
        check_opens(&window, &key("cron"))?;
        windows.push(window);
    }
    let duration = |value: &Option<String>, default: Duration, name: &str, max: std::time::Duration| {
        value.as_deref().map_or(Ok(default), |text| duration(text, &format!("{at}.{name}"), MINUTE, max))
    };
    Ok(Policy {
        mode: raw.mode.unwrap_or(Mode::Observe),
        triggers: Triggers {
            leak_at_least: match count(raw.leak_at_least, &format!("{at}.leak_at_least"), 0, LARGEST_COUNT)? {
                Some(0) => None,
                Some(n) => Some(n),
                None => defaults.triggers.leak_at_least,
            },
            lockout_before_next_window: raw
                .lockout_before_next_window
                .unwrap_or(defaults.triggers.lockout_before_next_window),
            at_limit: raw.at_limit.unwrap_or(defaults.triggers.at_limit),
        },
        max_dropped_calls: count(raw.max_dropped_calls, &format!("{at}.max_dropped_calls"), 0, LARGEST_COUNT)?
            .unwrap_or(defaults.max_dropped_calls),
        windows,
        min_interval: duration(&raw.min_interval, defaults.min_interval, "min_interval", 30 * DAY)?,
        stale_after: duration(&raw.stale_after, defaults.stale_after, "stale_after", 7 * DAY)?,
        horizon_without_windows: defaults.horizon_without_windows,
        lockout_max_dropped_calls: match &raw.lockout_max_dropped_calls {
            None => defaults.lockout_max_dropped_calls,
            Some(RawCalls::Word(word)) if word == "any" => None,
            Some(RawCalls::Word(word)) => {
                bail!("{at}.lockout_max_dropped_calls: '{word}' is neither \"any\" nor a number of calls")
            }
            Some(RawCalls::Count(n)) => count(Some(*n), &format!("{at}.lockout_max_dropped_calls"), 0, LARGEST_COUNT)?,
        },
        drain_timeout: duration(&raw.drain_timeout, defaults.drain_timeout, "drain_timeout", DAY)?,
        call_connection_lead: match &raw.call_connection_lead {
            None => None,
            Some(text) => Some(
                super::duration::parse_chrono_within(text, std::time::Duration::from_secs(1), DAY)
                    .map_err(|why| anyhow::anyhow!("{at}.call_connection_lead: {why}"))?,
            ),
        },
    })
}

fn webhook(raw: &RawWebhook, i: usize, base: &Path, dirs: &Dirs) -> anyhow::Result<WebhookSettings> {
    let what = format!("webhook[{i}]");
    let url = match (&raw.url, &raw.url_env, &raw.url_file) {
        (Some(url), None, None) => {
            check_webhook_url(url).with_context(|| format!("{what}.url"))?;
            Location::Inline(url.clone())
        }
        (None, Some(variable), None) => {
            super::check_variable(variable, &format!("{what}.url_env"))?;
            Location::Env(variable.clone())
        }
        (None, None, Some(path)) => Location::File(dirs.resolve(path, base)),
        _ => bail!("{what}: give exactly one of url, url_env, url_file"),
    };
    let format = raw.format.unwrap_or(WebhookFormat::Generic);
    let events = raw.events.clone().unwrap_or_else(|| Event::ALL.to_vec());
    Ok(WebhookSettings { url, format, events })
}

/// A webhook URL must be http(s) with a host and a valid port; it is
/// never shown whole.
pub fn check_webhook_url(url: &str) -> anyhow::Result<()> {
    HttpUrl::parse(url).map_err(|why| anyhow::anyhow!("{why} (the URL: {})", redact_url(url)))?;
    Ok(())
}

/// A listener in the file must name its port: the servers send to it.
fn check_fixed_port(address: SocketAddr, key: &str) -> anyhow::Result<()> {
    if address.port() == 0 {
        bail!("{key}: port 0 would be another port at each start; give the one the servers send to");
    }
    Ok(())
}

impl GuardSettings {
    /// Checks the raw sections and fills in the defaults.
    pub fn from_raw(
        watch: Option<&RawWatch>,
        raw_policy: Option<&RawPolicy>,
        webhooks: &[RawWebhook],
        base: &Path,
        dirs: &Dirs,
    ) -> anyhow::Result<GuardSettings> {
        let defaults = GuardSettings::default();
        let watch = watch.cloned().unwrap_or_default();
        let listen_syslog: Vec<Listen> = match &watch.listen_syslog {
            None => defaults.listen_syslog,
            Some(urls) => urls
                .iter()
                .enumerate()
                .map(|(i, url)| {
                    let key = format!("watch.listen_syslog[{i}]");
                    let listen: Listen = url.parse().map_err(|e: String| anyhow::anyhow!("{key}: {e}"))?;
                    check_fixed_port(listen.address(), &key)?;
                    Ok(listen)
                })
                .collect::<anyhow::Result<_>>()?,
        };
        let listen_http = match &watch.listen_http {
            None => defaults.listen_http,
            Some(text) => {
                let address: SocketAddr =
                    text.parse().map_err(|_| anyhow::anyhow!("watch.listen_http: '{text}' is not ADDR:PORT"))?;
                check_fixed_port(address, "watch.listen_http")?;
                address
            }
        };
        let listen_cdr: Vec<CdrListen> = watch
            .listen_cdr
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, url)| {
                let key = format!("watch.listen_cdr[{i}]");
                let listen: CdrListen = url.parse().map_err(|e: String| anyhow::anyhow!("{key}: {e}"))?;
                check_fixed_port(listen.address, &key)?;
                Ok(listen)
            })
            .collect::<anyhow::Result<_>>()?;
        let tls = match (&watch.tls_certificate, &watch.tls_key) {
            (Some(certificate), Some(key)) => Some((dirs.resolve(certificate, base), dirs.resolve(key, base))),
            (None, None) => None,
            _ => bail!("watch: give both tls_certificate and tls_key"),
        };
        if tls.is_none() && listen_syslog.iter().any(|l| matches!(l, Listen::Tls(_))) {
            bail!("watch: a tls:// listener needs tls_certificate and tls_key");
        }
        if tls.is_none() && listen_cdr.iter().any(|l| l.tls) {
            bail!("watch: an https:// CDR listener needs tls_certificate and tls_key");
        }
        let log_timezone = match &watch.log_timezone {
            None => defaults.log_timezone,
            Some(zone) => zone.parse().map_err(|_| {
                anyhow::anyhow!("watch.log_timezone: '{zone}' is not an IANA zone (e.g. Europe/Berlin)")
            })?,
        };
        let retention = match count(watch.retention_days, "watch.retention_days", 1, LONGEST_RETENTION_DAYS)? {
            None => defaults.retention,
            Some(days) => Duration::days(days.into()),
        };
        let future_tolerance = match &watch.future_tolerance {
            None => defaults.future_tolerance,
            Some(text) => duration(text, "watch.future_tolerance", std::time::Duration::from_secs(1), DAY)?,
        };
        let raw_policy = raw_policy.cloned().unwrap_or_default();
        let limit = count(raw_policy.limit, "policy.limit", 1, LARGEST_COUNT)?.unwrap_or(defaults.limit);
        if let Some(variable) = &watch.restart_token_env {
            super::check_variable(variable, "watch.restart_token_env")?;
        }
        let restart_token = watch.restart_token_env.as_ref().map(|variable| Location::Env(variable.clone()));
        Ok(GuardSettings {
            clusters: Vec::new(),
            max_hosts: defaults.max_hosts,
            api_unreachable: raw_policy.api_unreachable.unwrap_or_default(),
            restart_token,
            listen_syslog,
            listen_http,
            listen_cdr,
            tls,
            follow: watch.follow.unwrap_or_default().iter().map(|p| dirs.resolve(p, base)).collect(),
            relays: watch.relays.unwrap_or_default(),
            log_timezone,
            retention,
            clock: defaults.clock,
            future_tolerance,
            policy: policy(&raw_policy, "policy")?,
            limit,
            webhooks: webhooks
                .iter()
                .enumerate()
                .map(|(i, w)| webhook(w, i, base, dirs))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// A summary for `wbguard config check`: no secrets.
    pub fn describe(&self) -> serde_json::Value {
        let policy = &self.policy;
        let windows: Vec<serde_json::Value> = policy
            .windows
            .iter()
            .map(|w| {
                serde_json::json!({
                    "cron": w.pattern, "duration_minutes": w.duration.num_minutes(),
                    "timezone": w.zone.name(), "max_dropped_calls": w.max_dropped_calls,
                })
            })
            .collect();
        serde_json::json!({
            "listen_syslog": self.listen_syslog.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "listen_http": self.listen_http,
            "listen_cdr": self.listen_cdr.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "tls": self.tls.as_ref().map(|(c, k)| serde_json::json!({"certificate": c, "key": k})),
            "follow": self.follow,
            "relays": self.relays,
            "log_timezone": self.log_timezone.name(),
            "retention_days": self.retention.num_days(),
            "future_tolerance_seconds": self.future_tolerance.num_seconds(),
            "restart_now": self.restart_token.as_ref().map_or("disabled".to_owned(), |token| format!("enabled, token from {}", token.describe())),
            "policy": {
                "mode": policy.mode,
                "leak_at_least": policy.triggers.leak_at_least,
                "lockout_before_next_window": policy.triggers.lockout_before_next_window,
                "at_limit": policy.triggers.at_limit,
                "max_dropped_calls": policy.max_dropped_calls,
                "lockout_max_dropped_calls": policy.lockout_max_dropped_calls
                    .map_or(serde_json::json!("any"), |n| serde_json::json!(n)),
                "drain_timeout_minutes": policy.drain_timeout.num_minutes(),
                "call_connection_lead_seconds": policy.call_connection_lead.map(|lead| lead.num_seconds()),
                "min_interval_minutes": policy.min_interval.num_minutes(),
                "stale_after_minutes": policy.stale_after.num_minutes(),
                "limit": self.limit,
                "api_unreachable": self.api_unreachable,
                "windows": windows,
            },
            "webhooks": self.webhooks.iter().map(|w| serde_json::json!({
                "url": w.describe(), "format": w.format, "events": w.events,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> anyhow::Result<GuardSettings> {
        #[derive(Deserialize)]
        struct Sections {
            watch: Option<RawWatch>,
            policy: Option<RawPolicy>,
            #[serde(default, rename = "webhook")]
            webhooks: Vec<RawWebhook>,
        }
        let sections: Sections = toml::from_str(text)?;
        GuardSettings::from_raw(
            sections.watch.as_ref(),
            sections.policy.as_ref(),
            &sections.webhooks,
            Path::new("/etc"),
            &Dirs::default(),
        )
    }

    #[test]
    fn defaults_without_sections() {
        let s = settings("").unwrap();
        assert_eq!(s.policy.mode, Mode::Observe);
        assert_eq!(s.policy.triggers.leak_at_least, Some(100));
        assert_eq!((s.policy.max_dropped_calls, s.policy.min_interval), (0, Duration::hours(1)));
        assert_eq!(s.listen_http.to_string(), "127.0.0.1:9149");
        assert_eq!((s.retention, s.limit), (Duration::days(90), 149));
        assert_eq!(s.api_unreachable, ApiUnreachable::Hold);
    }

    #[test]
    fn a_full_guard_configuration() {
        let s = settings(
            r#"
            [watch]
            listen_syslog = ["tls://0.0.0.0:6514", "udp://[::]:514"]
            listen_http = "0.0.0.0:9149"
            listen_cdr = ["https://0.0.0.0:8444", "http://127.0.0.1:8080/"]
            tls_certificate = "syslog.crt"
            tls_key = "/k/syslog.key"
            follow = ["cms.log"]
            relays = ["10.0.0.5"]
            log_timezone = "Europe/Berlin"
            retention_days = 30
            [policy]
            mode = "enforce"
            leak_at_least = 0
            max_dropped_calls = 2
            min_interval = "90m"
            api_unreachable = "logs"
            [[policy.window]]
            cron = "0 2 * * 6"
            duration = "2h"
            timezone = "Europe/Berlin"
            [[webhook]]
            format = "slack"
            url_env = "WBGUARD_TEST_HOOK"
            events = ["restart", "failure"]
            "#,
        )
        .unwrap();
        assert_eq!(s.policy.mode, Mode::Enforce);
        assert_eq!(s.api_unreachable, ApiUnreachable::Logs);
        assert!(s.describe().to_string().contains(r#""api_unreachable":"logs""#));
        assert!(format!("{:#}", settings("[policy]\napi_unreachable = \"ignore\"\n").unwrap_err()).contains("ignore"));
        assert_eq!(s.policy.triggers.leak_at_least, None);
        assert_eq!((s.policy.max_dropped_calls, s.policy.min_interval), (2, Duration::minutes(90)));
        assert_eq!(s.policy.windows[0].duration, Duration::hours(2));
        assert_eq!(s.tls, Some(("/etc/syslog.crt".into(), "/k/syslog.key".into())));
        assert_eq!(s.follow, vec![PathBuf::from("/etc/cms.log")]);
        let cdr: Vec<String> = s.listen_cdr.iter().map(ToString::to_string).collect();
        assert_eq!(cdr, ["https://0.0.0.0:8444", "http://127.0.0.1:8080"]);
        assert_eq!(s.log_timezone, chrono_tz::Europe::Berlin);
        assert_eq!(s.webhooks[0].events, vec![Event::Restart, Event::Failure]);
        assert_eq!(s.webhooks[0].url, Location::Env("WBGUARD_TEST_HOOK".into()));
        let described = s.describe().to_string();
        assert!(described.contains("URL from $WBGUARD_TEST_HOOK"), "{described}");
    }

    #[test]
    fn bad_guard_configurations_say_what_is_wrong() {
        let error = |text: &str| format!("{:#}", settings(text).unwrap_err());
        assert!(error("[policy]\nmin_interval = \"soon\"\n").contains("policy.min_interval"));
        assert!(error("[[policy.window]]\ncron = \"0 2 * *\"\nduration = \"1h\"\n").contains("policy.window[0]"));
        assert!(
            error("[[policy.window]]\ncron = \"0 2 * * 6\"\nduration = \"1h\"\ntimezone = \"Mars\"\n").contains("Mars")
        );
        assert!(error("[watch]\nlisten_syslog = [\"tls://127.0.0.1:6514\"]\n").contains("tls_certificate"));
        assert!(error("[watch]\nlisten_syslog = [\"ftp://127.0.0.1:1\"]\n").contains("ftp://"));
        assert!(error("[watch]\nlisten_cdr = [\"https://127.0.0.1:8444\"]\n").contains("tls_certificate"));
        assert!(error("[watch]\nlisten_cdr = [\"http://127.0.0.1:0\"]\n").contains("watch.listen_cdr[0]"));
        assert!(error("[watch]\nlisten_cdr = [\"http://127.0.0.1:80/cdr\"]\n").contains("without a path"));
        assert!(error("[[webhook]]\nurl = \"hooks.example.com\"\n").contains("https://"));
        for bad in ["\"ANY\"", "20000"] {
            let message = error(&format!("[policy]\nlockout_max_dropped_calls = {bad}\n"));
            assert!(message.contains("policy.lockout_max_dropped_calls"), "{message}");
        }
        let message = error("[policy]\nlockout_max_dropped_calls = -1\n");
        assert!(message.contains("expected \"any\" or a number of calls"), "{message}");
        // The URL is never repeated: it may hold a secret.
        let message = error("[[webhook]]\nurl = \"https://u:s3cret@h:99999/t0k3n\"\n");
        assert!(message.contains("webhook[0].url") && message.contains("port"), "{message}");
        assert!(!message.contains("s3cret") && !message.contains("t0k3n"), "{message}");
    }

    /// A day that does not exist parses but never comes: refused at once
    /// (the cron library would search for thousands of years).
    #[test]
    fn a_window_that_never_opens_is_refused_quickly() {
        for cron in ["0 2 31 2 *", "0 2 30 2 *", "0 0 31 4 *", "0 0 31 6,9,11 *", "0 2 31 2 +1"] {
            let started = std::time::Instant::now();
            let text = format!("[[policy.window]]\ncron = \"{cron}\"\nduration = \"1h\"\n");
            let message = format!("{:#}", settings(&text).unwrap_err());
            assert!(message.contains("policy.window[0].cron") && message.contains("never opens"), "{message}");
            assert!(started.elapsed() < std::time::Duration::from_secs(2), "{cron}: {:?}", started.elapsed());
        }
        // 29 February comes every four years.
        for cron in ["0 2 29 2 *", "0 2 L 2 *", "0 2 * * 5#5"] {
            let text = format!("[[policy.window]]\ncron = \"{cron}\"\nduration = \"1h\"\n");
            assert!(settings(&text).is_ok(), "{cron}");
        }
    }
}
