//! The CDR receiver's open legs in the history file, so that they survive
//! a restart of the guard: one row per call bridge (its session, the
//! highest record index applied, whether its count is known and why not),
//! one row per open leg. Written by the receiver's own writer thread (see
//! `crate::cdr`), each batch in one transaction before the Call Bridge is
//! answered 200; read once at start.
//!
//! A leg row carries the session it was opened in; a call bridge's legs
//! are keyed by its name and the leg id (a leg id is a GUID, unique across
//! sessions), and a new session deletes them all.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{ms, time, Store};

/// One call bridge as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CdrSourceRow {
    /// Its name: the configured server's log host (lower case), or the
    /// sender's address without a configuration.
    pub source: String,
    /// Its current session (none: known only through a reconcile so far).
    pub session: Option<String>,
    /// The highest `recordIndex` applied in that session.
    pub high_water: u64,
    /// Why its count is not known (none: known).
    pub unknown: Option<String>,
    /// When it last posted (guard's clock).
    pub last_post: Option<DateTime<Utc>>,
    /// When its legs were last replaced by what its API listed.
    pub reconciled: Option<DateTime<Utc>>,
    /// The `callBridge` attribute of its posts (clusters only).
    pub callbridge_id: Option<String>,
}

/// One open leg as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrLegRow {
    /// The leg's id.
    pub leg: String,
    /// Its kind's name (`acano`, `sip`, `distribution_link`, `untyped`, `other`).
    pub kind: String,
    /// The call it is in, when known.
    pub call: Option<String>,
    /// A WebRTC guest.
    pub guest: bool,
    /// When it began (its `callLegStart`'s time), when seen.
    pub started: Option<DateTime<Utc>>,
}

/// What one batch changed for one call bridge.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CdrChange {
    /// The call bridge's row as it is now.
    pub row: CdrSourceRow,
    /// A new session: every leg stored for it goes first.
    pub reset: bool,
    /// Legs opened or changed.
    pub upsert: Vec<CdrLegRow>,
    /// Legs closed (ids).
    pub remove: Vec<String>,
}

/// The schema, applied by the store's migrations.
pub(super) const SCHEMA: &str = "CREATE TABLE cdr_sources (
        source TEXT PRIMARY KEY, session TEXT, high_water INTEGER NOT NULL, unknown TEXT,
        last_post_ms INTEGER, reconciled_ms INTEGER, callbridge_id TEXT
     ) STRICT;
     CREATE TABLE cdr_legs (
        source TEXT NOT NULL, session TEXT NOT NULL, leg TEXT NOT NULL, kind TEXT NOT NULL,
        call TEXT, guest INTEGER NOT NULL,
        PRIMARY KEY (source, leg)
     ) STRICT;";

fn upsert_row(transaction: &rusqlite::Transaction<'_>, row: &CdrSourceRow) -> rusqlite::Result<()> {
    transaction
        .prepare_cached(
            "INSERT INTO cdr_sources (source, session, high_water, unknown, last_post_ms, reconciled_ms, callbridge_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (source) DO UPDATE SET session = ?2, high_water = ?3, unknown = ?4, last_post_ms = ?5, \
             reconciled_ms = ?6, callbridge_id = ?7",
        )?
        .execute(params![
            row.source,
            row.session,
            i64::try_from(row.high_water).unwrap_or(i64::MAX),
            row.unknown,
            row.last_post.map(ms),
            row.reconciled.map(ms),
            row.callbridge_id
        ])?;
    Ok(())
}

fn insert_legs(
    transaction: &rusqlite::Transaction<'_>,
    row: &CdrSourceRow,
    legs: &[CdrLegRow],
) -> rusqlite::Result<()> {
    let mut insert = transaction.prepare_cached(
        "INSERT INTO cdr_legs (source, session, leg, kind, call, guest, started_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (source, leg) DO UPDATE SET session = ?2, kind = ?4, call = ?5, guest = ?6, started_ms = ?7",
    )?;
    let session = row.session.as_deref().unwrap_or("");
    for leg in legs {
        let started = leg.started.map(|t| t.timestamp_millis());
        insert.execute(params![row.source, session, leg.leg, leg.kind, leg.call, leg.guest, started])?;
    }
    Ok(())
}

