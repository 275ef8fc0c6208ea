//! The restart log and the audit file.
//!
//! The log keeps the exact format of Cisco's script, so that log watchers
//! written for it keep working: one line per attempt, appended and flushed
//! at once. The audit file adds what the log cannot say, one JSON object
//! per line: who ran it, why, how long it took, how it was verified.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Cisco's script names its log this.
pub const RESTART_LOG: &str = "webbridge_restart_logs.txt";
/// wbguard's audit file.
pub const AUDIT_LOG: &str = "restart-audit.jsonl";

/// One attempt, for the audit file.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// When the attempt ended.
    pub time: DateTime<Utc>,
    /// Server name.
    pub server: String,
    /// MMP address.
    pub address: String,
    /// MMP user.
    pub mmp_user: String,
    /// Who ran wbguard (the local user).
    pub operator: String,
    /// Why (`--reason`, or "manual").
    pub reason: String,
    /// `restarted`, `failed`, `skipped` or `refused`.
    pub result: &'static str,
    /// Details: the error, why it was skipped, or the command's output.
    pub detail: Option<String>,
    /// How long the attempt took, verification included.
    pub duration_ms: u64,
    /// How the web bridge was seen back, if it was looked at.
    pub verification: Option<String>,
    /// Whether the verification passed.
    pub verified: bool,
}

/// Both files, open for appending.
pub struct RestartLog {
    log: File,
    audit: File,
}

/// Readable by all (less the umask): the log and the audit hold no secret.
const LOG_MODE: u32 = 0o644;

fn append(path: &Path) -> anyhow::Result<File> {
    crate::files::open_append(path, LOG_MODE).with_context(|| format!("cannot open {}", path.display()))
}

/// Python's `str(datetime.now(timezone.utc))`, as Cisco's script writes it.
pub fn cisco_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string()
}

impl RestartLog {
    /// Opens (creates) both files in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<RestartLog> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(RestartLog { log: append(&dir.join(RESTART_LOG))?, audit: append(&dir.join(AUDIT_LOG))? })
    }

    /// Writes one attempt to both, flushed to disk before returning.
    pub fn record(&mut self, record: &AuditRecord) -> anyhow::Result<()> {
        let time = cisco_time(record.time);
        let line = match record.result {
            "restarted" => format!("{time} Webbridge on server: {} restarted successfully\n", record.address),
            "failed" => format!(
                "{time} Failed to restart webbridge on server {}. Error: {}\n",
                record.address,
                record.detail.as_deref().unwrap_or("unknown").replace('\n', " ")
            ),
            // Skips and refusals are not attempts in Cisco's sense.
            _ => String::new(),
        };
        if !line.is_empty() {
            self.log.write_all(line.as_bytes())?;
            self.log.sync_data()?;
        }
        let mut json = serde_json::to_string(record)?;
        json.push('\n');
        self.audit.write_all(json.as_bytes())?;
        self.audit.sync_data()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn lines_in_ciscos_format() {
        let time = Utc.with_ymd_and_hms(2020, 6, 8, 14, 53, 18).unwrap() + chrono::Duration::microseconds(149_915);
        assert_eq!(cisco_time(time), "2020-06-08 14:53:18.149915+00:00");
        let dir = tempfile::tempdir().unwrap();
        let mut log = RestartLog::open(dir.path()).unwrap();
        let mut record = AuditRecord {
            time,
            server: "cms1".into(),
            address: "10.48.79.194".into(),
            mmp_user: "admin".into(),
            operator: "ops".into(),
            reason: "manual".into(),
            result: "restarted",
            detail: None,
            duration_ms: 1200,
            verification: Some("web page answers".into()),
            verified: true,
        };
        log.record(&record).unwrap();
        record.result = "failed";
        record.detail = Some("connection refused".into());
        log.record(&record).unwrap();
        let text = std::fs::read_to_string(dir.path().join(RESTART_LOG)).unwrap();
        assert_eq!(
            text,
            "2020-06-08 14:53:18.149915+00:00 Webbridge on server: 10.48.79.194 restarted successfully\n\
             2020-06-08 14:53:18.149915+00:00 Failed to restart webbridge on server 10.48.79.194. Error: connection refused\n"
        );
        let audit = std::fs::read_to_string(dir.path().join(AUDIT_LOG)).unwrap();
        assert_eq!(audit.lines().count(), 2);
        assert!(audit.contains("\"operator\":\"ops\""));
    }
}
