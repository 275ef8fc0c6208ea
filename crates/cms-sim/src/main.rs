//! `cms-sim`: the simulator's command line.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use clap::{Parser, Subcommand};

use cms_sim::genlog::{self, GenOptions, RestartRule};
use cms_sim::live::cdr::{CdrTls, Receiver};
use cms_sim::live::{self, CallBridgeOptions, Credentials, Destination, LiveConfig};
use cms_sim::scenario::{Release, Scenario};
use cms_sim::scenario_file::ScenarioFile;
use cms_sim::syslog::HeaderShape;

/// A simulated Cisco Meeting Server deployment whose Web Bridge 2 leaks
/// sessions (CSCvt73723), and which knows the truth.
#[derive(Debug, Parser)]
#[command(name = "cms-sim", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the syslog of a simulated deployment, and its ground truth.
    GenLog(GenLogArgs),
    /// Run a live deployment on 127.0.0.1: MMP over SSH, syslog, web bridge
    /// pages, the Call Bridge API over HTTPS, CDRs and a truth API. Prints
    /// one JSON line with the endpoints once every port listens; stops on
    /// SIGTERM or SIGINT.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Number of servers, named cms1..cmsN [default: 4].
    #[arg(long)]
    servers: Option<usize>,
    /// Server i (from 1) listens for SSH on BASE+i-1; 0 = any free port [default: 2201].
    #[arg(long, value_name = "BASE")]
    ssh_port: Option<u16>,
    /// Server i's web bridge page listens on BASE+i-1; 0 = any free port [default: 8081].
    #[arg(long, value_name = "BASE")]
    http_port: Option<u16>,
    /// The truth API's port; 0 = any free port [default: 8070].
    #[arg(long, value_name = "PORT")]
    control_port: Option<u16>,
    /// Send syslog here: udp://IP:PORT, tcp://IP:PORT, tcp://IP:PORT?framing=octet-counting. Repeatable.
    #[arg(long = "syslog", value_name = "URL")]
    syslog: Vec<Destination>,
    /// Virtual seconds per real second (1440 = a day per minute) [default: 1].
    #[arg(long, value_name = "X")]
    speed: Option<f64>,
    /// Where host keys are kept [default: ~/.local/state/cms-sim].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Give every server a new SSH host key.
    #[arg(long)]
    rotate_host_key: bool,
    /// Seed of all randomness [default: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// The MMP user; its password comes from CMS_SIM_PASSWORD (default "password") [default: admin].
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// OpenSSH public keys (one per line) that may log in as the user.
    #[arg(long, value_name = "FILE")]
    authorized_key: Option<PathBuf>,
    /// CMS release of every server: 2.8, 2.9 or 3.x [default: 2.9].
    #[arg(long)]
    release: Option<Release>,
    /// About one syslog line in this many is a record [default: 20].
    #[arg(long, value_name = "N")]
    lines_per_record: Option<u32>,
    /// Virtual start time (RFC 3339) [default: now].
    #[arg(long)]
    start: Option<DateTime<Utc>>,
    /// Give server i its own loopback address 127.0.1.i, all on the same
    /// SSH and HTTP ports, as real servers are (for tools that take a list
    /// of addresses and one port, like Cisco's script).
    #[arg(long)]
    address_per_server: bool,
    /// Simulate this many virtual hours silently before starting, so the
    /// deployment begins with sessions and leaks in place [default: 0].
    #[arg(long, value_name = "HOURS")]
    warm_up: Option<f64>,
    /// Offer only old SSH algorithms (diffie-hellman-group14-sha1, ssh-rsa,
    /// aes128-cbc, hmac-sha1) on every server, to test clients against old
    /// appliances. The scenario file can set it per server.
    #[arg(long)]
    legacy_ssh: bool,
    /// A TOML scenario file; flags given here win over it.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Every call bridge posts CDRs here: http://HOST:PORT/PATH or
    /// https://... Repeatable, at most 4 (as on CMS). `{server}` in the
    /// path becomes the posting server's name (e.g. /cdr?callbridge={server}).
    #[arg(long = "cdr", value_name = "URL")]
    cdr: Vec<Receiver>,
    /// Verify https CDR receivers against the CA certificates (PEM) in this
    /// file instead of the public roots.
    #[arg(long, value_name = "FILE", conflicts_with = "cdr_insecure")]
    cdr_ca: Option<PathBuf>,
    /// Accept any certificate from https CDR receivers (a lab receiver's
    /// self-signed one).
    #[arg(long)]
    cdr_insecure: bool,
    /// Server i (from 1) serves the Call Bridge API (HTTPS) on BASE+i-1;
    /// 0 = any free port [default: 8443].
    #[arg(long, value_name = "BASE")]
    api_port: Option<u16>,
    /// Give every server a new API certificate.
    #[arg(long)]
    rotate_api_cert: bool,
}

