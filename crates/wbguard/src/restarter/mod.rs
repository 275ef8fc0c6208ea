//! The restart machinery, shared by `wbguard restart` and the guard: one
//! restart of one web bridge ([`restart_one`]), its verification
//! ([`verify`]), its audit and Cisco-format log ([`audit`]), and the lock
//! that keeps two restart runs from overlapping ([`lock`]).
//!
//! A command that may have reached the MMP is never sent again: a timeout
//! after it was sent is reported as "may have happened".

pub mod audit;
pub mod verify;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;

use crate::config::{Config, Server};
use crate::mmp::{self, MmpError};
use audit::{AuditRecord, RestartLog};
use verify::Verification;

/// How one server's restart ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Restarted, and seen back (or nothing to check).
    Restarted {
        /// How the web bridge was seen back.
        verification: Verification,
    },
    /// Not attempted: release 3.x, or not safe.
    Skipped(String),
    /// Refused over its host key.
    Refused(String),
    /// Tried and failed.
    Failed(String),
}

impl Attempt {
    /// Its result in one word, as the audit file and metrics name it.
    pub fn result(&self) -> &'static str {
        match self {
            Attempt::Restarted { .. } => "restarted",
            Attempt::Skipped(_) => "skipped",
            Attempt::Refused(_) => "refused",
            Attempt::Failed(_) => "failed",
        }
    }

    /// What there is to say beyond the result.
    pub fn detail(&self) -> String {
        match self {
            Attempt::Restarted { verification } => verification.describe(),
            Attempt::Skipped(why) | Attempt::Refused(why) | Attempt::Failed(why) => why.clone(),
        }
    }

    /// The final word, with how long it took.
    pub fn describe(&self, took: Duration) -> String {
        match self {
            Attempt::Restarted { verification } => {
                format!("restarted in {:.1} s, {}", took.as_secs_f64(), verification.describe())
            }
            Attempt::Skipped(why) => format!("skipped: {why}"),
            Attempt::Refused(why) => format!("REFUSED: {why}"),
            Attempt::Failed(why) => format!("FAILED: {why}"),
        }
    }
}

/// Who asked for a restart and why, for the audit file.
#[derive(Debug, Clone)]
pub struct Requester {
    /// The local user, or the guard.
    pub operator: String,
    /// `--reason`, or the guard's decision.
    pub reason: String,
}

/// Appends one attempt to the Cisco-format log and the audit file.
pub fn record(
    log: &mut RestartLog,
    server: &Server,
    attempt: &Attempt,
    took: Duration,
    requester: &Requester,
) -> anyhow::Result<()> {
    let verification = match attempt {
        Attempt::Restarted { verification } => Some(verification),
        _ => None,
    };
    log.record(&AuditRecord {
        time: Utc::now(),
        server: server.name.clone(),
        address: server.address(),
        mmp_user: server.user.clone(),
        operator: requester.operator.clone(),
        reason: requester.reason.clone(),
        result: attempt.result(),
        detail: if verification.is_some() { None } else { Some(attempt.detail()) },
        duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        verified: verification.is_some_and(Verification::passed),
        verification: verification.map(Verification::describe),
    })
}

/// Holds the lock file in `state_dir`; two runs at once wait for each other.
pub fn lock(state_dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(state_dir).with_context(|| format!("cannot create {}", state_dir.display()))?;
    let path = state_dir.join("restart.lock");
    let file = crate::files::open_append(&path, 0o600).with_context(|| format!("cannot open {}", path.display()))?;
    if file.try_lock().is_err() {
        println!("waiting for another wbguard restart to finish ({})", path.display());
        file.lock().with_context(|| format!("cannot lock {}", path.display()))?;
    }
    Ok(file)
}

/// One server: connect, check the release, restart, verify. `report`
/// hears each step.
pub async fn restart_one(
    server: &Server,
    config: &Config,
    include_webbridge3: bool,
    report: &(dyn Fn(&str) + Sync),
) -> Attempt {
    report("connecting");
    let mut session = match mmp::connect(server, config).await {
        Ok(session) => session,
        Err(e) if e.is_host_key_refusal() => return Attempt::Refused(e.to_string()),
        Err(e) => return Attempt::Failed(e.to_string()),
    };
    let command = match session.run("version").await {
        Ok(output) if output.text.contains("version : 3.") || output.text.contains("version: 3.") => {
            if !include_webbridge3 {
                session.close().await;
                return Attempt::Skipped("release 3.x has no Web Bridge 2 and is not affected (--include-webbridge3 restarts its Web Bridge 3)".into());
            }
            "webbridge3 restart"
        }
        Ok(_) => "webbridge restart",
        Err(e) => return Attempt::Failed(format!("before the restart: {e}")),
    };
    report(&format!("running {command}"));
    let outcome = session.run(command).await;
    session.close().await;
    match outcome {
        Ok(output) => match output.failure() {
            Some(failure) => Attempt::Failed(format!("{command}: {failure}")),
            None => {
                if server.webbridge_url.is_some() {
                    report("waiting for the web page");
                }
                let verification = verify::wait_until_up(server.webbridge_url.as_deref(), config.timeouts.verify).await;
                Attempt::Restarted { verification }
            }
        },
        // The command may have run: report, never re-send.
        Err(e @ MmpError::Timeout { .. }) => {
            Attempt::Failed(format!("{e} (the restart may have happened; not re-sent)"))
        }
        Err(e) => Attempt::Failed(format!("{e} (the restart may have happened; not re-sent)")),
    }
}
