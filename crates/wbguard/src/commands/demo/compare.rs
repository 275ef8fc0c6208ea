//! The comparison `wbguard demo` ends with: the same simulated month, from
//! the same seed, under six strategies ([`STRATEGIES`]): no workaround,
//! Cisco's script every Saturday at 02:00 and every day at 03:00, and
//! wbguard on its logs alone, with the live calls its CDRs give (issue
//! 13), and with a load balancer it drains before a restart (issue 14).
//!
//! All six run in virtual time through the simulator's log generator, so
//! a month takes a second or two each. wbguard's runs are the real thing
//! minus the sockets: every line the deployment writes is parsed by the
//! core's log grammar and fed to the leak model, and the core's policy
//! (the demo's) decides once a simulated minute, with the [`Situation`]
//! the guard would hand it. With CDRs, the model also gets the
//! deployment's live CMA calls at that minute and when each began, as the
//! CDR receiver would know them (`tests/cli/live_calls.rs` shows the real
//! receiver and the API doing so over sockets).
//!
//! "wbguard with drain" runs the same deployment with a load balancer in
//! front of its web bridges (the simulator's pool: least real sessions
//! first, skipping web bridges that are down, drained or full), every web
//! bridge drainable, and CDRs: the policy's `drain` puts a web bridge out
//! of the pool, its `undrain` (or the end of the restart, once its page
//! would answer) puts it back. The other five keep DNS round robin, as the
//! demo's deployment has it, so their numbers stay what they were.

use chrono::{DateTime, Duration, NaiveTime, Utc, Weekday};
use cms_sim::genlog::{self, Controller, GenOptions, RestartRule};
use cms_sim::scenario::Scenario;
use serde::Serialize;
use wbguard_core::log::scan::parse_line;
use wbguard_core::log::ParseContext;
use wbguard_core::model::{CallSource, Deployment, LiveCalls, ModelConfig};
use wbguard_core::policy::{self, Action, Policy, Situation};

/// The strategies compared, in the order of the table and of
/// `--summary-json`.
pub const STRATEGIES: [&str; 6] = [
    "no workaround",
    "Cisco's script, Saturdays 02:00",
    "Cisco's script, daily 03:00",
    "wbguard",
    "wbguard with CDRs",
    "wbguard with drain",
];

/// How one strategy fared; the JSON names are what `--summary-json` promises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The strategy (one of [`STRATEGIES`]).
    pub name: String,
    /// Joins refused: users locked out.
    pub refused_joins: u64,
    /// Real calls dropped by restarts.
    pub dropped_calls: u64,
    /// Web bridge restarts made.
    pub restarts: u64,
    /// Drains at the load balancer (0 but for "wbguard with drain").
    pub drains: u64,
}

/// What a strategy does.
#[derive(Debug, Clone, Copy)]
enum Strategy {
    /// Nothing.
    Nothing,
    /// Cisco's script on a schedule.
    Cron(RestartRule),
    /// wbguard, on its logs, with CDRs, with a drainable load balancer.
    Guard {
        /// Takes the live calls and their start times (CDRs).
        cdrs: bool,
        /// A load balancer in front, every web bridge drainable.
        drain: bool,
    },
}

/// The six strategies, in the order of [`STRATEGIES`].
fn strategies() -> [Strategy; 6] {
    let at = |h| NaiveTime::from_hms_opt(h, 0, 0).expect("a valid time");
    [
        Strategy::Nothing,
        Strategy::Cron(RestartRule::Weekly(Weekday::Sat, at(2))),
        Strategy::Cron(RestartRule::Daily(at(3))),
        Strategy::Guard { cdrs: false, drain: false },
        Strategy::Guard { cdrs: true, drain: false },
        Strategy::Guard { cdrs: true, drain: true },
    ]
}

