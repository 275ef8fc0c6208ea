//! Each simulated server's Call Bridge REST API, over HTTPS with basic auth,
//! answering XML as CMS does, for the legs its call bridge hosts.
//!
//! - `GET /api/v1/system/status`: `<status>` with `softwareVersion`,
//!   `uptimeSeconds`, `activated`, `clusterEnabled`, `cdrCorrelatorIndex`,
//!   `callLegsActive` (every type), `callLegsMaxActive`, `callLegsCompleted`.
//! - `GET /api/v1/callLegs?offset=&limit=`: `<callLegs total="N">` with
//!   `<callLeg id>` (`name`, `remoteParty`, `call`), ordered by id; `limit`
//!   defaults to 10 and is held to 1..=100; a value that is not a number
//!   answers 400 with CMS's `<failureDetails>`.
//! - `GET /api/v1/callLegs/<id>`: one leg with `type`, `subType`,
//!   `direction`, `status` (`state`, `durationSeconds`); 404 when this call
//!   bridge does not host it.
//! - `GET /api/v1/callBridges`: the cluster's call bridges (`<callBridge
//!   id><name>`); none on a single server, as an unclustered CMS answers.
//!
//! Without the MMP's credentials: 401 with `WWW-Authenticate: Basic
//! realm="acano"`. Faults from the control API ([`ApiFault`]): `down`
//! closes the port (connections refused) and cuts open connections,
//! `slow` answers after [`SLOW`], `error` answers 500.
//!
//! Bounds: at most [`MAX_HANDSHAKES`] TLS handshakes at once, each within
//! 10 s; requests have no body worth reading (GET only).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::cdr::record::escape;
use super::mmp::Credentials;
use super::world::World;
use crate::session::Guid;

/// How long a `slow` API takes to answer.
pub const SLOW: Duration = Duration::from_secs(30);
/// TLS handshakes in progress at once, per server.
pub const MAX_HANDSHAKES: usize = 64;
/// `callLegs` page size when `limit` is not given (as CMS).
pub const DEFAULT_LIMIT: usize = 10;
/// The largest page the simulator answers (CMS's own is not documented).
pub const MAX_LIMIT: usize = 100;

/// How a server's API misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiFault {
    /// It behaves.
    #[default]
    None,
    /// Its port is closed and open connections are cut.
    Down,
    /// Every answer takes [`SLOW`].
    Slow,
    /// Every answer is `500 Internal Server Error`.
    Error,
}

impl std::str::FromStr for ApiFault {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "none" => Ok(ApiFault::None),
            "down" => Ok(ApiFault::Down),
            "slow" => Ok(ApiFault::Slow),
            "error" => Ok(ApiFault::Error),
            other => Err(format!("unknown API fault '{other}' (none, down, slow, error)")),
        }
    }
}

/// The API faults of every server.
#[derive(Debug)]
pub struct ApiFaults(Vec<AtomicU8>);

impl ApiFaults {
    /// No faults on `n` servers.
    pub fn new(n: usize) -> Self {
        ApiFaults((0..n).map(|_| AtomicU8::new(0)).collect())
    }

    /// The fault in force on `server`.
    pub fn get(&self, server: usize) -> ApiFault {
        match self.0[server].load(Ordering::Relaxed) {
            1 => ApiFault::Down,
            2 => ApiFault::Slow,
            3 => ApiFault::Error,
            _ => ApiFault::None,
        }
    }

    /// Sets the fault of `server`.
    pub fn set(&self, server: usize, fault: ApiFault) {
        let code = match fault {
            ApiFault::None => 0,
            ApiFault::Down => 1,
            ApiFault::Slow => 2,
            ApiFault::Error => 3,
        };
        self.0[server].store(code, Ordering::Relaxed);
    }
}

/// What one server's API shares.
pub struct ApiContext {
    /// Index of the server in the world.
    pub server: usize,
    /// The deployment.
    pub world: Arc<Mutex<World>>,
    /// Who may call it (the MMP's user and password).
    pub credentials: Credentials,
    /// Faults in force.
    pub faults: Arc<ApiFaults>,
}

