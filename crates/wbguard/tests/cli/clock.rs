//! The guard's clock against lines dated in the future: a forged line from
//! 2099 (or a server whose clock runs ahead) is counted, named and
//! announced once, and moves no decision, no history and no journal; a
//! simulation asks for the data's clock and gets today's behaviour.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::s;
use super::watch::Guard;

/// An RFC 5424 Stats line of `host` dated `time`.
fn stats_at(host: &str, time: &str, active: u32) -> String {
    format!("<14>1 {time} {host} webbridge - - - INFO : [DEBUGGING] Stats {active}, c:{}, d:5", active + 5)
}

const FORGED: &str = "2099-12-31T23:50:00Z";

/// The forged lines: cms1 at its limit, and its call bridge's next report
/// with nobody in a call, so that every session is a proven leak and a
/// restart is due at once.
fn forged() -> [String; 2] {
    [
        stats_at("cms1", FORGED, 149),
        r#"<14>1 2099-12-31T23:51:00Z cms1 host:server - - - INFO : STATS: {"CMA": "0/0"}"#.to_owned(),
    ]
}

fn send(guard: &Guard, line: &str) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(line.as_bytes(), format!("127.0.0.1:{}", guard.port("udp"))).unwrap();
}

fn status(guard: &Guard) -> Value {
    serde_json::from_str(&guard.get("/api/status")).unwrap()
}

/// Waits until the status of `guard` satisfies `ready`, and returns it.
fn status_when(guard: &Guard, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = status(guard);
        if ready(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never {what}: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn decision<'a>(status: &'a Value, webbridge: &str) -> &'a Value {
    status["decisions"].as_array().unwrap().iter().find(|d| d["webbridge"] == webbridge).unwrap_or(&Value::Null)
}

#[test]
fn a_line_forged_for_2099_changes_no_decision_and_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    // A real MMP (the simulator) that would count a restart; its own
    // syslog goes nowhere: the test is the only sender.
    let (runtime, running, config) =
        super::watch::simulated("udp://127.0.0.1:9", 1, 1.0, 0.0, dir.path(), |c| c.start = chrono::Utc::now());
    let control = running.endpoints.control;
    let (url, posts) = super::watch_inputs::receiver();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[[webhook]]\nurl = \"{url}/hook\"\nevents = [\"clock\"]\n"));
    std::fs::write(&config, text).unwrap();
    let state = dir.path().join("guard");
    let args = |clock: &'static str| -> Vec<String> {
        ["--mode", "enforce", "--config", s(&config), "--state-dir", s(&state), "--clock", clock]
            .map(str::to_owned)
            .to_vec()
    };
    let now = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    // The wall clock (the default): the forged line is counted and named.
    let wall = args("wall");
    let guard = Guard::start(&wall.iter().map(String::as_str).collect::<Vec<_>>());
    send(&guard, &stats_at("cms1", &now(), 10));
    status_when(&guard, "cms1 seen", |s| decision(s, "cms1")["active"] == 10);
    for line in forged() {
        send(&guard, &line);
    }
    guard.wait_for(r#"wbguard_syslog_messages_total{result="future"}"#, 2.0);
    // Both forged lines are counted against cms1 (the status is published
    // at most every 200 ms, so the first look may show only one).
    let seen = status_when(&guard, "cms1 named as ahead for both lines", |s| {
        s["servers_ahead"][0]["host"] == "cms1" && s["servers_ahead"][0]["records"] == 2
    });
    assert_eq!(seen["clock"], "wall");
    assert_eq!(seen["servers_ahead"].as_array().map(Vec::len), Some(1), "{seen}");
    // Its "now" is the machine's, and cms1 is as the real line left it.
    let said: chrono::DateTime<chrono::Utc> = seen["now"].as_str().unwrap().parse().unwrap();
    assert!((said - chrono::Utc::now()).num_seconds().abs() < 60, "{seen}");
    std::thread::sleep(Duration::from_secs(3)); // a few rounds of decisions
    let after = status(&guard);
    let cms1 = decision(&after, "cms1");
    assert_eq!((cms1["active"].as_u64(), cms1["action"].as_str()), (Some(10), Some("none")), "{after}");
    assert!(!after.to_string().contains("2099-12-31T23:5"), "the forged date leaked into the status: {after}");
    assert_eq!(super::truth(control)["totals"]["restarts"], 0);
    // Announced once, for both lines.
    let (path, body) = posts.recv_timeout(Duration::from_secs(10)).expect("no clock webhook");
    assert_eq!(
        (path.as_str(), body["event"].as_str(), body["webbridge"].as_str()),
        ("/hook", Some("clock"), Some("cms1"))
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(posts.try_recv().is_err(), "announced twice");
    assert_eq!(guard.stop(), 0);

    // The data clock (a simulation) trusts the line, as the guard once did:
    // "now" jumps to 2099, where cms1 is at its limit, and is restarted.
    let data = args("data");
    let trusting = Guard::start(&data.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(status(&trusting)["clock"], "data");
    for line in forged() {
        send(&trusting, &line);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while super::truth(control)["totals"]["restarts"] != 1 {
        assert!(Instant::now() < deadline, "the data clock did not follow the line: {}", status(&trusting));
        std::thread::sleep(Duration::from_millis(200));
    }
    let journaled = super::watch::restarts(&trusting);
    assert!(journaled.iter().any(|r| r.to_string().contains("2099-12-31")), "{journaled:?}");
    assert_eq!(trusting.stop(), 0);

    // The wall clock again: the restart journaled in 2099 is reported and
    // not used (no "restarted -38438678 min ago"), and pruned.
    let guard = Guard::start(&wall.iter().map(String::as_str).collect::<Vec<_>>());
    send(&guard, &stats_at("cms1", &now(), 12));
    let seen = status_when(&guard, "cms1 seen again", |s| decision(s, "cms1")["active"] == 12);
    assert_eq!(seen["journal_ahead"][0]["webbridge"], "cms1", "{seen}");
    let reason = decision(&seen, "cms1")["reason"].as_str().unwrap().to_owned();
    assert!(!reason.contains("restarted"), "{reason}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while super::watch::restarts(&guard).iter().any(|r| r.to_string().contains("2099-12-31")) {
        assert!(Instant::now() < deadline, "the restart dated 2099 was never pruned");
        std::thread::sleep(Duration::from_millis(200));
    }
    let history = guard.get("/api/history?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z");
    assert!(!history.contains("2099-12-31"), "{history}");
    runtime.block_on(running.stop());
}
