//! The guard's history in SQLite: samples, estimates, decisions, restarts
//! and alerts, kept for `retention` and readable with the `sqlite3` tool.
//!
//! Crash safety: WAL with `synchronous = FULL`, so a committed row survives
//! a power cut. Restarts are journaled: the *intent* is committed before
//! the command is sent and the *outcome* after, so a guard killed in between
//! finds the unfinished intent when it starts again ([`Store::unfinished`])
//! and treats it as a restart that may have happened: never repeated blindly,
//! never forgotten. Tables are STRICT; the schema version lives in
//! `PRAGMA user_version` and migrations run in order at open.

use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use serde::Serialize;

pub mod cdr;
pub mod drain;
pub mod history;

/// The file name inside the state directory.
pub const FILE: &str = "wbguard.sqlite";

/// Each entry migrates from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE samples (
        time_ms INTEGER NOT NULL, host TEXT NOT NULL, kind TEXT NOT NULL,
        active INTEGER, connections INTEGER, disconnections INTEGER,
        cma_current INTEGER, cma_peak INTEGER
     ) STRICT;
     CREATE INDEX samples_time ON samples (time_ms);
     CREATE TABLE estimates (
        time_ms INTEGER NOT NULL, webbridge TEXT NOT NULL, active INTEGER NOT NULL,
        leaked_lower INTEGER NOT NULL, leaked_upper INTEGER NOT NULL, droppable_upper INTEGER NOT NULL,
        lockout_forecast_ms INTEGER
     ) STRICT;
     CREATE INDEX estimates_time ON estimates (time_ms);
     CREATE TABLE decisions (
        time_ms INTEGER NOT NULL, webbridge TEXT NOT NULL, action TEXT NOT NULL, reason TEXT NOT NULL, numbers TEXT NOT NULL
     ) STRICT;
     CREATE INDEX decisions_time ON decisions (time_ms);
     CREATE TABLE restarts (
        id INTEGER PRIMARY KEY, webbridge TEXT NOT NULL, reason TEXT NOT NULL,
        intent_ms INTEGER NOT NULL, finished_ms INTEGER, result TEXT, detail TEXT
     ) STRICT;
     CREATE INDEX restarts_time ON restarts (intent_ms);
     CREATE TABLE alerts (
        time_ms INTEGER NOT NULL, webbridge TEXT, kind TEXT NOT NULL, message TEXT NOT NULL
     ) STRICT;",
    // 2: a sample is stored once, however often its line is read (a followed
    // file read again from its start, a relay that repeats).
    "DELETE FROM samples WHERE rowid NOT IN (SELECT min(rowid) FROM samples GROUP BY time_ms, host, kind);
     CREATE UNIQUE INDEX samples_once ON samples (time_ms, host, kind);",
    // 3: the CDR receiver's open legs (see [`cdr`]).
    cdr::SCHEMA,
    // 4: when each open leg began (its `callLegStart`), to tell which web
    // bridges it cannot be on.
    "ALTER TABLE cdr_legs ADD COLUMN started_ms INTEGER;",
    // 5: the drain journal (see [`drain`]).
    drain::SCHEMA,
    // 6: samples kept in host order (a table clustered on host, kind and
    // time, which is also what makes a sample unique): one web bridge's or
    // one cluster's history (`/api/history?webbridge=`, `?cluster=`) is read
    // as a run of its own rows, not picked out of the fleet's; and a sample
    // is written into two B-trees (the table, the time index), not four.
    "CREATE TABLE samples_by_host (
        host TEXT NOT NULL, kind TEXT NOT NULL, time_ms INTEGER NOT NULL,
        active INTEGER, connections INTEGER, disconnections INTEGER,
        cma_current INTEGER, cma_peak INTEGER,
        PRIMARY KEY (host, kind, time_ms)
     ) STRICT, WITHOUT ROWID;
     INSERT OR IGNORE INTO samples_by_host
        SELECT host, kind, time_ms, active, connections, disconnections, cma_current, cma_peak FROM samples;
     DROP TABLE samples;
     ALTER TABLE samples_by_host RENAME TO samples;
     CREATE INDEX samples_time ON samples (time_ms);
     CREATE INDEX estimates_webbridge ON estimates (webbridge, time_ms);",
];

