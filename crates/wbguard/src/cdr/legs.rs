//! The live legs: what every call bridge's CDRs say is open now, and
//! whether that can be trusted ("known").
//!
//! Pure state, no I/O: [`Tracker::apply`] takes one parsed body and returns
//! what it changed (a [`CdrChange`] for the store) and how each record
//! counted. The rules, per call bridge (a "source"):
//!
//! - A record is identified by the session and its `recordIndex`. The Call
//!   Bridge sends its records in order and re-sends whatever was not
//!   answered 200, so one high-water mark per session is the whole memory
//!   of what was seen: an index at or below it is a duplicate (O(1) per
//!   call bridge, however long it runs). A body's records are applied in
//!   index order.
//! - An index beyond the mark plus one is a gap: records were lost, so the
//!   count is unknown from then on (until a reconcile). Records from inside
//!   the gap that come later are counted as duplicates: they are older
//!   than what was applied, and the count is unknown anyway.
//! - A new session means the call bridge restarted, and its calls ended
//!   with it: its open legs are forgotten. The count is known again from
//!   the session's first record (`recordIndex` 1); a session first heard
//!   at a later index (the guard missed its start) is unknown. The first
//!   session ever heard from a call bridge is unknown too, even from
//!   record 1 (a receiver added during calls is numbered from 1): it
//!   becomes known through the API (a reconcile) or at its next restart. The last
//!   [`LEFT_SESSIONS`] sessions a call bridge left are remembered, and
//!   records of theirs that arrive late are counted as duplicates (their
//!   calls ended with the restart).
//! - `numPreceedingRecordsMissing` > 0, or a call leg record that cannot
//!   be read, makes the count unknown until a reconcile.
//! - A call bridge never heard from since start, and not restored from the
//!   store, is not in the tracker at all: unknown, never zero.
//! - More than the tracker's leg bound open at one call bridge: the legs
//!   beyond are not kept and the count becomes unknown.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::parse::{LegFields, Malformed, Posted, Record, RecordKind};
use crate::store::cdr::{CdrChange, CdrLegRow, CdrSourceRow};

/// Sessions a call bridge left that are remembered, per call bridge.
pub const LEFT_SESSIONS: usize = 4;

/// What a leg is, as far as the live CMA count goes: the `type` label of
/// `wbguard_callbridge_calls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegKind {
    /// `type` acano, not a distribution link: a CMA client (WebRTC through
    /// a web bridge, desktop, iOS). Counted as CMA.
    Acano,
    /// `type` sip: a SIP endpoint (room systems, phones, Lync, Avaya).
    Sip,
    /// `subType` distributionLink: a leg between clustered call bridges,
    /// not a person.
    DistributionLink,
    /// No `type` was ever given: counted as CMA, since an upper bound must
    /// not undercount.
    Untyped,
    /// A `type` other than acano or sip: counted as CMA, for the same
    /// reason.
    Other,
}

impl LegKind {
    /// Every kind, in label order.
    pub const ALL: [LegKind; 5] =
        [LegKind::Acano, LegKind::Sip, LegKind::DistributionLink, LegKind::Untyped, LegKind::Other];

    /// The kind of a leg with this `type` and `subType`.
    pub fn of(leg_type: Option<&str>, sub_type: Option<&str>) -> LegKind {
        if sub_type.is_some_and(|s| s.eq_ignore_ascii_case("distributionLink")) {
            return LegKind::DistributionLink;
        }
        match leg_type {
            None => LegKind::Untyped,
            Some(t) if t.eq_ignore_ascii_case("acano") => LegKind::Acano,
            Some(t) if t.eq_ignore_ascii_case("sip") => LegKind::Sip,
            Some(_) => LegKind::Other,
        }
    }

    /// Whether it counts in the live CMA calls (a restart of a web bridge
    /// may drop it).
    pub fn is_cma(self) -> bool {
        matches!(self, LegKind::Acano | LegKind::Untyped | LegKind::Other)
    }

