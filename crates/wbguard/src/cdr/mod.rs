//! The CDR receiver: each Call Bridge posts its Call Detail Records to the
//! guard (`watch.listen_cdr`, `POST /cdr`), and the guard keeps, in real
//! time, the call legs open on each call bridge. The guard task asks
//! [`LiveLegs::cluster_cma`] at each decision round; the Call Bridge API
//! check replaces a call bridge's legs with what its API lists
//! ([`LiveLegs::reconcile`]).
//!
//! The flow: [`listener`] (HTTP or HTTPS, the allow list, bounds) reads a
//! body, [`parse`] reads its records, [`legs`] applies them (duplicates,
//! sessions, lost records), [`persist`] writes what changed to the history
//! file before the Call Bridge is answered 200, [`metrics`] exports the
//! counts. See `docs/cdr.md`.
//!
//! Invariants: a call bridge is "known" only while every record it sent
//! since its count was last right has been applied; a call bridge never
//! heard from is unknown, never zero; a 200 means applied and durable.

pub mod legs;
pub mod listener;
pub mod metrics;
pub mod parse;
pub mod persist;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use chrono::{DateTime, Utc};
use wbguard_core::model::{CallSource, LiveCalls};

pub use legs::{CdrCallBridge, OpenLeg};
use legs::{Refused, Tracker};
use parse::Posted;

/// Open legs kept per call bridge, at most: a CMS call bridge hosts a few
/// thousand legs at its largest. Beyond, the legs are not kept and that
/// call bridge's count becomes unknown (logged).
pub const MAX_LEGS: usize = 20_000;

/// The live legs of every call bridge, shared by the CDR listeners (which
/// apply posts), the guard task (which reads the cluster's figure and
/// reconciles) and the metrics. One short lock: held to apply one body or
/// read the counts, never across I/O (the store is written by its own
/// thread, see [`persist`]).
#[derive(Debug)]
pub struct LiveLegs {
    tracker: Mutex<Tracker>,
    /// The store's writer, once the state is loaded (none: the receiver is
    /// off, and posts are answered 503).
    writer: OnceLock<persist::Writer>,
    /// Call bridge (log host) -> its cluster, for the metrics' `cluster`
    /// label (set by the guard; a call bridge in none is in the default).
    clusters: RwLock<HashMap<String, String>>,
}

/// How one body's records counted, and the wait for them to be durable.
#[derive(Debug)]
pub struct Posting {
    /// Records applied.
    pub applied: u64,
    /// Records seen before.
    pub duplicate: u64,
    /// Records that could not be read.
    pub malformed: u64,
    /// The store's answer, or why there will be none.
    durable: Result<tokio::sync::oneshot::Receiver<Result<(), String>>, String>,
}

impl Posting {
    /// Waits until the change is in the store: Err(why) when it is not
    /// (the Call Bridge must send the records again).
    pub async fn durable(self) -> Result<(), String> {
        match self.durable {
            Ok(answer) => answer.await.unwrap_or_else(|_| Err("the store's writer stopped".into())),
            Err(why) => Err(why),
        }
    }
}

impl LiveLegs {
    /// Nothing known yet; at most `max_sources` call bridges tracked and
    /// [`MAX_LEGS`] legs each.
    pub fn new(max_sources: usize) -> LiveLegs {
        LiveLegs {
            tracker: Mutex::new(Tracker::new(max_sources, MAX_LEGS)),
            writer: OnceLock::new(),
            clusters: RwLock::new(HashMap::new()),
        }
    }

    /// Which cluster each call bridge (by log host) belongs to.
    pub fn set_clusters(&self, clusters: HashMap<String, String>) {
        *self.clusters.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = clusters;
    }

    /// The cluster of `callbridge`.
    pub fn cluster_of(&self, callbridge: &str) -> String {
        let clusters = self.clusters.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        clusters.get(callbridge).cloned().unwrap_or_else(|| crate::config::cluster::DEFAULT_CLUSTER.to_owned())
    }

    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        // A panic while applying leaves nothing half-done that matters more
        // than stopping the receiver would.
        self.tracker.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the bound on call bridges tracked.
    pub fn set_max_sources(&self, max_sources: usize) {
        self.tracker().set_max_sources(max_sources);
    }

    /// The live CMA calls of the call bridges `expected` (the cluster's
    /// call bridges by server log host name, as the guard knows them; case
    /// does not matter), when every one of them is known from CDRs (or a
    /// reconcile); None when any is unknown: never posted since start and
    /// not restored, records lost, a new session first heard in its middle.
    /// `as_of` is the oldest of their last posts or reconciles: a call
    /// bridge posts only when something happens, so a quiet one is not a
    /// stale one. With them, when each of those calls began, when every
    /// start was seen (read at one moment, so they agree).
    pub fn cluster_calls(&self, expected: &[String]) -> Option<(LiveCalls, Option<Vec<DateTime<Utc>>>)> {
        let tracker = self.tracker();
        let (cma, as_of) = tracker.cluster_cma(expected)?;
        Some((LiveCalls { cma, source: CallSource::Cdr, as_of }, tracker.cluster_starts(expected)))
    }

    /// When each live CMA leg whose start the CDRs gave began, by leg id:
    /// what the Call Bridge API's list is matched with before a restart.
    pub fn cma_starts(&self) -> std::collections::HashMap<String, DateTime<Utc>> {
        self.tracker().cma_starts()
    }

