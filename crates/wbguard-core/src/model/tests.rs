//! Tests of the leak model: hand-made scenarios for each rule, and property
//! tests on generated histories whose truth is known.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::log::{AuditCommand, CallBridgeStats, Pair, Record, RecordBody, WebBridgeStats};

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 4, 0, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn wb(host: &str, time: DateTime<Utc>, active: u32, c: u64, d: u64) -> Record {
    Record {
        time,
        host: host.into(),
        body: RecordBody::WebBridgeStats(WebBridgeStats { active, connections: c, disconnections: d }),
    }
}

fn cb(host: &str, time: DateTime<Utc>, current: u32, peak: u32) -> Record {
    let stats = CallBridgeStats { call_legs_per_second: None, pairs: vec![("CMA".into(), Pair { current, peak })] };
    Record { time, host: host.into(), body: RecordBody::CallBridgeStats(stats) }
}

fn audit(host: &str, time: DateTime<Utc>, command: &str) -> Record {
    let audit = AuditCommand {
        user: "admin".into(),
        source: Some("10.0.0.9:5000".into()),
        command: command.into(),
        granted: true,
    };
    Record { time, host: host.into(), body: RecordBody::Audit(audit) }
}

fn feed(records: &[Record]) -> Deployment {
    let mut model = Deployment::new(ModelConfig::default());
    for record in records {
        model.observe(record);
    }
    model
}

#[test]
fn lower_bound_waits_for_the_next_report_and_then_holds() {
    let mut records = vec![cb("cb1", at(0), 5, 5), wb("wb1", at(10), 30, 100, 70), cb("cb1", at(6), 5, 5)];
    records.sort_by_key(|r| r.time);
    let model = feed(&records);
    // Paired with nothing yet: the report at 5 minutes came before the sample.
    assert_eq!(model.estimate("wb1", at(10)).unwrap().leaked_lower, 0);
    let mut model = model;
    model.observe(&cb("cb1", at(12), 4, 9));
    let estimate = model.estimate("wb1", at(12)).unwrap();
    assert_eq!((estimate.leaked_lower, estimate.leaked_upper), (21, 30));
    // A busy day does not lower the bound learnt at night.
    model.observe(&wb("wb1", at(13), 120, 300, 180));
    model.observe(&cb("cb1", at(17), 110, 115));
    assert_eq!(model.estimate("wb1", at(17)).unwrap().leaked_lower, 21);
    assert_eq!(model.estimate("wb1", at(17)).unwrap().droppable_upper, 99);
}

#[test]
fn a_late_report_gives_no_bound() {
    let mut model = feed(&[cb("cb1", at(0), 0, 0), cb("cb1", at(5), 0, 0), wb("wb1", at(10), 30, 1, 1)]);
    // The next report comes 20 minutes after the previous: its peak does not
    // cover the sample.
    model.observe(&cb("cb1", at(25), 0, 0));
    assert_eq!(model.estimate("wb1", at(25)).unwrap().leaked_lower, 0);
}

#[test]
fn every_live_call_bridge_must_report() {
    let mut model =
        feed(&[cb("cb1", at(0), 0, 0), cb("cb2", at(1), 0, 0), cb("cb1", at(5), 0, 0), cb("cb2", at(6), 0, 0)]);
    model.observe(&wb("wb1", at(8), 30, 1, 1));
    model.observe(&cb("cb1", at(10), 3, 3));
    assert_eq!(model.estimate("wb1", at(10)).unwrap().leaked_lower, 0);
    model.observe(&cb("cb2", at(11), 4, 6));
    assert_eq!(model.estimate("wb1", at(11)).unwrap().leaked_lower, 21);
}

