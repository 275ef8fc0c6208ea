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
    /// Only these hosts (a web bridge, or a cluster's servers): their
    /// samples, estimates, restarts and decisions; none: every host.
    pub hosts: Option<Vec<String>>,
}

impl Query {
    /// The range, with [`DEFAULT_POINTS`] per series, every host.
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Query {
        Query { from, to, points: DEFAULT_POINTS, hosts: None }
    }
}

/// The hosts a read goes through one by one (each by its own index, so a
/// web bridge's week costs its own rows, not the fleet's), or `[None]`:
/// every host in one pass.
fn each_host(hosts: &Option<Vec<String>>) -> Vec<Option<&str>> {
    match hosts {
        None => vec![None],
        Some(hosts) => hosts.iter().map(|h| Some(h.as_str())).collect(),
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
    /// `webbridge` (sessions) or `callbridge` (CMA).
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
    if let Some((first, last)) = span(connection, from, to, &query.hosts)? {
        let width = ((last - first + 1) + points - 1) / points;
        let (webbridges, callbridges) = samples(connection, first, last, width, &query.hosts)?;
        let estimates = estimates(connection, first, last, width, &query.hosts)?;
        // The widest: a table whose series were too many widened its buckets.
        answer.bucket_ms = webbridges.width.max(callbridges.width).max(estimates.width);
        answer.series_truncated = webbridges.left_out || callbridges.left_out || estimates.left_out;
        for (kind, series) in [("webbridge", webbridges), ("callbridge", callbridges)] {
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
    let only = query.hosts.as_ref().map(|hosts| serde_json::Value::from(hosts.clone()).to_string());
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

/// The first and last time of a sample or an estimate in `from..=to`
/// (index lookups, not scans).
fn span(
    connection: &Connection,
    from: i64,
    to: i64,
    hosts: &Option<Vec<String>>,
) -> anyhow::Result<Option<(i64, i64)>> {
    let mut first = None::<i64>;
    let mut last = None::<i64>;
    for ((table, column), host) in [("samples", "host"), ("estimates", "webbridge")]
        .into_iter()
        .flat_map(|t| each_host(hosts).into_iter().map(move |h| (t, h)))
    {
        let only = if host.is_some() { format!("{column} = ?3 AND") } else { "?3 IS NULL AND".to_owned() };
        for (order, bound) in [("ASC", &mut first), ("DESC", &mut last)] {
            let sql = format!(
                "SELECT time_ms FROM {table} WHERE {only} time_ms >= ?1 AND time_ms <= ?2 ORDER BY time_ms {order} LIMIT 1"
            );
            let found: Option<i64> = connection
                .prepare_cached(&sql)?
                .query_map(params![from, to, host], |row| row.get(0))?
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

/// Samples in `from..=to`, streamed into web bridge and call bridge series.
fn samples(
    connection: &Connection,
    from: i64,
    to: i64,
    width: i64,
    hosts: &Option<Vec<String>>,
) -> anyhow::Result<(Downsampler<Sessions>, Downsampler<Sessions>)> {
    let mut webbridges = Downsampler::new(from, width);
    let mut callbridges = Downsampler::new(from, width);
    for host in each_host(hosts) {
        let only = if host.is_some() { "host = ?3 AND" } else { "?3 IS NULL AND" };
        let mut statement = connection.prepare_cached(&format!(
            "SELECT time_ms, host, kind, active, cma_current, cma_peak FROM samples \
             WHERE {only} time_ms >= ?1 AND time_ms <= ?2 ORDER BY time_ms"
        ))?;
        let mut rows = statement.query(params![from, to, host])?;
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

/// Estimates in `from..=to`, streamed into one series per web bridge.
fn estimates(
    connection: &Connection,
    from: i64,
    to: i64,
    width: i64,
    hosts: &Option<Vec<String>>,
) -> anyhow::Result<Downsampler<Leak>> {
    let mut series = Downsampler::new(from, width);
    for host in each_host(hosts) {
        let only = if host.is_some() { "webbridge = ?3 AND" } else { "?3 IS NULL AND" };
        let mut statement = connection.prepare_cached(&format!(
            "SELECT time_ms, webbridge, active, leaked_lower, leaked_upper, droppable_upper, lockout_forecast_ms \
             FROM estimates WHERE {only} time_ms >= ?1 AND time_ms <= ?2 ORDER BY time_ms"
        ))?;
        let mut rows = statement.query(params![from, to, host])?;
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
