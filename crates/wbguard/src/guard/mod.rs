//! The guard, as a service: `wbguard watch` and `wbguard demo` run it.
//!
//! The stages, in flow order: syslog listeners and followed files
//! ([`crate::ingest`]) hand batches of messages through one bounded queue to
//! the guard task ([`event_loop`]), which parses them with the core, feeds
//! the leak model and takes decisions with the core's policy; it keeps
//! history ([`history`]) and tells webhooks ([`notify`]); the HTTP side
//! ([`http`]) serves the page, the metrics and the API ([`api`]). One stop
//! ends every stage; a reload swaps the rules in.
//!
//! In observe mode (the default) it decides and reports; in enforce mode it
//! also acts, one restart at a time, through [`enforce`].
//!
//! Secrets are resolved here, when the guard starts or reloads: the webhook
//! URLs and the page's token. A guard that lacks one refuses to start (a
//! reload that lacks one is refused, the running configuration kept). In
//! enforce mode it also checks, without reading them, that each server's
//! MMP credentials can be used (they are fetched at each restart).

mod alerts;
pub mod api;
mod clock;
mod clusters;
mod drains;
mod enforce;
mod event_loop;
mod history;
mod hosts;
mod http;
mod metrics;
mod notify;
mod precheck;
mod snapshot;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use wbguard_core::policy::Mode;

use crate::cdr;
use crate::config::address::Listen;
use crate::config::guard_settings::GuardSettings;
use crate::config::{Config, Server};
use crate::ingest::{self, Intake, Sources};
use crate::secret::{self, Problem, Token};
pub use api::Endpoints;

/// Batches of messages waiting for the guard (each about what one read
/// returns, tens of KiB: a few MiB in all, so the queue does not grow with
/// the rate of syslog). Streams wait when it is full; UDP datagrams are
/// dropped and counted.
const QUEUE: usize = 64;

/// What the guard runs on: the configuration (none: observe only, any
/// source), its settings with the command line applied, and where it
/// keeps its state.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The servers, the allow list, what enforce mode restarts.
    pub config: Option<Config>,
    /// The guard's settings.
    pub settings: GuardSettings,
    /// Where history lives.
    pub state_dir: PathBuf,
}

/// A setup's secrets, fetched: what the guard needs to run with it.
struct Resolved {
    webhooks: Vec<notify::Webhook>,
    restart_token: Option<Token>,
    sources: Sources,
}

/// The tokens of the status page must not be guessable.
const MIN_TOKEN: usize = 16;

impl Setup {
    /// Checks what only a running guard needs (enforce mode has servers,
    /// a TLS listener has its certificate) and fetches its secrets.
    fn resolve(&self) -> anyhow::Result<Resolved> {
        let settings = &self.settings;
        if settings.policy.mode == Mode::Enforce && self.config.is_none() {
            anyhow::bail!("enforce mode needs --config: the servers to restart and the sources allowed to send syslog");
        }
        if settings.tls.is_none() && settings.listen_syslog.iter().any(|l| matches!(l, Listen::Tls(_))) {
            anyhow::bail!("a tls:// listener needs tls_certificate and tls_key in the configuration's [watch]");
        }
        if settings.tls.is_none() && settings.listen_cdr.iter().any(|l| l.tls) {
            anyhow::bail!("an https:// CDR listener needs tls_certificate and tls_key in the configuration's [watch]");
        }
        // Every server the guard may restart: all in enforce mode, else
        // those of the clusters whose own policy enforces.
        let enforced = |name: &str| match settings.clusters.iter().find(|c| c.servers.iter().any(|s| s == name)) {
            Some(cluster) => cluster.policy.mode == Mode::Enforce,
            None => settings.policy.mode == Mode::Enforce,
        };
        for server in self.config.iter().flat_map(|config| &config.servers).filter(|s| enforced(&s.name)) {
            usable_credentials(server)?;
        }
        let webhooks = settings
            .webhooks
            .iter()
            .enumerate()
            .map(|(i, webhook)| notify::Webhook::resolve(webhook).with_context(|| format!("webhook[{i}]")))
            .collect::<anyhow::Result<_>>()?;
        let restart_token = match &settings.restart_token {
            None => None,
            Some(location) => {
                let token = location.resolve().context("watch.restart_token_env")?;
                if token.len() < MIN_TOKEN {
                    anyhow::bail!(
                        "watch.restart_token_env: {} must hold at least {MIN_TOKEN} characters",
                        location.describe()
                    );
                }
                Some(Token::new(token))
            }
        };
        let sources = self.config.as_ref().map_or_else(|| Ok(Sources::open()), Sources::from_config)?;
        Ok(Resolved { webhooks, restart_token, sources })
    }
}