/// The TLS server settings for one certificate.
pub fn tls_config(cert: &super::api_cert::ApiCert) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.certificate.clone()], cert.key.clone_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the API on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    context: Arc<ApiContext>,
    shutdown: watch::Receiver<bool>,
) {
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(_) => return,
    };
    let (sender, incoming) = mpsc::channel(MAX_HANDSHAKES);
    let accept = tokio::spawn(accept(listener, TlsAcceptor::from(tls), context.clone(), sender, shutdown.clone()));
    let router = router(context);
    let mut stop = shutdown;
    let _ = axum::serve(TlsListener { incoming, local }, router)
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
    accept.abort();
}

/// The API's routes, behind the fault and auth checks.
fn router(context: Arc<ApiContext>) -> Router {
    Router::new()
        .route("/api/v1/system/status", get(status))
        .route("/api/v1/callLegs", get(call_legs))
        .route("/api/v1/callLegs/{id}", get(call_leg))
        .route("/api/v1/callBridges", get(call_bridges))
        .fallback(|| async { (StatusCode::NOT_FOUND, "") })
        .layer(axum::middleware::from_fn_with_state(context.clone(), guard))
        .with_state(context)
}

/// Accepts TCP connections (none while `down`) and hands each, once its
/// TLS handshake is done, to the HTTP server.
async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    context: Arc<ApiContext>,
    handshaken: mpsc::Sender<(Guarded, SocketAddr)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let address = listener.local_addr().ok();
    let mut listener = Some(listener);
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        // While "down", the port is closed: the kernel refuses connections.
        if context.faults.get(context.server) == ApiFault::Down {
            listener = None;
        } else if listener.is_none() {
            listener = address.and_then(|a| std::net::TcpListener::bind(a).ok()).and_then(|l| {
                l.set_nonblocking(true).ok()?;
                TcpListener::from_std(l).ok()
            });
        }
        let Some(open) = listener.as_ref() else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                _ = shutdown.changed() => return,
            }
        };
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let accepted = tokio::select! {
            accepted = open.accept() => accepted,
            // Look at the fault again now and then.
            _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
            _ = shutdown.changed() => return,
        };
        let Ok((socket, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let handshaken = handshaken.clone();
        let context = context.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(socket)).await {
                let guarded = Guarded { inner: stream, faults: context.faults.clone(), server: context.server };
                let _ = handshaken.send((guarded, peer)).await;
            }
        });
    }
}

/// The handshaken connections, as axum takes them.
struct TlsListener {
    incoming: mpsc::Receiver<(Guarded, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            // The acceptor stopped: only shutdown is left.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A TLS connection that fails once its server's API is `down`, so that
/// open connections are cut as a stopped server's would be.
pub struct Guarded {
    inner: TlsStream<TcpStream>,
    faults: Arc<ApiFaults>,
    server: usize,
}

impl Guarded {
    fn down(&self) -> bool {
        self.faults.get(self.server) == ApiFault::Down
    }
}

fn cut() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "the simulated API is down")
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.down() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.down() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Faults first, then basic auth.
async fn guard(State(context): State<Arc<ApiContext>>, request: Request, next: Next) -> Response {
    match context.faults.get(context.server) {
        ApiFault::Error => return (StatusCode::INTERNAL_SERVER_ERROR, "").into_response(),
        ApiFault::Slow => tokio::time::sleep(SLOW).await,
        ApiFault::None | ApiFault::Down => {}
    }
    if !authorized(request.headers(), &context.credentials) {
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"acano\"")], "").into_response();
    }
    next.run(request).await
}

fn authorized(headers: &HeaderMap, credentials: &Credentials) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else { return false };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = data_encoding::BASE64.decode(encoded.trim().as_bytes()) else { return false };
    let expected = format!("{}:{}", credentials.user, credentials.password);
    // Compare in constant time: the password must not leak through timing.
    same_bytes(&decoded, expected.as_bytes())
}

/// Equality that takes as long whichever byte differs, so that the
/// password does not leak through timing.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