    /// Every call bridge tracked, for the status.
    pub fn callbridges(&self) -> Vec<CdrCallBridge> {
        self.tracker().callbridges()
    }

    /// The names of the call bridges tracked (without counting their legs).
    pub fn names(&self) -> Vec<String> {
        self.tracker().names().map(str::to_owned).collect()
    }

    /// Replaces `callbridge`'s open legs with what its API listed when asked
    /// at `at` (wall clock), unless its CDRs already know them or a post
    /// came after `at`
    /// (a reconcile): its count is known again. In memory at once; written
    /// to the store by its writer shortly after (with the next post at the
    /// latest).
    pub fn reconcile(&self, callbridge: &str, legs: Vec<OpenLeg>, at: DateTime<Utc>) {
        let name = callbridge.to_lowercase();
        if !self.tracker().reconcile(&name, legs, at) {
            tracing::warn!("CDR: cannot track {name}: the most call bridges are tracked already");
            return;
        }
        if let Some(writer) = self.writer.get() {
            writer.flush(name);
        }
    }

    /// Applies one body from the call bridge `source` (received at `now`)
    /// and queues its change for the store, in the order applied.
    pub fn post(&self, source: &str, posted: Posted, now: DateTime<Utc>) -> Result<Posting, Refused> {
        let mut tracker = self.tracker();
        let outcome = tracker.apply(source, posted, now)?;
        let durable = match self.writer.get() {
            None => Err("the CDR store is not open".to_owned()),
            Some(writer) => writer.write(outcome.change).inspect_err(|_| tracker.mark_dirty(source)),
        };
        Ok(Posting { applied: outcome.applied, duplicate: outcome.duplicate, malformed: outcome.malformed, durable })
    }
}

/// Loads the call bridges stored in `state_dir`'s history file (known if
/// they were: while the guard was down each Call Bridge kept its records
/// and sends them now, and a restart of one shows as a new session) and
/// starts the writer. Once per `live`.
pub fn open(live: &Arc<LiveLegs>, state_dir: &Path) -> anyhow::Result<()> {
    let store = crate::store::Store::open(state_dir)?;
    let stored = store.cdr_load()?;
    if !stored.is_empty() {
        let legs: usize = stored.iter().map(|(_, legs)| legs.len()).sum();
        tracing::info!("CDR: {} call bridges restored from the history file, {legs} open legs", stored.len());
    }
    live.tracker().restore(stored);
    let writer = persist::Writer::start(store, Arc::downgrade(live))?;
    if live.writer.set(writer).is_err() {
        anyhow::bail!("the CDR store is open already");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_760_000_000 + second, 0).unwrap()
    }

    fn posted(xml: &str) -> Posted {
        parse::parse(xml.as_bytes()).unwrap()
    }

    /// A post is durable once answered; a reconcile is written by the
    /// writer too; a new handle on the same file finds both.
    #[tokio::test]
    async fn posts_and_reconciles_reach_the_file_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let live = Arc::new(LiveLegs::new(10));
        open(&live, dir.path()).unwrap();
        let body = r#"<records session="s1"><record type="callLegStart" recordIndex="1"><callLeg id="a"><type>acano</type></callLeg></record>
            <record type="callLegStart" recordIndex="2"><callLeg id="b"><type>sip</type></callLeg></record></records>"#;
        live.reconcile("cms1", Vec::new(), at(0));
        let posting = live.post("cms1", posted(body), at(0)).unwrap();
        assert_eq!((posting.applied, posting.duplicate), (2, 0));
        posting.durable().await.unwrap();
        let calls = live.cluster_calls(&["CMS1".into()]).unwrap().0;
        assert_eq!((calls.cma, calls.source, calls.as_of), (1, CallSource::Cdr, at(0)));
        assert_eq!(live.cluster_calls(&["cms1".into(), "cms2".into()]), None, "cms2 was never heard from");
        let listed = |id: &str| OpenLeg { id: id.into(), kind: legs::LegKind::Acano, call: None, guest: false };
        live.reconcile("cms2", vec![listed("x"), listed("y")], at(5));
        assert_eq!(
            live.cluster_calls(&["cms1".into(), "cms2".into()]).map(|(c, _)| (c.cma, c.as_of)),
            Some((3, at(0)))
        );
        // The writer handles the reconcile before the next post's change.
        let next =
            r#"<records session="s1"><record type="callLegEnd" recordIndex="3"><callLeg id="a"/></record></records>"#;
        live.post("cms1", posted(next), at(6)).unwrap().durable().await.unwrap();
        let again = Arc::new(LiveLegs::new(10));
        open(&again, dir.path()).unwrap();
        assert_eq!(again.cluster_calls(&["cms1".into(), "cms2".into()]).map(|(c, _)| c.cma), Some(2));
        let cms1 = again.callbridges().into_iter().find(|c| c.callbridge == "cms1").unwrap();
        assert_eq!((cms1.record_index, cms1.session.as_deref()), (3, Some("s1")));
        // Without a store, a post is applied but not durable: 503.
        let unstored = LiveLegs::new(10);
        assert!(unstored.post("cms1", posted(body), at(0)).unwrap().durable().await.is_err());
    }
}