/// In enforce mode the guard restarts alone, at any hour: each server's
/// credentials must be usable now, checked without reading them. A source
/// that can never work (a password file others may read) is refused
/// wherever it is in the list, as it is certainly a mistake. A login tries
/// the sources in order and stops at the first whose secret it cannot
/// fetch, so the first one must be there (an unset variable is fine
/// further down, reached only if an earlier source is rejected).
fn usable_credentials(server: &Server) -> anyhow::Result<()> {
    for source in &server.auth {
        if let Some(problem) = source.problem().filter(Problem::is_error) {
            anyhow::bail!("enforce mode: server {}: {}: {problem}", server.name, secret::describe(source));
        }
    }
    let Some(first) = server.auth.first() else {
        anyhow::bail!("enforce mode: server {} has no credentials", server.name);
    };
    let why = match first.problem() {
        Some(problem) => problem.to_string(),
        None if !first.unattended() => "a guard has no terminal to ask for a password on".into(),
        None => return Ok(()),
    };
    anyhow::bail!(
        "enforce mode: server {}: its credentials cannot be used now ({}: {why}); a login stops at the first source it cannot use",
        server.name,
        secret::describe(first)
    )
}

/// A guard ready to serve: secrets fetched, state opened, TLS loaded,
/// metrics registered.
pub struct Prepared {
    setup: Setup,
    resolved: Resolved,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<snapshot::Shared>,
    history: history::History,
    restarted: std::collections::BTreeMap<String, chrono::DateTime<chrono::Utc>>,
    /// Drains the journal says were never ended (a previous guard stopped).
    open_drains: Vec<crate::store::drain::OpenDrain>,
}

/// Prepares `setup` (errors before any socket is bound).
pub fn prepare(setup: Setup) -> anyhow::Result<Prepared> {
    let resolved = setup.resolve()?;
    let tls =
        setup.settings.tls.as_ref().map(|(certificate, key)| ingest::tls_acceptor(certificate, key)).transpose()?;
    let store = crate::store::Store::open(&setup.state_dir)?;
    // Before any data the status already says which clock the guard keeps.
    let mut first = snapshot::Snapshot::empty(setup.settings.policy.mode);
    first.clock = setup.settings.clock;
    first.future_tolerance_seconds = setup.settings.future_tolerance.num_seconds();
    let shared = Arc::new(snapshot::Shared::new(first));
    let dropped = shared.metrics.history_dropped.clone();
    let open_drains = store.open_drains()?;
    let (history, restarted) = history::History::start(store, setup.settings.retention, dropped)?;
    // The CDR receiver's open legs come back from the same file (only when
    // it listens: legs of a receiver switched off would never change again).
    let live_legs = &shared.metrics.cdr.live;
    live_legs.set_max_sources(setup.settings.max_hosts);
    if !setup.settings.listen_cdr.is_empty() {
        cdr::open(live_legs, &setup.state_dir)?;
    }
    Ok(Prepared { setup, resolved, tls, shared, history, restarted, open_drains })
}

/// Rereads the setup on request (SIGHUP): the configuration file with the
/// command line applied again. It reads files and resolves names, so it
/// runs on a blocking thread, never on the async workers.
pub type Reload = Arc<dyn Fn() -> anyhow::Result<Setup> + Send + Sync>;

