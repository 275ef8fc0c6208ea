//! The lockout rule end to end: a web bridge whose calls never stop, whose
//! leak will lock users out tomorrow morning, is restarted by the guard
//! at the quietest minute its daily profile learned (03:00 to 04:00), not before,
//! through the simulator's real MMP over SSH; the decision says why, with
//! its numbers, and a `lockout_restart` webhook goes out.
//!
//! The test writes the syslog itself (RFC 5424 over TCP), a sample every
//! five minutes for two days, so that the day is known exactly; the
//! guard runs on the data's clock.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use serde_json::Value;

use super::s;
use super::watch::Guard;

/// Real calls at `minute` of the day: 5 at 03:00, 3 more for every hour
/// from it, 41 at 15:00.
fn real_calls(minute: i64) -> u32 {
    let from_three = ((minute % 1440) / 60 - 3).abs();
    5 + 3 * from_three.min(24 - from_three) as u32
}

/// The lines of minute `minute` since `start`: the web bridge's Stats
/// (50 sessions leaked a day, the calls above) and its call bridge's
/// STATS (those calls, all CMA).
fn lines_at(start: DateTime<Utc>, minute: i64) -> String {
    let time = (start + chrono::Duration::minutes(minute)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let real = real_calls(minute);
    let active = (minute * 50 / 1440) as u32 + real;
    let connections = 1000 + minute as u32;
    format!(
        "<14>1 {time} cms1 host:server - - - INFO : STATS: {{\"CMA\": \"{real}/{real}\"}}\n\
         <14>1 {time} cms1 webbridge - - - INFO : [DEBUGGING] Stats {active}, c:{connections}, d:{}\n",
        connections - active
    )
}

fn status(guard: &Guard) -> Value {
    serde_json::from_str(&guard.get("/api/status")).unwrap()
}

fn decision(status: &Value) -> Value {
    status["decisions"].as_array().unwrap().iter().find(|d| d["webbridge"] == "cms1").cloned().unwrap_or(Value::Null)
}

/// Sends the samples of minutes `from..to` (every five) and waits until
/// the guard has read the last.
fn send(guard: &Guard, stream: &mut TcpStream, start: DateTime<Utc>, from: i64, to: i64) {
    for minute in (from..to).step_by(5) {
        stream.write_all(lines_at(start, minute).as_bytes()).unwrap();
    }
    stream.flush().unwrap();
    let last = (start + chrono::Duration::minutes(to - 5)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = status(guard);
        let seen = decision(&status)["calls_as_of"].as_str().map(str::to_owned);
        if seen.is_some_and(|t| t.parse::<DateTime<Utc>>().ok() >= last.parse::<DateTime<Utc>>().ok()) {
            return;
        }
        assert!(Instant::now() < deadline, "the guard never read up to {last}: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_lockout_is_prevented_at_the_quietest_minute_the_guard_learned() {
    let dir = tempfile::tempdir().unwrap();
    // A real MMP that counts restarts; its own syslog goes nowhere.
    let (runtime, running, config) =
        super::watch::simulated("udp://127.0.0.1:9", 1, 1.0, 0.0, dir.path(), |c| c.start = Utc::now());
    let control = running.endpoints.control;
    let (url, posts) = super::watch_inputs::receiver();
    let mut text = std::fs::read_to_string(&config).unwrap();
    // Only the forecast makes the restart needed (no threshold on the leak).
    text.push_str(&format!(
        "\n[policy]\nleak_at_least = 0\n\n[[webhook]]\nurl = \"{url}/hook\"\nevents = [\"lockout_restart\"]\n"
    ));
    std::fs::write(&config, text).unwrap();
    let state = dir.path().join("guard");
    let guard =
        Guard::start(&["--mode", "enforce", "--config", s(&config), "--state-dir", s(&state), "--clock", "data"]);
    let mut stream = TcpStream::connect(format!("127.0.0.1:{}", guard.port("tcp"))).unwrap();
    // Tomorrow at midnight: the data's clock is never behind the wall clock,
    // so the whole log lies ahead of it.
    let start = Utc::now().duration_trunc(chrono::TimeDelta::days(1)).unwrap() + chrono::Duration::days(1);
    let at = |minute: i64| start + chrono::Duration::minutes(minute);

    // Day 1, 20:00: the lockout is expected tomorrow, the calls never stop;
    // the restart is planned for 03:00, the quietest hour of the profile.
    let evening = 1440 + 20 * 60;
    send(&guard, &mut stream, start, 0, evening + 5);
    let held = decision(&status(&guard));
    assert_eq!(held["action"], "hold", "{held}");
    let plan = &held["lockout"];
    let planned: DateTime<Utc> = plan["planned_at"].as_str().unwrap().parse().unwrap();
    assert!((at(2 * 1440 + 3 * 60)..at(2 * 1440 + 4 * 60)).contains(&planned), "{held}");
    assert_eq!(plan["at_limit"].as_bool(), Some(false), "{held}");
    assert!(plan["expected_calls"].as_u64().is_some_and(|calls| calls <= 6), "{held}");
    assert_eq!(plan["max_dropped_calls"], Value::Null, "any, by default: {held}");
    assert!(held["reason"].as_str().unwrap().contains("planned for the quietest moment"), "{held}");
    assert_eq!(super::truth(control)["servers"][0]["webbridge"]["restarts"].as_array().unwrap().len(), 0);

    // Through the night to just before the planned minute: still held.
    let planned_minute = (planned - start).num_minutes();
    send(&guard, &mut stream, start, evening + 5, planned_minute);
    assert_eq!(decision(&status(&guard))["action"], "hold");
    assert_eq!(super::truth(control)["servers"][0]["webbridge"]["restarts"].as_array().unwrap().len(), 0);

    // The planned minute: restarted, over SSH, and announced with its numbers.
    send(&guard, &mut stream, start, planned_minute, planned_minute + 5);
    let deadline = Instant::now() + Duration::from_secs(30);
    while super::truth(control)["servers"][0]["webbridge"]["restarts"].as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "never restarted: {}", status(&guard));
        std::thread::sleep(Duration::from_millis(100));
    }
    let (path, body) = posts.recv_timeout(Duration::from_secs(20)).expect("a lockout_restart webhook");
    assert_eq!((path.as_str(), body["event"].as_str()), ("/hook", Some("lockout_restart")), "{body}");
    let details = &body["details"];
    assert_eq!(details["action"], "restart", "{body}");
    assert_eq!(details["lockout"]["planned_at"], plan["planned_at"], "{body}");
    assert!(details["droppable_upper"].as_u64().is_some_and(|calls| calls <= 6), "{body}");
    let reason = details["reason"].as_str().unwrap();
    assert!(
        reason.contains("a lockout is worse than a few drops") && reason.contains("lockout_max_dropped_calls any"),
        "{reason}"
    );
    // The journal holds the restart at the planned minute of the data's clock.
    let history: Value =
        serde_json::from_str(&guard.get("/api/history?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z")).unwrap();
    let restarts = history["restarts"].as_array().unwrap();
    assert_eq!(restarts.len(), 1, "{history}");
    let when: DateTime<Utc> = restarts[0]["intent"].as_str().unwrap().parse().unwrap();
    assert!((planned..=planned + chrono::Duration::minutes(5)).contains(&when), "{when}");
    runtime.block_on(running.stop());
}
