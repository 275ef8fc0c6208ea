//! `cms-sim gen-log`: run the session model in virtual time and write the
//! syslog a CMS deployment would have written, plus the ground truth.
//!
//! Each second of virtual time: the model steps, a controller (a guard
//! under test) hears the live calls, drains or readies web bridges at the
//! load balancer and asks for restarts, scheduled restarts run
//! (each leaves its `cli:` audit line), web bridges log `Stats` every
//! `stats_interval` and call bridges `STATS:` every five minutes (each
//! server at its own phase), and noise fills the gaps so that about one
//! line in `lines_per_record` is a record. Lines within a second are in
//! time order. The same seed gives the same bytes.

use std::io::{self, Write};

use chrono::{DateTime, Datelike, Duration, NaiveTime, Timelike, Utc, Weekday};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::cadence::{Cadence, Due};
use crate::scenario::Scenario;
use crate::session::Simulation;
use crate::syslog::{self, HeaderShape, LOCAL0_INFO, USER_INFO};

/// When every web bridge is restarted, as Cisco's cron job would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartRule {
    /// Every day at this time (UTC).
    Daily(NaiveTime),
    /// Every week on this day at this time (UTC).
    Weekly(Weekday, NaiveTime),
}

impl RestartRule {
    fn due(&self, time: DateTime<Utc>) -> bool {
        let at = |t: &NaiveTime| time.hour() == t.hour() && time.minute() == t.minute() && time.second() == t.second();
        match self {
            RestartRule::Daily(t) => at(t),
            RestartRule::Weekly(day, t) => time.weekday() == *day && at(t),
        }
    }
}

impl std::str::FromStr for RestartRule {
    type Err = String;
    /// `02:00` (daily) or `sat 02:00` (weekly).
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("bad restart time '{text}' (use HH:MM, or a weekday and HH:MM such as 'sat 02:00')");
        let mut words = text.split_whitespace();
        let (day, time) = match (words.next(), words.next(), words.next()) {
            (Some(time), None, None) => (None, time),
            (Some(day), Some(time), None) => (Some(day.parse::<Weekday>().map_err(|_| bad())?), time),
            _ => return Err(bad()),
        };
        let time = NaiveTime::parse_from_str(time, "%H:%M").map_err(|_| bad())?;
        Ok(match day {
            Some(day) => RestartRule::Weekly(day, time),
            None => RestartRule::Daily(time),
        })
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// The deployment and its load.
    pub scenario: Scenario,
    /// Seed of all randomness.
    pub seed: u64,
    /// Virtual start time.
    pub start: DateTime<Utc>,
    /// Stop after this much virtual time, if given.
    pub duration: Option<Duration>,
    /// Stop once this many bytes are written, if given.
    pub max_bytes: Option<u64>,
    /// About one line in this many is a record; the rest is noise.
    pub lines_per_record: u32,
    /// One header shape for every line; `None` gives each server its own.
    pub header: Option<HeaderShape>,
    /// Scheduled restarts of every web bridge.
    pub restarts: Vec<RestartRule>,
}

/// What was generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Virtual time of the last line.
    pub end: DateTime<Utc>,
    /// Lines written.
    pub lines: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Record lines (Stats, STATS, audit) among them.
    pub records: u64,
    /// Joins refused because a web bridge was full or restarting.
    pub refused_joins: u64,
    /// Real calls dropped by restarts.
    pub dropped_calls: u64,
    /// Web bridge restarts.
    pub restarts: u64,
    /// Drains at the load balancer (each `true` a controller asked for on a
    /// web bridge not drained yet).
    pub drains: u64,
    /// The truth at the end, per server: `(host, real, leaked)` sessions on
    /// its web bridge.
    pub webbridges: Vec<(String, u32, u32)>,
}

enum Line {
    Noise,
    WebBridgeStats(usize),
    CallBridgeStats(usize),
    Restart(usize),
}

/// Something that watches the log as it is written and restarts web
/// bridges: a guard under test, run in virtual time.
pub trait Controller {
    /// Sees each line, as written (with its newline).
    fn line(&mut self, line: &[u8]);
    /// Called once a second of virtual time: the servers (by index) whose
    /// web bridge to restart now. Each restart leaves its audit line.
    fn restarts(&mut self, now: DateTime<Utc>) -> Vec<usize>;
    /// Called once a second of virtual time, before [`Controller::restarts`]:
    /// the live CMA legs of the whole deployment, as its call bridges' CDRs
    /// or API would count them. A log-only guard ignores it.
    fn live_cma(&mut self, _cma: u32) {}
    /// Called once a second of virtual time, after [`Controller::live_cma`]:
    /// the start times (whole seconds, as CDRs give them) of the same live
    /// CMA legs, oldest first, so `starts.len()` is the count `live_cma`
    /// got. A leg's web bridge moved its `c:` counter in its start second.
    fn live_legs(&mut self, _starts: &[DateTime<Utc>]) {}
    /// Called once a second of virtual time, before [`Controller::restarts`]:
    /// web bridges (by server index) to drain (`true`) or make ready again
    /// (`false`) at the load balancer now. A drained web bridge takes no
    /// new joins and keeps its sessions. Indexes out of range are ignored.
    fn drains(&mut self, _now: DateTime<Utc>) -> Vec<(usize, bool)> {
        Vec::new()
    }
}

