//! `/api/history` against a guard holding 90 days of 4 servers, fed by
//! the real path (a followed log): every answer bounded, a storm of the
//! largest requests leaves the guard's memory bounded and `/healthz` answering;
//! and a decision is stored when it changes, not at every round.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::s;
use super::watch::Guard;

/// The largest range there is.
const EVERYTHING: &str = "/api/history?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z";

/// A status line's value in /proc/PID/status, in kB.
fn proc_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The web bridge series of the answer: (host, points).
fn webbridge_series(history: &Value) -> Vec<(String, Vec<Value>)> {
    let series = history["samples"].as_array().unwrap();
    series
        .iter()
        .filter(|s| s["kind"] == "webbridge")
        .map(|s| (s["host"].as_str().unwrap().to_owned(), s["points"].as_array().unwrap().clone()))
        .collect()
}

/// 100 requests at once for the whole range of 90 days of 4 servers (about
/// 620,000 samples): each answer is downsampled (600 points per series,
/// each with its least and most) or refused with 503 and Retry-After; the
/// guard's peak memory stays under 128 MB and `/healthz` keeps answering.
/// Before, one such request returned 25.6 MB and 100 took 4.5 GB.
#[test]
fn a_storm_of_the_largest_history_requests_leaves_the_guard_bounded() {
    use cms_sim::genlog::{self, GenOptions};
    use cms_sim::scenario::Scenario;

    let now = chrono::Utc::now();
    let options = GenOptions {
        scenario: Scenario::with_servers(4),
        seed: 12,
        // Within the default retention of 90 days, and ending before now.
        start: now - chrono::Duration::days(90) + chrono::Duration::hours(2),
        duration: Some(chrono::Duration::days(90) - chrono::Duration::hours(3)),
        max_bytes: None,
        lines_per_record: 1,
        header: None,
        restarts: Vec::new(),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cms.log");
    let mut log = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let summary = genlog::generate(&options, &mut log, None).unwrap();
    drop(log);
    assert!(summary.records > 600_000, "{summary:?}");

    let guard = Guard::start(&["--follow", s(&path)]);
    // Every record parsed, and the history written: each server's series
    // spans the 90 days.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let parsed = guard.metric("wbguard_syslog_messages_total{result=\"parsed\"}").unwrap_or(0.0);
        let history: Value = serde_json::from_str(&guard.get(EVERYTHING)).unwrap_or(Value::Null);
        let spans = history.is_object()
            && webbridge_series(&history).len() == 4
            && webbridge_series(&history).iter().all(|(_, points)| {
                let time = |p: &Value| chrono::DateTime::parse_from_rfc3339(p["time"].as_str().unwrap()).unwrap();
                let last = time(points.last().unwrap());
                last - time(&points[0]) > chrono::Duration::days(89)
                    && (now - last.to_utc()) < chrono::Duration::hours(2)
            });
        if parsed == summary.records as f64 && spans {
            break;
        }
        assert!(Instant::now() < deadline, "{parsed} of {} parsed:\n{}", summary.records, guard.get("/metrics"));
        std::thread::sleep(Duration::from_secs(1));
    }
    let history: Value = serde_json::from_str(&guard.get(EVERYTHING)).unwrap();
    for (host, points) in webbridge_series(&history) {
        assert_eq!(points.len(), 600, "{host}");
        assert!(points.iter().all(|p| p["active_min"].as_i64() <= p["active"].as_i64()), "{host}");
        assert!(points.iter().all(|p| p["active"].as_i64() <= p["active_max"].as_i64()), "{host}");
    }
    assert!(history["bucket_ms"].as_i64().unwrap() > 3_600_000 * 3, "{}", history["bucket_ms"]);
    let points = |n: &str| serde_json::from_str::<Value>(&guard.get(&format!("{EVERYTHING}&points={n}"))).unwrap();
    assert_eq!(webbridge_series(&points("50"))[0].1.len(), 50);
    assert!(guard.get(&format!("{EVERYTHING}&points=100000")).contains("points must be a number from 1 to 2000"));

    let pid = guard.pid();
    let before = proc_kb(pid, "VmRSS");
    let http = guard.http;
    let storm: Vec<_> = (0..100)
        .map(|_| {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut stream = std::net::TcpStream::connect(http).unwrap();
                write!(stream, "GET {EVERYTHING} HTTP/1.0\r\n\r\n").unwrap();
                let mut response = Vec::new();
                stream.read_to_end(&mut response).unwrap();
                response
            })
        })
        .collect();
    // /healthz answers all through the storm.
    let mut healthy = 0;
    while storm.iter().any(|t| !t.is_finished()) {
        assert_eq!(super::http(http, "GET", "/healthz", None), (200, "ok\n".to_owned()));
        healthy += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let (mut answered, mut busy) = (0, 0);
    for thread in storm {
        let response = String::from_utf8(thread.join().unwrap()).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        if head.starts_with("HTTP/1.0 200") {
            answered += 1;
            assert!(body.len() < 1 << 20, "{} bytes", body.len());
            let answer: Value = serde_json::from_str(body).unwrap();
            assert_eq!(webbridge_series(&answer).len(), 4);
        } else {
            assert!(head.starts_with("HTTP/1.0 503") && head.to_ascii_lowercase().contains("retry-after: 5"), "{head}");
            busy += 1;
        }
    }
    let peak = proc_kb(pid, "VmHWM");
    let after = proc_kb(pid, "VmRSS");
    eprintln!(
        "history storm: {answered} answered, {busy} refused (503), /healthz answered {healthy} times; \
         RSS {before} kB before, {after} kB after, peak {peak} kB"
    );
    assert!(answered >= 1);
    assert!(peak < 128 * 1024, "peak RSS {peak} kB");
    assert_eq!(super::http(http, "GET", "/healthz", None).0, 200);
}