/// wbguard in virtual time: the model fed line by line, the policy asked
/// once a simulated minute; with `cdrs`, the cluster's live CMA calls and
/// their start times as its CDRs say them at that moment; with drains,
/// the drains and undrains the policy decides, played on the pool.
struct Guard {
    model: Deployment,
    /// Takes the live calls (CDRs); else the logs alone.
    cdrs: bool,
    /// The deployment's live CMA calls now.
    cma_live: u32,
    /// When each of them began, taken only in the second before a
    /// decision (copying them every second would cost more than the rest).
    starts: Vec<DateTime<Utc>>,
    policy: Policy,
    servers: Vec<String>,
    /// What the policy is told: the restarts made, the web bridges that
    /// can be drained (all of them, with a pool; none without), those
    /// drained and since when, drains that ended without a restart.
    situation: Situation,
    /// Drains (`true`) and undrains due at the pool, by server index.
    pool_changes: Vec<(DateTime<Utc>, usize, bool)>,
    /// After a restart, a drained web bridge is made ready again this much
    /// later: once it is up again and its page would answer.
    ready_after: Duration,
    now: DateTime<Utc>,
    next_decision: DateTime<Utc>,
}

impl Guard {
    fn new(scenario: &Scenario, policy: &Policy, start: DateTime<Utc>, cdrs: bool, drain: bool) -> Guard {
        let servers: Vec<String> = scenario.servers.iter().map(|s| s.name.clone()).collect();
        let drainable = if drain { servers.iter().cloned().collect() } else { Default::default() };
        Guard {
            model: Deployment::new(ModelConfig::default()),
            cdrs,
            cma_live: 0,
            starts: Vec::new(),
            policy: policy.clone(),
            servers,
            situation: Situation { drainable, ..Situation::default() },
            pool_changes: Vec::new(),
            ready_after: scenario.restart_downtime + Duration::seconds(1),
            now: start,
            next_decision: start,
        }
    }

    fn index(&self, webbridge: &str) -> Option<usize> {
        self.servers.iter().position(|name| name == webbridge)
    }
}

impl Controller for Guard {
    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let ctx = ParseContext { zone: chrono_tz::Tz::UTC, reference: self.now, default_host: None };
        if let Ok(Some(record)) = parse_line(line, &ctx) {
            self.model.observe(&record);
        }
    }

    fn live_cma(&mut self, cma: u32) {
        self.cma_live = cma;
    }

    fn live_legs(&mut self, starts: &[DateTime<Utc>]) {
        // Called for `self.now + 1 s`: keep them when that second decides.
        if self.cdrs && self.now + Duration::seconds(1) >= self.next_decision {
            self.starts.clear();
            self.starts.extend_from_slice(starts);
        }
    }

    fn drains(&mut self, now: DateTime<Utc>) -> Vec<(usize, bool)> {
        let mut due = Vec::new();
        self.pool_changes.retain(|&(at, index, drained)| {
            if at <= now {
                due.push((index, drained));
            }
            at > now
        });
        due
    }

    fn restarts(&mut self, now: DateTime<Utc>) -> Vec<usize> {
        self.now = now;
        if now < self.next_decision {
            return Vec::new();
        }
        self.next_decision = now + Duration::minutes(1);
        if self.cdrs {
            self.model.set_live_calls(Some(LiveCalls { cma: self.cma_live, source: CallSource::Cdr, as_of: now }));
            self.model.set_live_leg_starts(self.starts.clone());
        }
        let decisions = policy::decide(&self.model, &self.policy, &self.situation, now);
        let mut restart = Vec::new();
        for decision in &decisions {
            let Some(index) = self.index(&decision.webbridge) else { continue };
            let name = decision.webbridge.clone();
            match decision.action {
                Action::Restart => {
                    self.situation.restarted.insert(name.clone(), now);
                    if self.situation.draining.remove(&name).is_some() {
                        self.pool_changes.push((now + self.ready_after, index, false));
                    }
                    restart.push(index);
                }
                Action::Drain => {
                    self.situation.draining.insert(name, now);
                    self.pool_changes.push((now, index, true));
                }
                Action::Undrain => {
                    if self.situation.draining.remove(&name).is_some() {
                        self.situation.drain_ended.insert(name, now);
                        self.pool_changes.push((now, index, false));
                    }
                }
                Action::Hold | Action::None => {}
            }
        }
        restart
    }
}