/// A sample as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// When it was logged.
    pub time: DateTime<Utc>,
    /// The server.
    pub host: String,
    /// `webbridge` or `callbridge`.
    pub kind: &'static str,
    /// Web bridge: active sessions.
    pub active: Option<u32>,
    /// Call bridge: CMA now.
    pub cma_current: Option<u32>,
    /// Call bridge: CMA peak.
    pub cma_peak: Option<u32>,
}

/// The leak estimate of one web bridge at one time, as stored (the status
/// page's chart draws the leak range from these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Estimate {
    /// When.
    pub time: DateTime<Utc>,
    /// The web bridge.
    pub webbridge: String,
    /// Sessions.
    pub active: u32,
    /// Leak, lower bound.
    pub leaked_lower: u32,
    /// Leak, upper bound.
    pub leaked_upper: u32,
    /// Real calls a restart could drop, at most.
    pub droppable_upper: u32,
    /// The lockout forecast.
    pub lockout_forecast: Option<DateTime<Utc>>,
}

/// A restart journaled but never finished: the guard stopped in between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unfinished {
    /// Journal id.
    pub id: i64,
    /// The web bridge.
    pub webbridge: String,
    /// When it was decided.
    pub intent: DateTime<Utc>,
}

/// The history database.
pub struct Store {
    connection: Connection,
    /// The file, for [`Store::reader`].
    path: std::path::PathBuf,
}

