//! `wbguard watch`: the guard.
//!
//! The stages, in flow order: syslog listeners ([`ingest`]) hand messages
//! through one bounded queue to the guard task ([`guard`]), which parses
//! them with the core, feeds the leak model and takes decisions with the
//! core's policy; the HTTP side ([`http`]) serves what it knows. One
//! shutdown signal (SIGTERM or SIGINT) stops every stage.
//!
//! In observe mode (the default) it decides and reports; in enforce mode it
//! also acts, one restart at a time, through [`enforce`].

mod enforce;
mod guard;
mod history;
mod http;
mod ingest;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use wbguard_core::policy::{Mode, Policy};

use crate::cli::{StatusArgs, WatchArgs};
use crate::exit::Outcome;
use ingest::{AllowList, Intake, Listen};

/// Messages waiting for the guard; past this, new ones are dropped and
/// counted (the senders are never slowed down).
const QUEUE: usize = 100_000;

/// What a running guard listens on; printed as one JSON line.
#[derive(Debug, Serialize)]
struct Endpoints {
    syslog: Vec<String>,
    http: SocketAddr,
}

/// Runs `wbguard watch`.
pub fn run(args: &WatchArgs) -> anyhow::Result<Outcome> {
    let mode = match args.mode.as_deref() {
        None | Some("observe") => Mode::Observe,
        Some("enforce") => Mode::Enforce,
        Some(other) => anyhow::bail!("--mode {other}: use observe or enforce"),
    };
    if mode == Mode::Enforce && args.config.is_none() {
        anyhow::bail!("--mode enforce needs --config: the servers to restart and the sources allowed to send syslog");
    }
    let listens: Vec<Listen> = if args.listen_syslog.is_empty() {
        vec!["udp://127.0.0.1:5514".parse().expect("valid"), "tcp://127.0.0.1:5514".parse().expect("valid")]
    } else {
        args.listen_syslog
            .iter()
            .map(|l| l.parse().map_err(|e: String| anyhow::anyhow!(e)))
            .collect::<anyhow::Result<_>>()?
    };
    let listen_http: SocketAddr =
        args.listen_http.parse().with_context(|| format!("--listen-http {}: not ADDR:PORT", args.listen_http))?;
    // With a configuration, only its servers may send; without, anyone (observe only).
    let config = args.config.as_ref().map(|path| crate::config::load(Some(path)).map(|(_, c)| c)).transpose()?;
    let allow = match &config {
        Some(config) => {
            let mut addresses = Vec::new();
            for server in &config.servers {
                let resolved = std::net::ToSocketAddrs::to_socket_addrs(&(server.host.as_str(), server.port))
                    .with_context(|| format!("server {}: cannot resolve {}", server.name, server.host))?;
                addresses.extend(resolved.map(|a| a.ip()));
            }
            AllowList(Some(addresses))
        }
        None => AllowList(None),
    };
    let state_dir = match (&args.state_dir, &config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(config)) => config.state_dir.clone(),
        (None, None) => crate::config::default_state_dir(),
    };
    let store = crate::store::Store::open(&state_dir)?;
    let (history, restarted) = history::History::start(store, chrono::Duration::days(guard::RETENTION_DAYS))?;
    let policy = Policy { mode, ..Policy::default() };
    let enforce = config.filter(|_| mode == Mode::Enforce);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(listens, listen_http, allow, policy, history, restarted, enforce))?;
    Ok(Outcome::Success)
}

async fn serve(
    listens: Vec<Listen>,
    listen_http: SocketAddr,
    allow: AllowList,
    policy: Policy,
    history: history::History,
    restarted: std::collections::BTreeMap<String, chrono::DateTime<chrono::Utc>>,
    enforce: Option<crate::config::Config>,
) -> anyhow::Result<()> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (queue, messages) = mpsc::channel(QUEUE);
    let counters = Arc::new(ingest::IngestCounters::default());
    let intake = Intake { queue, allow, counters: counters.clone() };
    let mut tasks = tokio::task::JoinSet::new();
    let mut bound_syslog = Vec::new();
    for listen in &listens {
        let bound = ingest::bind(listen).await?;
        let scheme = if matches!(listen, Listen::Udp(_)) { "udp" } else { "tcp" };
        bound_syslog.push(format!("{scheme}://{}", bound.local_addr()?));
        tasks.spawn(bound.serve(intake.clone(), shutdown_rx.clone()));
    }
    drop(intake);
    let shared = Arc::new(guard::Shared::new(policy.mode, counters));
    let mode = policy.mode;
    let zone = chrono_tz::Tz::UTC;
    let guard = guard::Guard { policy, zone, shared: shared.clone(), history: history.clone(), restarted, enforce };
    tasks.spawn(guard.run(messages, shutdown_rx.clone()));
    let listener = tokio::net::TcpListener::bind(listen_http)
        .await
        .with_context(|| format!("cannot listen on http://{listen_http}"))?;
    let endpoints = Endpoints { syslog: bound_syslog, http: listener.local_addr()? };
    println!("{}", serde_json::to_string(&endpoints)?);
    let mut http_shutdown = shutdown_rx.clone();
    tasks.spawn(async move {
        let _ = axum::serve(listener, http::router(shared, history))
            .with_graceful_shutdown(async move {
                let _ = http_shutdown.changed().await;
            })
            .await;
    });
    eprintln!(
        "wbguard: watching ({mode:?} mode): syslog on {}, status on http://{}",
        endpoints.syslog.join(", "),
        endpoints.http
    );
    wait_for_signal().await?;
    let _ = shutdown.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

/// Runs `wbguard status`: asks a running guard and prints what it knows.
pub fn status(args: &StatusArgs) -> anyhow::Result<Outcome> {
    let url = args.url.trim_end_matches('/');
    let address = url.strip_prefix("http://").context("--url must start with http://")?;
    let mut stream = std::net::TcpStream::connect(address).with_context(|| format!("no guard answers at {url}"))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    std::io::Write::write_all(&mut stream, format!("GET /api/status HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response)?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).context("no answer")?;
    let status: serde_json::Value = serde_json::from_str(body).context("not a wbguard status")?;
    println!(
        "guard at {url}: {} mode, as of {}",
        status["mode"].as_str().unwrap_or("?"),
        status["now"].as_str().unwrap_or("?")
    );
    println!("{:<16} {:>6} {:>9} {:>9}  {:<17}  DECISION", "WEB BRIDGE", "ACTIVE", "LEAKED", "DROPPABLE", "LOCKOUT");
    let decisions = status["decisions"].as_array().cloned().unwrap_or_default();
    for wb in status["webbridges"].as_array().into_iter().flatten() {
        let host = wb["webbridge"].as_str().unwrap_or("?");
        let decision =
            decisions.iter().find(|d| d["webbridge"] == host).and_then(|d| d["reason"].as_str()).unwrap_or("-");
        println!(
            "{:<16} {:>6} {:>9} {:>9}  {:<17}  {}",
            host,
            wb["active"],
            format!("{}-{}", wb["leaked_lower"], wb["leaked_upper"]),
            wb["droppable_upper"],
            wb["lockout_forecast"].as_str().map_or("-".to_owned(), |t| t.chars().take(16).collect()),
            decision
        );
    }
    println!("syslog messages: {}", status["syslog_messages"]);
    Ok(Outcome::Success)
}