    /// The label value (and the name stored).
    pub fn as_str(self) -> &'static str {
        match self {
            LegKind::Acano => "acano",
            LegKind::Sip => "sip",
            LegKind::DistributionLink => "distribution_link",
            LegKind::Untyped => "untyped",
            LegKind::Other => "other",
        }
    }

    /// The kind of a stored name (an unknown name counts as CMA).
    pub fn from_name(name: &str) -> LegKind {
        LegKind::ALL.into_iter().find(|k| k.as_str() == name).unwrap_or(LegKind::Other)
    }
}

/// An open leg, as a reconcile gives it (what the call bridge's API lists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenLeg {
    /// The leg's id.
    pub id: String,
    /// Its kind.
    pub kind: LegKind,
    /// The call it is in, when known.
    pub call: Option<String>,
    /// A WebRTC guest (`guestConnection`).
    pub guest: bool,
}

/// One call bridge as the status shows it (`/api/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrCallBridge {
    /// Its name: the configured server's log host, or the sender's address
    /// without a configuration.
    pub callbridge: String,
    /// Whether its count can be trusted.
    pub known: bool,
    /// Why not, when not.
    pub unknown_reason: Option<String>,
    /// Live CMA legs tracked (acano, untyped and other kinds; not
    /// distribution links). Only meaningful when `known`.
    pub cma_calls: u32,
    /// Live legs tracked by kind (`acano`, `sip`, `distribution_link`,
    /// `untyped`, `other`).
    pub calls: BTreeMap<LegKind, u32>,
    /// Its current session.
    pub session: Option<String>,
    /// The highest record index applied in it.
    pub record_index: u64,
    /// When it last posted (guard's clock).
    pub last_post: Option<DateTime<Utc>>,
    /// When its legs were last replaced by what its API listed.
    pub reconciled: Option<DateTime<Utc>>,
}

/// An open leg, inside the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Leg {
    kind: LegKind,
    call: Option<String>,
    guest: bool,
    /// Its `callLegStart`'s time; `None` when its start was missed (or it
    /// came from the API's list).
    started: Option<DateTime<Utc>>,
}

/// One call bridge, inside the tracker.
#[derive(Debug, Default)]
struct Source {
    session: Option<String>,
    high_water: u64,
    unknown: Option<String>,
    last_post: Option<DateTime<Utc>>,
    reconciled: Option<DateTime<Utc>>,
    callbridge_id: Option<String>,
    legs: HashMap<String, Leg>,
    /// Sessions it left, latest last (at most [`LEFT_SESSIONS`]).
    left: VecDeque<String>,
    /// Its stored state lags: the next write replaces it whole.
    dirty: bool,
}

impl Source {
    /// Makes the count unknown (the first reason is kept and logged).
    fn lose(&mut self, name: &str, why: String) {
        if self.unknown.is_none() {
            tracing::warn!("CDR from {name}: its live calls are unknown until a reconcile: {why}");
            self.unknown = Some(why);
        }
    }

    fn row(&self, name: &str) -> CdrSourceRow {
        CdrSourceRow {
            source: name.to_owned(),
            session: self.session.clone(),
            high_water: self.high_water,
            unknown: self.unknown.clone(),
            last_post: self.last_post,
            reconciled: self.reconciled,
            callbridge_id: self.callbridge_id.clone(),
        }
    }

    fn leg_rows(&self) -> Vec<CdrLegRow> {
        self.legs.iter().map(|(id, leg)| leg_row(id, leg)).collect()
    }

    fn cma(&self) -> u32 {
        self.legs.values().filter(|leg| leg.kind.is_cma()).count() as u32
    }

    /// When the count was last known right: its last post or reconcile.
    fn as_of(&self) -> Option<DateTime<Utc>> {
        self.last_post.max(self.reconciled)
    }
}

fn leg_row(id: &str, leg: &Leg) -> CdrLegRow {
    CdrLegRow {
        leg: id.to_owned(),
        kind: leg.kind.as_str().to_owned(),
        call: leg.call.clone(),
        guest: leg.guest,
        started: leg.started,
    }
}

/// How one body's records counted, and what it changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Records applied (no-ops included: unknown types, ends of unknown legs).
    pub applied: u64,
    /// Records seen before (or of a session the call bridge left).
    pub duplicate: u64,
    /// Records that could not be read.
    pub malformed: u64,
    /// What the store must write.
    pub change: CdrChange,
}

