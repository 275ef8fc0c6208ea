//! The command line, as clap derive types. Values are checked here, at the
//! edge, by typed value parsers (a listener, an address, a mode, a
//! duration); what the flags mean is resolved by each command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use wbguard_core::policy::Mode;

use crate::config::address::{CdrListen, Listen};
use crate::config::guard_settings::Clock;

/// Keeps Cisco Meeting Server web bridges open despite the Web Bridge 2
/// session leak (CSCvt73723).
#[derive(Debug, Parser)]
#[command(name = "wbguard", version, about, max_term_width = 100)]
#[cfg_attr(windows, command(after_help = WINDOWS_BUILD))]
pub struct Cli {
    /// The configuration file, before or after the command [default:
    /// $WBGUARD_CONFIG, ~/.config/wbguard/config.toml,
    /// /etc/wbguard/config.toml; `watch` runs without one].
    #[arg(long, value_name = "FILE", global = true)]
    #[cfg_attr(windows, arg(help = WINDOWS_CONFIG))]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// What the Windows build leaves out, under `--help`.
#[cfg(windows)]
const WINDOWS_BUILD: &str = "This Windows build has analyze, restart, trust, config and status. The guard (watch) \
     and the demo are not in it: they need Unix (signals, inodes); run them on Linux.";

/// `--config` on Windows, where the folders differ (see `dirs`).
#[cfg(windows)]
const WINDOWS_CONFIG: &str = "The configuration file, before or after the command [default: %WBGUARD_CONFIG%, \
     %APPDATA%\\wbguard\\config.toml, %ProgramData%\\wbguard\\config.toml]";

/// `--mode`: observe or enforce.
fn mode(text: &str) -> Result<Mode, String> {
    match text {
        "observe" => Ok(Mode::Observe),
        "enforce" => Ok(Mode::Enforce),
        other => Err(format!("'{other}' is neither observe nor enforce")),
    }
}

/// `--clock`: wall or data.
fn clock(text: &str) -> Result<Clock, String> {
    match text {
        "wall" => Ok(Clock::Wall),
        "data" => Ok(Clock::Data),
        other => Err(format!("'{other}' is neither wall nor data")),
    }
}

/// `--speed`: from real time to a year a minute.
fn demo_speed(text: &str) -> Result<f64, String> {
    let speed: f64 = text.parse().map_err(|_| format!("'{text}' is not a number"))?;
    if !(1.0..=525_600.0).contains(&speed) {
        return Err(format!("{text} is not between 1 and 525600"));
    }
    Ok(speed)
}

/// `--duration`: a demo lasts between a second and a year.
fn demo_duration(text: &str) -> Result<Duration, String> {
    crate::config::duration::parse_within(text, Duration::from_secs(1), Duration::from_secs(366 * 86_400))
}

/// `--wait-idle`: `0` (the default: do not wait), or 1 s to a day.
fn wait_idle_duration(text: &str) -> Result<Duration, String> {
    if matches!(text.trim(), "0" | "0s" | "0m") {
        return Ok(Duration::ZERO);
    }
    crate::config::duration::parse_within(text, Duration::from_secs(1), Duration::from_secs(86_400))
}

/// wbguard's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read CMS logs and show, per web bridge, sessions, the leak, its rate
    /// and when users will be locked out.
    Analyze(AnalyzeArgs),
    /// Restart web bridges over SSH: strict host keys, verified, logged.
    Restart(RestartArgs),
    /// Show servers' SSH host keys and Call Bridge API certificates, and
    /// record them (known_hosts, api_certificates).
    Trust(TrustArgs),
    /// Check or create the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The guard: receive the servers' syslog, track every web bridge,
    /// decide and report (observe mode) or act (enforce mode).
    #[cfg(unix)]
    Watch(WatchArgs),
    /// Ask a running guard what it knows.
    Status(StatusArgs),
    /// See it work: a simulated leaking deployment, the guard in enforce
    /// mode, the status page, and a month of four strategies compared
    /// (left out of builds without the cargo feature "demo").
    #[cfg(all(unix, feature = "demo"))]
    Demo(DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `wbguard man > wbguard.1`; with
    /// --dir, write it and one page per command there.
    Man {
        /// Write wbguard.1, wbguard-analyze.1, ... into this folder.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `wbguard demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// End by itself after this long (e.g. 90s, 5m) [default: at Ctrl-C].
    #[arg(long, value_name = "DURATION", value_parser = demo_duration)]
    pub duration: Option<Duration>,
    /// Serve the status page here [default: 127.0.0.1:9149].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen_http: Option<SocketAddr>,
    /// Also write the comparison as JSON: {"strategies": [{"name",
    /// "refused_joins", "dropped_calls", "restarts"}]}.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Simulated seconds per real second (2880: a day in 30 seconds).
    #[arg(long, value_name = "N", default_value_t = 2880.0, value_parser = demo_speed)]
    pub speed: f64,
}

/// `wbguard watch`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WatchArgs {
    /// Receive syslog here: udp://ADDR:PORT, tcp://ADDR:PORT or
    /// tls://ADDR:PORT. Repeatable; replaces the configuration's
    /// [default: udp and tcp on 127.0.0.1:5514].
    #[arg(long = "listen-syslog", value_name = "URL")]
    pub listen_syslog: Vec<Listen>,
    /// Receive CDRs here (Call Bridges post to /cdr): http://ADDR:PORT or
    /// https://ADDR:PORT (the configuration's tls_certificate and tls_key).
    /// Repeatable; replaces the configuration's [default: off].
    #[arg(long = "listen-cdr", value_name = "URL")]
    pub listen_cdr: Vec<CdrListen>,
    /// Follow this log file, as written by a local syslog server (survives
    /// rotation). Repeatable; adds to the configuration's.
    #[arg(long, value_name = "FILE")]
    pub follow: Vec<PathBuf>,
    /// Serve /metrics, /api/status and /healthz here [default: 127.0.0.1:9149].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen_http: Option<SocketAddr>,
    /// Where the guard keeps its state.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// observe (decide and report) or enforce (act) [default: observe].
    /// The configuration (--config: its servers, [watch], [policy] and
    /// [[webhook]]) is reread on SIGHUP.
    #[arg(long, value_name = "MODE", value_parser = mode)]
    pub mode: Option<Mode>,
    /// What "now" is: wall (the machine's clock; records dated more than
    /// watch.future_tolerance ahead of it are counted and ignored) or data
    /// (the newest record, for simulations faster than real time: trusts
    /// every sender's clock).
    #[arg(long, value_name = "CLOCK", value_parser = clock, default_value = "wall")]
    pub clock: Clock,
    /// Without --config (any host may send): track at most N hosts (1 to
    /// 100000); records of further hosts are counted as rejected
    /// [default: 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_hosts: Option<u32>,
}

/// `wbguard status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The guard's HTTP address.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9149")]
    pub url: String,
}

