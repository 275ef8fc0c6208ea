//! `wbguard watch`: the guard.
//!
//! The stages, in flow order: syslog listeners ([`ingest`]) and followed
//! files ([`follow`]) hand batches of messages through one bounded queue to
//! the guard task ([`guard`]), which parses them with the core, feeds the
//! leak model and takes decisions with the core's policy; it keeps history
//! ([`history`]) and tells webhooks ([`notify`]); the HTTP side ([`http`])
//! serves the page, the metrics and the API. One stop (SIGTERM or SIGINT
//! for `wbguard watch`) ends every stage; SIGHUP rereads the configuration.
//!
//! In observe mode (the default) it decides and reports; in enforce mode it
//! also acts, one restart at a time, through [`enforce`].

mod enforce;
mod follow;
mod guard;
mod history;
mod http;
mod ingest;
mod notify;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use wbguard_core::policy::Mode;

use crate::cli::{StatusArgs, WatchArgs};
use crate::config::watch::{parse_mode, WatchSettings};
use crate::config::Config;
use crate::exit::Outcome;
pub use ingest::Listen;
use ingest::{Intake, Sources};

/// Batches of messages waiting for the guard (each about what one read
/// returns, tens of KiB: a few MiB in all, which keeps the guard under
/// 64 MB however fast syslog comes). Streams wait when it is full; UDP
/// datagrams are dropped and counted.
const QUEUE: usize = 64;

/// What a running guard listens on; printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoints {
    /// Syslog listeners, as URLs.
    pub syslog: Vec<String>,
    /// Files followed.
    pub follow: Vec<String>,
    /// The HTTP side.
    pub http: SocketAddr,
}

/// The configuration (if any) and the guard's settings, flags applied.
fn settings(args: &WatchArgs) -> anyhow::Result<(Option<Config>, WatchSettings)> {
    let config = args.config.as_ref().map(|path| crate::config::load(Some(path)).map(|(_, c)| c)).transpose()?;
    let mut settings = config.as_ref().map_or_else(WatchSettings::default, |c| c.watch.clone());
    if let Some(mode) = &args.mode {
        settings.policy.mode = parse_mode(mode).context("--mode")?;
    }
    if !args.listen_syslog.is_empty() {
        settings.listen_syslog = args
            .listen_syslog
            .iter()
            .map(|l| l.parse().map_err(|e: String| anyhow::anyhow!(e)))
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(http) = &args.listen_http {
        settings.listen_http = http.parse().with_context(|| format!("--listen-http {http}: not ADDR:PORT"))?;
    }
    settings.follow.extend(args.follow.iter().cloned());
    if settings.policy.mode == Mode::Enforce && config.is_none() {
        anyhow::bail!("enforce mode needs --config: the servers to restart and the sources allowed to send syslog");
    }
    if settings.tls.is_none() && settings.listen_syslog.iter().any(|l| matches!(l, Listen::Tls(_))) {
        anyhow::bail!("a tls:// listener needs tls_certificate and tls_key in the configuration's [watch]");
    }
    Ok((config, settings))
}

fn sources(config: Option<&Config>) -> anyhow::Result<Sources> {
    config.map_or_else(|| Ok(Sources::open()), Sources::from_config)
}

fn rules(config: Option<Config>, settings: &WatchSettings) -> guard::Rules {
    guard::Rules { policy: settings.policy.clone(), zone: settings.log_timezone, retention: settings.retention, config }
}

/// Logs through tracing to standard error; `WBGUARD_LOG` filters (`info` by default).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WBGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// A guard ready to serve: configuration read, state opened.
pub struct Prepared {
    args: WatchArgs,
    settings: WatchSettings,
    config: Option<Config>,
    sources: Sources,
    tls: Option<tokio_rustls::TlsAcceptor>,
    history: history::History,
    restarted: std::collections::BTreeMap<String, chrono::DateTime<chrono::Utc>>,
}

/// Reads the configuration and opens the state (errors before any socket).
pub fn prepare(args: &WatchArgs) -> anyhow::Result<Prepared> {
    let (config, settings) = settings(args)?;
    let sources = sources(config.as_ref())?;
    let state_dir = match (&args.state_dir, &config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(config)) => config.state_dir.clone(),
        (None, None) => crate::config::default_state_dir(),
    };
    let tls = settings.tls.as_ref().map(|(certificate, key)| ingest::tls_acceptor(certificate, key)).transpose()?;
    let store = crate::store::Store::open(&state_dir)?;
    let (history, restarted) = history::History::start(store, settings.retention)?;
    Ok(Prepared { args: args.clone(), settings, config, sources, tls, history, restarted })
}

/// Runs `wbguard watch`.
pub fn run(args: &WatchArgs) -> anyhow::Result<Outcome> {
    init_logging();
    let prepared = prepare(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let stop = async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        };
        // Scripts wait for this line: where the guard listens.
        let announce = |endpoints: &Endpoints| println!("{}", serde_json::to_string(endpoints).unwrap_or_default());
        serve(prepared, true, stop, announce).await
    })?;
    Ok(Outcome::Success)
}

