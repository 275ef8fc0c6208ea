//! The guard's one metrics registry (prometheus-client): every metric
//! `/metrics` exports, with its name, help and typed labels, is declared
//! here.
//!
//! The names, label names and label values are a contract with operators'
//! dashboards and alert rules (`deploy/` checks them): they are the ones
//! earlier releases exported. Counters are registered without `_total`,
//! which the encoder appends.
//!
//! Two kinds of metrics:
//! - counters, counted where things happen through handles that are cheap
//!   clones of the registered ones: the ingest's [`Messages`] (the ingest
//!   owns them, as it must not import the guard), the webhooks'
//!   [`Webhooks`], the history's dropped batches, the guard's own restart
//!   outcomes;
//! - what the latest [`Snapshot`] says (sessions, leak bounds, forecasts,
//!   restarts seen in the logs), encoded at scrape time by a collector: a
//!   web bridge that left the snapshot leaves the next scrape, with no
//!   series to remove.
//!
//! `/metrics` answers in the classic text format (0.0.4), which
//! `promtool check metrics` reads, or in OpenMetrics when the scraper asks
//! for it (Prometheus does); the series are the same.

use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::api::Snapshot;
use crate::cdr::metrics::Cdr;
use crate::config::cluster::DEFAULT_CLUSTER;
use crate::ingest::metrics::Messages;
use crate::restarter::Attempt;

/// The latest snapshot, shared by the guard task (which replaces it) and
/// its readers (which clone the `Arc`).
pub type Latest = Arc<RwLock<Arc<Snapshot>>>;

/// How a restart ended, or that one was seen: the `result` label of
/// `wbguard_restarts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestartResult {
    /// Seen in the logs, whoever made it (from the snapshot).
    Observed,
    /// The guard's restart went through.
    Restarted,
    /// The guard's restart failed.
    Failed,
    /// Refused over the server's host key.
    Refused,
    /// Not attempted (release 3.x, or not safe).
    Skipped,
    /// The logs showed the guard's restart.
    Verified,
    /// The logs never showed it.
    Unverified,
}

impl RestartResult {
    /// How an attempt ended.
    pub fn of(attempt: &Attempt) -> RestartResult {
        match attempt {
            Attempt::Restarted { .. } => RestartResult::Restarted,
            Attempt::Skipped(_) => RestartResult::Skipped,
            Attempt::Refused(_) => RestartResult::Refused,
            Attempt::Failed(_) => RestartResult::Failed,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartResult::Observed => "observed",
            RestartResult::Restarted => "restarted",
            RestartResult::Failed => "failed",
            RestartResult::Refused => "refused",
            RestartResult::Skipped => "skipped",
            RestartResult::Verified => "verified",
            RestartResult::Unverified => "unverified",
        }
    }
}

impl std::fmt::Display for RestartResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// Label values by hand rather than derived: the derive writes a variant's
// name as spelled ("Observed"), and the exported values are lower case.
impl EncodeLabelValue for RestartResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// The labels of `wbguard_restarts_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RestartLabels {
    /// Its cluster.
    pub cluster: String,
    /// The web bridge (its log host name).
    pub webbridge: String,
    /// How it ended.
    pub result: RestartResult,
}

/// The label of every per-web-bridge gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WebBridgeLabels {
    /// Its cluster.
    cluster: String,
    /// Its log host name.
    webbridge: String,
}

/// The label of the per-call-bridge gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallBridgeLabels {
    /// Its cluster.
    cluster: String,
    /// Its log host name.
    callbridge: String,
}

/// What became of a webhook notification: the `result` label of
/// `wbguard_webhook_notifications_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookResult {
    /// Delivered (a 2xx answer).
    Sent,
    /// Not delivered after every attempt.
    Failed,
    /// Not queued: the delivery queue was full.
    Dropped,
}

impl WebhookResult {
    /// Every result, in declaration order.
    const ALL: [WebhookResult; 3] = [WebhookResult::Sent, WebhookResult::Failed, WebhookResult::Dropped];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Sent => "sent",
            WebhookResult::Failed => "failed",
            WebhookResult::Dropped => "dropped",
        }
    }
}

impl EncodeLabelValue for WebhookResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// The labels of `wbguard_webhook_notifications_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct WebhookLabels {
    /// What became of the notification.
    pub result: WebhookResult,
}

/// The webhook counters: cheap to clone, one atomic add per count; every
/// result exists from the start, at 0.
#[derive(Debug, Clone)]
pub struct Webhooks {
    family: Family<WebhookLabels, Counter>,
    /// In [`WebhookResult::ALL`]'s order: the discriminant is the index.
    counters: [Counter; 3],
}

