//! The `--plot` chart: one self-contained SVG file, no dependencies.
//!
//! Over time it draws, per web bridge, the active sessions (solid) and the
//! leak's lower bound (dashed) with the leak range between them shaded (the
//! upper bound is the active count itself); the cluster's CMA total (grey);
//! restarts as dotted vertical lines; and the limit as a red line. Long
//! series are reduced to the minimum and maximum per pixel column, so the
//! file stays small and the shape stays true.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};

/// Everything the chart shows, gathered while the model is fed, each
/// series downsampled as it streams ([`Track`]): bounded per web bridge
/// whatever the input's length.
#[derive(Debug, Default)]
pub struct Series {
    /// Per web bridge: the active count and the leak's lower bound.
    webbridges: BTreeMap<String, Track>,
    /// The cluster's CMA total after each call bridge report (no bound).
    cma_total: Track,
}

/// Buckets kept per series before their width doubles; the chart has
/// fewer pixel columns than half of it.
pub const MAX_BUCKETS: usize = 2048;

/// `(time, value, lower bound)`: one sample of a series.
type Point = (DateTime<Utc>, u32, u32);

/// One series, downsampled as it streams: samples fall into buckets of
/// equal width in time, each keeping its first, lowest, highest and last
/// sample (so peaks and dips show), and restarts. When there are more than
/// [`MAX_BUCKETS`], the width doubles and neighbours merge.
#[derive(Debug)]
struct Track {
    /// Bucket `n` covers `origin + n * width ..` (width in milliseconds).
    origin: Option<DateTime<Utc>>,
    width: i64,
    buckets: Vec<Bucket>,
    /// Restart times, at most one per bucket width.
    restarts: Vec<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    slot: i64,
    first: Point,
    low: Point,
    high: Point,
    last: Point,
}

impl Default for Track {
    fn default() -> Self {
        Track { origin: None, width: 1000, buckets: Vec::new(), restarts: Vec::new() }
    }
}

impl Track {
    fn slot(&mut self, time: DateTime<Utc>) -> i64 {
        let origin = *self.origin.get_or_insert(time);
        (time - origin).num_milliseconds().div_euclid(self.width)
    }

    fn push(&mut self, point: Point) {
        let slot = self.slot(point.0);
        match self.buckets.last_mut() {
            // The same bucket, or a sample out of order: into the last one.
            Some(last) if slot <= last.slot => *last = last.merge(&Bucket::of(last.slot, point)),
            _ => self.buckets.push(Bucket::of(slot, point)),
        }
        self.bound();
    }

    fn note_restart(&mut self, time: DateTime<Utc>) {
        let slot = self.slot(time);
        let origin = self.origin;
        let width = self.width;
        let slot_of = |t: DateTime<Utc>| origin.map_or(0, |o| (t - o).num_milliseconds().div_euclid(width));
        if self.restarts.last().is_none_or(|&t| slot_of(t) != slot) {
            self.restarts.push(time);
        }
        self.bound();
    }

    /// Doubles the width until the buckets and restarts fit.
    fn bound(&mut self) {
        while self.buckets.len() > MAX_BUCKETS || self.restarts.len() > MAX_BUCKETS {
            self.width *= 2;
            let mut merged: Vec<Bucket> = Vec::with_capacity(self.buckets.len() / 2 + 1);
            for bucket in &self.buckets {
                let slot = bucket.slot.div_euclid(2);
                match merged.last_mut() {
                    Some(last) if last.slot == slot => *last = last.merge(bucket),
                    _ => merged.push(Bucket { slot, ..*bucket }),
                }
            }
            self.buckets = merged;
            let (origin, width) = (self.origin, self.width);
            let slot_of = |t: DateTime<Utc>| origin.map_or(0, |o| (t - o).num_milliseconds().div_euclid(width));
            self.restarts.dedup_by_key(|t| slot_of(*t));
        }
    }

    /// The samples kept, in time order.
    fn points(&self) -> Vec<Point> {
        let mut points = Vec::with_capacity(self.buckets.len() * 4);
        for bucket in &self.buckets {
            let mut picked = [bucket.first, bucket.low, bucket.high, bucket.last];
            picked.sort_by_key(|p| p.0);
            for point in picked {
                if points.last() != Some(&point) {
                    points.push(point);
                }
            }
        }
        points
    }
}

