//! `wbguard analyze`: offline reports over CMS log files.
//!
//! The flow: read and scan every input in parallel ([`input`]), merge the
//! records by time, feed them to the core's leak model, then print the
//! [`report`] and draw the [`plot`]. Unreadable inputs are named on stderr
//! and in the report, the others are still analysed, and the exit code is 2.

mod example;
mod input;
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
use input::{ScanSettings, Source};

/// Runs `wbguard analyze`.
pub fn run(args: &AnalyzeArgs) -> anyhow::Result<Outcome> {
    let zone: chrono_tz::Tz = args.tz.parse().map_err(|_| {
        anyhow::anyhow!("--tz: unknown time zone '{}' (use an IANA name such as Europe/Berlin)", args.tz)
    })?;
    if args.limit == 0 {
        bail!("--limit must be at least 1");
    }
    let (sources, note) = if args.example {
        let (source, note) = example::generate()?;
        (vec![source], Some(note))
    } else {
        let sources =
            args.files.iter().map(|f| if input::is_stdin(f) { Source::Stdin } else { Source::Path(f.clone()) });
        (sources.collect(), None)
    };
    if sources.iter().filter(|s| matches!(s, Source::Stdin)).count() > 1 {
        bail!("standard input (-) can be named only once");
    }
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let settings =
        ScanSettings { zone, default_host: args.host.clone(), threads, block: input::BLOCK, range: input::RANGE };
    let results = input::scan_all(&sources, &settings);

    let config = ModelConfig { limit: args.limit, ..ModelConfig::default() };
    let mut records: Vec<Record> = Vec::with_capacity(results.iter().map(|r| r.records.len()).sum());
    let mut results = results;
    for result in &mut results {
        records.append(&mut result.records);
    }
    // Stable: records of the same instant keep their input order.
    records.sort_by_key(|r| r.time);
    let (model, series) = feed(config, &records, args.plot.is_some());
    let report = report::Report::build(&model, &results);

    if let (Some(path), Some(series)) = (&args.plot, &series) {
        write_file(path, plot::render(series, args.limit).as_bytes())?;
    }
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
    if let Some(note) = note {
        eprintln!("\n{note}");
    }
    Ok(if report.errors.is_empty() { Outcome::Success } else { Outcome::InputErrors })
}

/// Feeds the records to a fresh model; gathers the chart's series if asked.
fn feed(config: ModelConfig, records: &[Record], chart: bool) -> (Deployment, Option<plot::Series>) {
    let mut model = Deployment::new(config);
    let mut series = chart.then(plot::Series::default);
    let mut cma_by_host: BTreeMap<&str, u32> = BTreeMap::new();
    for record in records {
        model.observe(record);
        let Some(series) = series.as_mut() else { continue };
        if let Some(state) = model.webbridge(&record.host) {
            let drawn = series.restarts.iter().filter(|(_, host)| *host == record.host).count();
            for restart in state.restarts.iter().skip(drawn) {
                series.restarts.push((restart.time, record.host.clone()));
            }
        }
        match &record.body {
            RecordBody::WebBridgeStats(stats) => {
                let lower = model.webbridge(&record.host).map_or(0, |state| state.leaked_lower());
                series.webbridges.entry(record.host.clone()).or_default().push((record.time, stats.active, lower));
            }
            RecordBody::CallBridgeStats(stats) => {
                if let Some(cma) = stats.cma() {
                    cma_by_host.insert(&record.host, cma.current);
                    series.cma_total.push((record.time, cma_by_host.values().sum()));
                }
            }
            RecordBody::Audit(_) => {}
        }
    }
    (model, series)
}

/// Writes a whole file through a temporary, so a reader never sees half.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, bytes).with_context(|| format!("writing {}", path.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))
}
