//! `/api/history`'s answer, bounded whatever range is asked for.
//!
//! The range is clamped to the data held (which the retention bounds),
//! each series is downsampled as its rows stream from SQLite (never the
//! whole range in memory), and the events are capped:
//!
//! - a series (one host's web bridge sessions, its call bridge's CMA, one
//!   web bridge's leak estimate) has at most `points` buckets of equal
//!   width; a bucket keeps the minimum, the maximum and the last value, so
//!   a peak is never hidden between two points;
//! - all the series of a table together hold at most [`MAX_BUCKETS`]: past
//!   that (a large fleet), the buckets of every series are merged in pairs
//!   (twice as wide) as the rows come;
//! - restarts and decisions are events, never merged: the newest
//!   [`MAX_EVENTS`] of each in the range, with a flag when there are more
//!   (ask again with `to` at the oldest one returned).
//!
//! The largest answer is thus about 3 × [`MAX_BUCKETS`] points and
//! 2 × [`MAX_EVENTS`] events: a few MB of JSON.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use serde::Serialize;

use super::{ms, time};

/// Buckets per series when the caller does not say.
pub const DEFAULT_POINTS: usize = 600;
/// Buckets per series at most (`points` is clamped to it).
pub const MAX_POINTS: usize = 2000;
/// Buckets held for all the series of one table at once, at most.
pub const MAX_BUCKETS: usize = 20_000;

/// Series of one table in an answer, at most: half the buckets, so that
/// widening always ends (each series one bucket at the widest); further
/// hosts are left out and `series_truncated` says so.
pub const MAX_SERIES: usize = MAX_BUCKETS / 2;
/// Restarts, and decisions, in one answer at most.
pub const MAX_EVENTS: usize = 1000;

/// What is asked for.
#[derive(Debug, Clone)]
pub struct Query {
    /// From (inclusive).
    pub from: DateTime<Utc>,
    /// To (inclusive).
    pub to: DateTime<Utc>,
    /// Buckets per series, 1 to [`MAX_POINTS`].
    pub points: usize,
    /// Whose history.
    pub scope: Scope,
}

impl Query {
    /// The range, with [`DEFAULT_POINTS`] per series, every host.
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Query {
        Query { from, to, points: DEFAULT_POINTS, scope: Scope::Everyone }
    }
}

/// Whose history a [`Query`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every host's.
    Everyone,
    /// These hosts' (one web bridge: its server's): their samples of both
    /// kinds, estimates, restarts and decisions.
    Hosts(Vec<String>),
    /// A cluster's chart: its web bridges' sessions, its call bridges' CMA
    /// summed into one series (kind `cluster`, named after the cluster),
    /// its restarts and decisions; no estimates (a web bridge's own has
    /// them).
    Cluster {
        /// Its name.
        name: String,
        /// Its web bridges.
        webbridges: Vec<String>,
        /// Its call bridges.
        callbridges: Vec<String>,
    },
}

/// A run of rows a read goes through: one host's of one kind (a range of
/// the samples table, which is kept in host, kind and time order, or of
/// the estimates' index by web bridge), or every host's (by the time index).
#[derive(Debug, Clone, Copy)]
struct Run<'a> {
    table: Table,
    host: Option<&'a str>,
    kind: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Samples,
    Estimates,
}

impl Run<'_> {
    /// The table and the condition that picks the run's rows (`?3` the
    /// host, `?4` the kind), to go before the time range.
    fn rows(&self) -> &'static str {
        match (self.table, self.host.is_some()) {
            (Table::Samples, true) => "samples WHERE host = ?3 AND kind = ?4 AND",
            (Table::Estimates, true) => "estimates WHERE webbridge = ?3 AND ?4 IS NULL AND",
            (Table::Samples, false) => "samples WHERE ?3 IS NULL AND ?4 IS NULL AND",
            (Table::Estimates, false) => "estimates WHERE ?3 IS NULL AND ?4 IS NULL AND",
        }
    }
}