#[derive(Debug, clap::Args)]
struct GenLogArgs {
    /// Simulated days (default 7, or until --size when that is given).
    #[arg(long, value_name = "DAYS")]
    days: Option<f64>,
    /// Stop once the log has this size (e.g. 500M, 2G).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    size: Option<u64>,
    /// Number of servers, each with a web bridge and a call bridge.
    #[arg(long, default_value_t = 4)]
    servers: usize,
    /// Seed: the same seed writes the same log.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// About one line in this many is a Stats/STATS/audit record; the rest
    /// is CMS noise.
    #[arg(long, value_name = "N", default_value_t = 20)]
    lines_per_record: u32,
    /// Virtual start time (RFC 3339).
    #[arg(long, default_value = "2024-03-04T00:00:00Z")]
    start: DateTime<Utc>,
    /// One header shape for all lines: wire, mmp, bsd-ms, iso, relay,
    /// container [default: each server its own].
    #[arg(long, value_name = "SHAPE")]
    header: Option<HeaderShape>,
    /// Restart every web bridge at this time, daily (`02:00`) or weekly
    /// (`sat 02:00`), like Cisco's cron job. Repeatable.
    #[arg(long = "restart-at", value_name = "WHEN")]
    restart_at: Vec<RestartRule>,
    /// Peak concurrent sessions in the cluster on a weekday [default: 40 per server].
    #[arg(long, value_name = "N")]
    peak_sessions: Option<f64>,
    /// Probability that an ended Web Bridge 2 session leaks.
    #[arg(long, value_name = "P", default_value_t = 0.02)]
    leak_probability: f64,
    /// Share of CMA desktop/iOS sessions.
    #[arg(long, value_name = "SHARE", default_value_t = 0.1)]
    desktop_share: f64,
    /// CMS release of every server: 2.8, 2.9 or 3.x (3.x does not leak).
    #[arg(long, default_value = "2.9")]
    release: Release,
    /// Write the log here [default: standard output]. The file's
    /// modification time is set to the last line's, as a real log's would be.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write the ground truth (JSON lines) here.
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len()));
    let value: f64 = digits.parse().map_err(|_| format!("bad size '{text}'"))?;
    let factor = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1u64,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(format!("bad size unit in '{text}' (use K, M or G)")),
    };
    Ok((value * factor as f64) as u64)
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::GenLog(args) => gen_log(args),
        Command::Run(args) => run(args),
    };
    if let Err(error) = result {
        eprintln!("cms-sim: error: {error:#}");
        std::process::exit(2);
    }
}