#[test]
fn restarts_by_each_signal_and_merged() {
    let base =
        [cb("cb1", at(0), 0, 0), cb("cb1", at(5), 0, 0), wb("wb1", at(7), 40, 500, 460), cb("cb1", at(10), 0, 0)];
    // Audit line, then the counters reset: one restart.
    let mut records = base.to_vec();
    records.extend([audit("wb1", at(11), "webbridge restart"), wb("wb1", at(12), 0, 0, 0)]);
    let model = feed(&records);
    let state = model.webbridge("wb1").unwrap();
    assert_eq!(state.restarts.len(), 1);
    assert_eq!(state.restarts[0].signal, RestartSignal::Audit);
    assert_eq!(model.estimate("wb1", at(12)).unwrap().leaked_lower, 0);

    // Counters only.
    let mut records = base.to_vec();
    records.push(wb("wb1", at(12), 35, 3, 1));
    let model = feed(&records);
    let restarts = &model.webbridge("wb1").unwrap().restarts;
    assert_eq!(restarts.iter().map(|r| r.signal).collect::<Vec<_>>(), vec![RestartSignal::CountersReset]);

    // Active below the known leak, counters somehow still rising.
    let mut records = base.to_vec();
    records.push(wb("wb1", at(12), 10, 600, 590));
    let model = feed(&records);
    assert_eq!(model.webbridge("wb1").unwrap().restarts[0].signal, RestartSignal::ActiveDrop);

    // Counters first, the audit line logged a little later: one restart, by admin.
    let mut records = base.to_vec();
    records.extend([wb("wb1", at(12), 0, 0, 0), audit("wb1", at(13), "webbridge restart")]);
    let model = feed(&records);
    let restarts = &model.webbridge("wb1").unwrap().restarts;
    assert_eq!(restarts.len(), 1);
    assert_eq!(restarts[0].by.as_deref(), Some("admin"));

    // Other commands are not restarts.
    let mut records = base.to_vec();
    records.extend([audit("wb1", at(11), "webbridge3 restart"), audit("wb1", at(11), "webbridge")]);
    assert!(feed(&records).webbridge("wb1").unwrap().restarts.is_empty());
}

#[test]
fn rate_forecast_and_time_at_limit() {
    let mut records = vec![cb("cb1", at(0), 0, 0)];
    records.push(audit("wb1", at(1), "webbridge restart"));
    // Two days; every night at 3 a.m. the only sessions are leaks: 10 a day.
    for minute in (5..2 * 1440).step_by(5) {
        let leaked = (minute / 144) as u32; // 10 per day
        let real_at = |minute: i64| if (minute % 1440) < 300 { 0 } else { 40 };
        let (real, peak) = (real_at(minute), real_at(minute).max(real_at(minute - 5)));
        records.push(cb("cb1", at(minute), real, peak));
        records.push(wb("wb1", at(minute) + Duration::seconds(30), leaked + real, 1, 1));
    }
    let model = feed(&records);
    let now = at(2 * 1440);
    let estimate = model.estimate("wb1", now).unwrap();
    let rate = estimate.leak_rate_per_day.unwrap();
    assert!((8.0..=10.5).contains(&rate), "{rate}");
    let forecast = estimate.lockout_forecast.unwrap();
    // 149 - ~18 leaked - 40 real at peak = ~91 sessions to go, at ~9/day.
    let days = (forecast - now).num_hours() as f64 / 24.0;
    assert!((8.0..=12.0).contains(&days), "{days}");

    // At the limit: the forecast is when users were first refused.
    let mut records = vec![cb("cb1", at(0), 0, 0)];
    for minute in 1..=30 {
        records.push(wb("wb1", at(minute), if minute >= 10 { 149 } else { 140 }, 1, 1));
    }
    let model = feed(&records);
    let state = model.webbridge("wb1").unwrap();
    assert_eq!(state.at_limit, Duration::minutes(20));
    assert_eq!(model.estimate("wb1", at(30)).unwrap().lockout_forecast, Some(at(10)));
}

#[test]
fn cluster_bound_from_simultaneous_samples() {
    let mut records = vec![cb("cb1", at(0), 0, 0), cb("cb1", at(5), 0, 0)];
    records.extend([wb("wb1", at(7), 20, 1, 1), wb("wb2", at(7), 15, 1, 1)]);
    // Both web bridges' real sessions sit on the one call bridge: 10.
    records.push(cb("cb1", at(10), 10, 10));
    let model = feed(&records);
    let cluster = model.cluster_estimate(at(10));
    assert_eq!(model.estimate("wb1", at(10)).unwrap().leaked_lower, 10);
    assert_eq!(model.estimate("wb2", at(10)).unwrap().leaked_lower, 5);
    assert_eq!((cluster.active_total, cluster.leaked_lower, cluster.leaked_upper), (35, 25, 35));
    assert_eq!(cluster.cma_total, Some(10));
}

#[test]
fn empty_model() {
    let model = Deployment::new(ModelConfig::default());
    assert!(model.estimate("x", at(0)).is_none());
    assert_eq!(model.cluster_estimate(at(0)).active_total, 0);
}

/// A small deterministic generator of CMS histories with known truth.
mod generated {
    use super::*;

