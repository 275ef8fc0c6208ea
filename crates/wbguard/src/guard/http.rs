//! The guard's HTTP side: the status page, Prometheus metrics, the JSON
//! status and history, health. Read-only, except the page's token-protected
//! "restart now"; binds to loopback unless configured otherwise.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::mpsc;

use super::api::Status;
use super::event_loop::Manual;
use super::history::History;
use super::snapshot::{Shared, WebBridgeView};

#[derive(Clone)]
struct Web {
    shared: Arc<Shared>,
    history: History,
    manual: mpsc::Sender<Manual>,
}

/// The status page, built into the binary (no asset from the network).
const PAGE: &str = include_str!("page/index.html");

/// Serves `router` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
}

/// The router.
pub fn router(shared: Arc<Shared>, history: History, manual: mpsc::Sender<Manual>) -> Router {
    Router::new()
        .route("/", get(|| async { ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE)) }))
        .route("/api/restart", post(restart_now))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/history", get(history_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Web { shared, history, manual })
}

#[derive(serde::Deserialize)]
struct RestartRequest {
    webbridge: String,
}

/// `POST /api/restart {"webbridge": ...}` with `Authorization: Bearer TOKEN`:
/// the page's "restart now", only with a token configured, in enforce mode.
async fn restart_now(
    State(web): State<Web>,
    headers: axum::http::HeaderMap,
    Json(request): Json<RestartRequest>,
) -> (StatusCode, String) {
    let token = web.shared.restart_token.read().expect("never poisoned").clone();
    let Some(token) = token else {
        return (StatusCode::FORBIDDEN, "restart now is not enabled (watch.restart_token_env)\n".into());
    };
    let offered =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !offered.is_some_and(|offered| token.matches(offered)) {
        tracing::warn!("restart now of {}: refused, wrong or missing token", request.webbridge);
        return (StatusCode::UNAUTHORIZED, "wrong or missing token\n".into());
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    if web.manual.send(Manual { webbridge: request.webbridge, reply }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the guard is stopping\n".into());
    }
    match answer.await {
        Ok(Ok(message)) => (StatusCode::ACCEPTED, format!("{message}\n")),
        Ok(Err((code, why))) => (StatusCode::from_u16(code).unwrap_or(StatusCode::CONFLICT), format!("{why}\n")),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the guard is stopping\n".into()),
    }
}

#[derive(serde::Deserialize)]
struct Range {
    from: Option<String>,
    to: Option<String>,
}

/// `/api/history?from=RFC3339&to=RFC3339` (default: the last day).
async fn history_handler(State(web): State<Web>, Query(range): Query<Range>) -> axum::response::Response {
    let parse = |text: &Option<String>, default: chrono::DateTime<chrono::Utc>| match text {
        None => Ok(default),
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|_| format!("'{t}' is not an RFC 3339 time")),
    };
    let now = chrono::Utc::now();
    let (from, to) = match (parse(&range.from, now - chrono::Duration::days(1)), parse(&range.to, now)) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(why), _) | (_, Err(why)) => return (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
    };
    match web.history.read(from, to).await {
        Ok(value) => Json(value).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}\n")).into_response(),
    }
}

async fn status(State(web): State<Web>) -> Json<Status> {
    let shared = web.shared;
    let snapshot = (*shared.snapshot()).clone();
    let restart_now = snapshot.mode == wbguard_core::policy::Mode::Enforce
        && shared.restart_token.read().expect("never poisoned").is_some();
    let syslog_messages = counters(&shared).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    Json(Status { snapshot, syslog_messages, restart_now })
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

async fn metrics(State(web): State<Web>) -> impl IntoResponse {
    let shared = web.shared;
    let history_dropped = web.history.dropped.load(Ordering::Relaxed);
    let snapshot = shared.snapshot();
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let per_webbridge = |pick: &dyn Fn(&WebBridgeView) -> Option<String>| {
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
        per_webbridge(&|w| Some(w.estimate.active.to_string())),
    );
    family(
        "wbguard_webbridge_leaked_sessions_lower",
        "Leaked sessions, lower bound.",
        "gauge",
        per_webbridge(&|w| Some(w.estimate.leaked_lower.to_string())),
    );
    family(
        "wbguard_webbridge_leaked_sessions_upper",
        "Leaked sessions, upper bound.",
        "gauge",
        per_webbridge(&|w| Some(w.estimate.leaked_upper.to_string())),
    );
    family(
        "wbguard_webbridge_droppable_calls_upper",
        "Real calls a restart now could drop, at most.",
        "gauge",
        per_webbridge(&|w| Some(w.estimate.droppable_upper.to_string())),
    );
    family(
        "wbguard_webbridge_lockout_forecast_timestamp_seconds",
        "When users will be (or were first) locked out, as a Unix time.",
        "gauge",
        per_webbridge(&|w| w.estimate.lockout_forecast.map(|t| t.timestamp().to_string())),
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
        "Web bridge restarts, by result: observed (seen in the logs, whoever made them); restarted, failed, refused, skipped, verified, unverified (the guard's own).",
        "counter",
        snapshot
            .webbridges
            .iter()
            .map(|w| {
                (format!("{{webbridge=\"{}\",result=\"observed\"}}", label(&w.webbridge)), w.restarts.len().to_string())
            })
            .chain(shared.restarts.lock().expect("never poisoned").iter().map(|((webbridge, result), n)| {
                (format!("{{webbridge=\"{}\",result=\"{}\"}}", label(webbridge), label(result)), n.to_string())
            }))
            .collect(),
    );
    family(
        "wbguard_syslog_messages_total",
        "Syslog messages received, by what became of them.",
        "counter",
        counters(&shared).into_iter().map(|(result, n)| (format!("{{result=\"{result}\"}}"), n.to_string())).collect(),
    );
    family(
        "wbguard_webhook_notifications_total",
        "Webhook notifications, by result: sent, failed (after retries), dropped (queue full).",
        "counter",
        [("sent", &shared.notify.sent), ("failed", &shared.notify.failed), ("dropped", &shared.notify.dropped)]
            .into_iter()
            .map(|(result, n)| (format!("{{result=\"{result}\"}}"), n.load(Ordering::Relaxed).to_string()))
            .collect(),
    );
    family(
        "wbguard_history_dropped_batches_total",
        "Batches of samples or estimates not written to the history because its writer was behind.",
        "counter",
        vec![(String::new(), history_dropped.to_string())],
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out)
}
