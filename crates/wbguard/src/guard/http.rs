//! The guard's HTTP side: the status page, Prometheus metrics, the JSON
//! status and history, health. Read-only, except the page's token-protected
//! "restart now"; binds to loopback unless configured otherwise.
//!
//! Connections come through the ingest's [`Gate`] (a place first, then the
//! accept; a pause after a failed accept), at most
//! [`MAX_HTTP_CONNECTIONS`] at once.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::api::Status;
use super::event_loop::Manual;
use super::history::{History, Read, ReadError, READS};
use super::metrics::Format;
use super::snapshot::Shared;
use crate::ingest::accept::{Accepted, Gate};
use crate::ingest::metrics::MessageResult;
use crate::store::history;

/// HTTP connections served at once; more wait, unaccepted, in the listen
/// backlog. Prometheus keeps one connection, a browser on the page about
/// six, `wbguard status` one per call: 256 leaves room for many viewers,
/// and keeps a flood of connections from using up the guard's file
/// descriptors, which the syslog listeners and the history need too.
pub const MAX_HTTP_CONNECTIONS: usize = 256;

#[derive(Clone)]
struct Web {
    shared: Arc<Shared>,
    history: History,
    manual: mpsc::Sender<Manual>,
}

/// The status page, built into the binary (no asset from the network).
const PAGE: &str = include_str!("page/index.html");

/// Serves `router` on `listener` until `shutdown` turns true, through a
/// [`Gate`] of [`MAX_HTTP_CONNECTIONS`].
pub async fn serve(listener: TcpListener, router: Router, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let listener = Bounded(Gate::new(listener, MAX_HTTP_CONNECTIONS, "HTTP"));
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
}

/// The HTTP listener, as axum takes one: each connection accepted through
/// the gate, carrying its place until hyper drops it.
struct Bounded(Gate);

impl axum::serve::Listener for Bounded {
    type Io = Placed;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Placed, SocketAddr) {
        let Accepted { stream, from, place } = self.0.accept().await;
        (Placed::new(stream, place), from)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.incoming().local_addr()
    }
}

/// A connection and its place: the place is given back when the
/// connection is dropped, i.e. closed. A connection on which nothing moves
/// for [`IDLE`] is closed: idle or half-sent requests must not hold the
/// places that `/healthz` and the scrapes need.
struct Placed {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
    /// When the connection counts as idle; moved on by every byte.
    idle: Pin<Box<tokio::time::Sleep>>,
}

/// How long an HTTP connection may stay silent both ways (a keep-alive
/// between scrapes, a request never finished, a reader that stopped).
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(30);

impl Placed {
    fn new(stream: TcpStream, place: OwnedSemaphorePermit) -> Placed {
        Placed { stream, _place: place, idle: Box::pin(tokio::time::sleep(IDLE)) }
    }

    /// Something moved: the idle clock starts again.
    fn moved(&mut self) {
        self.idle.as_mut().reset(tokio::time::Instant::now() + IDLE);
    }

    /// Nothing could move: an error once the connection has been idle too long.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle HTTP connection"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Placed {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Pending => this.waiting(cx),
            ready => {
                this.moved();
                ready
            }
        }
    }
}