/// No controller: only the scheduled restarts, if any.
struct Nobody;

impl Controller for Nobody {
    fn line(&mut self, _: &[u8]) {}
    fn restarts(&mut self, _: DateTime<Utc>) -> Vec<usize> {
        Vec::new()
    }
}

/// Generates the log into `log` and, if given, the truth (JSON lines) into
/// `truth`.
pub fn generate(options: &GenOptions, log: &mut impl Write, truth: Option<&mut dyn Write>) -> io::Result<Summary> {
    generate_controlled(options, log, truth, &mut Nobody)
}

/// [`generate`], with `controller` seeing every line and restarting web
/// bridges when it decides to.
pub fn generate_controlled(
    options: &GenOptions,
    log: &mut impl Write,
    mut truth: Option<&mut dyn Write>,
    controller: &mut dyn Controller,
) -> io::Result<Summary> {
    let scenario = &options.scenario;
    let servers = &scenario.servers;
    let mut sim = Simulation::new(scenario.clone(), options.seed, options.start);
    // Line timing and noise have their own generator, so that changing the
    // noise never changes the sessions.
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x005e_ed0f_1095);
    let mut cadence = Cadence::new(scenario, options.lines_per_record, &mut rng);
    let shapes: Vec<HeaderShape> =
        (0..servers.len()).map(|i| options.header.unwrap_or(HeaderShape::ALL[i % HeaderShape::ALL.len()])).collect();

    let mut summary = Summary {
        end: options.start,
        lines: 0,
        bytes: 0,
        records: 0,
        refused_joins: 0,
        dropped_calls: 0,
        restarts: 0,
        drains: 0,
        webbridges: Vec::new(),
    };
    let mut pending_restarts: Vec<(DateTime<Utc>, usize)> = Vec::new();
    let mut line = Vec::with_capacity(512);
    let mut message = Vec::with_capacity(512);
    let mut second: Vec<(u16, Line)> = Vec::new();
    let mut elapsed = 0i64;
    loop {
        if options.duration.is_some_and(|d| elapsed >= d.num_seconds())
            || options.max_bytes.is_some_and(|max| summary.bytes >= max)
        {
            break;
        }
        sim.step();
        elapsed += 1;
        let now = sim.now();
        second.clear();

        if options.restarts.iter().any(|rule| rule.due(now)) {
            // Like Cisco's script: one server after another, a second apart.
            for (i, _) in servers.iter().enumerate().filter(|(_, s)| s.release.has_webbridge2()) {
                pending_restarts.push((now + Duration::seconds(i as i64), i));
            }
        }
        controller.live_cma(sim.callbridges.iter().map(|c| c.cma()).sum());
        controller.live_legs(sim.live_cma_starts());
        for (server, drained) in controller.drains(now) {
            let Some(wb) = sim.webbridges.get(server) else { continue };
            if wb.drained == drained {
                continue;
            }
            summary.drains += u64::from(drained);
            sim.set_drained(server, drained).expect("checked above");
            if let Some(truth) = truth.as_mut() {
                let record = json!({"type": "drain", "time": now, "host": servers[server].name, "drained": drained,
                    "real": sim.webbridges[server].real});
                writeln!(truth, "{record}")?;
            }
        }
        for server in controller.restarts(now) {
            if server < servers.len() && !pending_restarts.iter().any(|&(_, s)| s == server) {
                pending_restarts.push((now, server));
            }
        }
        pending_restarts.retain(|&(at, server)| {
            if at <= now {
                second.push((rng.gen_range(0..1000), Line::Restart(server)));
                false
            } else {
                true
            }
        });
        let mut due = Vec::new();
        cadence.due(elapsed, &mut rng, &mut due);
        second.extend(due.into_iter().map(|(ms, due)| {
            let line = match due {
                Due::WebBridgeStats(i) => Line::WebBridgeStats(i),
                Due::CallBridgeStats(i) => Line::CallBridgeStats(i),
                Due::Noise => Line::Noise,
            };
            (ms, line)
        }));
        second.sort_by_key(|(ms, _)| *ms);

        for (ms, kind) in second.drain(..) {
            let time = now + Duration::milliseconds(i64::from(ms));
            line.clear();
            match kind {
                Line::Noise => {
                    let server = rng.gen_range(0..servers.len());
                    let (priority, program) = syslog::noise(&mut message, &mut rng);
                    let s = &servers[server];
                    syslog::header(&mut line, shapes[server], time, priority, &s.name, &s.address, program);
                    line.extend_from_slice(&message);
                }
                Line::WebBridgeStats(i) => {
                    let s = &servers[i];
                    let wb = &sim.webbridges[i];
                    syslog::header(&mut line, shapes[i], time, USER_INFO, &s.name, &s.address, "webbridge");
                    syslog::webbridge_stats(&mut line, wb.active(), wb.connections, wb.disconnections);
                    summary.records += 1;
                    if let Some(truth) = truth.as_mut() {
                        let record = json!({"type": "webbridge", "time": time, "host": s.name, "active": wb.active(),
                            "real": wb.real, "leaked": wb.leaked, "refused_total": wb.refused});
                        writeln!(truth, "{record}")?;
                    }
                }
                Line::CallBridgeStats(i) => {
                    let s = &servers[i];
                    let webrtc = sim.callbridges[i].webrtc;
                    let desktop = sim.callbridges[i].desktop;
                    let sip = sim.callbridges[i].sip;
                    let report = sim.callbridge_report(i);
                    let legs_per_second = rng.gen_range(0..3);
                    syslog::header(&mut line, shapes[i], time, USER_INFO, &s.name, &s.address, "host:server");
                    syslog::callbridge_stats(&mut line, &report, sip, legs_per_second);
                    summary.records += 1;
                    if let Some(truth) = truth.as_mut() {
                        let record = json!({"type": "callbridge", "time": time, "host": s.name, "cma": report.cma,
                            "cma_peak": report.cma_peak, "webrtc": webrtc, "desktop": desktop});
                        writeln!(truth, "{record}")?;
                    }
                }
                Line::Restart(i) => {
                    let s = &servers[i];
                    let source = format!("10.0.0.250:{}", rng.gen_range(40000..60000));
                    syslog::header(&mut line, shapes[i], time, LOCAL0_INFO, &s.name, &s.address, "cli");
                    syslog::audit(&mut line, "admin", &source, "webbridge restart", true);
                    let outcome = sim.restart_webbridge(i);
                    summary.records += 1;
                    summary.restarts += 1;
                    summary.dropped_calls += u64::from(outcome.dropped_real);
                    if let Some(truth) = truth.as_mut() {
                        let record = json!({"type": "restart", "time": time, "host": s.name, "by": "admin",
                            "dropped_real": outcome.dropped_real, "freed_leaked": outcome.freed_leaked});
                        writeln!(truth, "{record}")?;
                    }
                }
            }
            line.push(b'\n');
            log.write_all(&line)?;
            controller.line(&line);
            summary.lines += 1;
            summary.bytes += line.len() as u64;
            summary.end = time;
        }
    }
    summary.refused_joins = sim.webbridges.iter().map(|w| w.refused).sum();
    summary.webbridges =
        servers.iter().zip(&sim.webbridges).map(|(s, wb)| (s.name.clone(), wb.real, wb.leaked)).collect();
    if let Some(truth) = truth.as_mut() {
        let webbridges: Vec<_> = servers
            .iter()
            .zip(&sim.webbridges)
            .map(|(s, wb)| {
                json!({"host": s.name, "active": wb.active(), "real": wb.real, "leaked": wb.leaked,
                    "refused": wb.refused, "restarts": wb.restarts, "dropped": wb.dropped})
            })
            .collect();
        let record = json!({"type": "summary", "start": options.start, "end": summary.end, "lines": summary.lines,
            "bytes": summary.bytes, "records": summary.records, "joins": sim.joins,
            "refused_joins": summary.refused_joins, "dropped_calls": summary.dropped_calls,
            "restarts": summary.restarts, "drains": summary.drains, "webbridges": webbridges});
        writeln!(truth, "{record}")?;
    }
    log.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn options() -> GenOptions {
        GenOptions {
            scenario: Scenario::with_servers(4),
            seed: 1,
            start: Utc.with_ymd_and_hms(2024, 3, 4, 0, 0, 0).unwrap(),
            duration: Some(Duration::hours(6)),
            max_bytes: None,
            lines_per_record: 50,
            header: None,
            restarts: vec!["03:00".parse().unwrap()],
        }
    }

    #[test]
    fn deterministic_and_about_the_asked_ratio() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let summary = generate(&options(), &mut a, None).unwrap();
        generate(&options(), &mut b, None).unwrap();
        assert_eq!(a, b);
        let ratio = summary.lines as f64 / summary.records as f64;
        assert!((45.0..55.0).contains(&ratio), "{ratio}");
        assert_eq!(summary.restarts, 4);
        assert_eq!(summary.lines, a.iter().filter(|&&b| b == b'\n').count() as u64);
    }

    #[test]
    fn restart_rules_parse() {
        assert_eq!(
            "sat 02:00".parse(),
            Ok(RestartRule::Weekly(Weekday::Sat, NaiveTime::from_hms_opt(2, 0, 0).unwrap()))
        );
        assert_eq!("02:30".parse(), Ok(RestartRule::Daily(NaiveTime::from_hms_opt(2, 30, 0).unwrap())));
        assert!("someday".parse::<RestartRule>().is_err());
    }

    /// Drains web bridge 0 in the second hour, and records what the
    /// live legs looked like.
    struct Drainer {
        counts: Vec<u32>,
        starts_seen: Vec<usize>,
        oldest_ok: bool,
        now: Option<DateTime<Utc>>,
    }

    impl Controller for Drainer {
        fn line(&mut self, _: &[u8]) {}
        fn live_cma(&mut self, cma: u32) {
            self.counts.push(cma);
        }
        fn live_legs(&mut self, starts: &[DateTime<Utc>]) {
            self.starts_seen.push(starts.len());
            self.oldest_ok &= starts.windows(2).all(|w| w[0] <= w[1]);
            if let (Some(now), Some(last)) = (self.now, starts.last()) {
                self.oldest_ok &= *last <= now + Duration::seconds(1);
            }
        }
        fn drains(&mut self, now: DateTime<Utc>) -> Vec<(usize, bool)> {
            self.now = Some(now);
            let since = (now - Utc.with_ymd_and_hms(2024, 3, 4, 8, 0, 0).unwrap()).num_seconds();
            match since {
                3_600 => vec![(0, true), (0, true), (99, true)],
                7_200 => vec![(0, false)],
                _ => Vec::new(),
            }
        }
        fn restarts(&mut self, _: DateTime<Utc>) -> Vec<usize> {
            Vec::new()
        }
    }

    #[test]
    fn a_controller_drains_and_sees_every_live_legs_start() {
        let mut options = options();
        options.scenario.pool = true;
        options.start = Utc.with_ymd_and_hms(2024, 3, 4, 8, 0, 0).unwrap();
        options.duration = Some(Duration::hours(3));
        options.restarts.clear();
        let mut drainer = Drainer { counts: Vec::new(), starts_seen: Vec::new(), oldest_ok: true, now: None };
        let mut truth = Vec::new();
        let summary = generate_controlled(&options, &mut io::sink(), Some(&mut truth), &mut drainer).unwrap();
        assert_eq!(summary.drains, 1, "a second drain of a drained one, and an unknown index, do nothing");
        assert_eq!(drainer.counts.len(), 3 * 3_600);
        assert_eq!(drainer.starts_seen, drainer.counts.iter().map(|&c| c as usize).collect::<Vec<_>>());
        assert!(drainer.oldest_ok);
        assert!(drainer.counts.iter().any(|&c| c > 50));
        let truth = String::from_utf8(truth).unwrap();
        let drains: Vec<serde_json::Value> = truth
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["type"] == "drain")
            .collect();
        assert_eq!(drains.len(), 2, "{drains:?}");
        assert_eq!((&drains[0]["drained"], &drains[1]["drained"]), (&true.into(), &false.into()));
        // No join reached cms1 while drained: its Stats c: stood still.
        let stats: Vec<serde_json::Value> = truth
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["type"] == "webbridge" && r["host"] == "cms1")
            .collect();
        let drained_real: Vec<u64> = stats
            .iter()
            .filter(|r| ("2024-03-04T09:00:02".."2024-03-04T10:00:00").contains(&r["time"].as_str().unwrap()))
            .map(|r| r["real"].as_u64().unwrap())
            .collect();
        assert!(drained_real.len() > 50 && drained_real[0] > 5, "{drained_real:?}");
        assert!(drained_real.windows(2).all(|w| w[1] <= w[0]), "{drained_real:?}");
        assert!(stats.iter().any(|r| r["time"].as_str().unwrap() > "2024-03-04T10:30:00" && r["real"] != 0));
    }

    #[test]
    fn stops_at_the_size_asked() {
        let mut options = options();
        options.duration = None;
        options.max_bytes = Some(200_000);
        let mut out = Vec::new();
        let summary = generate(&options, &mut out, None).unwrap();
        assert!(summary.bytes >= 200_000 && summary.bytes < 240_000, "{}", summary.bytes);
    }
}