/// Sends `host`'s web bridge Stats line, dated now, to the guard's UDP port.
fn send_stats(guard: &Guard, host: &str, active: u32, connections: u32, disconnections: u32) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let line = format!(
        "<14>1 {time} {host} webbridge - - - INFO : [DEBUGGING] Stats {active}, c:{connections}, d:{disconnections}"
    );
    socket.send_to(line.as_bytes(), format!("127.0.0.1:{}", guard.port("udp"))).unwrap();
}

/// A decision is stored when it changes, not at every round: a web bridge
/// whose sessions move every second, never needing a restart, leaves one
/// "not needed" row, not one per round with its new numbers (issue 15: a
/// fleet's every round was 43,600 rows in four minutes).
#[test]
fn a_decision_is_stored_when_it_changes_not_at_every_round() {
    let dir = tempfile::tempdir().unwrap();
    let guard = Guard::start(&["--state-dir", s(&dir.path().join("guard"))]);
    // Eight seconds of rounds (one a second), the count different in each.
    let began = std::time::Instant::now();
    let mut sent = 0u32;
    while began.elapsed() < Duration::from_secs(8) {
        let active = 10 + sent % 50;
        send_stats(&guard, "cms1", active, active + sent, sent);
        sent += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    let status: Value = serde_json::from_str(&guard.get("/api/status")).unwrap();
    let now = status["decisions"].as_array().unwrap().iter().find(|d| d["webbridge"] == "cms1").cloned().unwrap();
    assert!(now["reason"].as_str().unwrap().starts_with("not needed"), "{now}");
    let history: Value = serde_json::from_str(&guard.get(EVERYTHING)).unwrap();
    let rows: Vec<&Value> =
        history["decisions"].as_array().unwrap().iter().filter(|d| d["webbridge"] == "cms1").collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(guard.stop(), 0);
}

/// Web bridges are listed in the order people count them, by `/api/status`
/// and by `wbguard status`: cms2 before cms10 (issue 15: a fleet's page was
/// sorted as text, cms1, cms10, cms100, ...).
#[test]
fn web_bridges_are_listed_in_natural_order() {
    let dir = tempfile::tempdir().unwrap();
    let guard = Guard::start(&["--state-dir", s(&dir.path().join("guard"))]);
    let names = ["cms10", "cms2", "cms100", "cms1"];
    for name in names {
        send_stats(&guard, name, 5, 9, 4);
    }
    let expected = ["cms1", "cms2", "cms10", "cms100"];
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status: Value = serde_json::from_str(&guard.get("/api/status")).unwrap();
        if status["decisions"].as_array().unwrap().len() == names.len() {
            break status;
        }
        assert!(Instant::now() < deadline, "never decided on all four: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for list in ["webbridges", "decisions"] {
        let order: Vec<&str> =
            status[list].as_array().unwrap().iter().map(|w| w["webbridge"].as_str().unwrap()).collect();
        assert_eq!(order, expected, "{list}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wbguard"))
        .args(["status", "--url", &format!("http://{}", guard.http)])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> =
        table.lines().filter_map(|l| l.split_whitespace().next()).filter(|w| w.starts_with("cms")).collect();
    assert_eq!(rows, expected, "{table}");
    assert_eq!(guard.stop(), 0);
}