impl Scope {
    /// The runs its rows are in.
    fn runs(&self) -> Vec<Run<'_>> {
        fn run<'a>(table: Table, host: &'a str, kind: Option<&'static str>) -> Run<'a> {
            Run { table, host: Some(host), kind }
        }
        match self {
            Scope::Everyone => vec![
                Run { table: Table::Samples, host: None, kind: None },
                Run { table: Table::Estimates, host: None, kind: None },
            ],
            Scope::Hosts(hosts) => hosts
                .iter()
                .flat_map(|h| {
                    [
                        run(Table::Samples, h, Some("webbridge")),
                        run(Table::Samples, h, Some("callbridge")),
                        run(Table::Estimates, h, None),
                    ]
                })
                .collect(),
            Scope::Cluster { webbridges, callbridges, .. } => webbridges
                .iter()
                .map(|h| run(Table::Samples, h, Some("webbridge")))
                .chain(callbridges.iter().map(|h| run(Table::Samples, h, Some("callbridge"))))
                .collect(),
        }
    }

    /// The web bridges whose restarts and decisions it holds, as a JSON
    /// array (none: every one).
    fn webbridges(&self) -> Option<String> {
        match self {
            Scope::Everyone => None,
            Scope::Hosts(hosts) => Some(serde_json::Value::from(hosts.clone()).to_string()),
            Scope::Cluster { webbridges, .. } => Some(serde_json::Value::from(webbridges.clone()).to_string()),
        }
    }
}

/// The answer.
#[derive(Debug, Serialize)]
pub struct Answer {
    /// The range asked for.
    pub from: DateTime<Utc>,
    /// The range asked for.
    pub to: DateTime<Utc>,
    /// The width of a bucket, in milliseconds (0 when there is no data).
    pub bucket_ms: i64,
    /// Web bridge sessions and call bridge CMA, one series per host and kind.
    pub samples: Vec<SampleSeries>,
    /// The leak estimates, one series per web bridge.
    pub estimates: Vec<EstimateSeries>,
    /// Restarts, the newest [`MAX_EVENTS`], oldest first.
    pub restarts: Vec<Restart>,
    /// More restarts are in the range than were returned.
    pub restarts_truncated: bool,
    /// Decisions, the newest [`MAX_EVENTS`], oldest first.
    pub decisions: Vec<Decision>,
    /// More decisions are in the range than were returned.
    pub decisions_truncated: bool,
    /// More hosts had samples or estimates than [`MAX_SERIES`]: the
    /// first ones by time are shown.
    pub series_truncated: bool,
}

/// One host's samples of one kind.
#[derive(Debug, Serialize)]
pub struct SampleSeries {
    /// The server.
    pub host: String,
    /// `webbridge` (sessions), `callbridge` (CMA), or `cluster` (its call
    /// bridges' CMA summed, see [`Scope::Cluster`]).
    pub kind: &'static str,
    /// Its buckets, oldest first.
    pub points: Vec<SamplePoint>,
}

/// One bucket of samples: `time` is that of its last sample.
#[derive(Debug, Serialize)]
pub struct SamplePoint {
    /// The last sample's time.
    pub time: DateTime<Utc>,
    /// Web bridge: sessions at the last sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<i64>,
    /// Web bridge: the least sessions in the bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_min: Option<i64>,
    /// Web bridge: the most sessions in the bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_max: Option<i64>,
    /// Call bridge: CMA at the last sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cma_current: Option<i64>,
    /// Call bridge: the least CMA in the bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cma_current_min: Option<i64>,
    /// Call bridge: the most CMA in the bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cma_current_max: Option<i64>,
    /// Call bridge: the highest CMA peak logged in the bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cma_peak: Option<i64>,
}

/// One web bridge's leak estimates.
#[derive(Debug, Serialize)]
pub struct EstimateSeries {
    /// The web bridge.
    pub webbridge: String,
    /// Its buckets, oldest first.
    pub points: Vec<EstimatePoint>,
}

/// One bucket of estimates: the envelope of the leak range (the least
/// lower bound, the greatest upper bound), the last sessions and forecast.
#[derive(Debug, Serialize)]
pub struct EstimatePoint {
    /// The last estimate's time.
    pub time: DateTime<Utc>,
    /// Sessions at the last estimate.
    pub active: i64,
    /// Leak, the least lower bound in the bucket.
    pub leaked_lower: i64,
    /// Leak, the greatest upper bound in the bucket.
    pub leaked_upper: i64,
    /// Real calls a restart could drop, the most in the bucket.
    pub droppable_upper: i64,
    /// The last estimate's lockout forecast.
    pub lockout_forecast: Option<DateTime<Utc>>,
}