async fn status(State(context): State<Arc<ApiContext>>) -> Response {
    let world = context.world.lock().expect("the world lock is never poisoned");
    let s = world.callbridge_status(context.server);
    let version = world.servers()[context.server].release.version();
    xml(
        StatusCode::OK,
        format!(
            "<?xml version=\"1.0\"?>\n<status><softwareVersion>{version}</softwareVersion>\
             <uptimeSeconds>{}</uptimeSeconds><cdrTime>{}</cdrTime><activated>true</activated>\
             <clusterEnabled>{}</clusterEnabled><cdrCorrelatorIndex>{}</cdrCorrelatorIndex>\
             <callLegsActive>{}</callLegsActive><callLegsMaxActive>{}</callLegsMaxActive>\
             <callLegsCompleted>{}</callLegsCompleted></status>\n",
            s.uptime_seconds,
            super::cdr::record::cdr_time(world.now()),
            s.cluster_enabled,
            s.cdr_correlator_index,
            s.call_legs_active,
            s.call_legs_max_active,
            s.call_legs_completed
        ),
    )
}

fn parameter_error(parameter: &str) -> Response {
    xml(
        StatusCode::BAD_REQUEST,
        format!(
            "<?xml version=\"1.0\"?>\n<failureDetails><parameterError parameter=\"{parameter}\" error=\"invalidValue\" /></failureDetails>\n"
        ),
    )
}

async fn call_legs(State(context): State<Arc<ApiContext>>, RawQuery(query): RawQuery) -> Response {
    let (mut offset, mut limit) = (0usize, DEFAULT_LIMIT);
    for pair in query.as_deref().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "offset" => match value.parse() {
                Ok(v) => offset = v,
                Err(_) => return parameter_error("offset"),
            },
            "limit" => match value.parse::<usize>() {
                Ok(v) => limit = v.clamp(1, MAX_LIMIT),
                Err(_) => return parameter_error("limit"),
            },
            // CMS filters (filter, callId, ...) are not simulated.
            _ => {}
        }
    }
    let world = context.world.lock().expect("the world lock is never poisoned");
    // The page is built from the legs in place: the world lock holds up
    // the clock, so nothing is copied under it but the page.
    let total = world.legs_on(context.server).count();
    let mut body = format!("<?xml version=\"1.0\"?>\n<callLegs total=\"{total}\">");
    for leg in world.legs_on(context.server).skip(offset).take(limit) {
        body.push_str(&format!(
            "<callLeg id=\"{}\"><name>{}</name><remoteParty>{}</remoteParty><call>{}</call></callLeg>",
            leg.id,
            escape(&leg.display_name),
            escape(&leg.remote_party),
            leg.call
        ));
    }
    body.push_str("</callLegs>\n");
    xml(StatusCode::OK, body)
}

async fn call_leg(State(context): State<Arc<ApiContext>>, Path(id): Path<String>) -> Response {
    let world = context.world.lock().expect("the world lock is never poisoned");
    let Some(leg) = id.parse::<Guid>().ok().and_then(|id| world.leg_on(context.server, id)) else {
        return xml(
            StatusCode::NOT_FOUND,
            "<?xml version=\"1.0\"?>\n<failureDetails><callLegDoesNotExist /></failureDetails>\n".into(),
        );
    };
    let duration = (world.now() - leg.since).num_seconds();
    let sub_type = if leg.distribution_link { "<subType>distributionLink</subType>" } else { "" };
    xml(
        StatusCode::OK,
        format!(
            "<?xml version=\"1.0\"?>\n<callLeg id=\"{}\"><name>{}</name><remoteParty>{}</remoteParty>\
             <call>{}</call><type>{}</type>{sub_type}<direction>incoming</direction>\
             <status><state>connected</state><durationSeconds>{duration}</durationSeconds></status></callLeg>\n",
            leg.id,
            escape(&leg.display_name),
            escape(&leg.remote_party),
            leg.call,
            leg.leg_type.as_str()
        ),
    )
}

async fn call_bridges(State(context): State<Arc<ApiContext>>) -> Response {
    let world = context.world.lock().expect("the world lock is never poisoned");
    let servers = world.servers();
    let clustered = servers.len() > 1;
    let mut body =
        format!("<?xml version=\"1.0\"?>\n<callBridges total=\"{}\">", if clustered { servers.len() } else { 0 });
    if clustered {
        for (i, server) in servers.iter().enumerate() {
            body.push_str(&format!(
                "<callBridge id=\"{}\"><name>{}</name></callBridge>",
                world.callbridge_id(i),
                escape(&server.name)
            ));
        }
    }
    body.push_str("</callBridges>\n");
    xml(StatusCode::OK, body)
}
