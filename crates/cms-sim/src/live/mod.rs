//! `cms-sim run`: a live CMS deployment on loopback.
//!
//! Each simulated server gets an MMP over SSH ([`mmp`]), a web bridge page
//! over HTTP ([`web`]), syslog to the configured destinations
//! ([`syslog_out`]), the Call Bridge API over HTTPS ([`api`], its
//! certificate from [`api_cert`]) and CDRs posted to the configured
//! receivers ([`cdr`]); one control port serves the truth API ([`control`]).
//! A clock task advances the session model ([`world`]) at `speed` times
//! real time. Everything binds to 127.0.0.1 and stops on one signal.

pub mod api;
pub mod api_cert;
pub mod cdr;
mod commands;
pub mod control;
pub mod faults;
pub mod hostkey;
pub mod mmp;
pub mod syslog_out;
pub mod web;
pub mod world;

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::scenario::Scenario;
pub use mmp::Credentials;
pub use syslog_out::{Destination, Outbox};
use world::World;

/// Writes `path` through a temporary file, so a crash leaves the old one.
pub(crate) fn write_replacing(path: &std::path::Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))
}

/// Everything `cms-sim run` needs, resolved from flags and scenario file.
#[derive(Clone)]
pub struct LiveConfig {
    /// The deployment and its load.
    pub scenario: Scenario,
    /// Seed of all randomness.
    pub seed: u64,
    /// Virtual seconds per real second.
    pub speed: f64,
    /// Virtual time at the start.
    pub start: DateTime<Utc>,
    /// Server i's SSH port is this plus i (0: any free port).
    pub ssh_port: u16,
    /// Server i's HTTP port is this plus i (0: any free port).
    pub http_port: u16,
    /// The truth API's port (0: any free port).
    pub control_port: u16,
    /// Where syslog goes.
    pub syslog: Vec<Destination>,
    /// Where host keys are kept.
    pub state_dir: PathBuf,
    /// Make new host keys.
    pub rotate_host_key: bool,
    /// Who may log in to the MMPs.
    pub credentials: Credentials,
    /// About one syslog line in this many is a record.
    pub lines_per_record: u32,
    /// How long a restarting web bridge stays down, in real time.
    pub restart_downtime: Duration,
    /// Virtual time simulated silently before the start, so that the
    /// deployment begins with sessions and leaks in place.
    pub warm_up: Duration,
    /// Servers (by name) whose MMP offers only old algorithms:
    /// diffie-hellman-group14-sha1, an ssh-rsa host key, aes128-cbc and
    /// hmac-sha1, as older appliances do.
    pub legacy_ssh: Vec<String>,
    /// Give server i its own loopback address, 127.0.1.i, with the same SSH
    /// and HTTP ports on each (the base ports), as real servers have: tools
    /// that take a list of addresses and one port then work unchanged.
    pub address_per_server: bool,
}

/// The endpoints of one simulated server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerEndpoints {
    /// Host name.
    pub name: String,
    /// MMP (SSH) address.
    pub ssh: SocketAddr,
    /// Web bridge page address.
    pub http: SocketAddr,
    /// SSH host key fingerprint (SHA256), as `ssh-keygen -l` shows it.
    pub host_key_sha256: String,
    /// The Call Bridge API (HTTPS) address.
    pub api: SocketAddr,
    /// SHA-256 of the API certificate's DER, lowercase hex.
    pub api_cert_sha256: String,
    /// The API certificate (PEM), to trust it as a CA file.
    pub api_cert: PathBuf,
    /// The call bridge's id (`/api/v1/callBridges`, CDR `callBridge`).
    pub callbridge_id: String,
}

/// What a running deployment listens on; printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoints {
    /// Per server.
    pub servers: Vec<ServerEndpoints>,
    /// The truth API.
    pub control: SocketAddr,
    /// Where syslog is sent.
    pub syslog: Vec<String>,
    /// Where every call bridge posts CDRs.
    pub cdr: Vec<String>,
}