/// A journaled restart.
#[derive(Debug, Serialize)]
pub struct Restart {
    /// Journal id.
    pub id: i64,
    /// The web bridge.
    pub webbridge: String,
    /// Why.
    pub reason: String,
    /// When it was decided.
    pub intent: DateTime<Utc>,
    /// When it ended (none: in progress, or the guard stopped).
    pub finished: Option<DateTime<Utc>>,
    /// How it ended.
    pub result: Option<String>,
    /// Details of the end.
    pub detail: Option<String>,
}

/// A recorded decision (they are recorded when they change).
#[derive(Debug, Serialize)]
pub struct Decision {
    /// When.
    pub time: DateTime<Utc>,
    /// The web bridge.
    pub webbridge: String,
    /// `restart`, `hold` or `none`.
    pub action: String,
    /// Why.
    pub reason: String,
}

/// One value over a bucket.
#[derive(Debug, Clone, Copy)]
struct Spread {
    min: i64,
    max: i64,
    last: i64,
}

impl Spread {
    fn of(value: i64) -> Spread {
        Spread { min: value, max: value, last: value }
    }

    fn merge(&mut self, later: Spread) {
        *self = Spread { min: self.min.min(later.min), max: self.max.max(later.max), last: later.last };
    }
}

/// What a bucket holds: merged with what comes later in its time.
trait Bucket: Copy {
    fn merge(&mut self, later: Self);
}

/// A web bridge's sessions, or a call bridge's CMA (and its peak).
#[derive(Debug, Clone, Copy)]
struct Sessions {
    value: Spread,
    peak: Option<i64>,
}

impl Bucket for Sessions {
    fn merge(&mut self, later: Sessions) {
        self.value.merge(later.value);
        self.peak = self.peak.max(later.peak);
    }
}

#[derive(Debug, Clone, Copy)]
struct Leak {
    active: i64,
    lower: i64,
    upper: i64,
    droppable: i64,
    forecast: Option<i64>,
}

impl Bucket for Leak {
    fn merge(&mut self, later: Leak) {
        *self = Leak {
            active: later.active,
            lower: self.lower.min(later.lower),
            upper: self.upper.max(later.upper),
            droppable: self.droppable.max(later.droppable),
            forecast: later.forecast,
        };
    }
}

/// Series downsampled as rows come in time order: each row falls in the
/// bucket `(time - from) / width` of its series.
struct Downsampler<B> {
    from: i64,
    width: i64,
    /// Per series: (bucket index, time of the last row, what it holds).
    series: BTreeMap<String, Vec<(i64, i64, B)>>,
    held: usize,
    /// Rows of series beyond [`MAX_SERIES`], left out.
    left_out: bool,
}

impl<B: Bucket> Downsampler<B> {
    fn new(from: i64, width: i64) -> Downsampler<B> {
        Downsampler { from, width, series: BTreeMap::new(), held: 0, left_out: false }
    }

    /// Adds a row of `key` at `time` (rows come in time order).
    fn add(&mut self, key: &str, time: i64, value: B) {
        let index = (time - self.from) / self.width;
        if self.series.len() >= MAX_SERIES && !self.series.contains_key(key) {
            self.left_out = true;
            return;
        }
        let buckets = match self.series.get_mut(key) {
            Some(buckets) => buckets,
            None => self.series.entry(key.to_owned()).or_default(),
        };
        match buckets.last_mut() {
            Some((last, at, held)) if *last == index => {
                held.merge(value);
                *at = time;
            }
            _ => {
                buckets.push((index, time, value));
                self.held += 1;
                if self.held > MAX_BUCKETS {
                    self.widen();
                }
            }
        }
    }

    /// Too many buckets for one answer: every bucket twice as wide.
    fn widen(&mut self) {
        self.width = self.width.saturating_mul(2);
        self.held = 0;
        for buckets in self.series.values_mut() {
            let mut merged: Vec<(i64, i64, B)> = Vec::with_capacity(buckets.len() / 2 + 1);
            for &(index, at, value) in buckets.iter() {
                match merged.last_mut() {
                    Some((last, last_at, held)) if *last == index / 2 => {
                        held.merge(value);
                        *last_at = at;
                    }
                    _ => merged.push((index / 2, at, value)),
                }
            }
            self.held += merged.len();
            *buckets = merged;
        }
    }
}

