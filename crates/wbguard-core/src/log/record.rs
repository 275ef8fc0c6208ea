//! The typed records the log grammar yields.
//!
//! A record is one fact from one server at one time. Records carry owned
//! strings because they outlive the buffer they were parsed from; there is
//! about one record per thousand log lines, so this costs nothing that shows.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One fact parsed from a CMS log line. Records compare and hash by value,
/// so the same line read twice can be recognised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Record {
    /// When the server logged it, in UTC.
    pub time: DateTime<Utc>,
    /// The server's configured host name (the word after `facility.severity`),
    /// or the caller's fallback for lines that carry none; in lower case.
    pub host: String,
    /// What the line said.
    pub body: RecordBody,
}

/// The kinds of lines wbguard understands.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordBody {
    /// Web Bridge 2: `[DEBUGGING] Stats 149, c:3477, d:3170`.
    WebBridgeStats(WebBridgeStats),
    /// Call Bridge: `STATS: {"callLegsPS": 1, "CMA": "14/17", ...}`.
    CallBridgeStats(CallBridgeStats),
    /// MMP audit: `User admin from ADDR issued command <CMD>: permission granted`.
    Audit(AuditCommand),
}

/// The Web Bridge 2 statistics record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct WebBridgeStats {
    /// Sessions on this web bridge now, leaked ones included. At the limit
    /// (149) the web bridge refuses new sessions.
    pub active: u32,
    /// `c:` counter; most likely connections created since the web bridge
    /// started. Undocumented: only its going down (a restart) is used.
    pub connections: u64,
    /// `d:` counter; most likely connections destroyed since start.
    pub disconnections: u64,
}

/// A `current/peak` pair from a Call Bridge STATS record: the value now and
/// the peak over the last reporting interval (5 minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Pair {
    /// The value when the record was written.
    pub current: u32,
    /// The largest value since the previous record.
    pub peak: u32,
}

/// The Call Bridge statistics record (CMS 2.8 and later, every 5 minutes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct CallBridgeStats {
    /// `callLegsPS`, if present.
    pub call_legs_per_second: Option<u32>,
    /// Every `"X/Y"` value, keyed by its JSON path with the keys' exact
    /// spelling; nested objects are joined with `.` (`sip.std`). Unknown keys
    /// are kept, missing keys are simply absent.
    pub pairs: Vec<(String, Pair)>,
}

impl CallBridgeStats {
    /// The pair stored under `key` (exact spelling), if any.
    pub fn pair(&self, key: &str) -> Option<Pair> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, p)| *p)
    }

    /// CMA sessions on this call bridge: WebRTC through any web bridge plus
    /// the CMA desktop and iOS clients.
    pub fn cma(&self) -> Option<Pair> {
        self.pair("CMA")
    }

    /// Call legs on this call bridge.
    pub fn call_legs(&self) -> Option<Pair> {
        self.pair("callLegs")
    }
}

/// One command issued on the MMP, as its audit line tells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct AuditCommand {
    /// The MMP user.
    pub user: String,
    /// Where the user came from (`10.140.249.233:63290`), if the line says.
    pub source: Option<String>,
    /// The command, with surrounding spaces trimmed and inner runs of spaces
    /// kept as logged.
    pub command: String,
    /// `permission granted` (true) or anything else (false).
    pub granted: bool,
}

impl AuditCommand {
    /// True when this is a granted `webbridge restart` (Web Bridge 2).
    pub fn is_webbridge_restart(&self) -> bool {
        self.granted && {
            let mut words = self.command.split_ascii_whitespace();
            words.next() == Some("webbridge") && words.next() == Some("restart") && words.next().is_none()
        }
    }
}