    /// splitmix64: enough randomness for a test, no dependency.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed)
        }
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        pub fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[derive(Debug, Clone)]
    pub struct Params {
        pub seed: u64,
        pub webbridges: usize,
        pub callbridges: usize,
        pub desktop_share: f64,
        pub leak_probability: f64,
        pub restarts_per_day: f64,
        pub audit_lines: bool,
        pub aligned_samples: bool,
        pub days: i64,
    }

    /// One record and the truth right after it.
    pub struct Step {
        pub record: Record,
        /// Leaked sessions per web bridge when its latest sample was taken.
        pub leaked_at_sample: Vec<u32>,
        /// Real sessions per web bridge when its latest sample was taken.
        pub real_at_sample: Vec<u32>,
        /// Minutes since midnight.
        pub minute_of_day: i64,
    }

    struct Session {
        webbridge: Option<usize>,
        callbridge: usize,
        ends: i64,
    }

    const STEP_SECONDS: i64 = 10;
    const IDLE_FROM_HOUR: i64 = 1;
    const IDLE_TO_HOUR: i64 = 5;

    pub fn history(p: &Params) -> Vec<Step> {
        let mut rng = Rng::new(p.seed);
        let start = Utc.with_ymd_and_hms(2024, 3, 4, 0, 0, 0).unwrap();
        let steps = p.days * 86_400 / STEP_SECONDS;
        let wb_phase: Vec<i64> =
            (0..p.webbridges).map(|_| if p.aligned_samples { 0 } else { rng.below(6) as i64 }).collect();
        let cb_phase: Vec<i64> = (0..p.callbridges).map(|_| rng.below(30) as i64).collect();
        let mut sessions: Vec<Session> = Vec::new();
        let mut leaked = vec![0u32; p.webbridges];
        let mut counters = vec![(0u64, 0u64); p.webbridges];
        let mut cma_peak = vec![0u32; p.callbridges];
        let mut leaked_at_sample = vec![0u32; p.webbridges];
        let mut real_at_sample = vec![0u32; p.webbridges];
        let mut out = Vec::new();
        for step in 0..steps {
            let time = start + Duration::seconds(step * STEP_SECONDS);
            let hour = (step * STEP_SECONDS / 3600) % 24;
            let mut records = Vec::new();
            // (index in records, web bridge, leaked, real) of each sample.
            let mut truth_of = Vec::new();
            // Sessions ending now; some web bridge sessions leak.
            sessions.retain(|s| {
                if s.ends > step {
                    return true;
                }
                if let Some(w) = s.webbridge {
                    if rng.unit() < p.leak_probability {
                        leaked[w] += 1;
                    } else {
                        counters[w].1 += 1;
                    }
                }
                false
            });
            // Restarts: drop everything on that web bridge.
            if rng.unit() < p.restarts_per_day * STEP_SECONDS as f64 / 86_400.0 {
                let w = rng.below(p.webbridges as u64) as usize;
                if p.audit_lines {
                    records.push(audit(&format!("wb{w}"), time, "webbridge restart"));
                }
                sessions.retain(|s| s.webbridge != Some(w));
                leaked[w] = 0;
                counters[w] = (0, 0);
            }
            // Joins, none in the idle night; sessions last 5 to 120 minutes.
            let busy = !(IDLE_FROM_HOUR..IDLE_TO_HOUR).contains(&hour) && hour < 23;
            let joins = if busy { (0..3).filter(|_| rng.unit() < 0.25).count() } else { 0 };
            for _ in 0..joins {
                let webbridge = (rng.unit() >= p.desktop_share).then(|| rng.below(p.webbridges as u64) as usize);
                if let Some(w) = webbridge {
                    let active = leaked[w] + sessions.iter().filter(|s| s.webbridge == Some(w)).count() as u32;
                    if active >= 149 {
                        continue;
                    }
                    counters[w].0 += 1;
                }
                let callbridge = rng.below(p.callbridges as u64) as usize;
                let minutes = 5 + rng.below(116) as i64;
                sessions.push(Session { webbridge, callbridge, ends: step + minutes * 60 / STEP_SECONDS });
            }
            let real = |w: usize| sessions.iter().filter(|s| s.webbridge == Some(w)).count() as u32;
            let cma = |c: usize| sessions.iter().filter(|s| s.callbridge == c).count() as u32;
            for (c, peak) in cma_peak.iter_mut().enumerate() {
                *peak = (*peak).max(cma(c));
            }
            for w in 0..p.webbridges {
                if (step + wb_phase[w]) % 6 == 0 {
                    truth_of.push((records.len(), w, leaked[w], real(w)));
                    records.push(wb(&format!("wb{w}"), time, real(w) + leaked[w], counters[w].0, counters[w].1));
                }
            }
            for c in 0..p.callbridges {
                if (step + cb_phase[c]) % 30 == 0 {
                    records.push(cb(&format!("cb{c}"), time, cma(c), cma_peak[c]));
                    cma_peak[c] = cma(c);
                }
            }
            // Records logged in the same instant may arrive in any order.
            let mut order: Vec<usize> = (0..records.len()).collect();
            if records.len() > 1 && rng.unit() < 0.5 {
                let audits = records.iter().filter(|r| matches!(r.body, RecordBody::Audit(_))).count();
                order[audits..].reverse();
            }
            for index in order {
                let record = records[index].clone();
                if let Some(&(_, w, leaked, real)) = truth_of.iter().find(|t| t.0 == index) {
                    leaked_at_sample[w] = leaked;
                    real_at_sample[w] = real;
                }
                out.push(Step {
                    record,
                    leaked_at_sample: leaked_at_sample.clone(),
                    real_at_sample: real_at_sample.clone(),
                    minute_of_day: (step * STEP_SECONDS / 60) % 1440,
                });
            }
        }
        out
    }
}