fn gen_log(args: GenLogArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.servers >= 1, "--servers must be at least 1");
    anyhow::ensure!((0.0..=1.0).contains(&args.leak_probability), "--leak-probability must be between 0 and 1");
    anyhow::ensure!((0.0..=1.0).contains(&args.desktop_share), "--desktop-share must be between 0 and 1");
    let mut scenario = Scenario::with_servers(args.servers);
    for server in &mut scenario.servers {
        server.release = args.release;
    }
    scenario.leak_probability = args.leak_probability;
    scenario.desktop_share = args.desktop_share;
    if let Some(peak) = args.peak_sessions {
        scenario.peak_sessions = peak;
    }
    let days = match (args.days, args.size) {
        (Some(days), _) => Some(days),
        (None, Some(_)) => None,
        (None, None) => Some(7.0),
    };
    let options = GenOptions {
        scenario,
        seed: args.seed,
        start: args.start,
        duration: days.map(|d| Duration::seconds((d * 86_400.0) as i64)),
        max_bytes: args.size,
        lines_per_record: args.lines_per_record.max(1),
        header: args.header,
        restarts: args.restart_at,
    };
    let mut truth = match &args.truth {
        Some(path) => Some(BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?)),
        None => None,
    };
    let truth_writer = truth.as_mut().map(|w| w as &mut dyn Write);
    let summary = match &args.out {
        Some(path) => {
            let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
            let mut log = BufWriter::with_capacity(1 << 20, file);
            let summary = genlog::generate(&options, &mut log, truth_writer)?;
            let file = log.into_inner().map_err(|e| e.into_error())?;
            file.set_modified(summary.end.into()).with_context(|| format!("setting the time of {}", path.display()))?;
            summary
        }
        None => {
            let mut log = BufWriter::with_capacity(1 << 20, io::stdout().lock());
            genlog::generate(&options, &mut log, truth_writer)?
        }
    };
    if let Some(mut truth) = truth {
        truth.flush()?;
    }
    eprintln!(
        "cms-sim: {} lines, {} records, {} bytes, until {}; {} restarts dropped {} calls; {} joins refused",
        summary.lines,
        summary.records,
        summary.bytes,
        summary.end,
        summary.restarts,
        summary.dropped_calls,
        summary.refused_joins
    );
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let file = match &args.scenario {
        Some(path) => ScenarioFile::read(path)?,
        None => ScenarioFile::default(),
    };
    let release = args.release.unwrap_or(Release::V2_9);
    let servers = args.servers.or(file.servers).unwrap_or(4);
    anyhow::ensure!((1..=1000).contains(&servers), "--servers must be between 1 and 1000");
    let mut file = file;
    if args.servers.is_some() {
        file.server.clear();
    }
    if args.release.is_some() {
        file.release = None;
    }
    let scenario = file.scenario(servers, release).map_err(|e| anyhow::anyhow!("scenario: {e}"))?;
    let syslog = if args.syslog.is_empty() {
        file.syslog
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<Destination>, _>>()
            .map_err(|e| anyhow::anyhow!("scenario: syslog: {e}"))?
    } else {
        args.syslog.clone()
    };
    let speed = args.speed.or(file.speed).unwrap_or(1.0);
    anyhow::ensure!(speed > 0.0 && speed <= 1e6, "--speed must be above 0 and at most 1000000");
    let user = args.user.or(file.user.clone()).unwrap_or_else(|| "admin".to_owned());
    let password = std::env::var("CMS_SIM_PASSWORD").unwrap_or_else(|_| "password".to_owned());
    let authorized_keys = match args.authorized_key.as_ref().or(file.authorized_key.as_ref()) {
        Some(path) => read_authorized_keys(path)?,
        None => Vec::new(),
    };
    let state_dir = args.state_dir.or(file.state_dir.clone()).unwrap_or_else(default_state_dir);
    let scenario_names: Vec<String> = scenario.servers.iter().map(|s| s.name.clone()).collect();
    let config = LiveConfig {
        scenario,
        seed: args.seed.or(file.seed).unwrap_or(1),
        speed,
        start: args.start.unwrap_or_else(Utc::now),
        ssh_port: args.ssh_port.or(file.ssh_port).unwrap_or(2201),
        http_port: args.http_port.or(file.http_port).unwrap_or(8081),
        control_port: args.control_port.or(file.control_port).unwrap_or(8070),
        syslog,
        state_dir,
        rotate_host_key: args.rotate_host_key,
        credentials: Credentials { user, password, authorized_keys },
        lines_per_record: args.lines_per_record.or(file.lines_per_record).unwrap_or(20).max(1),
        restart_downtime: std::time::Duration::from_secs_f64(
            file.restart_downtime_seconds.unwrap_or(3.0).clamp(0.0, 600.0),
        ),
        address_per_server: args.address_per_server,
        legacy_ssh: if args.legacy_ssh {
            scenario_names.clone()
        } else {
            file.server.iter().filter(|s| s.legacy_ssh).map(|s| s.name.clone()).collect()
        },
        warm_up: std::time::Duration::from_secs_f64(
            args.warm_up.or(file.warm_up_hours).unwrap_or(0.0).clamp(0.0, 24.0 * 366.0) * 3600.0,
        ),
    };
    let cdr = if args.cdr.is_empty() {
        file.cdr
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<Receiver>, _>>()
            .map_err(|e| anyhow::anyhow!("scenario: cdr: {e}"))?
    } else {
        args.cdr.clone()
    };
    // The flags conflict on the command line; in a file they must too, or
    // cdr_insecure would silently override a CA file.
    anyhow::ensure!(
        !(file.cdr_insecure == Some(true) && file.cdr_ca.is_some()),
        "scenario: cdr_ca and cdr_insecure = true contradict each other: give one"
    );
    let cdr_tls = if args.cdr_insecure || (args.cdr_ca.is_none() && file.cdr_insecure == Some(true)) {
        CdrTls::Insecure
    } else {
        match args.cdr_ca.or(file.cdr_ca.clone()) {
            Some(path) => CdrTls::CaFile(path),
            None => CdrTls::WebPki,
        }
    };
    let calls = CallBridgeOptions {
        cdr,
        cdr_tls,
        api_port: args.api_port.or(file.api_port).unwrap_or(8443),
        rotate_api_cert: args.rotate_api_cert,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let running = live::start_with(config, calls).await?;
        println!("{}", serde_json::to_string(&running.endpoints)?);
        io::stdout().flush()?;
        wait_for_signal().await?;
        running.stop().await;
        Ok(())
    })
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

/// `~/.local/state/cms-sim`, or `./.cms-sim-state` without a home.
fn default_state_dir() -> PathBuf {
    match std::env::var_os("XDG_STATE_HOME")
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state").into_os_string()))
    {
        Some(base) => PathBuf::from(base).join("cms-sim"),
        None => PathBuf::from(".cms-sim-state"),
    }
}

/// Public keys in OpenSSH `authorized_keys` form, one per line.
fn read_authorized_keys(path: &std::path::Path) -> anyhow::Result<Vec<russh::keys::PublicKey>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = russh::keys::PublicKey::from_openssh(line)
            .map_err(|e| anyhow::anyhow!("{} line {}: not an OpenSSH public key: {e}", path.display(), number + 1))?;
        keys.push(key);
    }
    anyhow::ensure!(!keys.is_empty(), "{}: no public keys", path.display());
    Ok(keys)
}