/// Runs the six strategies of [`STRATEGIES`] over `days` from `start`,
/// wbguard's with `policy`; the strategies run side by side on threads.
pub fn compare(scenario: &Scenario, seed: u64, start: DateTime<Utc>, days: i64, policy: &Policy) -> Vec<Outcome> {
    let run = |strategy: Strategy| {
        let mut scenario = scenario.clone();
        if let Strategy::Guard { drain: true, .. } = strategy {
            scenario.pool = true;
        }
        let restarts = match strategy {
            Strategy::Cron(rule) => vec![rule],
            _ => Vec::new(),
        };
        let options = GenOptions {
            scenario: scenario.clone(),
            seed,
            start,
            duration: Some(Duration::days(days)),
            max_bytes: None,
            // Records only: noise would cost time and change nothing.
            lines_per_record: 1,
            header: None,
            restarts,
        };
        let mut sink = std::io::sink();
        match strategy {
            Strategy::Guard { cdrs, drain } => {
                let mut guard = Guard::new(&scenario, policy, start, cdrs, drain);
                genlog::generate_controlled(&options, &mut sink, None, &mut guard)
            }
            _ => genlog::generate(&options, &mut sink, None),
        }
        .expect("writing to a sink cannot fail")
    };
    let summaries: Vec<genlog::Summary> = std::thread::scope(|scope| {
        let running: Vec<_> = strategies().into_iter().map(|strategy| scope.spawn(move || run(strategy))).collect();
        running.into_iter().map(|r| r.join().expect("no panic")).collect()
    });
    STRATEGIES
        .iter()
        .zip(summaries)
        .map(|(name, summary)| Outcome {
            name: (*name).to_owned(),
            refused_joins: summary.refused_joins,
            dropped_calls: summary.dropped_calls,
            restarts: summary.restarts,
            drains: summary.drains,
        })
        .collect()
}