/// Why a body was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A new call bridge beyond the bound (open mode).
    #[error("already tracking {0} call bridges, the most allowed")]
    TooManySources(usize),
}

/// Every call bridge's live legs.
#[derive(Debug)]
pub struct Tracker {
    sources: BTreeMap<String, Source>,
    /// Call bridges tracked, at most.
    max_sources: usize,
    /// Open legs per call bridge, at most.
    max_legs: usize,
}

/// One entry of a body, in index order: a record, or one that could not be
/// read.
enum Entry {
    Good(Record),
    Bad(Malformed),
}

impl Tracker {
    /// An empty tracker with these bounds.
    pub fn new(max_sources: usize, max_legs: usize) -> Tracker {
        Tracker { sources: BTreeMap::new(), max_sources, max_legs }
    }

    /// Changes the bound on call bridges tracked (those beyond are kept).
    pub fn set_max_sources(&mut self, max_sources: usize) {
        self.max_sources = max_sources;
    }

    /// Applies one body from `name` received at `now`.
    pub fn apply(&mut self, name: &str, posted: Posted, now: DateTime<Utc>) -> Result<Outcome, Refused> {
        if !self.sources.contains_key(name) && self.sources.len() >= self.max_sources {
            return Err(Refused::TooManySources(self.max_sources));
        }
        let max_legs = self.max_legs;
        let source = self.sources.entry(name.to_owned()).or_default();
        let mut outcome = Outcome::default();
        // Each leg changed, once: its row (opened or changed) or None (closed).
        let mut legs: BTreeMap<String, Option<CdrLegRow>> = BTreeMap::new();
        let Posted { session, callbridge_id, records, malformed } = posted;
        source.last_post = Some(now);
        if callbridge_id.is_some() {
            source.callbridge_id = callbridge_id;
        }
        let mut entries: Vec<(u64, Entry)> = records.into_iter().map(|r| (r.index, Entry::Good(r))).collect();
        for bad in malformed {
            outcome.malformed += 1;
            match bad.index {
                Some(index) => entries.push((index, Entry::Bad(bad))),
                None if bad.leg => source.lose(name, format!("a call leg record could not be read: {}", bad.why)),
                None => {}
            }
        }
        entries.sort_by_key(|(index, _)| *index);
        if source.left.contains(&session) {
            outcome.duplicate += entries.iter().filter(|(_, e)| matches!(e, Entry::Good(_))).count() as u64;
            outcome.change.row = source.row(name);
            return Ok(outcome);
        }
        if source.session.as_deref() != Some(session.as_str()) {
            if source.session.is_none() && source.reconciled.is_some() {
                // Known through the API before its first post: the session is
                // adopted and the legs the API listed kept; the stored legs
                // take the session's name at the next write.
                source.session = Some(session.clone());
                source.high_water = 0;
                source.dirty = true;
            } else {
                let first = entries.first().map(|(index, _)| *index);
                if let Some(left) = source.session.replace(session.clone()) {
                    tracing::info!(
                        "CDR from {name}: new session {session} (the call bridge restarted): its {} open legs are forgotten",
                        source.legs.len()
                    );
                    source.left.push_back(left);
                    if source.left.len() > LEFT_SESSIONS {
                        source.left.pop_front();
                    }
                }
                // The first session heard from a call bridge may have begun
                // long before its receiver was added (CMS numbers a new
                // receiver's records from 1 too): legs opened before are not
                // known, so neither is the count, until the API lists them or
                // the call bridge restarts (a new session: its calls ended).
                let restarted = !source.left.is_empty();
                source.legs.clear();
                source.high_water = 0;
                outcome.change.reset = true;
                source.unknown = None;
                match first {
                    Some(1) if restarted => {}
                    Some(1) => source.lose(
                        name,
                        format!(
                            "session {session} is the first heard from it: calls that began before its CDRs reach the guard are not known until its API lists them or it restarts"
                        ),
                    ),
                    Some(index) => source.lose(
                        name,
                        format!(
                            "session {session} was first heard at record {index}: legs opened before are not known"
                        ),
                    ),
                    None => source.lose(name, format!("session {session} was first heard without a record")),
                }
            }
        }
        for (index, entry) in entries {
            if index <= source.high_water {
                if let Entry::Good(_) = entry {
                    outcome.duplicate += 1;
                }
                continue;
            }
            if source.high_water > 0 && index > source.high_water + 1 {
                let why = format!("records {} to {} of session {session} never came", source.high_water + 1, index - 1);
                source.lose(name, why);
            }
            source.high_water = index;
            let record = match entry {
                Entry::Good(record) => record,
                Entry::Bad(bad) => {
                    if bad.leg {
                        source.lose(name, format!("call leg record {index} could not be read: {}", bad.why));
                    }
                    continue;
                }
            };
            if record.missing_before > 0 {
                let why = format!("the call bridge lost {} records before record {index}", record.missing_before);
                source.lose(name, why);
            }
            outcome.applied += 1;
            let Some(fields) = record.leg else { continue };
            match record.kind {
                RecordKind::LegStart | RecordKind::LegUpdate => {
                    let LegFields { id, leg_type, sub_type, guest, call } = fields;
                    let typed = leg_type.is_some() || sub_type.is_some();
                    let kind = LegKind::of(leg_type.as_deref(), sub_type.as_deref());
                    let full = source.legs.len() >= max_legs;
                    let leg = if let Some(leg) = source.legs.get_mut(&id) {
                        if typed {
                            leg.kind = kind;
                        }
                        if call.is_some() {
                            leg.call = call;
                        }
                        if let Some(guest) = guest {
                            leg.guest = guest;
                        }
                        leg.clone()
                    } else if full {
                        source.lose(name, format!("more than {max_legs} legs open at once"));
                        continue;
                    } else {
                        // A leg opened here, or an update of a leg whose
                        // start was missed: open either way, so as not to
                        // undercount.
                        let started = record.time.filter(|_| record.kind == RecordKind::LegStart);
                        let leg = Leg { kind, call, guest: guest.unwrap_or(false), started };
                        source.legs.insert(id.clone(), leg.clone());
                        leg
                    };
                    legs.insert(id.clone(), Some(leg_row(&id, &leg)));
                }
                RecordKind::LegEnd => {
                    // The end of a leg never seen open changes nothing.
                    if source.legs.remove(&fields.id).is_some() {
                        legs.insert(fields.id, None);
                    }
                }
                RecordKind::Other => {}
            }
        }
        for (id, row) in legs {
            match row {
                Some(row) => outcome.change.upsert.push(row),
                None => outcome.change.remove.push(id),
            }
        }
        outcome.change.row = source.row(name);
        Ok(outcome)
    }