/// Reads the answer to `query` from `connection`.
pub fn read(connection: &Connection, query: &Query) -> anyhow::Result<Answer> {
    let (from, to) = (ms(query.from), ms(query.to));
    let points = query.points.clamp(1, MAX_POINTS) as i64;
    let mut answer = Answer {
        from: query.from,
        to: query.to,
        bucket_ms: 0,
        samples: Vec::new(),
        estimates: Vec::new(),
        restarts: Vec::new(),
        restarts_truncated: false,
        decisions: Vec::new(),
        decisions_truncated: false,
        series_truncated: false,
    };
    // Buckets span the data in the range, not the range: a range of a
    // century over 90 days of data still gives `points` useful buckets.
    let runs = query.scope.runs();
    if let Some((first, last)) = span(connection, from, to, &runs)? {
        let width = ((last - first + 1) + points - 1) / points;
        let (webbridges, mut callbridges) = samples(connection, first, last, width, &runs)?;
        let estimates = estimates(connection, first, last, width, &runs)?;
        // The widest: a table whose series were too many widened its buckets.
        answer.bucket_ms = webbridges.width.max(callbridges.width).max(estimates.width);
        answer.series_truncated = webbridges.left_out || callbridges.left_out || estimates.left_out;
        if let Scope::Cluster { name, .. } = &query.scope {
            let total = summed(&callbridges.series);
            callbridges.series = BTreeMap::from([(name.clone(), total)]);
        }
        let callbridge_kind = if matches!(query.scope, Scope::Cluster { .. }) { "cluster" } else { "callbridge" };
        for (kind, series) in [("webbridge", webbridges), (callbridge_kind, callbridges)] {
            answer.samples.extend(series.series.into_iter().map(|(host, buckets)| SampleSeries {
                host,
                kind,
                points: buckets.into_iter().map(|(_, at, bucket)| sample_point(kind, at, bucket)).collect(),
            }));
        }
        answer.estimates = estimates
            .series
            .into_iter()
            .map(|(webbridge, buckets)| EstimateSeries {
                webbridge,
                points: buckets
                    .into_iter()
                    .map(|(_, at, leak)| EstimatePoint {
                        time: time(at),
                        active: leak.active,
                        leaked_lower: leak.lower,
                        leaked_upper: leak.upper,
                        droppable_upper: leak.droppable,
                        lockout_forecast: leak.forecast.map(time),
                    })
                    .collect(),
            })
            .collect();
    }
    // Restarts and decisions are few (a decision is stored when it changes).
    let only = query.scope.webbridges();
    (answer.restarts, answer.restarts_truncated) = newest(
        connection,
        "SELECT id, webbridge, reason, intent_ms, finished_ms, result, detail FROM restarts \
         WHERE intent_ms >= ?1 AND intent_ms <= ?2 AND (?4 IS NULL OR webbridge IN (SELECT value FROM json_each(?4))) \
         ORDER BY intent_ms DESC, id DESC LIMIT ?3",
        (from, to, only.as_deref()),
        |row| {
            Ok(Restart {
                id: row.get(0)?,
                webbridge: row.get(1)?,
                reason: row.get(2)?,
                intent: time(row.get(3)?),
                finished: row.get::<_, Option<i64>>(4)?.map(time),
                result: row.get(5)?,
                detail: row.get(6)?,
            })
        },
    )?;
    (answer.decisions, answer.decisions_truncated) = newest(
        connection,
        "SELECT time_ms, webbridge, action, reason FROM decisions \
         WHERE time_ms >= ?1 AND time_ms <= ?2 AND (?4 IS NULL OR webbridge IN (SELECT value FROM json_each(?4))) \
         ORDER BY time_ms DESC, rowid DESC LIMIT ?3",
        (from, to, only.as_deref()),
        |row| {
            Ok(Decision { time: time(row.get(0)?), webbridge: row.get(1)?, action: row.get(2)?, reason: row.get(3)? })
        },
    )?;
    Ok(answer)
}