/// Serves until `stop` completes; `announce` hears where it listens once
/// every socket is bound. With `reload`, SIGHUP rereads the configuration.
pub async fn serve(
    prepared: Prepared,
    reload_on_hangup: bool,
    stop: impl std::future::Future<Output = ()>,
    announce: impl FnOnce(&Endpoints),
) -> anyhow::Result<()> {
    let Prepared { args, settings, config, sources, tls, history, restarted } = prepared;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (queue, messages) = mpsc::channel(QUEUE);
    let counters = Arc::new(ingest::IngestCounters::default());
    let sources = Arc::new(RwLock::new(Arc::new(sources)));
    let intake = Intake { queue, sources: sources.clone(), counters: counters.clone() };
    let mut tasks = tokio::task::JoinSet::new();
    let mut bound_syslog = Vec::new();
    for listen in &settings.listen_syslog {
        let bound = ingest::bind(listen, tls.as_ref()).await?;
        bound_syslog.push(bound.url()?);
        tasks.spawn(bound.serve(intake.clone(), shutdown_rx.clone()));
    }
    for path in &settings.follow {
        tasks.spawn(follow::follow(path.clone(), intake.clone(), shutdown_rx.clone()));
    }
    drop(intake);
    let notifier = notify::Notifier::start(settings.webhooks.clone());
    let shared = Arc::new(guard::Shared::new(settings.policy.mode, counters, notifier.counters.clone()));
    let guard = guard::Guard {
        rules: rules(config, &settings),
        limit: settings.limit,
        shared: shared.clone(),
        history: history.clone(),
        restarted,
        notifier: notifier.clone(),
    };
    *shared.restart_token.write().expect("never poisoned") = settings.restart_token.clone();
    let (reload, reloads) = mpsc::channel(4);
    let (manual, manuals) = mpsc::channel(4);
    tasks.spawn(guard.run(messages, reloads, manuals, shutdown_rx.clone()));
    let listener = tokio::net::TcpListener::bind(settings.listen_http)
        .await
        .with_context(|| format!("cannot listen on http://{}", settings.listen_http))?;
    let endpoints = Endpoints {
        syslog: bound_syslog,
        follow: settings.follow.iter().map(|p| p.display().to_string()).collect(),
        http: listener.local_addr()?,
    };
    announce(&endpoints);
    let mut http_shutdown = shutdown_rx.clone();
    let router = http::router(shared.clone(), history, manual);
    tasks.spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = http_shutdown.changed().await;
            })
            .await;
    });
    tracing::info!(
        "watching ({:?} mode): syslog on {}{}, status on http://{}",
        settings.policy.mode,
        endpoints.syslog.join(", "),
        endpoints.follow.iter().map(|f| format!(", file {f}")).collect::<String>(),
        endpoints.http
    );
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = hangup.recv(), if reload_on_hangup => match reloaded(&args, &settings) {
                Ok((config, new_settings, new_sources)) => {
                    *sources.write().expect("never poisoned") = Arc::new(new_sources);
                    *notifier.webhooks.write().expect("never poisoned") = new_settings.webhooks.clone();
                    *shared.restart_token.write().expect("never poisoned") = new_settings.restart_token.clone();
                    let _ = reload.send(rules(config, &new_settings)).await;
                }
                Err(error) => tracing::error!("reload refused, keeping the running configuration: {error:#}"),
            },
        }
    }
    tracing::info!("stopping: an in-flight restart is journaled, history is flushed");
    let _ = shutdown.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Reads the configuration again (SIGHUP). What needs a new process to
/// change (listeners, files, limit) is kept, with a warning.
fn reloaded(args: &WatchArgs, running: &WatchSettings) -> anyhow::Result<(Option<Config>, WatchSettings, Sources)> {
    let (config, settings) = settings(args)?;
    let sources = sources(config.as_ref())?;
    let fixed = [
        ("listen_syslog", settings.listen_syslog != running.listen_syslog),
        ("listen_http", settings.listen_http != running.listen_http),
        ("tls", settings.tls != running.tls),
        ("follow", settings.follow != running.follow),
        ("limit", settings.limit != running.limit),
    ];
    for (name, _) in fixed.iter().filter(|(_, changed)| *changed) {
        tracing::warn!("reload: {name} changed; it takes effect when the guard is restarted");
    }
    Ok((config, settings, sources))
}

/// Runs `wbguard status`: asks a running guard and prints what it knows.
pub fn status(args: &StatusArgs) -> anyhow::Result<Outcome> {
    let url = args.url.trim_end_matches('/');
    if !url.starts_with("http://") {
        anyhow::bail!("--url must start with http://");
    }
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(std::time::Duration::from_secs(10))).build().into();
    let mut response =
        agent.get(&format!("{url}/api/status")).call().with_context(|| format!("no guard answers at {url}"))?;
    let status: serde_json::Value = response.body_mut().read_json().context("not a wbguard status")?;
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
            // serde_json's Display ignores widths: format the numbers as text.
            wb["active"].to_string(),
            format!("{}-{}", wb["leaked_lower"], wb["leaked_upper"]),
            wb["droppable_upper"].to_string(),
            wb["lockout_forecast"].as_str().map_or("-".to_owned(), |t| t.chars().take(16).collect()),
            decision
        );
    }
    println!("syslog messages: {}", status["syslog_messages"]);
    Ok(Outcome::Success)
}
