//! `cms-sim`: the simulator's command line.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use clap::{Parser, Subcommand};

use cms_sim::genlog::{self, GenOptions, RestartRule};
use cms_sim::scenario::{Release, Scenario};
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
