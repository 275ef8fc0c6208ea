//! The guard's HTTP side: Prometheus metrics, the JSON status, health.
//! Read-only; binds to loopback unless configured otherwise.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use super::guard::Shared;

/// The router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(shared)
}

async fn status(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let snapshot = shared.snapshot();
    let mut value = serde_json::to_value(&*snapshot).unwrap_or_default();
    value["syslog_messages"] =
        serde_json::json!(counters(&shared).into_iter().collect::<std::collections::BTreeMap<_, _>>());
    Json(value)
}

fn counters(shared: &Shared) -> Vec<(&'static str, u64)> {
    vec![
        ("parsed", shared.parse.parsed.load(Ordering::Relaxed)),
        ("noise", shared.parse.noise.load(Ordering::Relaxed)),
        ("malformed", shared.parse.malformed.load(Ordering::Relaxed)),
        ("rejected", shared.ingest.rejected.load(Ordering::Relaxed)),
        ("oversize", shared.ingest.oversize.load(Ordering::Relaxed)),
        ("dropped", shared.ingest.dropped.load(Ordering::Relaxed)),
    ]
}

/// A label value, escaped as the exposition format wants.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let snapshot = shared.snapshot();
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let per_webbridge = |pick: &dyn Fn(&super::guard::WebBridgeView) -> Option<String>| {
        snapshot
            .webbridges
            .iter()
            .filter_map(|w| pick(w).map(|v| (format!("{{webbridge=\"{}\"}}", label(&w.webbridge)), v)))
            .collect::<Vec<_>>()
    };
    family(
        "wbguard_webbridge_active_sessions",
        "Sessions on the web bridge, leaked ones included.",
        "gauge",
        per_webbridge(&|w| Some(w.active.to_string())),
    );
    family(
        "wbguard_webbridge_leaked_sessions_lower",
        "Leaked sessions, lower bound.",
        "gauge",
        per_webbridge(&|w| Some(w.leaked_lower.to_string())),
    );
    family(
        "wbguard_webbridge_leaked_sessions_upper",
        "Leaked sessions, upper bound.",
        "gauge",
        per_webbridge(&|w| Some(w.leaked_upper.to_string())),
    );
    family(
        "wbguard_webbridge_droppable_calls_upper",
        "Real calls a restart now could drop, at most.",
        "gauge",
        per_webbridge(&|w| Some(w.droppable_upper.to_string())),
    );
    family(
        "wbguard_webbridge_lockout_forecast_timestamp_seconds",
        "When users will be (or were first) locked out, as a Unix time.",
        "gauge",
        per_webbridge(&|w| w.lockout_forecast.map(|t| t.timestamp().to_string())),
    );
    family(
        "wbguard_webbridge_last_stats_timestamp_seconds",
        "When the web bridge's last Stats line was logged.",
        "gauge",
        per_webbridge(&|w| Some(w.last_seen.timestamp().to_string())),
    );
    family(
        "wbguard_callbridge_cma_sessions",
        "CMA sessions on the call bridge (its latest report).",
        "gauge",
        snapshot
            .callbridges
            .iter()
            .map(|(host, cma)| (format!("{{callbridge=\"{}\"}}", label(host)), cma.to_string()))
            .collect(),
    );
    family(
        "wbguard_restarts_total",
        "Web bridge restarts, by result (observed: seen in the logs, whoever made them).",
        "counter",
        snapshot
            .webbridges
            .iter()
            .map(|w| {
                (format!("{{webbridge=\"{}\",result=\"observed\"}}", label(&w.webbridge)), w.restarts.len().to_string())
            })
            .collect(),
    );
    family(
        "wbguard_syslog_messages_total",
        "Syslog messages received, by what became of them.",
        "counter",
        counters(&shared).into_iter().map(|(result, n)| (format!("{{result=\"{result}\"}}"), n.to_string())).collect(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out)
}