/// Serves until `stop` completes; `announce` hears where it listens once
/// every socket is bound. Each message on `reloads` rereads the setup
/// through `reload`.
pub async fn serve(
    prepared: Prepared,
    reload: Option<(Reload, mpsc::Receiver<()>)>,
    stop: impl std::future::Future<Output = ()>,
    announce: impl FnOnce(&Endpoints),
) -> anyhow::Result<()> {
    let Prepared { setup, resolved, tls, shared, history, restarted, open_drains } = prepared;
    let settings = setup.settings.clone();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (queue, messages) = mpsc::channel(QUEUE);
    let sources = Arc::new(RwLock::new(Arc::new(resolved.sources)));
    let intake = Intake { queue, sources: sources.clone(), counts: shared.metrics.syslog.clone() };
    let mut tasks = tokio::task::JoinSet::new();
    let mut bound_syslog = Vec::new();
    let places = connection_bounds(&settings.listen_syslog);
    for listen in &settings.listen_syslog {
        let bound = ingest::bind(listen, tls.as_ref()).await?;
        bound_syslog.push(bound.url()?);
        tasks.spawn(bound.serve(intake.clone(), places.syslog, shutdown_rx.clone()));
    }
    for path in &settings.follow {
        tasks.spawn(ingest::follow::follow(path.clone(), intake.clone(), shutdown_rx.clone()));
    }
    // CDRs: the same allow list as syslog; the live legs are
    // `shared.metrics.cdr.live`, which the guard task reads.
    let cdr_intake = cdr::listener::CdrIntake {
        live: shared.metrics.cdr.live.clone(),
        counts: shared.metrics.cdr.counts.clone(),
        sources: sources.clone(),
    };
    let mut bound_cdr = Vec::new();
    for listen in &settings.listen_cdr {
        let bound = cdr::listener::bind(listen, tls.as_ref()).await?;
        bound_cdr.push(bound.url()?);
        tasks.spawn(bound.serve(cdr_intake.clone(), shutdown_rx.clone()));
    }
    drop(intake);
    let notifier = notify::Notifier::start(resolved.webhooks, shared.metrics.webhooks.clone());
    *shared.restart_token.write().expect("never poisoned") = resolved.restart_token;
    let guard = event_loop::Guard {
        rules: event_loop::Rules::of(&setup),
        limit: settings.limit,
        shared: shared.clone(),
        history: history.clone(),
        restarted,
        open_drains,
        notifier: notifier.clone(),
        clock: clock::GuardClock::new(settings.clock, settings.future_tolerance),
        check: precheck::through_api(),
        cdr_on: !settings.listen_cdr.is_empty(),
    };
    let (rules_tx, rules_rx) = mpsc::channel(4);
    let (manual, manuals) = mpsc::channel(4);
    tasks.spawn(guard.run(messages, rules_rx, manuals, shutdown_rx.clone()));
    let listener = tokio::net::TcpListener::bind(settings.listen_http)
        .await
        .with_context(|| format!("cannot listen on http://{}", settings.listen_http))?;
    let endpoints = Endpoints {
        syslog: bound_syslog,
        follow: settings.follow.iter().map(|p| p.display().to_string()).collect(),
        http: listener.local_addr()?,
    };
    announce(&endpoints);
    tasks.spawn(http::serve(listener, places.http, http::router(shared.clone(), history, manual), shutdown_rx.clone()));
    tracing::info!(
        "watching ({:?} mode): syslog on {}{}{}, status on http://{}",
        settings.policy.mode,
        endpoints.syslog.join(", "),
        endpoints.follow.iter().map(|f| format!(", file {f}")).collect::<String>(),
        bound_cdr.iter().map(|url| format!(", CDRs on {url}/cdr")).collect::<String>(),
        endpoints.http
    );
    let (reload, mut reloads) = match reload {
        Some((reload, reloads)) => (Some(reload), Some(reloads)),
        None => (None, None),
    };
    tokio::pin!(stop);
    loop {
        let requested = async {
            match reloads.as_mut() {
                Some(reloads) => reloads.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => break,
            Some(()) = requested => {
                let Some(reload) = reload.clone() else { continue };
                let running = settings.clone();
                let reread = tokio::task::spawn_blocking(move || reloaded(&reload, &running)).await;
                match reread.unwrap_or_else(|e| Err(anyhow::anyhow!("the reload stopped: {e}"))) {
                    Ok((setup, resolved)) => {
                        *sources.write().expect("never poisoned") = Arc::new(resolved.sources);
                        *notifier.webhooks.write().expect("never poisoned") = resolved.webhooks;
                        *shared.restart_token.write().expect("never poisoned") = resolved.restart_token;
                        let _ = rules_tx.send(event_loop::Rules::of(&setup)).await;
                    }
                    Err(error) => tracing::error!("reload refused, keeping the running configuration: {error:#}"),
                }
            }
        }
    }
    tracing::info!("stopping: an in-flight restart is journaled, history is flushed");
    let _ = shutdown.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Connections each listener may hold at once.
struct Places {
    /// HTTP.
    http: usize,
    /// Each TCP or TLS syslog listener.
    syslog: usize,
}

/// Raises the file limit, then bounds the connections so that they fit
/// under it with room kept for restarts, webhooks and history
/// ([`ingest::descriptors`]); says what it found, and loudly when the
/// bounds had to be lowered.
fn connection_bounds(listen_syslog: &[Listen]) -> Places {
    use ingest::descriptors;
    let streams = listen_syslog.iter().filter(|l| !matches!(l, Listen::Udp(_))).count();
    let wanted = Places { http: http::MAX_HTTP_CONNECTIONS, syslog: ingest::MAX_CONNECTIONS };
    let Some(limit) = descriptors::raise() else { return wanted };
    // Open now, and the listeners about to be bound.
    let open = descriptors::open_now() + listen_syslog.len() + 1;
    let free = usize::try_from(limit.soft).unwrap_or(usize::MAX).saturating_sub(open);
    let mut gates = vec![wanted.http];
    gates.extend(std::iter::repeat_n(wanted.syslog, streams));
    let shared = descriptors::share(free, &gates);
    let places = Places { http: shared[0], syslog: shared.get(1).copied().unwrap_or(wanted.syslog) };
    let raised = if limit.soft > limit.was { format!(" (raised from {})", limit.was) } else { String::new() };
    if places.http < wanted.http || (streams > 0 && places.syslog < wanted.syslog) {
        tracing::warn!(
            "file limit {}{raised}, hard {}: too low for {} HTTP and {} syslog connections per TCP/TLS listener; \
             serving at most {} and {} (raise LimitNOFILE, or ulimit -n, to at least {})",
            limit.soft,
            limit.hard,
            wanted.http,
            wanted.syslog,
            places.http,
            places.syslog,
            open + gates.iter().map(|n| n + 1).sum::<usize>() + descriptors::RESERVED
        );
    } else {
        tracing::info!(
            "file limit {}{raised}: at most {} HTTP and {} syslog connections per TCP/TLS listener, {} descriptors kept for restarts, webhooks and history",
            limit.soft,
            places.http,
            places.syslog,
            descriptors::RESERVED
        );
    }
    places
}

/// Reads the setup again. What needs a new process to change (listeners,
/// files, limit, state) is kept, with a warning.
fn reloaded(reload: &Reload, running: &GuardSettings) -> anyhow::Result<(Setup, Resolved)> {
    let setup = reload()?;
    let resolved = setup.resolve()?;
    let settings = &setup.settings;
    let fixed = [
        ("listen_syslog", settings.listen_syslog != running.listen_syslog),
        ("listen_http", settings.listen_http != running.listen_http),
        ("listen_cdr", settings.listen_cdr != running.listen_cdr),
        ("tls", settings.tls != running.tls),
        ("follow", settings.follow != running.follow),
        ("limit", settings.limit != running.limit),
        ("future_tolerance", settings.future_tolerance != running.future_tolerance),
    ];
    for (name, _) in fixed.iter().filter(|(_, changed)| *changed) {
        tracing::warn!("reload: {name} changed; it takes effect when the guard is restarted");
    }
    Ok((setup, resolved))
}