impl Default for Webhooks {
    fn default() -> Webhooks {
        let family = Family::<WebhookLabels, Counter>::default();
        let counters = WebhookResult::ALL.map(|result| family.get_or_create_owned(&WebhookLabels { result }));
        Webhooks { family, counters }
    }
}

impl Webhooks {
    /// Counts one notification with `result`.
    pub fn count(&self, result: WebhookResult) {
        self.counters[result as usize].inc();
    }
}

/// The format of a scrape's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The classic Prometheus text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format a scraper's `Accept` header asks for: OpenMetrics when it
    /// names it (Prometheus lists it first), else the classic format
    /// (curl, promtool, older scrapers).
    pub fn accepted(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The registry and the handles counted on.
pub struct Metrics {
    /// Everything `/metrics` exports; filled once, then only read.
    registry: Registry,
    /// `wbguard_syslog_messages_total{result}`, counted by the ingest and
    /// the guard task.
    pub syslog: Messages,
    /// `wbguard_webhook_notifications_total{result}`, counted by the
    /// delivery thread.
    pub webhooks: Webhooks,
    /// `wbguard_history_dropped_batches_total`, counted by the history.
    pub history_dropped: Counter,
    /// The CDR receiver: its live legs (the guard task reads the cluster's
    /// live CMA calls from `cdr.live`) and `wbguard_cdr_records_total`;
    /// its metrics are registered here.
    pub cdr: Cdr,
    /// The guard's own restart outcomes by web bridge; exported in
    /// `wbguard_restarts_total` beside the restarts seen in the logs.
    restarts: Family<RestartLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Every metric registered; the snapshot's are read from `latest` at
    /// each scrape.
    pub fn new(latest: Latest) -> Metrics {
        let syslog = Messages::default();
        let webhooks = Webhooks::default();
        let history_dropped = Counter::default();
        let restarts = Family::<RestartLabels, Counter>::default();
        let mut registry = Registry::default();
        // The registry adds a full stop to each help text.
        registry.register(
            "wbguard_syslog_messages",
            "Syslog messages received, by what became of them",
            syslog.family(),
        );
        registry.register(
            "wbguard_webhook_notifications",
            "Webhook notifications, by result: sent, failed (after retries), dropped (queue full)",
            webhooks.family.clone(),
        );
        registry.register(
            "wbguard_history_dropped_batches",
            "Batches of samples or estimates, or journal entries, not written to the history because its writer was behind",
            history_dropped.clone(),
        );
        registry.register_collector(Box::new(SnapshotMetrics { latest, restarts: restarts.clone() }));
        let cdr = Cdr::default();
        cdr.register(&mut registry);
        Metrics { registry, syslog, webhooks, history_dropped, cdr, restarts }
    }

    /// Counts one outcome of the guard's own restart of `webbridge` in `cluster`.
    pub fn count_restart(&self, cluster: &str, webbridge: &str, result: RestartResult) {
        let labels = RestartLabels { cluster: cluster.to_owned(), webbridge: webbridge.to_owned(), result };
        self.restarts.get_or_create(&labels).inc();
    }

    /// Everything, in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail, and neither can the collector.
        let _ = match format {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry),
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, &self.registry),
        };
        text
    }
}

/// The metrics of the latest snapshot, and the restarts (seen in the logs,
/// from the snapshot; the guard's own, counted).
#[derive(Debug)]
struct SnapshotMetrics {
    latest: Latest,
    restarts: Family<RestartLabels, Counter>,
}

