//! What the guard says over HTTP, as types: `/api/status` serialises them
//! and `wbguard status` reads them back, so the two cannot drift apart.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use wbguard_core::model::{ClusterEstimate, WebBridgeEstimate};
use wbguard_core::policy::{Decision, Mode};

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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
