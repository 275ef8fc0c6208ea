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
use wbguard_core::model::Restart;

/// Everything the chart shows, gathered while the model is fed.
///
/// Bounded whatever the input's length: once a series holds
/// [`MAX_POINTS`] points, neighbours are merged pairwise (keeping the
/// larger count), halving it; the chart has fewer pixels than that anyway.
#[derive(Debug, Default)]
pub struct Series {
    /// Per web bridge: `(time, active, leak lower bound)` at each sample.
    webbridges: BTreeMap<String, Vec<(DateTime<Utc>, u32, u32)>>,
    /// `(time, cluster CMA total)` after each call bridge report.
    cma_total: Vec<(DateTime<Utc>, u32)>,
    /// `(time, web bridge)` of each restart.
    restarts: Vec<(DateTime<Utc>, String)>,
}

/// Points kept per series before they are merged pairwise.
pub const MAX_POINTS: usize = 8192;

impl Series {
    /// A web bridge sample and its lower bound.
    pub fn push_webbridge(&mut self, host: &str, time: DateTime<Utc>, active: u32, lower: u32) {
        if !self.webbridges.contains_key(host) {
            self.webbridges.insert(host.to_owned(), Vec::new());
        }
        let points = self.webbridges.get_mut(host).expect("inserted above");
        points.push((time, active, lower));
        if points.len() >= MAX_POINTS {
            halve(points, |a, b| (a.0, a.1.max(b.1), b.2));
        }
    }

    /// The cluster's CMA total after a call bridge report.
    pub fn push_cma(&mut self, time: DateTime<Utc>, total: u32) {
        self.cma_total.push((time, total));
        if self.cma_total.len() >= MAX_POINTS {
            halve(&mut self.cma_total, |a, b| (a.0, a.1.max(b.1)));
        }
    }

    /// Records the restarts of `host` not drawn yet.
    pub fn note_restarts(&mut self, host: &str, restarts: &[Restart]) {
        let drawn = self.restarts.iter().filter(|(_, h)| h == host).count();
        for restart in restarts.iter().skip(drawn) {
            self.restarts.push((restart.time, host.to_owned()));
        }
    }
}

/// Merges neighbours pairwise.
fn halve<T: Copy>(points: &mut Vec<T>, merge: impl Fn(T, T) -> T) {
    let merged: Vec<T> =
        points.chunks(2).map(|pair| if pair.len() == 2 { merge(pair[0], pair[1]) } else { pair[0] }).collect();
    *points = merged;
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
    let times =
        series.webbridges.values().flat_map(|s| s.iter().map(|p| p.0)).chain(series.cma_total.iter().map(|p| p.0));
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
    let peak = series
        .webbridges
        .values()
        .flat_map(|s| s.iter().map(|p| p.1))
        .chain(series.cma_total.iter().map(|p| p.1))
        .max()
        .unwrap_or(0)
        .max(limit);
    let frame = Frame {
        start,
        span_ms: ((end - start).num_milliseconds() as f64).max(60_000.0),
        y_max: nice_ceiling(f64::from(peak) * 1.08),
    };
    axes(&mut svg, &frame, end);

    for (index, (host, samples)) in series.webbridges.iter().enumerate() {
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
        let line = |pick: fn(&(DateTime<Utc>, u32, u32)) -> u32| {
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
        for (t, _) in series.restarts.iter().filter(|(_, h)| h == host) {
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
    if !series.cma_total.is_empty() {
        let mut points = String::new();
        let mut last_column = i64::MIN;
        for &(t, cma) in &series.cma_total {
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
fn reduce(samples: &[(DateTime<Utc>, u32, u32)], frame: &Frame) -> Vec<(DateTime<Utc>, u32, u32)> {
    let mut out: Vec<(DateTime<Utc>, u32, u32)> = Vec::new();
    let mut bucket: Vec<(DateTime<Utc>, u32, u32)> = Vec::new();
    let flush = |bucket: &mut Vec<(DateTime<Utc>, u32, u32)>, out: &mut Vec<_>| {
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
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
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
    fn long_series_stay_bounded() {
        let mut series = Series::default();
        let start = Utc::now();
        for i in 0..100_000 {
            series.push_webbridge("cms1", start + Duration::seconds(i), (i % 150) as u32, 0);
        }
        let points = &series.webbridges["cms1"];
        assert!(points.len() < MAX_POINTS);
        assert_eq!(points.iter().map(|p| p.1).max(), Some(149));
        assert!(points.windows(2).all(|w| w[0].0 < w[1].0));
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
