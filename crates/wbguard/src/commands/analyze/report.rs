//! The analysis report: what `wbguard analyze` prints, as JSON, CSV or a
//! table. The JSON field names are an interface: scripts rely on them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use wbguard_core::log::LineCounts;
use wbguard_core::model::{ClusterEstimate, Deployment, Restart};

use crate::logs::InputResult;
use crate::text;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The time the estimates refer to: the latest record's time.
    pub now: Option<DateTime<Utc>>,
    /// The limit used.
    pub limit: u32,
    /// Line counters over all inputs.
    pub lines: Lines,
    /// Per input file.
    pub inputs: Vec<InputSummary>,
    /// Per web bridge, by host name.
    pub webbridges: Vec<WebBridgeReport>,
    /// Per call bridge, by host name.
    pub callbridges: Vec<CallBridgeReport>,
    /// The whole cluster.
    pub cluster: ClusterEstimate,
    /// Inputs that could not be read (completely).
    pub errors: Vec<String>,
    /// Inputs that changed (shrank, were replaced) while they were read.
    pub warnings: Vec<String>,
}

/// Line counters.
#[derive(Debug, Serialize)]
pub struct Lines {
    /// Every line.
    pub total: u64,
    /// Lines that became records.
    pub records: u64,
    /// Lines that looked like records but did not parse.
    pub malformed: u64,
    /// Malformed lines by reason.
    pub malformed_by_reason: BTreeMap<&'static str, u64>,
    /// Lines longer than a read block (1 MiB), skipped unread.
    pub overlong: u64,
    /// Records read a second time (overlapping rotated files, a file named
    /// twice), counted once: included in `records`, left out of the model.
    pub duplicates: u64,
}

impl Lines {
    fn new(counts: &LineCounts, overlong: u64, duplicates: u64) -> Self {
        Lines {
            total: counts.total,
            records: counts.records,
            malformed: counts.malformed_total(),
            malformed_by_reason: counts.malformed_by_reason().map(|(r, n)| (r.as_str(), n)).collect(),
            overlong,
            duplicates,
        }
    }
}

/// One input's counters.
#[derive(Debug, Serialize)]
pub struct InputSummary {
    /// As named on the command line.
    pub name: String,
    /// Its lines.
    pub lines: Lines,
    /// Why it could not be read completely, if so.
    pub error: Option<String>,
    /// How it changed while it was read, if it did.
    pub warning: Option<String>,
}

/// One web bridge.
#[derive(Debug, Serialize)]
pub struct WebBridgeReport {
    /// Host name.
    pub host: String,
    /// Stats samples.
    pub samples: u64,
    /// First and last sample.
    pub first_seen: DateTime<Utc>,
    /// Time of the last sample.
    pub last_seen: DateTime<Utc>,
    /// The last sample.
    pub last: LastWebBridge,
    /// Largest active count seen.
    pub max_active: u32,
    /// Minutes spent at the limit.
    pub minutes_at_limit: f64,
    /// Every restart recognised.
    pub restarts_total: u64,
    /// The latest restarts' times (at most 1,000; `restarts_total` counts all).
    pub restarts: Vec<DateTime<Utc>>,
    /// The same restarts, with how they were recognised and by whom.
    pub restart_details: Vec<Restart>,
    /// Lower bound of the leaked sessions now.
    pub leaked_lower: u32,
    /// Upper bound of the leaked sessions now.
    pub leaked_upper: u32,
    /// Real sessions a restart now would drop, at most.
    pub droppable_upper: u32,
    /// Leak growth per day since the last restart.
    pub leak_rate_per_day: Option<f64>,
    /// When users will be (or were first) locked out.
    pub lockout_forecast: Option<DateTime<Utc>>,
}

/// The last web bridge sample.
#[derive(Debug, Serialize)]
pub struct LastWebBridge {
    /// When.
    pub time: DateTime<Utc>,
    /// Sessions.
    pub active: u32,
    /// `c:` counter.
    pub connections: u64,
    /// `d:` counter.
    pub disconnections: u64,
}

/// One call bridge.
#[derive(Debug, Serialize)]
pub struct CallBridgeReport {
    /// Host name.
    pub host: String,
    /// STATS records.
    pub samples: u64,
    /// The last STATS record.
    pub last: LastCallBridge,
}