fn ms(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Store {
    /// Opens (creates) the database in `dir` and migrates it.
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(FILE);
        let connection = Connection::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        connection
            // 16 MiB of page cache (SQLite's default is 2): a fleet's samples
            // go to a few hundred places of the table at once.
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
                 PRAGMA busy_timeout = 5000; PRAGMA cache_size = -16384;",
            )
            .context("setting up SQLite")?;
        let mut store = Store { connection, path: path.clone() };
        store.migrate().with_context(|| format!("migrating {}", path.display()))?;
        Ok(store)
    }

    /// Another connection to the same file, read-only: with WAL, a long
    /// read on it never waits for the writer nor holds it back.
    pub fn reader(&self) -> anyhow::Result<Store> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(&self.path, flags)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        connection.execute_batch("PRAGMA busy_timeout = 5000;").context("setting up SQLite")?;
        Ok(Store { connection, path: self.path.clone() })
    }

    fn migrate(&mut self) -> anyhow::Result<()> {
        let version: usize = self.connection.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))? as usize;
        anyhow::ensure!(version <= MIGRATIONS.len(), "the database is from a newer wbguard (schema {version})");
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            let transaction = self.connection.transaction()?;
            transaction.execute_batch(migration)?;
            transaction.execute_batch(&format!("PRAGMA user_version = {}", index + 1))?;
            transaction.commit()?;
        }
        Ok(())
    }

    /// Stores samples and estimates in one transaction (one commit, one
    /// sync, however many batches the history writer found waiting).
    pub fn record(&mut self, samples: &[Sample], estimates: &[Estimate]) -> anyhow::Result<()> {
        let transaction = self.connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT OR IGNORE INTO samples (time_ms, host, kind, active, cma_current, cma_peak) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for s in samples {
                insert.execute(params![ms(s.time), s.host, s.kind, s.active, s.cma_current, s.cma_peak])?;
            }
            let mut insert = transaction.prepare_cached(
                "INSERT INTO estimates (time_ms, webbridge, active, leaked_lower, leaked_upper, droppable_upper, lockout_forecast_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for e in estimates {
                insert.execute(params![
                    ms(e.time),
                    e.webbridge,
                    e.active,
                    e.leaked_lower,
                    e.leaked_upper,
                    e.droppable_upper,
                    e.lockout_forecast.map(ms)
                ])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    /// Stores a decision with the numbers behind it (as JSON).
    pub fn record_decision(
        &mut self,
        at: DateTime<Utc>,
        webbridge: &str,
        action: &str,
        reason: &str,
        numbers: &serde_json::Value,
    ) -> anyhow::Result<()> {
        self.connection.execute(
            "INSERT INTO decisions (time_ms, webbridge, action, reason, numbers) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ms(at), webbridge, action, reason, numbers.to_string()],
        )?;
        Ok(())
    }

    /// Journals the intent to restart, durably, before the command goes out.
    pub fn restart_intent(&mut self, webbridge: &str, reason: &str, at: DateTime<Utc>) -> anyhow::Result<i64> {
        self.connection.execute(
            "INSERT INTO restarts (webbridge, reason, intent_ms) VALUES (?1, ?2, ?3)",
            params![webbridge, reason, ms(at)],
        )?;
        Ok(self.connection.last_insert_rowid())
    }

    /// Journals how a restart ended.
    pub fn restart_outcome(
        &mut self,
        id: i64,
        result: &str,
        detail: Option<&str>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let changed = self.connection.execute(
            "UPDATE restarts SET finished_ms = ?2, result = ?3, detail = ?4 WHERE id = ?1 AND finished_ms IS NULL",
            params![id, ms(at), result, detail],
        )?;
        anyhow::ensure!(changed == 1, "restart {id} is not an open intent");
        Ok(())
    }

    /// Intents without an outcome: restarts the guard may have made before
    /// it stopped.
    pub fn unfinished(&self) -> anyhow::Result<Vec<Unfinished>> {
        let mut query = self
            .connection
            .prepare("SELECT id, webbridge, intent_ms FROM restarts WHERE finished_ms IS NULL ORDER BY id")?;
        let rows = query.query_map([], |row| {
            Ok(Unfinished { id: row.get(0)?, webbridge: row.get(1)?, intent: time(row.get(2)?) })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The latest restart of each web bridge the guard made or may have
    /// made: the minimum interval counts them across guard restarts.
    pub fn last_restarts(&self) -> anyhow::Result<std::collections::BTreeMap<String, DateTime<Utc>>> {
        let mut query = self.connection.prepare("SELECT webbridge, MAX(intent_ms) FROM restarts GROUP BY webbridge")?;
        let rows = query.query_map([], |row| Ok((row.get::<_, String>(0)?, time(row.get(1)?))))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records an alert.
    pub fn alert(
        &mut self,
        at: DateTime<Utc>,
        webbridge: Option<&str>,
        kind: &str,
        message: &str,
    ) -> anyhow::Result<()> {
        self.connection.execute(
            "INSERT INTO alerts (time_ms, webbridge, kind, message) VALUES (?1, ?2, ?3, ?4)",
            params![ms(at), webbridge, kind, message],
        )?;
        Ok(())
    }

    /// Deletes what is older than `before` or, if given, newer than `after`
    /// (restarts still open are kept).
    pub fn prune(&mut self, before: DateTime<Utc>, after: Option<DateTime<Utc>>) -> anyhow::Result<usize> {
        let (cutoff, horizon) = (ms(before), after.map_or(i64::MAX, ms));
        let transaction = self.connection.transaction()?;
        let mut removed = 0;
        for table in ["samples", "estimates", "decisions", "alerts"] {
            removed += transaction.execute(
                &format!("DELETE FROM {table} WHERE time_ms < ?1 OR time_ms > ?2"),
                params![cutoff, horizon],
            )?;
        }
        removed += transaction.execute(
            "DELETE FROM restarts WHERE (intent_ms < ?1 OR intent_ms > ?2) AND finished_ms IS NOT NULL",
            params![cutoff, horizon],
        )?;
        removed += Store::prune_drains(&transaction, cutoff, horizon)?;
        transaction.commit()?;
        Ok(removed)
    }

    /// `/api/history`'s answer to `query`, bounded (see [`history`]).
    pub fn history(&self, query: &history::Query) -> anyhow::Result<history::Answer> {
        history::read(&self.connection, query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_710_000_000 + minute * 60, 0).unwrap()
    }

    #[test]
    fn a_journal_survives_a_crash_between_intent_and_outcome() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path()).unwrap();
            let done = store.restart_intent("cms1", "leak", at(0)).unwrap();
            store.restart_outcome(done, "restarted", None, at(1)).unwrap();
            store.restart_intent("cms2", "at limit", at(5)).unwrap();
            // The guard is killed here: no outcome for cms2.
        }
        let mut store = Store::open(dir.path()).unwrap();
        let open = store.unfinished().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!((open[0].webbridge.as_str(), open[0].intent), ("cms2", at(5)));
        assert_eq!(store.last_restarts().unwrap().get("cms2"), Some(&at(5)));
        store.restart_outcome(open[0].id, "interrupted", Some("the guard stopped"), at(10)).unwrap();
        assert!(store.unfinished().unwrap().is_empty());
        assert!(store.restart_outcome(open[0].id, "again", None, at(11)).is_err());
    }

    #[test]
    fn wal_strict_tables_history_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mode: String = store.connection.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = store.connection.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "FULL");
        // STRICT: a string where an integer belongs is refused.
        assert!(store
            .connection
            .execute("INSERT INTO samples (time_ms, host, kind) VALUES ('soon', 'h', 'k')", [])
            .is_err());
        let sample = |minute, active| Sample {
            time: at(minute),
            host: "cms1".into(),
            kind: "webbridge",
            active: Some(active),
            cma_current: None,
            cma_peak: None,
        };
        store.record(&[sample(0, 5), sample(60, 6), sample(120, 7)], &[]).unwrap();
        store.record_decision(at(60), "cms1", "none", "not needed", &serde_json::json!({"active": 6})).unwrap();
        let points = |store: &Store, from, to| {
            let history = store.history(&history::Query::new(at(from), at(to))).unwrap();
            history.samples.iter().map(|s| s.points.len()).sum::<usize>()
        };
        assert_eq!(points(&store, 30, 200), 2);
        assert_eq!(store.prune(at(90), None).unwrap(), 3);
        assert_eq!(points(&store, 0, 200), 1);
        drop(store);
        // Reopening does not migrate again.
        let store = Store::open(dir.path()).unwrap();
        let version: i64 = store.connection.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_history_read_for_some_hosts_holds_only_theirs_and_uses_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let sample = |minute, host: &str, active| Sample {
            time: at(minute),
            host: host.into(),
            kind: "webbridge",
            active: Some(active),
            cma_current: None,
            cma_peak: None,
        };
        let estimate = |minute, webbridge: &str| Estimate {
            time: at(minute),
            webbridge: webbridge.into(),
            active: 9,
            leaked_lower: 1,
            leaked_upper: 2,
            droppable_upper: 3,
            lockout_forecast: None,
        };
        for host in ["cms1", "cms2", "cms10"] {
            store.record(&[sample(0, host, 5), sample(10, host, 6)], &[]).unwrap();
            store.record(&[], &[estimate(10, host)]).unwrap();
            store.record_decision(at(10), host, "none", "not needed", &serde_json::json!({})).unwrap();
            let id = store.restart_intent(host, "leak", at(11)).unwrap();
            store.restart_outcome(id, "restarted", None, at(12)).unwrap();
        }
        // cms10 alone is later, so the span of cms1 and cms2 ends before it.
        store.record(&[sample(500, "cms10", 7)], &[]).unwrap();
        let read = |scope: history::Scope| {
            store.history(&history::Query { scope, ..history::Query::new(at(0), at(1000)) }).unwrap()
        };
        let hosts = |names: &[&str]| history::Scope::Hosts(names.iter().map(|h| h.to_string()).collect());
        let names = |answer: &history::Answer| {
            let mut all: Vec<String> = answer.samples.iter().map(|s| s.host.clone()).collect();
            all.extend(answer.estimates.iter().map(|e| e.webbridge.clone()));
            all.extend(answer.restarts.iter().map(|r| r.webbridge.clone()));
            all.extend(answer.decisions.iter().map(|d| d.webbridge.clone()));
            all.sort();
            all.dedup();
            all
        };
        let everyone = read(history::Scope::Everyone);
        assert_eq!(names(&everyone), ["cms1", "cms10", "cms2"]);
        let two = read(hosts(&["cms1", "cms2"]));
        assert_eq!(names(&two), ["cms1", "cms2"]);
        assert_eq!((two.restarts.len(), two.decisions.len()), (2, 2));
        assert!(two.bucket_ms < everyone.bucket_ms, "the span is theirs: {} vs {}", two.bucket_ms, everyone.bucket_ms);
        assert!(names(&read(hosts(&["nobody"]))).is_empty());
        // By the index, not a scan of every host's rows.
        let plan: String = store
            .connection
            .query_row(
                "EXPLAIN QUERY PLAN SELECT time_ms FROM samples WHERE host = 'cms1' AND kind = 'webbridge' \
                 AND time_ms >= 0 ORDER BY time_ms",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("PRIMARY KEY") && !plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn a_clusters_chart_sums_its_call_bridges_cma_carrying_each_forward() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let cma = |minute, host: &str, current| Sample {
            time: at(minute),
            host: host.into(),
            kind: "callbridge",
            active: None,
            cma_current: Some(current),
            cma_peak: Some(current + 1),
        };
        let sessions = |minute, host: &str| Sample { kind: "webbridge", active: Some(20), ..cma(minute, host, 0) };
        store
            .record(
                &[cma(0, "cms1", 3), cma(5, "cms2", 4), cma(10, "cms1", 5), sessions(0, "cms1"), sessions(10, "cms9")],
                &[],
            )
            .unwrap();
        let scope = history::Scope::Cluster {
            name: "eu".into(),
            webbridges: vec!["cms1".into()],
            callbridges: vec!["cms1".into(), "cms2".into()],
        };
        let chart = store.history(&history::Query { scope, points: 11, ..history::Query::new(at(0), at(20)) }).unwrap();
        let series: Vec<(&str, &str)> = chart.samples.iter().map(|s| (s.host.as_str(), s.kind)).collect();
        assert_eq!(series, [("cms1", "webbridge"), ("eu", "cluster")]);
        let total: Vec<Option<i64>> = chart.samples[1].points.iter().map(|p| p.cma_current).collect();
        // cms1's 3 with nothing from cms2 yet; then cms2's 4 on cms1's 3; then 5 + 4.
        assert_eq!(total, [Some(3), Some(7), Some(9)]);
        assert!(chart.estimates.is_empty());
    }

    #[test]
    fn samples_of_a_schema_5_database_survive_the_move_to_host_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let connection = Connection::open(dir.path().join(FILE)).unwrap();
            for migration in &MIGRATIONS[..5] {
                connection.execute_batch(migration).unwrap();
            }
            connection
                .execute_batch(
                    "PRAGMA user_version = 5;
                     INSERT INTO samples (time_ms, host, kind, active) VALUES (1000, 'cms2', 'webbridge', 7);
                     INSERT INTO samples (time_ms, host, kind, cma_current, cma_peak) VALUES (2000, 'cms1', 'callbridge', 3, 4);",
                )
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let rows: Vec<String> = store
            .connection
            .prepare(
                "SELECT host || ' ' || kind || ' ' || time_ms || ' ' || ifnull(active, '-') || ' ' || ifnull(cma_peak, '-') \
                 FROM samples",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, ["cms1 callbridge 2000 - 4", "cms2 webbridge 1000 7 -"]);
    }

    #[test]
    fn pruning_removes_what_is_dated_in_the_future_if_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store.record_decision(at(60), "cms1", "none", "not needed", &serde_json::json!({})).unwrap();
        store.record_decision(at(6000), "cms1", "restart", "forged", &serde_json::json!({})).unwrap();
        assert_eq!(store.prune(at(0), None).unwrap(), 0);
        assert_eq!(store.prune(at(0), Some(at(100))).unwrap(), 1);
        let left: i64 = store.connection.query_row("SELECT count(*) FROM decisions", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 1);
    }
}
