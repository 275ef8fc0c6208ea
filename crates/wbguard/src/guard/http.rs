//! The guard's HTTP side: the status page, Prometheus metrics, the JSON
//! status and history, health. Read-only, except the page's token-protected
//! "restart now"; binds to loopback unless configured otherwise.
//!
//! Connections come through the ingest's evicting [`Gate`] (a pause after a
//! failed accept), at most [`MAX_HTTP_CONNECTIONS`] at once (fewer when the
//! file limit is low); with every place taken, the connection silent
//! longest gives its place to the newcomer, so `/healthz` and the scrapes
//! are answered at once whatever idle or half-sent requests hold.

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
use crate::ingest::accept::{Accepted, Gate, Place};
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

/// Serves `router` on `listener` until `shutdown` turns true, through an
/// evicting [`Gate`] of `places` (at most [`MAX_HTTP_CONNECTIONS`]).
pub async fn serve(
    listener: TcpListener,
    places: usize,
    router: Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let listener = Bounded(Gate::evicting(listener, places, "HTTP"));
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
/// connection is dropped, i.e. closed. Idle or half-sent requests must not
/// hold the places that `/healthz` and the scrapes need, so a connection is
/// closed when nothing moves on it for [`IDLE`], when a request's head
/// (its first line and headers) is not whole within [`HEAD`] of its first
/// byte (or of the connection's opening), or when the gate asks its place
/// back for a newcomer because it has been silent longest.
struct Placed {
    stream: TcpStream,
    place: Place,
    /// When the connection counts as idle; moved on by every byte.
    idle: Pin<Box<tokio::time::Sleep>>,
    /// Where the request in progress is.
    phase: Phase,
    /// When the head being read must be whole (armed in [`Phase::Head`]).
    head: Pin<Box<tokio::time::Sleep>>,
}

/// Where a connection's request is. The head's end is found by its empty
/// line (HTTP/1, which is all the guard speaks); any answer ends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a head: the line ends seen in a row so far (`\r` ignored).
    Head(u8),
    /// The head is whole: the body, the handler, the answer.
    Request,
    /// Answered: the next byte opens a new head.
    Answered,
}

/// How long an HTTP connection may stay silent both ways (a keep-alive
/// between scrapes, a reader that stopped).
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a request's head may take to arrive, from its first byte (or
/// the connection's opening): a request sent a byte at a time, never
/// finished, gives its place back after this however much it trickles.
pub const HEAD: std::time::Duration = std::time::Duration::from_secs(10);

impl Placed {
    fn new(stream: TcpStream, place: Place) -> Placed {
        Placed {
            stream,
            place,
            idle: Box::pin(tokio::time::sleep(IDLE)),
            phase: Phase::Head(0),
            head: Box::pin(tokio::time::sleep(HEAD)),
        }
    }

    /// Something moved: the idle clock starts again.
    fn moved(&mut self) {
        self.idle.as_mut().reset(tokio::time::Instant::now() + IDLE);
        self.place.moved();
    }

    /// Something was written: an answer, which ends the request.
    fn wrote(&mut self) {
        self.moved();
        self.phase = Phase::Answered;
        self.place.busy(false);
    }

    /// `bytes` were read: a new head opens, or the one being read may end.
    fn received(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::Answered {
            self.phase = Phase::Head(0);
            self.head.as_mut().reset(tokio::time::Instant::now() + HEAD);
        }
        for &byte in bytes {
            let Phase::Head(ends) = self.phase else { return };
            self.phase = match byte {
                b'\n' if ends == 1 => {
                    // Being served: not a place to give a newcomer.
                    self.place.busy(true);
                    Phase::Request
                }
                b'\n' => Phase::Head(1),
                b'\r' => Phase::Head(ends),
                _ => Phase::Head(0),
            };
        }
    }