/// The Call Bridge side of `cms-sim run`: CDR receivers and the API. Apart
/// from [`LiveConfig`] so that code building a `LiveConfig` field by field
/// goes on compiling; [`start`] uses the defaults.
#[derive(Debug, Clone, Default)]
pub struct CallBridgeOptions {
    /// Where every call bridge posts CDRs (at most four, as on CMS).
    pub cdr: Vec<cdr::Receiver>,
    /// How HTTPS receivers are verified.
    pub cdr_tls: cdr::CdrTls,
    /// Server i's API listens on this plus i (0: any free port).
    pub api_port: u16,
    /// Give every server a new API certificate.
    pub rotate_api_cert: bool,
}

/// A running deployment.
pub struct Running {
    /// Where it listens.
    pub endpoints: Endpoints,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Stops every task and waits for them.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Binds server `index`'s port: BASE + index on 127.0.0.1, or BASE on
/// 127.0.1.(index + 1) with an address per server. Base 0: any free port.
async fn bind(base: u16, index: usize, per_server: bool, what: &str) -> anyhow::Result<TcpListener> {
    let (ip, port) = if per_server {
        let last =
            u8::try_from(index + 1).ok().filter(|&b| b < 255).context("at most 254 servers with an address each")?;
        (std::net::Ipv4Addr::new(127, 0, 1, last), base)
    } else {
        let port =
            if base == 0 { 0 } else { u16::try_from(usize::from(base) + index).ok().context("port out of range")? };
        (std::net::Ipv4Addr::LOCALHOST, port)
    };
    TcpListener::bind((ip, port)).await.with_context(|| format!("binding the {what} port {ip}:{port}"))
}

/// Binds every port and starts every task, with the API on any free ports
/// and no CDR receivers.
pub async fn start(config: LiveConfig) -> anyhow::Result<Running> {
    start_with(config, CallBridgeOptions::default()).await
}

/// Binds every port and starts every task.
pub async fn start_with(config: LiveConfig, calls: CallBridgeOptions) -> anyhow::Result<Running> {
    anyhow::ensure!(
        calls.cdr.len() <= cdr::MAX_RECEIVERS,
        "at most {} CDR receivers (as on CMS), not {}",
        cdr::MAX_RECEIVERS,
        calls.cdr.len()
    );
    let cdr_tls = if calls.cdr.iter().any(|r| r.tls) { Some(cdr::client_config(&calls.cdr_tls)?) } else { None };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let servers = config.scenario.servers.clone();
    let warm_up = chrono::Duration::from_std(config.warm_up).context("warm-up too long")?;
    let mut world = World::new(
        config.scenario.clone(),
        config.seed,
        config.start - warm_up,
        config.lines_per_record,
        config.restart_downtime,
    );
    world.advance_to(config.start, None);
    let callbridge_ids = world.callbridge_ids();
    let named: Vec<(String, String)> =
        servers.iter().map(|s| s.name.clone()).zip(callbridge_ids.iter().cloned()).collect();
    let cdr_out = cdr::CdrOut::new(&named, &calls.cdr);
    world.go_live(cdr_out.clone());
    let world = Arc::new(Mutex::new(world));
    let faults = Arc::new(faults::Faults::new(servers.len()));
    let api_faults = Arc::new(api::ApiFaults::new(servers.len()));
    let outbox = syslog_out::start(&config.syslog, &shutdown_rx, &mut tasks);
    cdr_out.start(cdr_tls, &shutdown_rx, &mut tasks);

    let mut endpoints = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let legacy = config.legacy_ssh.contains(&server.name);
        let kind = if legacy { hostkey::KeyKind::Rsa } else { hostkey::KeyKind::Ed25519 };
        let host_key = hostkey::load_or_create(&config.state_dir.join(&server.name), kind, config.rotate_host_key)?;
        let fingerprint = host_key.public_key().fingerprint(russh::keys::HashAlg::Sha256).to_string();
        let ssh = bind(config.ssh_port, i, config.address_per_server, "SSH").await?;
        let http = bind(config.http_port, i, config.address_per_server, "HTTP").await?;
        let api_cert =
            api_cert::load_or_create(&config.state_dir.join(&server.name), &server.name, i, calls.rotate_api_cert)?;
        let api_listener = bind(calls.api_port, i, config.address_per_server, "API").await?;
        endpoints.push(ServerEndpoints {
            name: server.name.clone(),
            ssh: ssh.local_addr()?,
            http: http.local_addr()?,
            host_key_sha256: fingerprint,
            api: api_listener.local_addr()?,
            api_cert_sha256: api_cert.sha256.clone(),
            api_cert: api_cert.certificate_path.clone(),
            callbridge_id: callbridge_ids[i].clone(),
        });
        let api_context = Arc::new(api::ApiContext {
            server: i,
            world: world.clone(),
            credentials: config.credentials.clone(),
            faults: api_faults.clone(),
        });
        tasks.spawn(api::serve(api_listener, api::tls_config(&api_cert)?, api_context, shutdown_rx.clone()));
        let ssh_config = russh::server::Config {
            keys: vec![host_key],
            auth_rejection_time: Duration::from_millis(300),
            auth_rejection_time_initial: Some(Duration::ZERO),
            inactivity_timeout: Some(Duration::from_secs(600)),
            preferred: if legacy { legacy_algorithms() } else { russh::Preferred::default() },
            ..Default::default()
        };
        let context = Arc::new(mmp::MmpContext {
            server: i,
            name: server.name.clone(),
            world: world.clone(),
            outbox: outbox.clone(),
            credentials: config.credentials.clone(),
            faults: faults.clone(),
            config: Arc::new(ssh_config),
        });
        tasks.spawn(mmp::serve(ssh, context, shutdown_rx.clone()));
        let page = web::router(world.clone(), i);
        tasks.spawn(serve_http(http, page, shutdown_rx.clone()));
    }
    let control = bind(config.control_port, 0, false, "control").await?;
    let control_address = control.local_addr()?;
    let control_router = control::router(world.clone(), faults, api_faults, outbox.clone());
    tasks.spawn(serve_http(control, control_router, shutdown_rx.clone()));
    tasks.spawn(clock(world, outbox, config.speed, shutdown_rx));
    Ok(Running {
        endpoints: Endpoints {
            servers: endpoints,
            control: control_address,
            syslog: config.syslog.iter().map(ToString::to_string).collect(),
            cdr: calls.cdr.iter().map(ToString::to_string).collect(),
        },
        shutdown,
        tasks,
    })
}