impl Bucket {
    fn of(slot: i64, point: Point) -> Self {
        Bucket { slot, first: point, low: point, high: point, last: point }
    }

    /// This bucket followed by `next`.
    fn merge(&self, next: &Bucket) -> Bucket {
        Bucket {
            slot: self.slot,
            first: self.first,
            low: if next.low.1 < self.low.1 { next.low } else { self.low },
            high: if next.high.1 > self.high.1 { next.high } else { self.high },
            last: next.last,
        }
    }
}

impl Series {
    /// A web bridge sample and its lower bound.
    pub fn push_webbridge(&mut self, host: &str, time: DateTime<Utc>, active: u32, lower: u32) {
        if !self.webbridges.contains_key(host) {
            self.webbridges.insert(host.to_owned(), Track::default());
        }
        self.webbridges.get_mut(host).expect("inserted above").push((time, active, lower));
    }

    /// The cluster's CMA total after a call bridge report.
    pub fn push_cma(&mut self, time: DateTime<Utc>, total: u32) {
        self.cma_total.push((time, total, 0));
    }

    /// A restart of `host`, drawn if the web bridge has samples.
    pub fn note_restart(&mut self, host: &str, time: DateTime<Utc>) {
        if let Some(track) = self.webbridges.get_mut(host) {
            track.note_restart(time);
        }
    }
}

const WIDTH: f64 = 1200.0;
const HEIGHT: f64 = 540.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const PALETTE: [&str; 8] = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];

struct Frame {
    start: DateTime<Utc>,
    span_ms: f64,
    y_max: f64,
}