/// The last call bridge record.
#[derive(Debug, Serialize)]
pub struct LastCallBridge {
    /// When.
    pub time: DateTime<Utc>,
    /// CMA sessions now.
    pub cma_current: Option<u32>,
    /// CMA peak over the last interval.
    pub cma_peak: Option<u32>,
    /// Call legs now.
    pub call_legs_current: Option<u32>,
    /// Call legs peak over the last interval.
    pub call_legs_peak: Option<u32>,
    /// `callLegsPS`.
    pub call_legs_per_second: Option<u32>,
}

impl Report {
    /// Builds the report from the fed model and the inputs' counters.
    pub fn build(model: &Deployment, inputs: &[InputResult]) -> Report {
        let now = model.latest();
        let mut total = LineCounts::default();
        let mut overlong = 0;
        let mut duplicates = 0;
        for input in inputs {
            total.add(&input.counts);
            overlong += input.overlong;
            duplicates += input.duplicates;
        }
        let webbridges = match now {
            None => Vec::new(),
            Some(now) => model
                .webbridges()
                .filter_map(|state| {
                    let last = state.last()?;
                    let estimate = model.estimate(&state.host, now)?;
                    Some(WebBridgeReport {
                        host: state.host.clone(),
                        samples: state.samples,
                        first_seen: state.first_seen.unwrap_or(last.time),
                        last_seen: last.time,
                        last: LastWebBridge {
                            time: last.time,
                            active: last.stats.active,
                            connections: last.stats.connections,
                            disconnections: last.stats.disconnections,
                        },
                        max_active: state.max_active,
                        minutes_at_limit: state.at_limit.num_seconds() as f64 / 60.0,
                        restarts_total: state.restart_count,
                        restarts: state.restarts.iter().map(|r| r.time).collect(),
                        restart_details: state.restarts.iter().cloned().collect(),
                        leaked_lower: estimate.leaked_lower,
                        leaked_upper: estimate.leaked_upper,
                        droppable_upper: estimate.droppable_upper,
                        leak_rate_per_day: estimate.leak_rate_per_day.map(|r| (r * 100.0).round() / 100.0),
                        lockout_forecast: estimate.lockout_forecast,
                    })
                })
                .collect(),
        };
        let callbridges = model
            .callbridges()
            .map(|cb| CallBridgeReport {
                host: cb.host.clone(),
                samples: cb.samples,
                last: LastCallBridge {
                    time: cb.last_time,
                    cma_current: cb.last.cma().map(|p| p.current),
                    cma_peak: cb.last.cma().map(|p| p.peak),
                    call_legs_current: cb.last.call_legs().map(|p| p.current),
                    call_legs_peak: cb.last.call_legs().map(|p| p.peak),
                    call_legs_per_second: cb.last.call_legs_per_second,
                },
            })
            .collect();
        let cluster = match now {
            Some(now) => model.cluster_estimate(now),
            None => ClusterEstimate { active_total: 0, cma_total: None, leaked_lower: 0, leaked_upper: 0 },
        };
        Report {
            now,
            limit: model.config().limit,
            lines: Lines::new(&total, overlong, duplicates),
            inputs: inputs
                .iter()
                .map(|i| InputSummary {
                    name: i.name.clone(),
                    lines: Lines::new(&i.counts, i.overlong, i.duplicates),
                    error: i.error.clone(),
                    warning: i.warning.clone(),
                })
                .collect(),
            webbridges,
            callbridges,
            cluster,
            errors: inputs.iter().filter_map(|i| i.error.clone()).collect(),
            warnings: inputs.iter().filter_map(|i| i.warning.clone()).collect(),
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("the report always serialises");
        text.push('\n');
        text
    }

    /// One CSV row per web bridge, with the JSON field names as header.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "host,samples,first_seen,last_seen,last_time,active,connections,disconnections,max_active,\
             minutes_at_limit,restarts,last_restart,leaked_lower,leaked_upper,droppable_upper,\
             leak_rate_per_day,lockout_forecast\n",
        );
        for wb in &self.webbridges {
            let row = [
                text::csv_field(&wb.host),
                wb.samples.to_string(),
                time(wb.first_seen),
                time(wb.last_seen),
                time(wb.last.time),
                wb.last.active.to_string(),
                wb.last.connections.to_string(),
                wb.last.disconnections.to_string(),
                wb.max_active.to_string(),
                format!("{:.1}", wb.minutes_at_limit),
                wb.restarts_total.to_string(),
                wb.restarts.last().map(|t| time(*t)).unwrap_or_default(),
                wb.leaked_lower.to_string(),
                wb.leaked_upper.to_string(),
                wb.droppable_upper.to_string(),
                wb.leak_rate_per_day.map(|r| format!("{r:.2}")).unwrap_or_default(),
                wb.lockout_forecast.map(time).unwrap_or_default(),
            ];
            out.push_str(&row.join(","));
            out.push('\n');
        }
        out
    }

    /// Aligned columns for a terminal.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let lines = &self.lines;
        let _ = write!(
            out,
            "{} input(s), {} lines, {} records, {} malformed",
            self.inputs.len(),
            lines.total,
            lines.records,
            lines.malformed
        );
        if !lines.malformed_by_reason.is_empty() {
            let reasons: Vec<String> = lines.malformed_by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let _ = write!(out, " ({})", reasons.join(", "));
        }
        if lines.overlong > 0 {
            let _ = write!(out, ", {} overlong", lines.overlong);
        }
        if lines.duplicates > 0 {
            let _ = write!(out, ", {} duplicates skipped", lines.duplicates);
        }
        out.push('\n');
        match self.now {
            Some(now) => {
                let _ = writeln!(out, "as of {} (the last record), limit {}", short(now), self.limit);
            }
            None => out.push_str("no records found\n"),
        }
        if !self.webbridges.is_empty() {
            let mut rows = vec![[
                "WEB BRIDGE",
                "ACTIVE",
                "LEAKED",
                "DROPPABLE",
                "LEAK/DAY",
                "LOCKOUT",
                "MAX",
                "AT LIMIT",
                "RESTARTS",
                "LAST RESTART",
            ]
            .map(String::from)
            .to_vec()];
            for wb in &self.webbridges {
                rows.push(vec![
                    wb.host.clone(),
                    wb.last.active.to_string(),
                    format!("{}-{}", wb.leaked_lower, wb.leaked_upper),
                    wb.droppable_upper.to_string(),
                    wb.leak_rate_per_day.map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".into()),
                    wb.lockout_forecast.map(short).unwrap_or_else(|| "-".into()),
                    wb.max_active.to_string(),
                    minutes(wb.minutes_at_limit),
                    wb.restarts_total.to_string(),
                    wb.restarts.last().map(|t| short(*t)).unwrap_or_else(|| "-".into()),
                ]);
            }
            out.push('\n');
            out.push_str(&columns(&rows));
        }
        if !self.callbridges.is_empty() {
            let mut rows =
                vec![["CALL BRIDGE", "CMA NOW/PEAK", "CALL LEGS NOW/PEAK", "LAST REPORT"].map(String::from).to_vec()];
            let pair = |c: Option<u32>, p: Option<u32>| match (c, p) {
                (Some(c), Some(p)) => format!("{c}/{p}"),
                _ => "-".into(),
            };
            for cb in &self.callbridges {
                rows.push(vec![
                    cb.host.clone(),
                    pair(cb.last.cma_current, cb.last.cma_peak),
                    pair(cb.last.call_legs_current, cb.last.call_legs_peak),
                    short(cb.last.time),
                ]);
            }
            out.push('\n');
            out.push_str(&columns(&rows));
        }
        if !self.webbridges.is_empty() {
            let cluster = &self.cluster;
            let cma = cluster.cma_total.map_or_else(|| "unknown".to_owned(), |c| c.to_string());
            let _ = writeln!(
                out,
                "\ncluster: {} active, CMA {}, leaked {}-{}",
                cluster.active_total, cma, cluster.leaked_lower, cluster.leaked_upper
            );
        }
        for error in &self.errors {
            let _ = writeln!(out, "error: {error}");
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        out
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn short(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

fn minutes(total: f64) -> String {
    let total = total.round() as i64;
    match (total / 60, total % 60) {
        (0, 0) => "-".into(),
        (0, m) => format!("{m}m"),
        (h, m) => format!("{h}h{m:02}m"),
    }
}

/// Left-aligned first column, right-aligned numbers, two spaces apart;
/// host names escaped ([`text::printable`]).
fn columns(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> =
        rows.iter().map(|row| row.iter().map(|cell| text::printable(cell).into_owned()).collect()).collect();
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(
                |(c, cell)| {
                    if c == 0 {
                        format!("{cell:<w$}", w = widths[c])
                    } else {
                        format!("{cell:>w$}", w = widths[c])
                    }
                },
            )
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
