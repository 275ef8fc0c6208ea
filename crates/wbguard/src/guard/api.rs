//! What the guard says over HTTP, as types: `/api/status` serialises them
//! and `wbguard status` reads them back, so the two cannot drift apart.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use wbguard_core::model::{ClusterEstimate, LiveCalls, WebBridgeEstimate};
use wbguard_core::policy::{Decision, Mode};

pub use crate::cdr::CdrCallBridge;
pub use crate::config::guard_settings::Clock;

/// What a running guard listens on; printed as one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoints {
    /// Syslog listeners, as URLs.
    pub syslog: Vec<String>,
    /// Files followed.
    pub follow: Vec<String>,
    /// The HTTP side.
    pub http: SocketAddr,
}

/// One web bridge as the status shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebBridgeView {
    /// Log host name.
    pub webbridge: String,
    /// The cluster it belongs to (`default` without `[[cluster]]`).
    #[serde(default)]
    pub cluster: String,
    /// Time of its last Stats line.
    pub last_seen: DateTime<Utc>,
    /// No Stats within its cluster's `stale_after`: nothing is decided
    /// about it (its server, or the syslog from it, is down).
    #[serde(default)]
    pub silent: bool,
    /// The model's estimate (sessions, leak bounds, droppable calls, rate,
    /// forecast), flattened into the same JSON object.
    #[serde(flatten)]
    pub estimate: WebBridgeEstimate,
    /// Restarts seen (any cause), by the time they happened: the latest
    /// 1,000 (the model keeps no more).
    pub restarts: Vec<DateTime<Utc>>,
    /// Restarts seen since the guard started, all of them.
    #[serde(default)]
    pub restarts_total: u64,
}

/// A server whose records come from the future: its clock runs ahead of
/// the guard's (or somebody forges its lines). Its records are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerAhead {
    /// Log host name.
    pub host: String,
    /// How far its latest record was ahead of the guard's clock.
    pub ahead_seconds: i64,
    /// When its first record from the future came (guard's clock).
    pub first_seen: DateTime<Utc>,
    /// When its latest one came.
    pub last_seen: DateTime<Utc>,
    /// Its records ignored since `first_seen`.
    pub records: u64,
}

/// A restart in the guard's journal dated in the future when the guard
/// started: reported, and not used for `min_interval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalAhead {
    /// The web bridge.
    pub webbridge: String,
    /// The restart's date as journaled.
    pub time: DateTime<Utc>,
}

/// One call bridge's live CMA calls, as its API listed them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallBridgeCalls {
    /// The server's name in the configuration.
    pub server: String,
    /// Live `acano` legs that are not distribution links.
    pub cma_live: u32,
}

/// The last check, as `/api/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiCheckView {
    /// The web bridge whose restart asked (guard's clock).
    pub webbridge: String,
    /// When it was asked.
    pub time: DateTime<Utc>,
    /// Live CMA calls in the cluster, if every call bridge answered.
    pub cma_live: Option<u32>,
    /// Per call bridge, when they answered.
    pub callbridges: Vec<CallBridgeCalls>,
    /// `cleared` (within the allowance), `held` or `unreachable`.
    pub verdict: String,
    /// In words.
    pub text: String,
}

/// Where one drain is, as the status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainState {
    /// The drain hook is running.
    Draining,
    /// The hook confirmed: no new sessions reach it.
    Drained,
    /// Taken up from the journal at start: its state in the load
    /// balancer is not known (a drain hook may have run or not).
    Resumed,
    /// The undrain hook is running.
    Undraining,
    /// The undrain hook failed; it is tried again.
    UndrainFailed,
}

/// One drain, as `/api/status` shows it (`drains`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainView {
    /// The web bridge.
    pub webbridge: String,
    /// The configured server whose hook drains it.
    pub server: String,
    /// When the drain was decided.
    pub since: DateTime<Utc>,
    /// Where it is.
    pub state: DrainState,
    /// The last thing its hook said (or why it failed).
    pub detail: String,
}

/// One cluster as the status shows it: its own model's sums, its live
/// calls and its mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    /// Its name (`default` without `[[cluster]]`).
    pub name: String,
    /// Its policy's mode.
    pub mode: Mode,
    /// Its sessions, CMA and leak bounds, summed over its servers.
    #[serde(flatten)]
    pub estimate: ClusterEstimate,
    /// Its live CMA calls from CDRs or the API, when known.
    pub live_calls: Option<LiveCalls>,
    /// Its web bridges, in natural order.
    pub webbridges: Vec<String>,
    /// Its call bridges heard in the logs.
    pub callbridges: Vec<String>,
    /// A restart, an API check or a drain hook runs in it now.
    pub busy: bool,
}

/// What the guard knows, as of `now`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was taken.
    pub now: DateTime<Utc>,
    /// Where `now` comes from: `wall` (the machine's clock) or `data` (the
    /// newest record: a simulation).
    #[serde(default)]
    pub clock: Clock,
    /// How far ahead of the wall clock a record may be dated.
    #[serde(default)]
    pub future_tolerance_seconds: i64,
    /// Servers whose records come from the future, and are ignored.
    #[serde(default)]
    pub servers_ahead: Vec<ServerAhead>,
    /// Journaled restarts dated in the future at start, not used.
    #[serde(default)]
    pub journal_ahead: Vec<JournalAhead>,
    /// Observe or enforce.
    pub mode: Mode,
    /// Sessions at which a web bridge refuses new ones.
    pub limit: u32,
    /// Per web bridge.
    pub webbridges: Vec<WebBridgeView>,
    /// CMA sessions per call bridge (the latest report).
    pub callbridges: BTreeMap<String, u32>,
    /// Every cluster's sums added up (one cluster: its own).
    pub cluster: ClusterEstimate,
    /// Each cluster, in the configuration's order.
    #[serde(default)]
    pub clusters: Vec<ClusterView>,
    /// The latest decisions.
    pub decisions: Vec<Decision>,
    /// The cluster's live CMA calls from CDRs or the API, when known: they
    /// bound what a restart can drop wherever they are tighter than the logs
    /// (with several clusters, see each in `clusters`).
    #[serde(default)]
    pub live_calls: Option<LiveCalls>,
    /// The last check of the Call Bridge API before a restart (in any cluster).
    #[serde(default)]
    pub api_check: Option<ApiCheckView>,
    /// The call bridges posting CDRs, and what their records say is live.
    #[serde(default)]
    pub cdr: Vec<CdrCallBridge>,
    /// The web bridges drained through their load balancer (enforce mode).
    #[serde(default)]
    pub drains: Vec<DrainView>,
}

/// `GET /api/status`: the snapshot, the message counts, and whether the
/// page may offer "restart now".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The latest snapshot, flattened into the same object.
    #[serde(flatten)]
    pub snapshot: Snapshot,
    /// Syslog messages by what became of them (`parsed`, `noise`, ...).
    pub syslog_messages: BTreeMap<String, u64>,
    /// Enforce mode and a token configured.
    pub restart_now: bool,
}