/// The first and last time of a sample or an estimate of `runs` in
/// `from..=to` (two index lookups per run, not scans).
fn span(connection: &Connection, from: i64, to: i64, runs: &[Run<'_>]) -> anyhow::Result<Option<(i64, i64)>> {
    let mut first = None::<i64>;
    let mut last = None::<i64>;
    for run in runs {
        for (order, bound) in [("ASC", &mut first), ("DESC", &mut last)] {
            let sql = format!(
                "SELECT time_ms FROM {} time_ms >= ?1 AND time_ms <= ?2 ORDER BY time_ms {order} LIMIT 1",
                run.rows()
            );
            let found: Option<i64> = connection
                .prepare_cached(&sql)?
                .query_map(params![from, to, run.host, run.kind], |row| row.get(0))?
                .next()
                .transpose()?;
            if let Some(found) = found {
                *bound = Some(match (*bound, order) {
                    (Some(held), "ASC") => held.min(found),
                    (Some(held), _) => held.max(found),
                    (None, _) => found,
                });
            }
        }
    }
    Ok(first.zip(last))
}

/// Samples of `runs` in `from..=to`, streamed into web bridge and call
/// bridge series (each run in time order: a series' rows come in order).
fn samples(
    connection: &Connection,
    from: i64,
    to: i64,
    width: i64,
    runs: &[Run<'_>],
) -> anyhow::Result<(Downsampler<Sessions>, Downsampler<Sessions>)> {
    let mut webbridges = Downsampler::new(from, width);
    let mut callbridges = Downsampler::new(from, width);
    for run in runs.iter().filter(|run| run.table == Table::Samples) {
        let mut statement = connection.prepare_cached(&format!(
            "SELECT time_ms, host, kind, active, cma_current, cma_peak FROM {} time_ms >= ?1 AND time_ms <= ?2 \
             ORDER BY time_ms",
            run.rows()
        ))?;
        let mut rows = statement.query(params![from, to, run.host, run.kind])?;
        while let Some(row) = rows.next()? {
            let at: i64 = row.get(0)?;
            let host = row.get_ref(1)?.as_str()?;
            match row.get_ref(2)?.as_str()? {
                "webbridge" => {
                    if let Some(active) = row.get::<_, Option<i64>>(3)? {
                        webbridges.add(host, at, Sessions { value: Spread::of(active), peak: None });
                    }
                }
                _ => {
                    if let Some(current) = row.get::<_, Option<i64>>(4)? {
                        let peak = row.get::<_, Option<i64>>(5)?;
                        callbridges.add(host, at, Sessions { value: Spread::of(current), peak });
                    }
                }
            }
        }
    }
    Ok((webbridges, callbridges))
}

/// Estimates of `runs` in `from..=to`, streamed into one series per web bridge.
fn estimates(
    connection: &Connection,
    from: i64,
    to: i64,
    width: i64,
    runs: &[Run<'_>],
) -> anyhow::Result<Downsampler<Leak>> {
    let mut series = Downsampler::new(from, width);
    for run in runs.iter().filter(|run| run.table == Table::Estimates) {
        let mut statement = connection.prepare_cached(&format!(
            "SELECT time_ms, webbridge, active, leaked_lower, leaked_upper, droppable_upper, lockout_forecast_ms \
             FROM {} time_ms >= ?1 AND time_ms <= ?2 ORDER BY time_ms",
            run.rows()
        ))?;
        let mut rows = statement.query(params![from, to, run.host, run.kind])?;
        while let Some(row) = rows.next()? {
            let leak = Leak {
                active: row.get(2)?,
                lower: row.get(3)?,
                upper: row.get(4)?,
                droppable: row.get(5)?,
                forecast: row.get(6)?,
            };
            series.add(row.get_ref(1)?.as_str()?, row.get(0)?, leak);
        }
    }
    Ok(series)
}

/// Call bridges' buckets summed into one series: at each bucket any of
/// them has, each one's figure there, or its last before (carried
/// forward: a call bridge reports every few minutes); the least and most
/// are the sums of theirs (bounds of the total's), the peaks are left out.
fn summed(series: &BTreeMap<String, Vec<(i64, i64, Sessions)>>) -> Vec<(i64, i64, Sessions)> {
    let mut indexes: Vec<i64> = series.values().flatten().map(|(index, _, _)| *index).collect();
    indexes.sort_unstable();
    indexes.dedup();
    let mut next = vec![0usize; series.len()];
    let mut total = Vec::with_capacity(indexes.len());
    for index in indexes {
        let mut sum = Spread { min: 0, max: 0, last: 0 };
        let mut at = i64::MIN;
        for (buckets, next) in series.values().zip(next.iter_mut()) {
            while buckets.get(*next).is_some_and(|(i, _, _)| *i <= index) {
                *next += 1;
            }
            let Some(&(held, time, bucket)) = next.checked_sub(1).and_then(|i| buckets.get(i)) else { continue };
            let value = if held == index { bucket.value } else { Spread::of(bucket.value.last) };
            (sum.min, sum.max, sum.last) = (sum.min + value.min, sum.max + value.max, sum.last + value.last);
            at = at.max(time);
        }
        total.push((index, at, Sessions { value: sum, peak: None }));
    }
    total
}

fn sample_point(kind: &str, at: i64, bucket: Sessions) -> SamplePoint {
    let Spread { min, max, last } = bucket.value;
    let mut point = SamplePoint {
        time: time(at),
        active: None,
        active_min: None,
        active_max: None,
        cma_current: None,
        cma_current_min: None,
        cma_current_max: None,
        cma_peak: None,
    };
    if kind == "webbridge" {
        (point.active, point.active_min, point.active_max) = (Some(last), Some(min), Some(max));
    } else {
        (point.cma_current, point.cma_current_min, point.cma_current_max) = (Some(last), Some(min), Some(max));
        point.cma_peak = bucket.peak;
    }
    point
}

/// The newest [`MAX_EVENTS`] rows of `sql` (which orders newest first and
/// takes a limit), oldest first, and whether there were more.
fn newest<T>(
    connection: &Connection,
    sql: &str,
    (from, to, only): (i64, i64, Option<&str>),
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> anyhow::Result<(Vec<T>, bool)> {
    let mut events: Vec<T> = connection
        .prepare_cached(sql)?
        .query_map(params![from, to, MAX_EVENTS as i64 + 1, only], row)?
        .collect::<Result<_, _>>()?;
    let truncated = events.len() > MAX_EVENTS;
    events.truncate(MAX_EVENTS);
    events.reverse();
    Ok((events, truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_keeps_the_least_the_most_and_the_last() {
        let mut sampler = Downsampler::new(0, 10);
        for (time, value) in [(0, 5), (3, 149), (7, 2), (9, 6), (12, 7)] {
            sampler.add("cms1", time, Sessions { value: Spread::of(value), peak: None });
        }
        let buckets = &sampler.series["cms1"];
        assert_eq!(buckets.len(), 2);
        let (index, at, first) = buckets[0];
        assert_eq!((index, at, first.value.min, first.value.max, first.value.last), (0, 9, 2, 149, 6));
        assert_eq!(buckets[1].2.value.last, 7);
    }

    /// More hosts than an answer holds (a flood of invented names stored
    /// earlier): the first ones are kept, the rest said to be left out, and
    /// the width stays finite.
    #[test]
    fn more_series_than_an_answer_holds_are_left_out_not_a_panic() {
        let mut sampler = Downsampler::new(0, 1);
        for time in 0..3 {
            for host in 0..MAX_SERIES + 500 {
                sampler.add(&format!("h{host}"), time, Sessions { value: Spread::of(1), peak: None });
            }
        }
        assert_eq!(sampler.series.len(), MAX_SERIES);
        assert!(sampler.left_out);
        assert!(sampler.held <= MAX_BUCKETS && sampler.width < 1 << 20, "{} {}", sampler.held, sampler.width);
    }

    #[test]
    fn many_series_widen_every_bucket_and_keep_the_peak() {
        let mut sampler = Downsampler::new(0, 1);
        let hosts: Vec<String> = (0..50).map(|i| format!("cms{i}")).collect();
        for time in 0..2000 {
            for host in &hosts {
                let value = if time == 1234 { 149 } else { 1 };
                sampler.add(host, time, Sessions { value: Spread::of(value), peak: None });
            }
        }
        assert!(sampler.held <= MAX_BUCKETS, "{}", sampler.held);
        assert_eq!(sampler.held, sampler.series.values().map(Vec::len).sum::<usize>());
        assert!(sampler.width >= 4, "{}", sampler.width);
        for buckets in sampler.series.values() {
            assert_eq!(buckets.iter().map(|b| b.2.value.max).max(), Some(149));
            assert_eq!(buckets.last().unwrap().1, 1999);
        }
    }
}