fn params() -> impl Strategy<Value = generated::Params> {
    (any::<u64>(), 1usize..=3, 1usize..=3, 0.0..0.5f64, 0.0..0.3f64, 0.0..3.0f64, any::<bool>(), any::<bool>())
        .prop_map(
            |(
                seed,
                webbridges,
                callbridges,
                desktop_share,
                leak_probability,
                restarts_per_day,
                audit_lines,
                aligned,
            )| {
                generated::Params {
                    seed,
                    webbridges,
                    callbridges,
                    desktop_share,
                    leak_probability,
                    restarts_per_day,
                    audit_lines,
                    aligned_samples: aligned,
                    days: 2,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the clients, leaks, restarts and sample timing: the bounds
    /// always contain the truth, and so does the droppable estimate.
    #[test]
    fn bounds_always_contain_the_truth(p in params()) {
        let mut model = Deployment::new(ModelConfig::default());
        for step in generated::history(&p) {
            model.observe(&step.record);
            let now = step.record.time;
            let mut truth_total = 0;
            for w in 0..p.webbridges {
                let Some(estimate) = model.estimate(&format!("wb{w}"), now) else { continue };
                let truth = step.leaked_at_sample[w];
                truth_total += truth;
                prop_assert!(estimate.leaked_lower <= truth, "wb{w} lower {} > truth {truth} at {now}", estimate.leaked_lower);
                prop_assert!(truth <= estimate.leaked_upper, "wb{w} upper {} < truth {truth} at {now}", estimate.leaked_upper);
                let real = step.real_at_sample[w];
                prop_assert!(real <= estimate.active - estimate.leaked_lower, "real {real} {estimate:?} truth {truth} at {now}");
            }
            let cluster = model.cluster_estimate(now);
            prop_assert!(cluster.leaked_lower <= truth_total, "cluster lower {} > {truth_total} at {now}", cluster.leaked_lower);
            prop_assert!(truth_total <= cluster.leaked_upper);
        }
    }

    /// With no desktop or iOS clients, at the end of an idle night the
    /// bounds are within one session of the truth.
    #[test]
    fn tight_after_an_idle_night(seed in any::<u64>(), webbridges in 1usize..=3, callbridges in 1usize..=3, aligned in any::<bool>()) {
        let p = generated::Params {
            seed, webbridges, callbridges, desktop_share: 0.0, leak_probability: 0.1,
            restarts_per_day: 0.0, audit_lines: true, aligned_samples: aligned, days: 2,
        };
        let mut model = Deployment::new(ModelConfig::default());
        let mut checked = 0;
        for step in generated::history(&p) {
            model.observe(&step.record);
            // 04:59, the end of the second idle night (the first one follows
            // the model's start by too little to have seen every call bridge).
            if step.minute_of_day != 4 * 60 + 59 || step.record.time.date_naive().format("%d").to_string() != "05" {
                continue;
            }
            for w in 0..webbridges {
                let estimate = model.estimate(&format!("wb{w}"), step.record.time).unwrap();
                let truth = step.leaked_at_sample[w];
                prop_assert!(truth - estimate.leaked_lower <= 1, "lower {} vs truth {truth}", estimate.leaked_lower);
                prop_assert!(estimate.leaked_upper - truth <= 1, "upper {} vs truth {truth}", estimate.leaked_upper);
                prop_assert_eq!(estimate.droppable_upper, estimate.active - estimate.leaked_lower);
                checked += 1;
            }
        }
        prop_assert!(checked > 0);
    }
}

#[test]
fn live_calls_tighten_the_log_bound_and_never_loosen_it() {
    let records =
        [cb("cb1", at(0), 5, 5), cb("cb1", at(6), 5, 5), wb("wb1", at(10), 30, 100, 70), cb("cb1", at(12), 4, 9)];
    let mut model = feed(&records);
    let logs = model.estimate("wb1", at(12)).unwrap();
    assert_eq!((logs.droppable_upper, logs.calls_source, logs.calls_as_of), (9, CallSource::Logs, at(10)));
    // The CDRs say nobody is in a call: nothing can drop, and they say so.
    model.set_live_calls(Some(LiveCalls { cma: 0, source: CallSource::Cdr, as_of: at(12) }));
    let live = model.estimate("wb1", at(12)).unwrap();
    assert_eq!((live.droppable_upper, live.calls_source, live.calls_as_of), (0, CallSource::Cdr, at(12)));
    assert_eq!(live.leaked_lower, logs.leaked_lower, "the leak bound is the logs' alone");
    // More live calls than the logs allow: the logs' bound stands.
    model.set_live_calls(Some(LiveCalls { cma: 40, source: CallSource::Api, as_of: at(12) }));
    assert_eq!(model.estimate("wb1", at(12)).unwrap(), logs);
    model.set_live_calls(None);
    assert_eq!(model.estimate("wb1", at(12)).unwrap(), logs);
}

#[test]
fn a_call_that_began_while_a_web_bridge_saw_no_new_connection_is_not_on_it() {
    let time = |second: i64| Utc.with_ymd_and_hms(2026, 3, 2, 22, 0, 0).unwrap() + Duration::seconds(second);
    // Users connect at most two minutes before their call begins.
    let config = ModelConfig { connection_lead: Some(Duration::minutes(2)), ..ModelConfig::default() };
    let mut model = Deployment::new(config);
    // Two web bridges, a Stats line a minute: wb1 sees new connections all
    // the time, wb2 none from minute 0 to minute 10.
    for minute in 0..=10u64 {
        for (host, connections) in [("wb1", 100 + minute), ("wb2", 50)] {
            let stats = WebBridgeStats { active: 30, connections, disconnections: 0 };
            let record =
                Record { time: time(minute as i64 * 60), host: host.into(), body: RecordBody::WebBridgeStats(stats) };
            model.observe(&record);
        }
    }
    let live = |cma| Some(LiveCalls { cma, source: CallSource::Cdr, as_of: time(600) });
    // One call, begun at minute 5: on wb1 perhaps, not on wb2.
    model.set_live_calls(live(1));
    model.set_live_leg_starts(vec![time(300)]);
    let on = |model: &Deployment, host| model.estimate(host, time(600)).unwrap();
    assert_eq!((on(&model, "wb1").droppable_upper, on(&model, "wb1").attributable_calls), (1, Some(1)));
    assert_eq!((on(&model, "wb2").droppable_upper, on(&model, "wb2").attributable_calls), (0, Some(0)));
    // Within the lead or the clock margin of a stretch's ends, or after the
    // last Stats line, it may be anywhere.
    for start in [time(2), time(100), time(598), time(640)] {
        model.set_live_leg_starts(vec![start]);
        assert_eq!(on(&model, "wb2").droppable_upper, 1, "{start}");
    }
    // Without a lead (the default), calls are not placed at all.
    let mut unplaced = Deployment::new(ModelConfig::default());
    for minute in 0..=10i64 {
        let stats = WebBridgeStats { active: 30, connections: 50, disconnections: 0 };
        unplaced.observe(&Record {
            time: time(minute * 60),
            host: "wb2".into(),
            body: RecordBody::WebBridgeStats(stats),
        });
    }
    unplaced.set_live_calls(live(1));
    unplaced.set_live_leg_starts(vec![time(300)]);
    assert_eq!((on(&unplaced, "wb2").droppable_upper, on(&unplaced, "wb2").attributable_calls), (1, None));
    // Start times that do not name every live call are not used.
    model.set_live_calls(live(2));
    model.set_live_leg_starts(vec![time(300)]);
    assert_eq!((on(&model, "wb2").droppable_upper, on(&model, "wb2").attributable_calls), (2, None));
}
