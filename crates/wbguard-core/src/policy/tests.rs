//! Tests of the decision rules, on models fed with hand-made records.

use chrono::TimeZone;

use super::*;
use crate::log::{AuditCommand, CallBridgeStats, Pair, Record, RecordBody, WebBridgeStats};
use crate::model::ModelConfig;

fn at(minutes: i64) -> DateTime<Utc> {
    // Tuesday 5 March 2024, midnight UTC.
    Utc.with_ymd_and_hms(2024, 3, 5, 0, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn wb(host: &str, minute: i64, active: u32) -> Record {
    let stats = WebBridgeStats { active, connections: 1000, disconnections: 900 };
    Record { time: at(minute), host: host.into(), body: RecordBody::WebBridgeStats(stats) }
}

fn cb(minute: i64, cma: u32) -> Record {
    let stats =
        CallBridgeStats { call_legs_per_second: None, pairs: vec![("CMA".into(), Pair { current: cma, peak: cma })] };
    Record { time: at(minute), host: "cb".into(), body: RecordBody::CallBridgeStats(stats) }
}

/// Web bridges `(host, leaked, real)`, leaks proven at 03:00 (CMA 0), the
/// real calls joining at 09:00; the model as of 10:00.
fn model(bridges: &[(&str, u32, u32)]) -> Deployment {
    let mut model = Deployment::new(ModelConfig::default());
    for minute in (0..=600).step_by(5) {
        let real = |r: u32| if minute >= 540 { r } else { 0 };
        model.observe(&cb(minute, bridges.iter().map(|b| real(b.2)).sum()));
        for &(host, leaked, r) in bridges {
            model.observe(&wb(host, minute, leaked + real(r)));
        }
    }
    model
}

fn decide_at(model: &Deployment, policy: &Policy, minute: i64) -> BTreeMap<String, Decision> {
    decide(model, policy, &Situation::default(), at(minute)).into_iter().map(|d| (d.webbridge.clone(), d)).collect()
}

#[test]
fn needed_and_harmless_restarts_even_at_noon() {
    let model = model(&[("wb1", 120, 0), ("wb2", 10, 0)]);
    let decisions = decide_at(&model, &Policy::default(), 600);
    let wb1 = &decisions["wb1"];
    assert_eq!(wb1.action, Action::Restart, "{}", wb1.reason);
    assert_eq!(wb1.needs, vec![Need::LeakAtLeast { threshold: 100 }]);
    assert!(wb1.reason.contains("harmless"), "{}", wb1.reason);
    assert_eq!(decisions["wb2"].action, Action::None);
    assert!(decisions["wb2"].reason.starts_with("not needed"));
}

#[test]
fn live_calls_hold_a_restart_until_a_window_allows_it() {
    let model = model(&[("wb1", 120, 8)]);
    let decisions = decide_at(&model, &Policy::default(), 600);
    assert_eq!(decisions["wb1"].action, Action::Hold);
    assert!(decisions["wb1"].reason.contains("up to 8 real call(s)"), "{}", decisions["wb1"].reason);

    // Tuesdays 10:00 UTC for an hour, drops allowed.
    let window = Window::new("0 10 * * 2", Duration::hours(1), "UTC", None).unwrap();
    let policy = Policy { windows: vec![window], ..Policy::default() };
    let decisions = decide_at(&model, &policy, 600);
    assert_eq!(decisions["wb1"].action, Action::Restart, "{}", decisions["wb1"].reason);
    assert!(decisions["wb1"].in_window);
    // A window that allows at most 5 drops is not enough for 8.
    let window = Window::new("0 10 * * 2", Duration::hours(1), "UTC", Some(5)).unwrap();
    let policy = Policy { windows: vec![window], ..Policy::default() };
    assert_eq!(decide_at(&model, &policy, 600)["wb1"].action, Action::Hold);
}

#[test]
fn one_at_a_time_most_urgent_first_and_not_twice_in_the_interval() {
    let model = model(&[("wb1", 110, 0), ("wb2", 149, 0), ("wb3", 130, 0)]);
    let decisions = decide_at(&model, &Policy::default(), 600);
    assert_eq!(decisions["wb2"].action, Action::Restart, "at the limit goes first");
    assert!(decisions["wb2"].needs.contains(&Need::AtLimit));
    assert_eq!(decisions["wb1"].action, Action::Hold);
    assert_eq!(decisions["wb3"].action, Action::Hold);
    assert!(decisions["wb3"].reason.contains("one web bridge of a cluster at a time"));
    // While a restart is in flight, nothing else starts.
    let busy = decide(&model, &Policy::default(), &Situation { busy: true, ..Situation::default() }, at(600));
    assert!(busy.iter().all(|d| d.action != Action::Restart));
    // Restarted by wbguard 20 minutes ago: too soon for wb2.
    let recent = BTreeMap::from([("wb2".to_owned(), at(580))]);
    let decisions: BTreeMap<String, Decision> = decide(&model, &Policy::default(), &Situation { restarted: recent, ..Situation::default() }, at(600))
        .into_iter()
        .map(|d| (d.webbridge.clone(), d))
        .collect();
    assert!(decisions["wb2"].reason.contains("restarted 20 min ago"), "{}", decisions["wb2"].reason);
    assert_eq!(decisions["wb3"].action, Action::Restart);
}

#[test]
fn a_restart_in_the_logs_counts_for_the_interval() {
    let mut model = model(&[("wb1", 120, 0)]);
    let audit = AuditCommand { user: "ops".into(), source: None, command: "webbridge restart".into(), granted: true };
    model.observe(&Record { time: at(601), host: "wb1".into(), body: RecordBody::Audit(audit) });
    model.observe(&wb("wb1", 602, 0));
    let decisions = decide_at(&model, &Policy::default(), 605);
    assert_eq!(decisions["wb1"].action, Action::None);
}

#[test]
fn a_lockout_before_the_next_window_is_needed_and_stale_data_decides_nothing() {
    // A fast leak, all of it proven (no calls): 100 at midnight, 130 at 10:00.
    let mut model = Deployment::new(ModelConfig::default());
    for minute in (0..=600).step_by(5) {
        model.observe(&cb(minute, 0));
        model.observe(&wb("wb1", minute, 100 + (minute / 20) as u32));
    }
    // Threshold off: only the forecast can make it needed.
    let policy = Policy { triggers: Triggers { leak_at_least: None, ..Triggers::default() }, ..Policy::default() };
    let decision = &decide_at(&model, &policy, 600)["wb1"];
    assert!(decision.needs.iter().any(|n| matches!(n, Need::LockoutSoon { .. })), "{decision:?}");
    assert_eq!(decision.action, Action::Restart);
    // With a window tonight, before the forecast lockout, it can wait.
    let window = Window::new("0 12 * * *", Duration::hours(1), "UTC", None).unwrap();
    let waiting = Policy { windows: vec![window], ..policy.clone() };
    assert_eq!(decide_at(&model, &waiting, 600)["wb1"].action, Action::None);
    // Eleven minutes without Stats: no decision.
    let decision = &decide_at(&model, &policy, 611)["wb1"];
    assert_eq!(decision.action, Action::None);
    assert!(decision.reason.contains("no fresh Stats"));
}