/// The comparison as a table for the terminal, headed by `title` (the
/// load it ran).
pub fn table(title: &str, outcomes: &[Outcome], days: i64) -> String {
    let mut out = format!(
        "{title}: the same simulated {days} days, {} ways:\n{:<34} {:>14} {:>14} {:>9} {:>7}\n",
        outcomes.len(),
        "STRATEGY",
        "REFUSED JOINS",
        "DROPPED CALLS",
        "RESTARTS",
        "DRAINS"
    );
    for o in outcomes {
        out.push_str(&format!(
            "{:<34} {:>14} {:>14} {:>9} {:>7}\n",
            o.name, o.refused_joins, o.dropped_calls, o.restarts, o.drains
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(super::super::COMPARISON_START).unwrap().with_timezone(&Utc)
    }

    fn office_month() -> Vec<Outcome> {
        compare(&super::super::scenario(), super::super::SEED, start(), 30, &super::super::policy())
    }

    #[test]
    #[cfg_attr(debug_assertions, ignore = "slow unoptimized (over 15 minutes): cargo xtask ci runs it in release")]
    fn an_office_month_six_ways() {
        let outcomes = office_month();
        assert_eq!(outcomes.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), STRATEGIES);
        let [none, weekly, daily, guards @ ..] = &outcomes[..] else { panic!("{outcomes:?}") };
        assert!(none.refused_joins > 1000 && none.restarts == 0, "{none:?}");
        assert!(weekly.refused_joins > 0 && weekly.restarts > 0, "{weekly:?}");
        // Every web bridge every night, a second apart.
        assert!(daily.restarts == 4 * 30 && daily.refused_joins < weekly.refused_joins, "{daily:?}");
        for wbguard in guards {
            assert!(wbguard.refused_joins * 100 < weekly.refused_joins, "{wbguard:?}");
            assert!(wbguard.restarts > 0, "{wbguard:?}");
        }
        let [.., logs, cdrs, drain] = &outcomes[..] else { unreachable!() };
        assert_eq!((logs.drains, cdrs.drains), (0, 0));
        assert!(drain.drains > 0, "{drain:?}");
        let table = table("An office", &outcomes, 30);
        assert!(table.contains("wbguard with drain") && table.contains("REFUSED JOINS"), "{table}");
    }

    /// The demo's promise, kept with issue 14's lockout rule: over the
    /// office month wbguard locks nobody out and drops nothing (its nights
    /// are harmless, so no lockout restart is needed).
    #[test]
    #[cfg_attr(debug_assertions, ignore = "slow unoptimized (over 15 minutes): cargo xtask ci runs it in release")]
    fn over_an_office_month_wbguard_locks_nobody_out_and_drops_nothing() {
        for wbguard in &office_month()[3..] {
            assert_eq!((wbguard.refused_joins, wbguard.dropped_calls), (0, 0), "{wbguard:?}");
        }
    }

    /// Issue 14's bar, over a week of its 24-hour load: each wbguard is no
    /// worse than the daily cron on refused joins or on dropped calls, and
    /// better on their sum. Ignored: the benchmark `bench/never-sleeps.sh`
    /// shows where the policy stands.
    #[test]
    #[ignore = "issue 14's bar: not met by the policy yet"]
    fn over_a_24_hour_week_wbguard_beats_the_daily_cron() {
        let outcomes =
            compare(&super::super::all_day_scenario(), super::super::SEED, start(), 7, &super::super::policy());
        let daily = &outcomes[2];
        for wbguard in &outcomes[3..] {
            assert!(wbguard.refused_joins <= daily.refused_joins, "{wbguard:?} {daily:?}");
            assert!(wbguard.dropped_calls <= daily.dropped_calls, "{wbguard:?} {daily:?}");
            assert!(
                wbguard.refused_joins + wbguard.dropped_calls < daily.refused_joins + daily.dropped_calls,
                "{wbguard:?} {daily:?}"
            );
        }
    }

    /// The measurement of `bench/never-sleeps.sh` (ignored: it is a
    /// benchmark): a week of a 24-hour deployment as issue 14 measured it
    /// (four servers, about 110 real sessions per web bridge at peak,
    /// nights at 40% of it, 2% of ended sessions leaking), and the same
    /// week of an office, under the demo's policy, for each seed of
    /// `$WBGUARD_BENCH_SEEDS` (comma-separated; the demo's by default).
    /// Writes the tables as JSON, by seed, to `$WBGUARD_BENCH_OUT` when set.
    #[test]
    #[ignore = "a benchmark: run by bench/never-sleeps.sh"]
    fn a_week_that_never_sleeps() {
        let seeds: Vec<u64> = match std::env::var("WBGUARD_BENCH_SEEDS") {
            Ok(list) => list.split(',').map(|seed| seed.trim().parse().expect("a seed is a number")).collect(),
            Err(_) => vec![super::super::SEED],
        };
        let mut by_seed = serde_json::Map::new();
        for seed in seeds {
            let mut tables = serde_json::Map::new();
            for (name, scenario) in [("all_day", super::super::all_day_scenario()), ("office", office_week())] {
                let began = std::time::Instant::now();
                let outcomes = compare(&scenario, seed, start(), 7, &super::super::policy());
                print!("{}", table(&format!("{name}, seed {seed}"), &outcomes, 7));
                println!("({} ms)", began.elapsed().as_millis());
                tables.insert(name.to_owned(), serde_json::to_value(&outcomes).unwrap());
            }
            by_seed.insert(seed.to_string(), tables.into());
        }
        if let Ok(path) = std::env::var("WBGUARD_BENCH_OUT") {
            std::fs::write(path, serde_json::to_string_pretty(&by_seed).unwrap()).unwrap();
        }
    }

    /// The office load of the week: the 24-hour one's servers and peak,
    /// quiet nights and weekends.
    fn office_week() -> Scenario {
        let mut scenario = super::super::all_day_scenario();
        scenario.profile = cms_sim::scenario::Profile::Office;
        scenario
    }

    /// The measurement of `bench/live-calls.sh` (ignored: it is a
    /// benchmark): issue 13's week, nights at 70% of the peak; writes the
    /// tables as JSON to `$WBGUARD_BENCH_OUT` when set.
    #[test]
    #[ignore = "a benchmark: run by bench/live-calls.sh"]
    fn a_week_of_busy_nights() {
        let mut tables = serde_json::Map::new();
        for (name, profile) in
            [("all_day", cms_sim::scenario::Profile::AllDay), ("office", cms_sim::scenario::Profile::Office)]
        {
            let mut scenario = super::super::all_day_scenario();
            scenario.night = cms_sim::scenario::DEFAULT_NIGHT;
            scenario.profile = profile;
            let outcomes = compare(&scenario, super::super::SEED, start(), 7, &super::super::policy());
            print!("{}", table(name, &outcomes, 7));
            tables.insert(name.to_owned(), serde_json::to_value(&outcomes).unwrap());
        }
        if let Ok(path) = std::env::var("WBGUARD_BENCH_OUT") {
            std::fs::write(path, serde_json::to_string_pretty(&tables).unwrap()).unwrap();
        }
    }
}
