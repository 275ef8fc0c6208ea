//! The CDR receiver's metrics: `wbguard_cdr_records_total{result}`
//! (counted where records are applied or refused) and, read from the live
//! legs at each scrape, `wbguard_callbridge_cma_calls{callbridge}`,
//! `wbguard_callbridge_calls{callbridge,type}` and
//! `wbguard_callbridge_cdr_known{callbridge}`.
//!
//! A call bridge whose count is unknown has no `cma_calls` and no `calls`
//! series (absent, not NaN: a sum over the cluster then has a hole an alert
//! can see, `wbguard_callbridge_cdr_known` says 0). The series are bounded
//! by the call bridges tracked: the allow list, or `--max-hosts` without a
//! configuration.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::legs::LegKind;
use super::LiveLegs;

/// What became of a record: the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CdrResult {
    /// Applied (no-ops included: unknown record types, ends of legs never
    /// seen open).
    Applied,
    /// Seen before (a re-send), or of a session the call bridge left.
    Duplicate,
    /// Could not be read: one per record that lacks what it needs, or one
    /// per body that is not XML, breaks a bound or is over the size limit.
    Malformed,
    /// From a sender not on the allow list (or beyond the bound of call
    /// bridges tracked): one per request, or per connection refused before
    /// its TLS handshake.
    Rejected,
}

impl CdrResult {
    /// Every result, in declaration order.
    pub const ALL: [CdrResult; 4] =
        [CdrResult::Applied, CdrResult::Duplicate, CdrResult::Malformed, CdrResult::Rejected];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CdrResult::Applied => "applied",
            CdrResult::Duplicate => "duplicate",
            CdrResult::Malformed => "malformed",
            CdrResult::Rejected => "rejected",
        }
    }
}

impl EncodeLabelValue for CdrResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// The labels of `wbguard_cdr_records_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RecordLabels {
    /// What became of the records.
    pub result: CdrResult,
}

/// The record counters: cheap clones counting on the same series; every
/// result exists from the start, at 0.
#[derive(Debug, Clone)]
pub struct CdrCounts {
    family: Family<RecordLabels, Counter>,
    /// In [`CdrResult::ALL`]'s order: the discriminant is the index.
    counters: [Counter; 4],
}

impl Default for CdrCounts {
    fn default() -> CdrCounts {
        let family = Family::<RecordLabels, Counter>::default();
        let counters = CdrResult::ALL.map(|result| family.get_or_create_owned(&RecordLabels { result }));
        CdrCounts { family, counters }
    }
}

impl CdrCounts {
    /// Counts `n` records with `result`.
    pub fn add(&self, result: CdrResult, n: u64) {
        if n > 0 {
            self.counters[result as usize].inc_by(n);
        }
    }
}

/// The receiver's state and counters, as the guard's metrics hold them.
#[derive(Debug, Clone)]
pub struct Cdr {
    /// The live legs (shared with the listeners and the guard task).
    pub live: Arc<LiveLegs>,
    /// `wbguard_cdr_records_total`.
    pub counts: CdrCounts,
}

impl Default for Cdr {
    fn default() -> Cdr {
        Cdr {
            live: Arc::new(LiveLegs::new(crate::config::guard_settings::DEFAULT_MAX_HOSTS)),
            counts: CdrCounts::default(),
        }
    }
}

impl Cdr {
    /// Registers every CDR metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "wbguard_cdr_records",
            "CDR records received, by what became of them: applied, duplicate, malformed, rejected",
            self.counts.family.clone(),
        );
        registry.register_collector(Box::new(LiveMetrics { live: self.live.clone() }));
    }
}

/// The live legs, encoded at scrape time.
#[derive(Debug)]
struct LiveMetrics {
    live: Arc<LiveLegs>,
}

fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl Iterator<Item = (L, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for LiveMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let callbridges = self.live.callbridges();
        let known = || callbridges.iter().filter(|c| c.known);
        let cluster = |c: &crate::cdr::CdrCallBridge| self.live.cluster_of(&c.callbridge);
        gauges(
            &mut encoder,
            "wbguard_callbridge_cma_calls",
            "Live CMA call legs on the call bridge from its CDRs (acano, not distribution links); absent while unknown.",
            known().map(|c| ([("cluster", cluster(c)), ("callbridge", c.callbridge.clone())], i64::from(c.cma_calls))),
        )?;
        gauges(
            &mut encoder,
            "wbguard_callbridge_calls",
            "Live call legs on the call bridge from its CDRs, by type (acano, sip, distribution_link, untyped, other); absent while unknown.",
            known().flat_map(|c| {
                LegKind::ALL.into_iter().map(move |kind| {
                    let count = c.calls.get(&kind).copied().unwrap_or(0);
                    let labels =
                        [("cluster", cluster(c)), ("callbridge", c.callbridge.clone()), ("type", kind.as_str().to_owned())];
                    (labels, i64::from(count))
                })
            }),
        )?;
        gauges(
            &mut encoder,
            "wbguard_callbridge_cdr_known",
            "1 when the call bridge's live calls are known from its CDRs, 0 when records were lost or it was first heard mid-session.",
            callbridges.iter().map(|c| ([("cluster", cluster(c)), ("callbridge", c.callbridge.clone())], i64::from(c.known))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::parse::parse;

    #[test]
    fn the_series_show_known_call_bridges_and_every_result() {
        let cdr = Cdr::default();
        let mut registry = Registry::default();
        cdr.register(&mut registry);
        let body = r#"<records session="s"><record type="callLegStart" recordIndex="1"><callLeg id="a"><type>acano</type></callLeg></record></records>"#;
        cdr.live.reconcile("cms1", Vec::new(), chrono::Utc::now());
        let posting = cdr.live.post("cms1", parse(body.as_bytes()).unwrap(), chrono::Utc::now()).unwrap();
        cdr.counts.add(CdrResult::Applied, posting.applied);
        let lost = r#"<records session="t"><record type="callStart" recordIndex="9"/></records>"#;
        cdr.live.post("cms2", parse(lost.as_bytes()).unwrap(), chrono::Utc::now()).unwrap();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "wbguard_cdr_records_total{result=\"applied\"} 1\n",
            "wbguard_cdr_records_total{result=\"rejected\"} 0\n",
            "wbguard_callbridge_cma_calls{cluster=\"default\",callbridge=\"cms1\"} 1\n",
            "wbguard_callbridge_calls{cluster=\"default\",callbridge=\"cms1\",type=\"acano\"} 1\n",
            "wbguard_callbridge_calls{cluster=\"default\",callbridge=\"cms1\",type=\"sip\"} 0\n",
            "wbguard_callbridge_cdr_known{cluster=\"default\",callbridge=\"cms1\"} 1\n",
            "wbguard_callbridge_cdr_known{cluster=\"default\",callbridge=\"cms2\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("wbguard_callbridge_cma_calls{cluster=\"default\",callbridge=\"cms2\"}"), "{text}");
    }
}
