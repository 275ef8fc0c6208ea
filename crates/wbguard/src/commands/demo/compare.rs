//! The comparison `wbguard demo` ends with: the same simulated month, from
//! the same seed, under three strategies: no workaround, Cisco's script
//! every Saturday at 02:00, and wbguard.
//!
//! All three run in virtual time through the simulator's log generator, so
//! a month takes well under a second each. wbguard's run is the real
//! thing minus the sockets: every line the deployment writes is parsed by
//! the core's log grammar and fed to the leak model, and the core's policy
//! (the demo's, from the same configuration text) decides once a simulated
//! minute which web bridge to restart.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveTime, Utc, Weekday};
use cms_sim::genlog::{self, Controller, GenOptions, RestartRule};
use cms_sim::scenario::Scenario;
use serde::Serialize;
use wbguard_core::log::scan::parse_line;
use wbguard_core::log::ParseContext;
use wbguard_core::model::{Deployment, ModelConfig};
use wbguard_core::policy::{self, Action, Policy};

/// How one strategy fared; the JSON names are what `--summary-json` promises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The strategy.
    pub name: String,
    /// Joins refused: users locked out.
    pub refused_joins: u64,
    /// Real calls dropped by restarts.
    pub dropped_calls: u64,
    /// Web bridge restarts made.
    pub restarts: u64,
}

/// wbguard in virtual time: the model fed line by line, the policy asked
/// once a simulated minute.
struct Guard {
    model: Deployment,
    policy: Policy,
    servers: Vec<String>,
    restarted: BTreeMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
    next_decision: DateTime<Utc>,
}

impl Controller for Guard {
    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let ctx = ParseContext { zone: chrono_tz::Tz::UTC, reference: self.now, default_host: None };
        if let Ok(Some(record)) = parse_line(line, &ctx) {
            self.model.observe(&record);
        }
    }

    fn restarts(&mut self, now: DateTime<Utc>) -> Vec<usize> {
        self.now = now;
        if now < self.next_decision {
            return Vec::new();
        }
        self.next_decision = now + Duration::minutes(1);
        let decisions = policy::decide(&self.model, &self.policy, &self.restarted, false, now);
        let Some(decision) = decisions.iter().find(|d| d.action == Action::Restart) else { return Vec::new() };
        self.restarted.insert(decision.webbridge.clone(), now);
        self.servers.iter().position(|name| *name == decision.webbridge).into_iter().collect()
    }
}

/// Runs the three strategies over `days` from `start`, wbguard with `policy`.
pub fn compare(scenario: &Scenario, seed: u64, start: DateTime<Utc>, days: i64, policy: &Policy) -> Vec<Outcome> {
    let options = |restarts: Vec<RestartRule>| GenOptions {
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
    let outcome = |name: &str, summary: genlog::Summary| Outcome {
        name: name.to_owned(),
        refused_joins: summary.refused_joins,
        dropped_calls: summary.dropped_calls,
        restarts: summary.restarts,
    };
    let saturday = RestartRule::Weekly(Weekday::Sat, NaiveTime::from_hms_opt(2, 0, 0).expect("a valid time"));
    let run = |restarts: Vec<RestartRule>, controller: Option<&mut Guard>| {
        let mut sink = std::io::sink();
        match controller {
            Some(guard) => genlog::generate_controlled(&options(restarts), &mut sink, None, guard),
            None => genlog::generate(&options(restarts), &mut sink, None),
        }
        .expect("writing to a sink cannot fail")
    };
    let (none, cisco, guarded) = std::thread::scope(|scope| {
        let none = scope.spawn(|| run(Vec::new(), None));
        let cisco = scope.spawn(|| run(vec![saturday], None));
        let mut guard = Guard {
            model: Deployment::new(ModelConfig::default()),
            policy: policy.clone(),
            servers: scenario.servers.iter().map(|s| s.name.clone()).collect(),
            restarted: BTreeMap::new(),
            now: start,
            next_decision: start,
        };
        let guarded = run(Vec::new(), Some(&mut guard));
        (none.join().expect("no panic"), cisco.join().expect("no panic"), guarded)
    });
    vec![outcome("no workaround", none), outcome("Cisco's script, Saturdays 02:00", cisco), outcome("wbguard", guarded)]
}

/// The comparison as a table for the terminal.
pub fn table(outcomes: &[Outcome], days: i64) -> String {
    let mut out = format!(
        "The same simulated {days} days, three ways:\n{:<34} {:>14} {:>14} {:>9}\n",
        "STRATEGY", "REFUSED JOINS", "DROPPED CALLS", "RESTARTS"
    );
    for o in outcomes {
        out.push_str(&format!("{:<34} {:>14} {:>14} {:>9}\n", o.name, o.refused_joins, o.dropped_calls, o.restarts));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_a_month_wbguard_locks_nobody_out_and_drops_nothing() {
        let policy = super::super::policy();
        let start = DateTime::parse_from_rfc3339(super::super::COMPARISON_START).unwrap().with_timezone(&Utc);
        let outcomes = compare(&super::super::scenario(), super::super::SEED, start, 30, &policy);
        let [none, cisco, guarded] = &outcomes[..] else { panic!("{outcomes:?}") };
        assert!(none.refused_joins > 1000 && none.restarts == 0, "{none:?}");
        assert!(cisco.refused_joins > 0 && cisco.restarts > 0, "{cisco:?}");
        assert_eq!((guarded.refused_joins, guarded.dropped_calls), (0, 0), "{guarded:?}");
        assert!(guarded.restarts > 0, "{guarded:?}");
        let table = table(&outcomes, 30);
        assert!(table.contains("wbguard") && table.contains("REFUSED JOINS"), "{table}");
    }
}