    /// Nothing could move: an error once the connection has been idle too
    /// long, its head is late, or its place is wanted.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let closed = |why: &str| Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why.to_owned())));
        if self.idle.as_mut().poll(cx).is_ready() {
            return closed("idle HTTP connection");
        }
        if matches!(self.phase, Phase::Head(_)) && self.head.as_mut().poll(cx).is_ready() {
            return closed("HTTP request head not whole in time");
        }
        if self.place.asked_to_leave(cx) {
            return closed("HTTP connection silent longest, its place given to a newcomer");
        }
        Poll::Pending
    }
}

impl AsyncRead for Placed {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Pending => this.waiting(cx),
            ready => {
                this.moved();
                this.received(&buf.filled()[before..]);
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
                this.wrote();
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
                this.wrote();
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
    webbridge: Option<String>,
    cluster: Option<String>,
}

/// Whose history `?webbridge=` or `?cluster=` asks for (neither: every
/// host's): a web bridge is its server's host (its Stats and its call
/// bridge's STATS); a cluster, its web bridges and call bridges as the
/// status knows them.
fn scope_asked(range: &Range, snapshot: &super::snapshot::Snapshot) -> Result<history::Scope, (StatusCode, String)> {
    match (&range.webbridge, &range.cluster) {
        (None, None) => Ok(history::Scope::Everyone),
        (Some(_), Some(_)) => Err((StatusCode::BAD_REQUEST, "give webbridge or cluster, not both\n".into())),
        // Host names are lower case where records are made.
        (Some(webbridge), None) => Ok(history::Scope::Hosts(vec![webbridge.to_ascii_lowercase()])),
        (None, Some(name)) => {
            let Some(cluster) = snapshot.clusters.iter().find(|c| c.name.eq_ignore_ascii_case(name)) else {
                return Err((StatusCode::NOT_FOUND, format!("no cluster {name:?}\n")));
            };
            Ok(history::Scope::Cluster {
                name: cluster.name.clone(),
                webbridges: cluster.webbridges.clone(),
                callbridges: cluster.callbridges.clone(),
            })
        }
    }
}

/// `/api/history?from=RFC3339&to=RFC3339&points=N&webbridge=NAME&cluster=NAME`
/// (default: the last day, [`history::DEFAULT_POINTS`] per series, every
/// host): bounded whatever is asked (see [`crate::store::history`]), at
/// most [`READS`] built at once.
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
    let scope = match scope_asked(&range, &web.shared.snapshot()) {
        Ok(scope) => scope,
        Err(refused) => return refused.into_response(),
    };
    match web.history.read(history::Query { points, scope, ..history::Query::new(from, to) }).await {
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

    use super::*;

    /// A connection accepted through a gate of one place, and its client.
    async fn placed() -> (Placed, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let Accepted { stream, place, .. } = Gate::evicting(listener, 1, "test").accept().await;
        (Placed::new(stream, place), client)
    }

    /// A request whose head trickles in is closed [`HEAD`] after its first
    /// byte, however often a byte comes (in paused time: no waiting).
    #[tokio::test(start_paused = true)]
    async fn a_head_that_trickles_in_is_closed_in_time() {
        let (mut placed, mut client) = placed().await;
        let started = tokio::time::Instant::now();
        let trickle = tokio::spawn(async move {
            while client.write_all(b"G").await.is_ok() {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        });
        let mut buffer = [0u8; 16];
        let error = loop {
            match placed.read(&mut buffer).await {
                Ok(n) => assert!(n > 0, "the client never closes"),
                Err(error) => break error,
            }
        };
        trickle.abort();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= HEAD && took < IDLE, "{took:?}");
    }

    /// A whole head is not held to [`HEAD`]; after the answer, a silent
    /// keep-alive connection is closed after [`IDLE`].
    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_its_answer() {
        let (mut placed, mut client) = placed().await;
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buffer = [0u8; 64];
        assert!(placed.read(&mut buffer).await.unwrap() > 0);
        // The handler takes longer than HEAD: the connection stays.
        tokio::time::sleep(HEAD * 2).await;
        placed.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        let answered = tokio::time::Instant::now();
        let error = placed.read(&mut buffer).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(answered.elapsed() >= IDLE, "{:?}", answered.elapsed());
    }
}