/// The legacy profile: nothing newer than an old appliance would offer.
fn legacy_algorithms() -> russh::Preferred {
    use russh::kex::{DH_G14_SHA1, EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER, EXTENSION_SUPPORT_AS_SERVER};
    use std::borrow::Cow;
    russh::Preferred {
        // One real key exchange; the other two names only mark protocol
        // extensions, as in russh's default list.
        kex: Cow::Owned(vec![DH_G14_SHA1, EXTENSION_SUPPORT_AS_SERVER, EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER]),
        key: Cow::Owned(vec![russh::keys::Algorithm::Rsa { hash: None }]),
        cipher: Cow::Owned(vec![russh::cipher::AES_128_CBC]),
        mac: Cow::Owned(vec![russh::mac::HMAC_SHA1]),
        ..russh::Preferred::default()
    }
}

async fn serve_http(listener: TcpListener, router: axum::Router, mut shutdown: watch::Receiver<bool>) {
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
}

/// Advances virtual time with real time, and sends what was logged.
async fn clock(world: Arc<Mutex<World>>, outbox: Outbox, speed: f64, mut shutdown: watch::Receiver<bool>) {
    let mut real_start = Instant::now();
    let mut virtual_start = world.lock().expect("the world lock is never poisoned").now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut was_paused = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let mut lines = Vec::new();
        {
            let mut world = world.lock().expect("the world lock is never poisoned");
            if world.paused() {
                was_paused = true;
                continue;
            }
            if was_paused {
                // Resume where time stopped.
                was_paused = false;
                real_start = Instant::now();
                virtual_start = world.now();
            }
            let elapsed = real_start.elapsed().as_secs_f64() * speed;
            let target = virtual_start + chrono::Duration::milliseconds((elapsed * 1000.0) as i64);
            world.advance_to(target, Some(&mut lines));
        }
        outbox.send_all(lines);
    }
}