/// `wbguard restart`.
#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    /// One web bridge at a time, each back before the next (the default).
    #[arg(long, conflicts_with = "parallel")]
    pub rolling: bool,
    /// Restart up to N web bridges at once (1 to 1024).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub parallel: Option<u16>,
    /// Only these servers (comma-separated names).
    #[arg(long, value_name = "NAME,...")]
    pub only: Vec<String>,
    /// Print the plan and touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// In rolling mode, go on after a failure.
    #[arg(long)]
    pub keep_going: bool,
    /// Also restart Web Bridge 3 on release 3.x servers (not affected by the leak).
    #[arg(long)]
    pub include_webbridge3: bool,
    /// Restart even web bridges that may carry live calls (and when the
    /// Call Bridge API does not answer).
    #[arg(long)]
    pub force: bool,
    /// With `api` configured: while the Call Bridge API reports live CMA
    /// calls, wait up to this long (e.g. 10m; at most 1d) before skipping
    /// a web bridge [default: 0, do not wait].
    #[arg(long, value_name = "DURATION", value_parser = wait_idle_duration, default_value = "0")]
    pub wait_idle: Duration,
    /// Refuse when live calls cannot be ruled out for lack of session data.
    #[arg(long)]
    pub require_safe: bool,
    /// CMS logs to check for live calls before restarting.
    #[arg(long, value_name = "FILE")]
    pub stats: Vec<PathBuf>,
    /// Why, for the audit file [default: manual].
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// `wbguard trust`.
#[derive(Debug, clap::Args)]
pub struct TrustArgs {
    /// Record without asking (for scripts).
    #[arg(long)]
    pub yes: bool,
    /// Servers to trust (names from the configuration).
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

/// `wbguard config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the resolved inventory (no
    /// secret is fetched or shown; missing ones are warnings).
    Check,
    /// Read Cisco's restart script and write an equivalent configuration
    /// (without the password) to standard output.
    ImportCiscoScript {
        /// The script (its `webbridges = {...}` and `mmp_username`).
        #[arg(value_name = "FILE")]
        script: PathBuf,
    },
}

/// `wbguard analyze`.
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Log files (plain or gzip, rotated logs and several servers are merged
    /// by time); `-` reads standard input.
    #[arg(value_name = "FILE", required_unless_present = "example")]
    pub files: Vec<PathBuf>,

    /// Analyse a built-in example instead: two weeks of a simulated
    /// four-server cluster whose web bridges leak.
    #[arg(long, conflicts_with = "files")]
    pub example: bool,

    /// Output format [default: table on a terminal, json otherwise].
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Also draw a chart over time to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// Sessions at which a web bridge refuses new ones.
    #[arg(long, value_name = "N", default_value_t = 149)]
    pub limit: u32,

    /// Time zone of timestamps that carry none (IANA name, e.g. Europe/Berlin).
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub tz: String,

    /// Host name for lines that carry none.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,

    /// Worker threads [default: the number of CPUs, at most 4]; each one
    /// adds some 6 MB to the peak memory.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document for scripts.
    Json,
    /// One row per web bridge.
    Csv,
}
