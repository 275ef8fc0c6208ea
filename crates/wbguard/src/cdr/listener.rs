//! The CDR listeners (`watch.listen_cdr`): HTTP or HTTPS, `POST /cdr`
//! only. Each connection is accepted through the ingest's [`Gate`] (a
//! place first, at most [`MAX_CONNECTIONS`] at once, a pause after a
//! failed accept) and served by hyper on a task of its own (a TLS
//! handshake never holds up the accept loop).
//!
//! Who may post: the syslog allow list ([`Sources`]). A sender is named by
//! the configured server its address belongs to (its log host, in lower
//! case, as the call bridge's STATS records name it), or by its address
//! without a configuration. Over HTTP a sender not on the list is answered
//! 403 without its body being read; over HTTPS its connection is closed
//! before the handshake (nothing is spent on it). Both are counted
//! `rejected`.
//!
//! Bounds: a body of at most [`MAX_BODY`] (413 beyond); a request's head
//! within [`HEAD`], its body within [`BODY`]; a connection silent for
//! [`IDLE`] is closed. The answer: 200 once the records are applied and in
//! the history file; 400 for a body that cannot be read (nothing applied);
//! 503 when the file cannot take them (the Call Bridge sends them again).
//! The Content-Type is not looked at.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::metrics::{CdrCounts, CdrResult};
use super::parse::parse;
use super::LiveLegs;
use crate::config::address::CdrListen;
use crate::ingest::accept::{Accepted, Gate};
use crate::ingest::{Origin, Sources};

/// A POST body, at most: a Call Bridge batches records, a few KiB each.
pub const MAX_BODY: usize = 4 << 20;
/// Connections served at once, per listener; more wait, unaccepted, in the
/// listen backlog. A call bridge posts on one connection at a time, so a
/// cluster needs a handful.
pub const MAX_CONNECTIONS: usize = 64;
/// A request's head (its first line and headers) must be whole within this.
pub const HEAD: Duration = Duration::from_secs(10);
/// A request's body must be whole within this (at 4 MiB, 70 KB/s).
pub const BODY: Duration = Duration::from_secs(60);
/// A connection silent both ways this long is closed.
pub const IDLE: Duration = Duration::from_secs(30);
/// A TLS handshake must be done within this.
pub const HANDSHAKE: Duration = crate::ingest::HANDSHAKE;
/// On shutdown, how long a request being served may take to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// Everything a listener needs.
#[derive(Clone)]
pub struct CdrIntake {
    /// Where posts are applied.
    pub live: Arc<LiveLegs>,
    /// `wbguard_cdr_records_total`.
    pub counts: CdrCounts,
    /// Who may post (the syslog allow list, replaced on reload).
    pub sources: Arc<RwLock<Arc<Sources>>>,
}

/// Who may be posting on one connection: decided by its address, once.
#[derive(Debug)]
enum Poster {
    /// Without a configuration: anyone; named by the receiver URI's
    /// `callbridge`, else by its address.
    Anyone(IpAddr),
    /// The configured servers (log hosts, lower case) that use this
    /// address: one of them, named by `callbridge` when there are several.
    Servers(IpAddr, Vec<String>),
}

impl Poster {
    /// The call bridge a request speaks for. A receiver URI may carry
    /// `?callbridge=NAME` (CMS sends the URI's query as it is configured):
    /// it tells apart servers that share an address (NAT, one host), and
    /// can name only a server the address belongs to.
    fn name(&self, query: Option<&str>) -> Result<String, String> {
        let named = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("callbridge="))
            .map(str::to_ascii_lowercase);
        match (self, named) {
            (Poster::Anyone(ip), None) => Ok(ip.to_string()),
            (Poster::Anyone(_), Some(name)) if crate::text::printable(&name) == name && !name.is_empty() => Ok(name),
            (Poster::Anyone(ip), Some(_)) => Err(format!("{ip}: the receiver URI's callbridge is not a name")),
            (Poster::Servers(_, hosts), None) if hosts.len() == 1 => Ok(hosts[0].clone()),
            (Poster::Servers(ip, hosts), None) => Err(format!(
                "{ip} is the address of several servers ({}): their CDRs cannot be told apart; give each its own syslog_from, or end each call bridge's receiver URI with ?callbridge=NAME",
                hosts.join(", ")
            )),
            (Poster::Servers(_, hosts), Some(name)) if hosts.contains(&name) => Ok(name),
            (Poster::Servers(ip, hosts), Some(name)) => Err(format!(
                "{ip} may post CDRs only for {}, not for {:?}",
                hosts.join(", "),
                crate::text::printable(&name)
            )),
        }
    }
}

