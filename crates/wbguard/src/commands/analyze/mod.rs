//! `wbguard analyze`: offline reports over CMS log files.
//!
//! The flow: read and scan every input in parallel ([`input`]), merge the
//! records by time and feed them, one by one, to the core's leak model, then
//! print the [`report`] and draw the [`plot`]. Nothing holds all records,
//! and the state kept per web bridge is bounded, so memory does not grow
//! with the length of the log. Unreadable inputs are named on stderr and in
//! the report, the others are still analysed, and the exit code is 2; an
//! input that shrank or was replaced while it was read gives a warning and
//! exit code 1.

#[cfg(all(unix, feature = "demo"))]
mod example;
mod plot;
mod report;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Context};
use wbguard_core::log::{Record, RecordBody};
use wbguard_core::model::{Deployment, ModelConfig};

use crate::cli::{AnalyzeArgs, Format};
use crate::exit::Outcome;
use crate::logs::{self, ScanSettings, Source};

/// Runs `wbguard analyze`.
pub fn run(args: &AnalyzeArgs) -> anyhow::Result<Outcome> {
    let zone: chrono_tz::Tz = args.tz.parse().map_err(|_| {
        anyhow::anyhow!("--tz: unknown time zone '{}' (use an IANA name such as Europe/Berlin)", args.tz)
    })?;
    if args.limit == 0 {
        bail!("--limit must be at least 1");
    }
    let (sources, note) = if args.example {
        example()?
    } else {
        let sources =
            args.files.iter().map(|f| if logs::is_stdin(f) { Source::Stdin } else { Source::Path(f.clone()) });
        (sources.collect(), None)
    };
    if sources.iter().filter(|s| matches!(s, Source::Stdin)).count() > 1 {
        bail!("standard input (-) can be named only once");
    }
    // Beyond 4 workers the merge is the bottleneck, and each worker costs
    // memory (its buffer and allocator arena): 4 keep the peak under 64 MB.
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(4));
    let settings =
        ScanSettings { zone, default_host: args.host.clone(), threads, block: logs::BLOCK, range: logs::RANGE };
    let config = ModelConfig { limit: args.limit, ..ModelConfig::default() };
    let mut feeder = Feeder::new(config, args.plot.is_some());
    let results = logs::scan_merged(&sources, &settings, |record| feeder.observe(&record));
    let Feeder { model, series, .. } = feeder;
    let report = report::Report::build(&model, &results);

    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() { Format::Table } else { Format::Json });
    let text = match format {
        Format::Table => report.to_table(),
        Format::Json => report.to_json(),
        Format::Csv => report.to_csv(),
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).context("writing the report")?;
    for error in &report.errors {
        eprintln!("wbguard: {error}");
    }
    for warning in &report.warnings {
        eprintln!("wbguard: warning: {warning}");
    }
    if let Some(note) = note {
        eprintln!("\n{note}");
    }
    if let (Some(path), Some(series)) = (&args.plot, &series) {
        write_file(path, plot::render(series, args.limit).as_bytes())?;
    }
    Ok(if !report.errors.is_empty() {
        Outcome::InputErrors
    } else if !report.warnings.is_empty() {
        Outcome::Failures
    } else {
        Outcome::Success
    })
}

/// The model, fed record by record, and the chart's series if asked for.
struct Feeder {
    model: Deployment,
    series: Option<plot::Series>,
    /// Latest CMA count per call bridge, for the chart's cluster total.
    cma_by_host: BTreeMap<String, u32>,
}

impl Feeder {
    fn new(config: ModelConfig, chart: bool) -> Self {
        Feeder {
            model: Deployment::new(config),
            series: chart.then(plot::Series::default),
            cma_by_host: BTreeMap::new(),
        }
    }

    fn observe(&mut self, record: &Record) {
        let restarts_before = self.model.webbridge(&record.host).map_or(0, |state| state.restart_count);
        self.model.observe(record);
        let Some(series) = self.series.as_mut() else { return };
        match &record.body {
            RecordBody::WebBridgeStats(stats) => {
                let lower = self.model.webbridge(&record.host).map_or(0, |state| state.leaked_lower());
                series.push_webbridge(&record.host, record.time, stats.active, lower);
            }
            RecordBody::CallBridgeStats(stats) => {
                if let Some(cma) = stats.cma() {
                    self.cma_by_host.insert(record.host.clone(), cma.current);
                    series.push_cma(record.time, self.cma_by_host.values().sum());
                }
            }
            RecordBody::Audit(_) => {}
        }
        // A record reveals at most one restart, the latest.
        if let Some(state) = self.model.webbridge(&record.host).filter(|s| s.restart_count > restarts_before) {
            if let Some(restart) = state.restarts.back() {
                series.note_restart(&record.host, restart.time);
            }
        }
    }
}

/// Writes a whole file through a temporary, so a reader never sees half
/// and nothing is written through a link ([`crate::files::replace`]).
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::files::replace(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// The built-in example, when the simulator is built in.
#[cfg(all(unix, feature = "demo"))]
fn example() -> anyhow::Result<(Vec<Source>, Option<String>)> {
    let (source, note) = example::generate()?;
    Ok((vec![source], Some(note)))
}

/// Without the simulator there is no example to analyse.
#[cfg(all(unix, not(feature = "demo")))]
fn example() -> anyhow::Result<(Vec<Source>, Option<String>)> {
    bail!("--example needs the simulator, which this build leaves out (cargo feature \"demo\")")
}

/// The simulator is Unix-only, so the Windows build has no example.
#[cfg(not(unix))]
fn example() -> anyhow::Result<(Vec<Source>, Option<String>)> {
    bail!("--example needs the simulator, which the Windows build leaves out")
}
