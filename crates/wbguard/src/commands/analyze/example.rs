//! `wbguard analyze --example`: a built-in log to try the analysis on.
//!
//! Two weeks of a simulated four-server cluster (as in Cisco's script),
//! generated in memory by the simulator with a fixed seed, so everyone sees
//! the same report. Noise is thinned to keep it small; the records are
//! exactly what a leaking deployment logs. The simulator also knows the
//! truth, which is printed next to the report for comparison.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use cms_sim::genlog::{self, GenOptions};
use cms_sim::scenario::Scenario;

use crate::logs::Source;

/// The example log, and a sentence with the truth at its end.
pub fn generate() -> anyhow::Result<(Source, String)> {
    let mut scenario = Scenario::with_servers(4);
    scenario.leak_probability = 0.03;
    let options = GenOptions {
        scenario,
        seed: 1,
        start: Utc.with_ymd_and_hms(2024, 3, 4, 0, 0, 0).single().expect("a valid date"),
        duration: Some(Duration::days(14)),
        max_bytes: None,
        lines_per_record: 3,
        header: None,
        restarts: Vec::new(),
    };
    let mut log = Vec::new();
    let summary = genlog::generate(&options, &mut log, None)?;
    let truth: Vec<String> =
        summary.webbridges.iter().map(|(host, real, leaked)| format!("{host} {leaked} leaked + {real} real")).collect();
    let note = format!(
        "built-in example: 4 simulated servers, 14 days, seed 1; the simulator's truth at the end: {}; {} joins refused",
        truth.join(", "),
        summary.refused_joins
    );
    Ok((Source::Memory { name: "example".to_owned(), bytes: Arc::new(log), reference: summary.end }, note))
}