impl CdrIntake {
    /// Who may post from `ip`, or why nobody may.
    fn identify(&self, ip: IpAddr) -> Result<Poster, String> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let sources = self.sources.read().expect("the sources lock is never poisoned").clone();
        match sources.origin(ip) {
            None => Err(format!(
                "{ip} is not on the allow list (a configured server's syslog_from, or its MMP host's addresses)"
            )),
            Some(Origin::Anyone) => Ok(Poster::Anyone(ip)),
            Some(Origin::Servers(hosts)) => {
                Ok(Poster::Servers(ip, hosts.iter().map(|h| h.to_ascii_lowercase()).collect()))
            }
            Some(Origin::Relay) => Err(format!("{ip} is a relay: it may forward syslog, not post CDRs")),
        }
    }
}

/// A bound listener.
pub struct Bound {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
}

/// Binds a listener (errors name the address).
pub async fn bind(listen: &CdrListen, tls: Option<&TlsAcceptor>) -> anyhow::Result<Bound> {
    let listener =
        TcpListener::bind(listen.address).await.with_context(|| format!("cannot listen for CDRs on {listen}"))?;
    let tls = match (listen.tls, tls) {
        (true, Some(acceptor)) => Some(acceptor.clone()),
        (true, None) => anyhow::bail!("{listen} needs watch.tls_certificate and watch.tls_key"),
        (false, _) => None,
    };
    Ok(Bound { listener, tls })
}