impl Frame {
    fn x(&self, t: DateTime<Utc>) -> f64 {
        LEFT + (t - self.start).num_milliseconds() as f64 / self.span_ms * (WIDTH - LEFT - RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        TOP + (1.0 - v / self.y_max) * (HEIGHT - TOP - BOTTOM)
    }
    fn column(&self, t: DateTime<Utc>) -> i64 {
        self.x(t).floor() as i64
    }
}

/// Renders the chart.
pub fn render(series: &Series, limit: u32) -> String {
    // Per web bridge: host, samples kept, restarts.
    let webbridges: Vec<_> =
        series.webbridges.iter().map(|(host, track)| (host, track.points(), track.restarts.as_slice())).collect();
    let cma_total = series.cma_total.points();
    let times = webbridges.iter().flat_map(|(_, s, _)| s.iter().map(|p| p.0)).chain(cma_total.iter().map(|p| p.0));
    let (start, end) = times.fold((None, None), |(lo, hi): (Option<DateTime<Utc>>, Option<DateTime<Utc>>), t| {
        (Some(lo.map_or(t, |l| l.min(t))), Some(hi.map_or(t, |h| h.max(t))))
    });
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="#fff"/><text x="{LEFT}" y="22" font-size="15" font-weight="bold">Web bridge sessions and leak bounds</text>"##
    );
    let (Some(start), Some(end)) = (start, end) else {
        let _ = write!(svg, r#"<text x="{LEFT}" y="80">no records</text></svg>"#);
        return svg;
    };
    let peak = webbridges
        .iter()
        .flat_map(|(_, s, _)| s.iter().map(|p| p.1))
        .chain(cma_total.iter().map(|p| p.1))
        .max()
        .unwrap_or(0)
        .max(limit);
    let frame = Frame {
        start,
        span_ms: ((end - start).num_milliseconds() as f64).max(60_000.0),
        y_max: nice_ceiling(f64::from(peak) * 1.08),
    };
    axes(&mut svg, &frame, end);

    for (index, (host, samples, restarts)) in webbridges.iter().enumerate() {
        let color = PALETTE[index % PALETTE.len()];
        let reduced = reduce(samples, &frame);
        // The leak range: from the lower bound up to the active count.
        let mut band = String::new();
        for &(t, active, _) in &reduced {
            let _ = write!(band, "{:.1},{:.1} ", frame.x(t), frame.y(f64::from(active)));
        }
        for &(t, _, lower) in reduced.iter().rev() {
            let _ = write!(band, "{:.1},{:.1} ", frame.x(t), frame.y(f64::from(lower)));
        }
        let _ = write!(svg, r#"<polygon points="{band}" fill="{color}" fill-opacity="0.12" stroke="none"/>"#);
        let line = |pick: fn(&Point) -> u32| {
            reduced.iter().fold(String::new(), |mut acc, p| {
                let _ = write!(acc, "{:.1},{:.1} ", frame.x(p.0), frame.y(f64::from(pick(p))));
                acc
            })
        };
        let _ = write!(
            svg,
            r#"<polyline class="active" data-host="{}" points="{}" fill="none" stroke="{color}" stroke-width="1.3"/>"#,
            escape(host),
            line(|p| p.1)
        );
        let _ = write!(
            svg,
            r#"<polyline class="leak-lower" data-host="{}" points="{}" fill="none" stroke="{color}" stroke-width="1.6" stroke-dasharray="6 3"/>"#,
            escape(host),
            line(|p| p.2)
        );
        for t in restarts.iter() {
            let x = frame.x(*t);
            let _ = write!(
                svg,
                r#"<line class="restart" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}" stroke="{color}" stroke-dasharray="2 3"/><path d="M{:.1},{TOP} l5,-8 h-10 z" fill="{color}"/>"#,
                HEIGHT - BOTTOM,
                x
            );
        }
        legend(&mut svg, index, color, &format!("{host}: active"), false);
        legend_dash(&mut svg, index, color, "leak lower bound");
    }
    if !cma_total.is_empty() {
        let mut points = String::new();
        let mut last_column = i64::MIN;
        for &(t, cma, _) in &cma_total {
            // One point per pixel column is enough for a 5-minute series.
            let column = frame.column(t);
            if column != last_column {
                let _ = write!(points, "{:.1},{:.1} ", frame.x(t), frame.y(f64::from(cma)));
                last_column = column;
            }
        }
        let _ =
            write!(svg, r##"<polyline class="cma" points="{points}" fill="none" stroke="#555" stroke-width="1"/>"##);
        legend(&mut svg, series.webbridges.len(), "#555", "CMA total", true);
    }
    let y = frame.y(f64::from(limit));
    let _ = write!(
        svg,
        r##"<line class="limit" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#d62728" stroke-width="1.5" stroke-dasharray="8 4"/><text x="{:.1}" y="{:.1}" fill="#d62728">limit {limit}</text>"##,
        WIDTH - RIGHT,
        LEFT + 6.0,
        y - 5.0
    );
    svg.push_str("</svg>\n");
    svg
}

/// Keeps, per pixel column, the samples with the lowest and highest
/// active count and the last one (for the lower bound's steps).
fn reduce(samples: &[Point], frame: &Frame) -> Vec<Point> {
    let mut out: Vec<Point> = Vec::new();
    let mut bucket: Vec<Point> = Vec::new();
    let flush = |bucket: &mut Vec<Point>, out: &mut Vec<_>| {
        if bucket.is_empty() {
            return;
        }
        let low = *bucket.iter().min_by_key(|p| p.1).expect("non-empty");
        let high = *bucket.iter().max_by_key(|p| p.1).expect("non-empty");
        let last = *bucket.last().expect("non-empty");
        let mut picked = vec![bucket[0], low, high, last];
        picked.sort_by_key(|p| p.0);
        picked.dedup();
        out.extend(picked);
        bucket.clear();
    };
    let mut column = i64::MIN;
    for &sample in samples {
        let c = frame.column(sample.0);
        if c != column {
            flush(&mut bucket, &mut out);
            column = c;
        }
        bucket.push(sample);
    }
    flush(&mut bucket, &mut out);
    out
}

fn axes(svg: &mut String, frame: &Frame, end: DateTime<Utc>) {
    let bottom = HEIGHT - BOTTOM;
    let right = WIDTH - RIGHT;
    let step = nice_ceiling(frame.y_max / 6.0);
    let mut v = 0.0;
    while v <= frame.y_max {
        let y = frame.y(v);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{right}" y1="{y:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v}</text>"##,
            LEFT - 6.0,
            y + 4.0
        );
        v += step;
    }
    let span = end - frame.start;
    let (tick, format) = if span > Duration::days(20) {
        (Duration::days(7), "%m-%d")
    } else if span > Duration::days(2) {
        (Duration::days(1), "%m-%d")
    } else if span > Duration::hours(12) {
        (Duration::hours(6), "%m-%d %H:%M")
    } else {
        (Duration::hours(1), "%H:%M")
    };
    // Ticks on whole units of `tick` since the Unix epoch (midnight UTC).
    let tick_ms = tick.num_milliseconds();
    let mut t_ms = frame.start.timestamp_millis().div_euclid(tick_ms) * tick_ms;
    while t_ms <= end.timestamp_millis() {
        if let Some(t) = DateTime::<Utc>::from_timestamp_millis(t_ms).filter(|t| *t >= frame.start) {
            let x = frame.x(t);
            let _ = write!(
                svg,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{bottom}" stroke="#f0f0f0"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                bottom + 16.0,
                t.format(format)
            );
        }
        t_ms += tick_ms;
    }
    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="#999"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#666">time (UTC)</text><text transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle" fill="#666">sessions</text>"##,
        right - LEFT,
        bottom - TOP,
        (LEFT + right) / 2.0,
        HEIGHT - 10.0,
        (TOP + bottom) / 2.0
    );
}

fn legend(svg: &mut String, index: usize, color: &str, label: &str, thin: bool) {
    let y = TOP + 10.0 + index as f64 * 34.0;
    let x = WIDTH - RIGHT + 14.0;
    let width = if thin { 1.0 } else { 1.5 };
    let _ = write!(
        svg,
        r#"<line x1="{x}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{color}" stroke-width="{width}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
        x + 22.0,
        x + 28.0,
        y + 4.0,
        escape(label)
    );
}

fn legend_dash(svg: &mut String, index: usize, color: &str, label: &str) {
    let y = TOP + 24.0 + index as f64 * 34.0;
    let x = WIDTH - RIGHT + 14.0;
    let _ = write!(
        svg,
        r##"<line x1="{x}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{color}" stroke-width="1.6" stroke-dasharray="6 3"/><text x="{:.1}" y="{:.1}" fill="#555">{label}</text>"##,
        x + 22.0,
        x + 28.0,
        y + 4.0
    );
}

fn escape(text: &str) -> String {
    // Control characters are not allowed in XML at all: shown escaped.
    crate::text::printable(text).replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|&n| n >= v).unwrap_or(10.0 * magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_series_stay_bounded_and_keep_their_extremes() {
        let mut series = Series::default();
        let start = Utc::now();
        for i in 0..1_000_000i64 {
            // One dip to 0 and one peak at 149 among a million samples.
            let active = match i {
                400_000 => 0,
                700_001 => 149,
                _ => 50 + (i % 7) as u32,
            };
            series.push_webbridge("cms1", start + Duration::seconds(i), active, 0);
            if i % 1000 == 0 {
                series.note_restart("cms1", start + Duration::seconds(i));
            }
        }
        let track = &series.webbridges["cms1"];
        assert!(track.buckets.len() <= MAX_BUCKETS && track.restarts.len() <= MAX_BUCKETS);
        let points = track.points();
        assert_eq!(points.iter().map(|p| p.1).max(), Some(149));
        assert_eq!(points.iter().map(|p| p.1).min(), Some(0));
        assert!(points.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(points.first().map(|p| p.0), Some(start));
        assert_eq!(points.last().map(|p| p.0), Some(start + Duration::seconds(999_999)));
    }

    #[test]
    fn a_clock_that_stands_still_fills_one_bucket() {
        let mut series = Series::default();
        let now = Utc::now();
        for i in 0..100_000u32 {
            series.push_webbridge("cms1", now, i % 150, 0);
            series.push_cma(now, i % 40);
        }
        assert_eq!(series.webbridges["cms1"].buckets.len(), 1);
        assert_eq!(series.cma_total.buckets.len(), 1);
    }

    #[test]
    fn nice_numbers() {
        assert_eq!(nice_ceiling(161.0), 200.0);
        assert_eq!(nice_ceiling(33.0), 50.0);
        assert_eq!(nice_ceiling(24.0), 25.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }

    #[test]
    fn empty_and_single_point_charts_render() {
        assert!(render(&Series::default(), 149).contains("no records"));
        let mut series = Series::default();
        series.push_webbridge("cms<1>", Utc::now(), 5, 1);
        let svg = render(&series, 149);
        assert!(svg.contains("limit 149") && svg.contains("cms&lt;1&gt;"));
    }
}