    /// Replaces `name`'s open legs with what its API listed at `at`: its
    /// count is known again. False when it is a new call bridge beyond
    /// the bound.
    pub fn reconcile(&mut self, name: &str, legs: Vec<OpenLeg>, at: DateTime<Utc>) -> bool {
        if !self.sources.contains_key(name) && self.sources.len() >= self.max_sources {
            return false;
        }
        if let Some(source) = self.sources.get(name) {
            // Known from its CDRs: they are right, and the API's list may
            // already be old. A post applied while the API was asked may be
            // missing from the list (or ended a leg it still shows): the
            // count stays unknown, and the API is asked again.
            if source.unknown.is_none() || source.last_post.is_some_and(|post| post > at) {
                return true;
            }
        }
        let max_legs = self.max_legs;
        let source = self.sources.entry(name.to_owned()).or_default();
        let listed = legs.len();
        // A leg the CDRs saw begin keeps its start; the API's list gives none.
        let mut before = std::mem::take(&mut source.legs);
        source.legs = legs
            .into_iter()
            .take(max_legs)
            .map(|leg| {
                let started = before.remove(&leg.id).and_then(|known| known.started);
                (leg.id, Leg { kind: leg.kind, call: leg.call, guest: leg.guest, started })
            })
            .collect();
        source.unknown = None;
        if listed > max_legs {
            source.lose(name, format!("its API listed {listed} legs, more than {max_legs}"));
        }
        source.reconciled = Some(at);
        source.dirty = true;
        true
    }