impl Bound {
    /// What it listens on, as a URL (port 0 replaced by the port bound).
    pub fn url(&self) -> io::Result<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Ok(format!("{scheme}://{}", self.listener.local_addr()?))
    }

    /// Serves until `shutdown` turns true.
    pub async fn serve(self, intake: CdrIntake, mut shutdown: watch::Receiver<bool>) {
        let what = if self.tls.is_some() { "CDR over HTTPS" } else { "CDR over HTTP" };
        let mut gate = Gate::new(self.listener, MAX_CONNECTIONS, what);
        loop {
            tokio::select! {
                Accepted { stream, from, place } = gate.accept() => {
                    let sender = intake.identify(from.ip());
                    if let (Some(_), Err(why)) = (&self.tls, &sender) {
                        intake.counts.add(CdrResult::Rejected, 1);
                        tracing::debug!("{what} from {from}: {why}; closed before the handshake");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let intake = intake.clone();
                    let shutdown = shutdown.clone();
                    let tls = self.tls.clone();
                    tokio::spawn(async move {
                        // The place is given back when the connection closes.
                        let _place = place;
                        let sender = Arc::new(sender);
                        match tls {
                            None => connection(stream, sender, intake, shutdown).await,
                            Some(acceptor) => match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => connection(stream, sender, intake, shutdown).await,
                                Ok(Err(e)) => tracing::info!("{what} from {from}: handshake failed: {e}"),
                                Err(_) => tracing::info!("{what} from {from}: no handshake within {} s", HANDSHAKE.as_secs()),
                            },
                        }
                    });
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// One connection, served until it closes, idles, or the guard stops.
async fn connection<S>(
    stream: S,
    sender: Arc<Result<Poster, String>>,
    intake: CdrIntake,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let sender = sender.clone();
        let intake = intake.clone();
        async move { Ok::<_, Infallible>(handle(request, &sender, &intake).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD)
        .serve_connection(TokioIo::new(Idle::new(stream)), service);
    tokio::pin!(served);
    tokio::select! {
        result = served.as_mut() => {
            if let Err(error) = result {
                tracing::debug!("CDR connection closed: {error}");
            }
        }
        _ = shutdown.changed() => {
            served.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, served).await;
        }
    }
}

fn answer(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// One request.
async fn handle(
    request: Request<Incoming>,
    sender: &Result<Poster, String>,
    intake: &CdrIntake,
) -> Response<Full<Bytes>> {
    let source = match sender.as_ref().map_err(Clone::clone).and_then(|poster| poster.name(request.uri().query())) {
        Ok(source) => source,
        Err(why) => {
            intake.counts.add(CdrResult::Rejected, 1);
            tracing::debug!("CDR post refused: {why}");
            let mut refused = answer(StatusCode::FORBIDDEN, why);
            refused.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            return refused;
        }
    };
    if request.uri().path() != "/cdr" {
        return answer(StatusCode::NOT_FOUND, "CDRs are posted to /cdr".into());
    }
    if request.method() != Method::POST {
        let mut refused = answer(StatusCode::METHOD_NOT_ALLOWED, "CDRs are posted (POST /cdr)".into());
        refused.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
        return refused;
    }
    let too_large = || {
        intake.counts.add(CdrResult::Malformed, 1);
        tracing::info!("CDR from {source}: a body over {MAX_BODY} bytes, refused (413)");
        let mut refused = answer(StatusCode::PAYLOAD_TOO_LARGE, format!("a CDR body is at most {MAX_BODY} bytes"));
        refused.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        refused
    };
    let declared = request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY as u64) {
        return too_large();
    }
    let body = match tokio::time::timeout(BODY, Limited::new(request.into_body(), MAX_BODY).collect()).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(error)) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return too_large(),
        Ok(Err(error)) => {
            tracing::info!("CDR from {source}: the body could not be read: {error}");
            return answer(StatusCode::BAD_REQUEST, format!("the body could not be read: {error}"));
        }
        Err(_) => {
            intake.counts.add(CdrResult::Malformed, 1);
            tracing::info!("CDR from {source}: the body did not arrive within {} s", BODY.as_secs());
            return answer(StatusCode::REQUEST_TIMEOUT, format!("the body must arrive within {} s", BODY.as_secs()));
        }
    };
    let posted = match parse(&body) {
        Ok(posted) => posted,
        Err(error) => {
            intake.counts.add(CdrResult::Malformed, 1);
            tracing::warn!("CDR from {source}: a body of {} bytes could not be read: {error}", body.len());
            return answer(StatusCode::BAD_REQUEST, format!("the body is not a CDR <records> document: {error}"));
        }
    };
    let posting = match intake.live.post(&source, posted, chrono::Utc::now()) {
        Ok(posting) => posting,
        Err(refused) => {
            intake.counts.add(CdrResult::Rejected, 1);
            tracing::warn!("CDR from {source}: refused: {refused}");
            return answer(StatusCode::FORBIDDEN, refused.to_string());
        }
    };
    intake.counts.add(CdrResult::Applied, posting.applied);
    intake.counts.add(CdrResult::Duplicate, posting.duplicate);
    intake.counts.add(CdrResult::Malformed, posting.malformed);
    let summary =
        format!("{} applied, {} duplicate, {} malformed", posting.applied, posting.duplicate, posting.malformed);
    match posting.durable().await {
        Ok(()) => answer(StatusCode::OK, summary),
        Err(why) => {
            let mut unavailable = answer(StatusCode::SERVICE_UNAVAILABLE, format!("not stored, send again: {why}"));
            unavailable.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("5"));
            unavailable
        }
    }
}

/// A connection that fails once nothing moved on it, either way, for
/// [`IDLE`]: a sender that stopped gives its place back.
struct Idle<S> {
    inner: S,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<S> Idle<S> {
    fn new(inner: S) -> Idle<S> {
        Idle { inner, deadline: Box::pin(tokio::time::sleep(IDLE)) }
    }

    fn moved(&mut self) {
        self.deadline.as_mut().reset(tokio::time::Instant::now() + IDLE);
    }

    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle CDR connection")));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => this.waiting(cx),
            ready => {
                this.moved();
                ready
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.waiting(cx),
            ready => {
                this.moved();
                ready
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A silent connection fails after [`IDLE`] (paused time: no waiting).
    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_idle() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut idle = Idle::new(stream);
        let started = tokio::time::Instant::now();
        let mut buffer = [0u8; 8];
        let error = idle.read(&mut buffer).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= IDLE, "{:?}", started.elapsed());
    }
}