impl Store {
    /// Writes one batch's change in one transaction (durable when it
    /// returns: WAL with `synchronous = FULL`).
    pub fn cdr_apply(&mut self, change: &CdrChange) -> anyhow::Result<()> {
        let transaction = self.connection.transaction()?;
        if change.reset {
            transaction.execute("DELETE FROM cdr_legs WHERE source = ?1", params![change.row.source])?;
        }
        upsert_row(&transaction, &change.row)?;
        {
            let mut delete = transaction.prepare_cached("DELETE FROM cdr_legs WHERE source = ?1 AND leg = ?2")?;
            for leg in &change.remove {
                delete.execute(params![change.row.source, leg])?;
            }
        }
        insert_legs(&transaction, &change.row, &change.upsert)?;
        transaction.commit()?;
        Ok(())
    }

    /// Replaces everything stored for one call bridge (after a reconcile,
    /// or when an earlier write failed).
    pub fn cdr_replace(&mut self, row: &CdrSourceRow, legs: &[CdrLegRow]) -> anyhow::Result<()> {
        let transaction = self.connection.transaction()?;
        transaction.execute("DELETE FROM cdr_legs WHERE source = ?1", params![row.source])?;
        upsert_row(&transaction, row)?;
        insert_legs(&transaction, row, legs)?;
        transaction.commit()?;
        Ok(())
    }

    /// Every call bridge stored, with its open legs.
    pub fn cdr_load(&self) -> anyhow::Result<Vec<(CdrSourceRow, Vec<CdrLegRow>)>> {
        let mut sources = self.connection.prepare(
            "SELECT source, session, high_water, unknown, last_post_ms, reconciled_ms, callbridge_id FROM cdr_sources ORDER BY source",
        )?;
        let rows = sources
            .query_map([], |row| {
                Ok(CdrSourceRow {
                    source: row.get(0)?,
                    session: row.get(1)?,
                    high_water: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                    unknown: row.get(3)?,
                    last_post: row.get::<_, Option<i64>>(4)?.map(time),
                    reconciled: row.get::<_, Option<i64>>(5)?.map(time),
                    callbridge_id: row.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut legs =
            self.connection.prepare("SELECT leg, kind, call, guest, started_ms FROM cdr_legs WHERE source = ?1")?;
        let mut loaded = Vec::with_capacity(rows.len());
        for row in rows {
            let open = legs
                .query_map(params![row.source], |leg| {
                    Ok(CdrLegRow {
                        leg: leg.get(0)?,
                        kind: leg.get(1)?,
                        call: leg.get(2)?,
                        guest: leg.get(3)?,
                        started: leg.get::<_, Option<i64>>(4)?.map(time),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            loaded.push((row, open));
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_760_000_000 + second, 0).unwrap()
    }

    fn leg(id: &str, kind: &str) -> CdrLegRow {
        // The start survives the round trip (whole milliseconds).
        CdrLegRow { leg: id.into(), kind: kind.into(), call: Some("c".into()), guest: false, started: Some(at(-60)) }
    }

    #[test]
    fn changes_are_stored_and_read_back_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let row = CdrSourceRow {
            source: "cms1".into(),
            session: Some("s1".into()),
            high_water: 3,
            last_post: Some(at(1)),
            callbridge_id: Some("guid".into()),
            ..CdrSourceRow::default()
        };
        {
            let mut store = Store::open(dir.path()).unwrap();
            store
                .cdr_apply(&CdrChange {
                    row: row.clone(),
                    reset: false,
                    upsert: vec![leg("a", "acano"), leg("b", "sip")],
                    remove: vec![],
                })
                .unwrap();
            let later = CdrSourceRow { high_water: 4, ..row.clone() };
            store.cdr_apply(&CdrChange { row: later, reset: false, upsert: vec![], remove: vec!["b".into()] }).unwrap();
        }
        let mut store = Store::open(dir.path()).unwrap();
        let loaded = store.cdr_load().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0.high_water, 4);
        assert_eq!(loaded[0].0.last_post, Some(at(1)));
        assert_eq!(loaded[0].1, vec![leg("a", "acano")]);
        // A new session forgets the legs of the old one.
        let restarted = CdrSourceRow { session: Some("s2".into()), high_water: 1, ..row.clone() };
        store
            .cdr_apply(&CdrChange { row: restarted, reset: true, upsert: vec![leg("c", "acano")], remove: vec![] })
            .unwrap();
        let loaded = store.cdr_load().unwrap();
        assert_eq!(loaded[0].1, vec![leg("c", "acano")]);
        // A replace writes the whole state.
        let unknown = CdrSourceRow { unknown: Some("records lost".into()), ..row };
        store.cdr_replace(&unknown, &[]).unwrap();
        let loaded = store.cdr_load().unwrap();
        assert_eq!(loaded[0].0.unknown.as_deref(), Some("records lost"));
        assert!(loaded[0].1.is_empty());
    }
}
