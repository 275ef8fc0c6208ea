//! The drain journal: each drain of a web bridge through its load
//! balancer, from the moment it was decided to the moment the web bridge
//! was made ready again, so that a guard that stops in between finds it.
//!
//! A row is written (and committed) *before* the drain hook runs, and
//! closed once the web bridge is ready again (or the drain is given up).
//! At start the guard reads the rows still open ([`Store::open_drains`])
//! and takes them up again as drains in progress, with their original
//! start: the policy then restarts the web bridge when harmless or makes it
//! ready again, so no web bridge stays drained because the guard stopped.
//! Open rows are never pruned.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{ms, time, Store};

/// The table (migration 5).
pub(super) const SCHEMA: &str = "CREATE TABLE drains (
        id INTEGER PRIMARY KEY, webbridge TEXT NOT NULL, server TEXT NOT NULL, reason TEXT NOT NULL,
        started_ms INTEGER NOT NULL, ended_ms INTEGER, result TEXT, detail TEXT
     ) STRICT;
     CREATE INDEX drains_started ON drains (started_ms);";

/// A drain journaled and not yet ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenDrain {
    /// Journal id.
    pub id: i64,
    /// The web bridge (its log host).
    pub webbridge: String,
    /// The configured server whose hook drained it.
    pub server: String,
    /// When it was decided.
    pub started: DateTime<Utc>,
}

impl Store {
    /// Journals a drain, durably, before its hook runs.
    pub fn drain_started(
        &mut self,
        webbridge: &str,
        server: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<i64> {
        self.connection.execute(
            "INSERT INTO drains (webbridge, server, reason, started_ms) VALUES (?1, ?2, ?3, ?4)",
            params![webbridge, server, reason, ms(at)],
        )?;
        Ok(self.connection.last_insert_rowid())
    }

    /// Journals how a drain ended (`undrained`, `abandoned`, ...).
    pub fn drain_ended(&mut self, id: i64, result: &str, detail: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
        let changed = self.connection.execute(
            "UPDATE drains SET ended_ms = ?2, result = ?3, detail = ?4 WHERE id = ?1 AND ended_ms IS NULL",
            params![id, ms(at), result, detail],
        )?;
        anyhow::ensure!(changed == 1, "drain {id} is not open");
        Ok(())
    }

    /// The drains not ended: web bridges that may still be drained.
    pub fn open_drains(&self) -> anyhow::Result<Vec<OpenDrain>> {
        let mut query = self
            .connection
            .prepare("SELECT id, webbridge, server, started_ms FROM drains WHERE ended_ms IS NULL ORDER BY id")?;
        let rows = query.query_map([], |row| {
            Ok(OpenDrain { id: row.get(0)?, webbridge: row.get(1)?, server: row.get(2)?, started: time(row.get(3)?) })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes ended drains older than `before` or newer than `after`.
    pub(super) fn prune_drains(
        transaction: &rusqlite::Transaction<'_>,
        before: i64,
        after: i64,
    ) -> rusqlite::Result<usize> {
        transaction.execute(
            "DELETE FROM drains WHERE (started_ms < ?1 OR started_ms > ?2) AND ended_ms IS NOT NULL",
            params![before, after],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_stays_open_until_ended_and_across_a_reopen_and_a_prune() {
        let dir = tempfile::tempdir().unwrap();
        let at = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let id = {
            let mut store = Store::open(dir.path()).unwrap();
            let first = store.drain_started("cms1", "cms1", "needed", at(0)).unwrap();
            store.drain_ended(first, "undrained", "HAProxy: ready", at(60)).unwrap();
            assert!(store.drain_ended(first, "undrained", "again", at(61)).is_err());
            store.drain_started("cms2", "b", "needed", at(100)).unwrap()
            // The guard stops here.
        };
        let mut store = Store::open(dir.path()).unwrap();
        let open = store.open_drains().unwrap();
        assert_eq!(open, [OpenDrain { id, webbridge: "cms2".into(), server: "b".into(), started: at(100) }]);
        store.prune(at(10_000), None).unwrap();
        assert_eq!(store.open_drains().unwrap().len(), 1, "an open drain is never pruned");
        let rows: i64 = store.connection.query_row("SELECT count(*) FROM drains", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 1);
    }
}
