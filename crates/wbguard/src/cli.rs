//! The command line, as clap derive types. Only syntax lives here; what the
//! flags mean is resolved by each command.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Keeps Cisco Meeting Server web bridges open despite the Web Bridge 2
/// session leak (CSCvt73723).
#[derive(Debug, Parser)]
#[command(name = "wbguard", version, about, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// wbguard's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read CMS logs and show, per web bridge, sessions, the leak, its rate
    /// and when users will be locked out.
    Analyze(AnalyzeArgs),
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

    /// Worker threads [default: the number of CPUs].
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