/// One gauge family: its descriptor (even without samples, so that every
/// metric is listed from the first scrape), then a sample per label set.
fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl Iterator<Item = (L, V)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for SnapshotMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.latest.read().expect("the snapshot lock is never poisoned").clone();
        let webbridges = &snapshot.webbridges;
        // A drained web bridge the logs do not show is in the cluster its
        // drain's server is in; without a view, the first cluster.
        let cluster_of = |webbridge: &str| {
            webbridges.iter().find(|w| w.webbridge == webbridge).map(|w| w.cluster.clone()).unwrap_or_else(|| {
                snapshot.clusters.first().map_or_else(|| DEFAULT_CLUSTER.to_owned(), |c| c.name.clone())
            })
        };
        let label =
            |webbridge: &String| WebBridgeLabels { cluster: cluster_of(webbridge), webbridge: webbridge.clone() };
        gauges(
            &mut encoder,
            "wbguard_webbridge_active_sessions",
            "Sessions on the web bridge, leaked ones included.",
            webbridges.iter().map(|w| (label(&w.webbridge), w.estimate.active)),
        )?;
        gauges(
            &mut encoder,
            "wbguard_webbridge_leaked_sessions_lower",
            "Leaked sessions, lower bound.",
            webbridges.iter().map(|w| (label(&w.webbridge), w.estimate.leaked_lower)),
        )?;
        gauges(
            &mut encoder,
            "wbguard_webbridge_leaked_sessions_upper",
            "Leaked sessions, upper bound.",
            webbridges.iter().map(|w| (label(&w.webbridge), w.estimate.leaked_upper)),
        )?;
        gauges(
            &mut encoder,
            "wbguard_webbridge_droppable_calls_upper",
            "Real calls a restart now could drop, at most.",
            webbridges.iter().map(|w| (label(&w.webbridge), w.estimate.droppable_upper)),
        )?;
        // Every web bridge shown, and any drained one the logs do not show.
        let mut drained: std::collections::BTreeMap<&String, u32> =
            webbridges.iter().map(|w| (&w.webbridge, 0)).collect();
        drained.extend(snapshot.drains.iter().map(|d| (&d.webbridge, 1)));
        gauges(
            &mut encoder,
            "wbguard_webbridge_drained",
            "1 while the web bridge is drained through its load balancer (from the drain decision until it is ready again), else 0.",
            drained.into_iter().map(|(webbridge, value)| (label(webbridge), value)),
        )?;
        gauges(
            &mut encoder,
            "wbguard_webbridge_lockout_forecast_timestamp_seconds",
            "When users will be (or were first) locked out, as a Unix time.",
            webbridges.iter().filter_map(|w| Some((label(&w.webbridge), w.estimate.lockout_forecast?.timestamp()))),
        )?;
        gauges(
            &mut encoder,
            "wbguard_webbridge_last_stats_timestamp_seconds",
            "When the web bridge's last Stats line was logged.",
            webbridges.iter().map(|w| (label(&w.webbridge), w.last_seen.timestamp())),
        )?;
        gauges(
            &mut encoder,
            "wbguard_callbridge_cma_sessions",
            "CMA sessions on the call bridge (its latest report).",
            snapshot.callbridges.iter().map(|(host, cma)| {
                let cluster = snapshot
                    .clusters
                    .iter()
                    .find(|c| c.callbridges.contains(host))
                    .map_or_else(|| DEFAULT_CLUSTER.to_owned(), |c| c.name.clone());
                (CallBridgeLabels { cluster, callbridge: host.clone() }, *cma)
            }),
        )?;
        let mut restarts = encoder.encode_descriptor(
            "wbguard_restarts",
            "Web bridge restarts, by result: observed (seen in the logs, whoever made them); restarted, failed, \
             refused, skipped, verified, unverified (the guard's own).",
            None,
            MetricType::Counter,
        )?;
        for w in webbridges {
            let labels = RestartLabels {
                cluster: w.cluster.clone(),
                webbridge: w.webbridge.clone(),
                result: RestartResult::Observed,
            };
            ConstCounter::new(w.restarts_total).encode(restarts.encode_family(&labels)?)?;
        }
        self.restarts.encode(restarts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wbguard_core::policy::Mode;

    /// The names and label values dashboards depend on, in both formats.
    #[test]
    fn the_exported_series_keep_their_names() {
        let latest: Latest = Arc::new(RwLock::new(Arc::new(Snapshot::empty(Mode::Observe))));
        let metrics = Metrics::new(latest);
        metrics.count_restart("eu", "cms\"1", RestartResult::Verified);
        metrics.webhooks.count(WebhookResult::Failed);
        metrics.history_dropped.inc();
        let classic = metrics.encode(Format::Prometheus);
        for line in [
            "# TYPE wbguard_webbridge_active_sessions gauge\n",
            "# TYPE wbguard_restarts_total counter\n",
            "wbguard_restarts_total{cluster=\"eu\",webbridge=\"cms\\\"1\",result=\"verified\"} 1\n",
            "wbguard_syslog_messages_total{result=\"dropped\"} 0\n",
            "wbguard_webhook_notifications_total{result=\"failed\"} 1\n",
            "wbguard_webhook_notifications_total{result=\"sent\"} 0\n",
            "# HELP wbguard_history_dropped_batches_total Batches of samples",
            "wbguard_history_dropped_batches_total 1\n",
        ] {
            assert!(classic.contains(line), "{line} in\n{classic}");
        }
        assert!(!classic.contains(".."), "{classic}");
        let open = metrics.encode(Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n") && open.contains("# TYPE wbguard_restarts counter\n"), "{open}");
        let samples = |text: &str| {
            let mut lines: Vec<String> = text.lines().filter(|l| !l.starts_with('#')).map(str::to_owned).collect();
            lines.sort();
            lines
        };
        assert_eq!(samples(&classic), samples(&open));
    }

    #[test]
    fn the_scraper_chooses_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::accepted(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::accepted(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::accepted(None), Format::Prometheus);
    }
}