    /// The call bridges as stored at the last run: known if they were.
    pub fn restore(&mut self, stored: Vec<(CdrSourceRow, Vec<CdrLegRow>)>) {
        for (row, legs) in stored {
            let legs = legs
                .into_iter()
                .take(self.max_legs)
                .map(|leg| {
                    let kind = LegKind::from_name(&leg.kind);
                    (leg.leg, Leg { kind, call: leg.call, guest: leg.guest, started: leg.started })
                })
                .collect();
            let source = Source {
                session: row.session,
                high_water: row.high_water,
                unknown: row.unknown,
                last_post: row.last_post,
                reconciled: row.reconciled,
                callbridge_id: row.callbridge_id,
                legs,
                left: VecDeque::new(),
                dirty: false,
            };
            self.sources.insert(row.source, source);
        }
    }

    /// If `name`'s stored state lags, its whole state (and it no longer
    /// lags: the caller writes it).
    pub fn take_dirty(&mut self, name: &str) -> Option<(CdrSourceRow, Vec<CdrLegRow>)> {
        let source = self.sources.get_mut(name).filter(|s| s.dirty)?;
        source.dirty = false;
        Some((source.row(name), source.leg_rows()))
    }

    /// Marks `name`'s stored state as lagging (a write failed or was not
    /// queued): the next write replaces it whole.
    pub fn mark_dirty(&mut self, name: &str) {
        if let Some(source) = self.sources.get_mut(name) {
            source.dirty = true;
        }
    }

    /// The live CMA legs of the call bridges `expected` and the oldest of
    /// their last posts or reconciles, when every one is known.
    pub fn cluster_cma(&self, expected: &[String]) -> Option<(u32, DateTime<Utc>)> {
        if expected.is_empty() {
            return None;
        }
        let mut cma = 0u32;
        let mut as_of: Option<DateTime<Utc>> = None;
        for name in expected {
            let source = self.sources.get(&name.to_lowercase())?;
            if source.unknown.is_some() {
                return None;
            }
            cma = cma.saturating_add(source.cma());
            let at = source.as_of()?;
            as_of = Some(as_of.map_or(at, |earliest| earliest.min(at)));
        }
        Some((cma, as_of?))
    }

    /// When each live CMA leg of the call bridges `expected` began, when
    /// their count is known ([`Tracker::cluster_cma`]) and every start was
    /// seen.
    pub fn cluster_starts(&self, expected: &[String]) -> Option<Vec<DateTime<Utc>>> {
        self.cluster_cma(expected)?;
        let mut starts = Vec::new();
        for name in expected {
            let source = self.sources.get(&name.to_lowercase())?;
            for leg in source.legs.values().filter(|leg| leg.kind.is_cma()) {
                starts.push(leg.started?);
            }
        }
        Some(starts)
    }

    /// When each live CMA leg whose start was seen began, by leg id, on
    /// every call bridge tracked.
    pub fn cma_starts(&self) -> HashMap<String, DateTime<Utc>> {
        let legs = self.sources.values().flat_map(|source| source.legs.iter());
        legs.filter(|(_, leg)| leg.kind.is_cma()).filter_map(|(id, leg)| Some((id.clone(), leg.started?))).collect()
    }

