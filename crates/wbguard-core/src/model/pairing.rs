//! Call bridges, and pairing web bridge samples with the cluster's CMA count.
//!
//! A web bridge sample at `t` needs an upper bound of the real sessions at
//! `t`. Each call bridge reports `CMA: current/peak` every five minutes, the
//! peak covering the time since its previous report. So the first report
//! of a call bridge at or after `t` bounds its CMA sessions at `t`, provided
//! the gap since its previous report is no longer than one interval (plus
//! slack). A sample waits ([`Pending`]) until every live call bridge has
//! sent that report; if one fails to, the sample gives no bound. Call
//! bridges silent for longer than `callbridge_gone_after` are taken as down.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ModelConfig;
use crate::log::CallBridgeStats;

/// What the model keeps about one call bridge.
#[derive(Debug, Clone, Serialize)]
pub struct CallBridgeState {
    /// Host name of the server.
    pub host: String,
    /// STATS records seen.
    pub samples: u64,
    /// Time of the latest STATS record.
    pub last_time: DateTime<Utc>,
    /// The latest STATS record.
    pub last: CallBridgeStats,
    /// Its number, in the order call bridges were first heard: what a
    /// pending sample names it by (no name copied per sample, no text
    /// compared per report).
    #[serde(skip)]
    id: u32,
}

/// What a pending sample's bound applies to once it is paired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// One web bridge, in the restart epoch the sample was taken in.
    WebBridge { host: String, epoch: u64 },
    /// The cluster snapshot, in the cluster epoch it was taken in.
    Cluster { epoch: u64 },
}

/// A sample waiting for each live call bridge's next report.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub target: Target,
    pub time: DateTime<Utc>,
    pub active: u32,
    /// The CMA upper bound from each live call bridge (by its id), once it
    /// reported, sorted by id: a report finds its place by a binary search
    /// (a fleet's every STATS line meets every pending sample of its cluster).
    needed: Vec<(u32, Option<u32>)>,
    /// The places in `needed` still empty.
    missing: usize,
    /// A needed report came too late or without CMA: no bound.
    pub failed: bool,
}

impl Pending {
    /// Every needed report is in, and none failed.
    pub fn complete(&self) -> bool {
        !self.failed && self.missing == 0
    }

    /// The cluster's CMA upper bound at the sample's time, once complete.
    pub fn cma(&self) -> Option<u32> {
        if !self.complete() {
            return None;
        }
        self.needed.iter().try_fold(0u32, |sum, (_, cma)| cma.map(|c| sum.saturating_add(c)))
    }
}

/// All call bridges of the deployment.
#[derive(Debug, Clone, Default)]
pub(super) struct CallBridges {
    by_host: BTreeMap<String, CallBridgeState>,
}

impl CallBridges {
    /// The state of `host`, first heard at `time` if new.
    fn state(&mut self, host: &str, time: DateTime<Utc>) -> &mut CallBridgeState {
        if !self.by_host.contains_key(host) {
            let id = self.by_host.len() as u32;
            let state = CallBridgeState {
                host: host.to_owned(),
                samples: 0,
                last_time: time,
                last: CallBridgeStats::default(),
                id,
            };
            self.by_host.insert(host.to_owned(), state);
        }
        self.by_host.get_mut(host).expect("inserted above")
    }

    pub fn iter(&self) -> impl Iterator<Item = &CallBridgeState> {
        self.by_host.values()
    }

    fn live(&self, at: DateTime<Utc>, config: &ModelConfig) -> impl Iterator<Item = &CallBridgeState> {
        let gone = config.callbridge_gone_after;
        self.by_host.values().filter(move |cb| at - cb.last_time <= gone)
    }

    /// A pending sample for `target`, or `None` when no call bridge is live
    /// (then nothing bounds the real sessions).
    pub fn pending_for(
        &self,
        target: Target,
        time: DateTime<Utc>,
        active: u32,
        config: &ModelConfig,
    ) -> Option<Pending> {
        let mut needed: Vec<_> = self
            .live(time, config)
            .map(|cb| {
                // A report at the very same instant already covers `time`.
                let now = (cb.last_time == time).then(|| cb.last.cma().map(|p| p.current.max(p.peak))).flatten();
                (cb.id, now)
            })
            .collect();
        needed.sort_unstable_by_key(|(id, _)| *id);
        let missing = needed.iter().filter(|(_, cma)| cma.is_none()).count();
        (!needed.is_empty()).then_some(Pending { target, time, active, needed, missing, failed: false })
    }

    /// Records a STATS report and fills it into the samples waiting for it.
    pub fn report(
        &mut self,
        host: &str,
        time: DateTime<Utc>,
        stats: &CallBridgeStats,
        pending: &mut [Pending],
        config: &ModelConfig,
    ) {
        let previous = self.by_host.get(host).map(|cb| cb.last_time);
        let state = self.state(host, time);
        let id = state.id;
        state.samples += 1;
        state.last_time = state.last_time.max(time);
        state.last = stats.clone();

        let continuous = previous.is_some_and(|previous| time - previous <= config.cma_fresh);
        let bound = stats.cma().map(|p| p.current.max(p.peak));
        for sample in pending.iter_mut().filter(|p| p.time <= time && p.missing > 0) {
            let Ok(place) = sample.needed.binary_search_by_key(&id, |(id, _)| *id) else { continue };
            let slot = &mut sample.needed[place].1;
            if slot.is_none() {
                match bound {
                    Some(bound) if continuous => {
                        *slot = Some(bound);
                        sample.missing -= 1;
                    }
                    _ => sample.failed = true,
                }
            }
        }
    }

    /// Sum of the latest `max(current, peak)` CMA of the live call bridges,
    /// when each is fresh at `now`: an upper bound of the real sessions now.
    pub fn cma_now(&self, now: DateTime<Utc>, config: &ModelConfig) -> Option<u32> {
        self.sum_fresh(now, config, |current, peak| current.max(peak))
    }

    /// Sum of the latest current CMA of the live call bridges, when fresh.
    pub fn cma_current(&self, now: DateTime<Utc>, config: &ModelConfig) -> Option<u32> {
        self.sum_fresh(now, config, |current, _| current)
    }

    fn sum_fresh(&self, now: DateTime<Utc>, config: &ModelConfig, pick: impl Fn(u32, u32) -> u32) -> Option<u32> {
        let mut any = false;
        let mut sum = 0u32;
        for cb in self.live(now, config) {
            let cma = cb.last.cma()?;
            if now - cb.last_time > config.cma_fresh {
                return None;
            }
            any = true;
            sum = sum.saturating_add(pick(cma.current, cma.peak));
        }
        any.then_some(sum)
    }
}