impl AsyncWrite for Placed {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Pending => this.waiting(cx),
            ready => {
                this.moved();
                ready
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.waiting(cx),
            ready => {
                this.moved();
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
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

/// The body of a "restart now", at most: `{"webbridge": NAME}` with a host name.
const RESTART_BODY: usize = 1024;

/// `POST /api/restart {"webbridge": ...}` with `Authorization: Bearer TOKEN`:
/// the page's "restart now", only with a token configured, in enforce mode.
/// The token is checked before the body is read: nothing a stranger sends
/// is parsed, let alone logged.
async fn restart_now(
    State(web): State<Web>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> (StatusCode, String) {
    let token = web.shared.restart_token.read().expect("never poisoned").clone();
    let Some(token) = token else {
        return (StatusCode::FORBIDDEN, "restart now is not enabled (watch.restart_token_env)\n".into());
    };
    let offered =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !offered.is_some_and(|offered| token.matches(offered)) {
        tracing::warn!("restart now: refused, wrong or missing token");
        return (StatusCode::UNAUTHORIZED, "wrong or missing token\n".into());
    }
    let Ok(body) = axum::body::to_bytes(body, RESTART_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, format!("the body must be at most {RESTART_BODY} bytes\n"));
    };
    let request: RestartRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("the body must be {{\"webbridge\": NAME}}: {error}\n")),
    };
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
    points: Option<String>,
}

/// `/api/history?from=RFC3339&to=RFC3339&points=N` (default: the last day,
/// [`history::DEFAULT_POINTS`] per series): bounded whatever is asked (see
/// [`crate::store::history`]), at most [`READS`] built at once.
async fn history_handler(State(web): State<Web>, Query(range): Query<Range>) -> axum::response::Response {
    let parse = |text: &Option<String>, default: chrono::DateTime<chrono::Utc>| match text {
        None => Ok(default),
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|_| format!("{t:?} is not an RFC 3339 time")),
    };
    let now = chrono::Utc::now();
    let (from, to) = match (parse(&range.from, now - chrono::Duration::days(1)), parse(&range.to, now)) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(why), _) | (_, Err(why)) => return (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
    };
    let points = match range.points.as_deref().map(str::parse::<usize>) {
        None => history::DEFAULT_POINTS,
        Some(Ok(points @ 1..=history::MAX_POINTS)) => points,
        Some(_) => {
            let why = format!("points must be a number from 1 to {}", history::MAX_POINTS);
            return (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response();
        }
    };
    match web.history.read(history::Query { points, ..history::Query::new(from, to) }).await {
        Ok(read) => {
            let body = axum::body::Body::new(Answer::of(read));
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(ReadError::Busy) => {
            let why = format!("{READS} history answers are being built; try again\n");
            (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "5")], why).into_response()
        }
        Err(ReadError::Failed(error)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}\n")).into_response(),
    }
}

/// A history answer as a response body, sent in pieces, that keeps its
/// place among the [`READS`] until it is sent (or the connection closes):
/// answers waiting for slow readers cannot pile up in memory.
struct Answer {
    json: axum::body::Bytes,
    _place: OwnedSemaphorePermit,
}

/// The pieces an answer is sent in.
const PIECE: usize = 64 * 1024;

impl Answer {
    fn of(read: Read) -> Answer {
        Answer { json: read.json.into(), _place: read.place }
    }
}

impl http_body::Body for Answer {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.json.is_empty() {
            return Poll::Ready(None);
        }
        let piece = this.json.split_to(PIECE.min(this.json.len()));
        Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.json.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.json.len() as u64)
    }
}

async fn status(State(web): State<Web>) -> Json<Status> {
    let shared = web.shared;
    let snapshot = (*shared.snapshot()).clone();
    let restart_now = snapshot.mode == wbguard_core::policy::Mode::Enforce
        && shared.restart_token.read().expect("never poisoned").is_some();
    let counts = &shared.metrics.syslog;
    let syslog_messages = MessageResult::ALL.iter().map(|&r| (r.as_str().to_owned(), counts.get(r))).collect();
    Json(Status { snapshot, syslog_messages, restart_now })
}

/// `/metrics`: the registry, in the format the scraper asks for.
async fn metrics(State(web): State<Web>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let format = Format::accepted(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    ([(header::CONTENT_TYPE, format.content_type())], web.shared.metrics.encode(format))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Semaphore;

    use super::*;

    /// A connection on which nothing moves is closed after [`IDLE`] (in
    /// paused time: the test takes no 30 s) and gives its place back.
    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_and_gives_its_place_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let places = Arc::new(Semaphore::new(1));
        let mut placed = Placed::new(stream, places.clone().acquire_owned().await.unwrap());
        client.write_all(b"GET / HT").await.unwrap();
        let mut buffer = [0u8; 16];
        assert_eq!(placed.read(&mut buffer).await.unwrap(), 8);
        // The rest of the request never comes.
        let started = tokio::time::Instant::now();
        let error = placed.read(&mut buffer).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= IDLE, "{:?}", started.elapsed());
        assert_eq!(places.available_permits(), 0);
        drop(placed);
        assert_eq!(places.available_permits(), 1);
    }
}