    /// Every call bridge tracked, by name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    /// Every call bridge tracked, by name, with its counts.
    pub fn callbridges(&self) -> Vec<CdrCallBridge> {
        self.sources
            .iter()
            .map(|(name, source)| {
                let mut calls: BTreeMap<LegKind, u32> = LegKind::ALL.iter().map(|&k| (k, 0)).collect();
                for leg in source.legs.values() {
                    *calls.entry(leg.kind).or_default() += 1;
                }
                CdrCallBridge {
                    callbridge: name.clone(),
                    known: source.unknown.is_none(),
                    unknown_reason: source.unknown.clone(),
                    cma_calls: source.cma(),
                    calls,
                    session: source.session.clone(),
                    record_index: source.high_water,
                    last_post: source.last_post,
                    reconciled: source.reconciled,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::parse::parse;

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_760_000_000 + second, 0).unwrap()
    }

    /// A body of `records` (each `(index, type, inner XML)`) in `session`.
    fn body(session: &str, records: &[(u64, &str, &str)]) -> Posted {
        let mut xml = format!("<records session=\"{session}\">");
        for (index, kind, inner) in records {
            xml.push_str(&format!(
                "<record type=\"{kind}\" recordIndex=\"{index}\" correlatorIndex=\"0\">{inner}</record>"
            ));
        }
        xml.push_str("</records>");
        parse(xml.as_bytes()).unwrap()
    }

    fn start(id: &str, kind: &str) -> String {
        format!("<callLeg id=\"{id}\">{kind}</callLeg>")
    }

    fn cma(tracker: &Tracker, name: &str) -> Option<u32> {
        tracker.cluster_cma(&[name.to_owned()]).map(|(cma, _)| cma)
    }

    #[test]
    fn legs_open_and_close_by_kind() {
        let mut tracker = Tracker::new(10, 100);
        // Known from the start: its API listed no leg before its first post.
        tracker.reconcile("cms1", Vec::new(), at(0));
        let acano = start("a", "<type>acano</type>");
        let sip = start("s", "<type>sip</type>");
        let link = start("d", "<type>acano</type><subType>distributionLink</subType>");
        let untyped = start("u", "");
        let outcome = tracker
            .apply(
                "cms1",
                body("s1", &[(1, "callStart", ""), (2, "callLegStart", &acano), (3, "callLegStart", &sip)]),
                at(0),
            )
            .unwrap();
        assert_eq!((outcome.applied, outcome.duplicate, outcome.malformed), (3, 0, 0));
        assert!(!outcome.change.reset, "the reconciled call bridge's first session is adopted");
        assert_eq!(outcome.change.upsert.len(), 2);
        tracker.apply("cms1", body("s1", &[(4, "callLegStart", &link), (5, "callLegStart", &untyped)]), at(1)).unwrap();
        assert_eq!(cma(&tracker, "cms1"), Some(2), "acano and untyped count, sip and the link do not");
        let view = &tracker.callbridges()[0];
        let calls: Vec<u32> = LegKind::ALL.iter().map(|k| view.calls[k]).collect();
        assert_eq!(calls, [1, 1, 1, 1, 0]);
        let end = tracker
            .apply(
                "cms1",
                body("s1", &[(6, "callLegEnd", &start("a", "")), (7, "callLegEnd", &start("never-seen", ""))]),
                at(2),
            )
            .unwrap();
        assert_eq!(end.applied, 2);
        assert_eq!(end.change.remove, vec!["a".to_owned()]);
        assert_eq!(cma(&tracker, "cms1"), Some(1));
        assert_eq!(tracker.cluster_cma(&["CMS1".to_owned()]).unwrap().1, at(2));
    }

    #[test]
    fn duplicates_are_ignored_and_counted() {
        let mut tracker = Tracker::new(10, 100);
        // Known from the start: its API listed no leg before its first post.
        tracker.reconcile("cms1", Vec::new(), at(0));
        let batch = || body("s1", &[(1, "callLegStart", &start("a", "<type>acano</type>"))]);
        tracker.apply("cms1", batch(), at(0)).unwrap();
        let again = tracker.apply("cms1", batch(), at(1)).unwrap();
        assert_eq!((again.applied, again.duplicate), (0, 1));
        // Out of order inside one body: applied in index order.
        let mixed = body(
            "s1",
            &[
                (3, "callLegEnd", &start("b", "")),
                (1, "callLegStart", &start("a", "")),
                (2, "callLegStart", &start("b", "")),
            ],
        );
        let outcome = tracker.apply("cms1", mixed, at(2)).unwrap();
        assert_eq!((outcome.applied, outcome.duplicate), (2, 1));
        assert_eq!(cma(&tracker, "cms1"), Some(1));
        assert_eq!(outcome.change.remove, vec!["b".to_owned()]);
        assert!(outcome.change.upsert.is_empty(), "b opened and closed in one body: nothing to store");
    }

    #[test]
    fn the_first_session_heard_is_unknown_even_from_its_first_record_until_a_restart() {
        let mut tracker = Tracker::new(10, 100);
        let leg = start("a", "<type>acano</type>");
        tracker.apply("cms1", body("s1", &[(1, "callLegStart", &leg)]), at(0)).unwrap();
        // A receiver added during calls is numbered from 1 too.
        assert_eq!(cma(&tracker, "cms1"), None);
        assert!(tracker.callbridges()[0].unknown_reason.as_deref().unwrap().contains("first heard"));
        // Its restart ended every call: from the new session on, it is known.
        tracker.apply("cms1", body("s2", &[(1, "callStart", "")]), at(1)).unwrap();
        assert_eq!(cma(&tracker, "cms1"), Some(0));
    }

    #[test]
    fn the_api_list_never_overrides_cdrs_that_know_better() {
        let mut tracker = Tracker::new(10, 100);
        tracker.reconcile("cms1", Vec::new(), at(0));
        let leg = start("a", "<type>acano</type>");
        tracker.apply("cms1", body("s1", &[(1, "callLegStart", &leg)]), at(5)).unwrap();
        // Known from its CDRs: a list taken before the leg began changes nothing.
        tracker.reconcile("cms1", Vec::new(), at(4));
        assert_eq!(cma(&tracker, "cms1"), Some(1));
        // Unknown, and a post came while the API was asked: still unknown.
        tracker.apply("cms1", body("s1", &[(3, "callLegEnd", &start("a", ""))]), at(6)).unwrap();
        assert_eq!(cma(&tracker, "cms1"), None, "record 2 never came");
        tracker.reconcile("cms1", Vec::new(), at(5));
        assert_eq!(cma(&tracker, "cms1"), None);
        // A list asked after the last post makes it known.
        tracker.reconcile("cms1", Vec::new(), at(7));
        assert_eq!(cma(&tracker, "cms1"), Some(0));
    }

    #[test]
    fn a_new_session_forgets_the_legs_and_late_records_of_the_old_one_are_ignored() {
        let mut tracker = Tracker::new(10, 100);
        tracker.apply("cms1", body("s1", &[(1, "callLegStart", &start("a", "<type>acano</type>"))]), at(0)).unwrap();
        let restarted =
            tracker.apply("cms1", body("s2", &[(1, "callLegStart", &start("b", "<type>sip</type>"))]), at(1)).unwrap();
        assert!(restarted.change.reset);
        assert_eq!(cma(&tracker, "cms1"), Some(0));
        let late = tracker.apply("cms1", body("s1", &[(2, "callLegStart", &start("c", ""))]), at(2)).unwrap();
        assert_eq!((late.applied, late.duplicate), (0, 1));
        assert_eq!(cma(&tracker, "cms1"), Some(0));
        // A session first heard in its middle: legs opened before are not known.
        tracker.apply("cms1", body("s3", &[(7, "callStart", "")]), at(3)).unwrap();
        assert_eq!(cma(&tracker, "cms1"), None);
        assert!(tracker.callbridges()[0].unknown_reason.as_deref().unwrap().contains("first heard at record 7"));
    }

    #[test]
    fn lost_records_make_the_count_unknown_until_a_reconcile() {
        let mut tracker = Tracker::new(10, 100);
        tracker.apply("cms1", body("s1", &[(1, "callLegStart", &start("a", "<type>acano</type>"))]), at(0)).unwrap();
        let missing = r#"<records session="s1"><record type="callStart" recordIndex="2" numPreceedingRecordsMissing="3"/></records>"#;
        tracker.apply("cms1", parse(missing.as_bytes()).unwrap(), at(1)).unwrap();
        assert_eq!(cma(&tracker, "cms1"), None);
        assert!(tracker.cluster_cma(&["cms1".into(), "cms2".into()]).is_none());
        let legs = vec![OpenLeg { id: "x".into(), kind: LegKind::Acano, call: None, guest: true }];
        assert!(tracker.reconcile("cms1", legs, at(2)));
        assert_eq!(tracker.cluster_cma(&["cms1".into()]), Some((1, at(2))));
        assert_eq!(tracker.take_dirty("cms1").map(|(_, legs)| legs.len()), Some(1));
        assert_eq!(tracker.take_dirty("cms1"), None);
        // A gap in the indices is a loss too.
        tracker.apply("cms1", body("s1", &[(5, "callStart", "")]), at(3)).unwrap();
        assert!(tracker.callbridges()[0].unknown_reason.as_deref().unwrap().contains("records 3 to 4"));
        // A call leg record that cannot be read is a loss as well.
        tracker.reconcile("cms1", Vec::new(), at(4));
        let unreadable =
            r#"<records session="s1"><record type="callLegStart" recordIndex="6"><callLeg/></record></records>"#;
        let outcome = tracker.apply("cms1", parse(unreadable.as_bytes()).unwrap(), at(5)).unwrap();
        assert_eq!((outcome.applied, outcome.malformed), (0, 1));
        assert_eq!(cma(&tracker, "cms1"), None);
    }

    #[test]
    fn a_reconcile_before_any_post_is_kept_when_the_session_is_first_heard() {
        let mut tracker = Tracker::new(10, 100);
        assert_eq!(cma(&tracker, "cms1"), None, "never heard of: unknown, not zero");
        let legs = vec![OpenLeg { id: "x".into(), kind: LegKind::Acano, call: None, guest: false }];
        tracker.reconcile("cms1", legs, at(0));
        tracker.apply("cms1", body("s9", &[(40, "callLegStart", &start("y", "<type>acano</type>"))]), at(1)).unwrap();
        assert_eq!(cma(&tracker, "cms1"), Some(2));
    }

    #[test]
    fn bounds_hold() {
        let mut tracker = Tracker::new(1, 2);
        let three = body(
            "s1",
            &[
                (1, "callLegStart", &start("a", "")),
                (2, "callLegStart", &start("b", "")),
                (3, "callLegStart", &start("c", "")),
            ],
        );
        tracker.apply("cms1", three, at(0)).unwrap();
        assert_eq!(cma(&tracker, "cms1"), None);
        assert_eq!(tracker.callbridges()[0].calls[&LegKind::Untyped], 2);
        assert_eq!(tracker.apply("cms2", body("s1", &[]), at(0)), Err(Refused::TooManySources(1)));
    }

    #[test]
    fn restored_state_is_known_as_stored() {
        let mut tracker = Tracker::new(10, 100);
        // Known from the start: its API listed no leg before its first post.
        tracker.reconcile("cms1", Vec::new(), at(0));
        tracker.apply("cms1", body("s1", &[(1, "callLegStart", &start("a", "<type>acano</type>"))]), at(0)).unwrap();
        let mut stored = Vec::new();
        for view in tracker.callbridges() {
            let source = &tracker.sources[&view.callbridge];
            stored.push((source.row(&view.callbridge), source.leg_rows()));
        }
        let mut restored = Tracker::new(10, 100);
        restored.restore(stored);
        assert_eq!(cma(&restored, "cms1"), Some(1));
        let again = restored
            .apply("cms1", body("s1", &[(1, "callLegStart", &start("a", "<type>acano</type>"))]), at(1))
            .unwrap();
        assert_eq!(again.duplicate, 1);
    }

    #[test]
    fn the_start_of_each_cma_leg_is_known_only_when_every_one_was_seen_to_begin() {
        let mut tracker = Tracker::new(10, 100);
        tracker.reconcile("cms1", Vec::new(), at(0));
        let timed = |index: u64, kind: &str, inner: &str, time: &str| {
            let xml = format!(
                "<records session=\"s1\"><record type=\"{kind}\" time=\"{time}\" recordIndex=\"{index}\" \
                 correlatorIndex=\"0\">{inner}</record></records>"
            );
            parse(xml.as_bytes()).unwrap()
        };
        let acano = start("a", "<type>acano</type>");
        tracker.apply("cms1", timed(1, "callLegStart", &acano, "2026-03-02T22:05:00Z"), at(1)).unwrap();
        // A SIP leg is no CMA call: its start does not matter.
        tracker
            .apply("cms1", timed(2, "callLegStart", &start("s", "<type>sip</type>"), "2026-03-02T22:06:00Z"), at(2))
            .unwrap();
        let began = "2026-03-02T22:05:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(tracker.cluster_starts(&["cms1".into()]), Some(vec![began]));
        // An update of a leg whose start was missed: open, start unknown.
        tracker
            .apply("cms1", timed(3, "callLegUpdate", &start("b", "<type>acano</type>"), "2026-03-02T22:07:00Z"), at(3))
            .unwrap();
        assert_eq!((cma(&tracker, "cms1"), tracker.cluster_starts(&["cms1".into()])), (Some(2), None));
    }
}
