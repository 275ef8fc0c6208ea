//! Live calls: what CMS itself says is connected right now.
//!
//! Log samples are minutes old. A Call Bridge's CDRs (pushed to the guard)
//! and its REST API (asked by the guard) say in real time which call legs
//! are live (`DOMAIN.md`, "Live calls"). Leaked web bridge sessions have no
//! call leg, so the live CMA legs of a cluster (`acano` legs that are not
//! distribution links) bound from above the real calls any of its web
//! bridge restarts can drop. The model takes that figure from outside (it
//! never reads the network) and uses it only to tighten: a web bridge's
//! `droppable_upper` becomes the smaller of the log bound and this one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where the bound on droppable calls came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallSource {
    /// The Call Bridges' CDRs, counted as they arrive.
    Cdr,
    /// The Call Bridge REST API, asked by the guard.
    Api,
    /// The log samples only (web bridge Stats and call bridge STATS).
    Logs,
}

impl CallSource {
    /// The source's name as the API and metrics give it.
    pub fn name(self) -> &'static str {
        match self {
            CallSource::Cdr => "cdr",
            CallSource::Api => "api",
            CallSource::Logs => "logs",
        }
    }
}

/// A cluster's live CMA calls, known in real time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveCalls {
    /// Live CMA call legs (`acano`, not distribution links) in the whole
    /// cluster: every call bridge counted.
    pub cma: u32,
    /// Which source counted them (`Cdr` or `Api`).
    pub source: CallSource,
    /// When the count was last known to be right.
    pub as_of: DateTime<Utc>,
}
