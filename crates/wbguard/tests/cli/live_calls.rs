//! Live calls from CMS itself, end to end: the simulator's call bridges
//! serve the Call Bridge API over HTTPS and post CDRs over HTTP, a real
//! guard in enforce mode restarts through the simulator's MMP.
//!
//! - The API: a web bridge the logs call harmless is held while the API
//!   lists a live CMA leg anywhere in the cluster, and restarted seconds
//!   after it ends; the SSH command is never sent in between.
//! - CDRs: a web bridge the logs say could drop calls is restarted as soon
//!   as the CDRs say the last CMA call of the cluster ended, and the time
//!   from that `callLegEnd` to the restart is measured.
//! - Calls placed by the `c:` counter (issue 14): one long call on one web
//!   bridge no longer keeps another from a harmless restart, in the
//!   decision and in the API's check before it.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::s;
use super::watch::Guard;

/// An RFC 5424 line of `host` dated `minutes` from `now`: the web bridge's
/// Stats with `active` sessions, or the call bridge's STATS with `cma`.
fn stats(host: &str, now: DateTime<Utc>, minutes: i64, active: u32) -> String {
    let time = (now + chrono::Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!("<14>1 {time} {host} webbridge - - - INFO : [DEBUGGING] Stats {active}, c:{}, d:5", active + 5)
}

fn cma(host: &str, now: DateTime<Utc>, minutes: i64, cma: u32) -> String {
    let time = (now + chrono::Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!(r#"<14>1 {time} {host} host:server - - - INFO : STATS: {{"CMA": "{cma}/{cma}"}}"#)
}

/// The last quarter hour of cms1's logs, sent as its server would: its
/// web bridge at the limit, its call bridge reporting `calls` CMA calls
/// every five minutes, before and after the sample, so that at least
/// `149 - calls` sessions are known leaks.
fn at_the_limit(guard: &Guard, calls: u32) {
    let now = Utc::now();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = format!("127.0.0.1:{}", guard.port("udp"));
    let lines = [
        cma("cms1", now, -16, calls),
        cma("cms1", now, -11, calls),
        stats("cms1", now, -8, 149),
        cma("cms1", now, -6, calls),
        stats("cms1", now, -1, 149),
    ];
    for line in lines {
        socket.send_to(line.as_bytes(), &to).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(guard: &Guard) -> Value {
    serde_json::from_str(&guard.get("/api/status")).unwrap()
}

fn decision(status: &Value) -> Value {
    status["decisions"].as_array().unwrap().iter().find(|d| d["webbridge"] == "cms1").cloned().unwrap_or(Value::Null)
}

/// Waits until the status satisfies `ready`; returns it.
fn status_when(guard: &Guard, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = status(guard);
        if ready(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never {what}: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A leg started by hand on `server`'s call bridge: its id.
fn start_leg(control: std::net::SocketAddr, server: &str) -> String {
    let (code, body) = super::http(
        control,
        "POST",
        "/control",
        Some(&format!(r#"{{"leg": {{"server": "{server}", "type": "acano"}}}}"#)),
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["leg"].as_str().unwrap().to_owned()
}

fn restarts(control: std::net::SocketAddr) -> u64 {
    super::truth(control)["totals"]["restarts"].as_u64().unwrap()
}

/// A simulated deployment of two servers without sessions of its own
/// (only the legs a test starts), its syslog going nowhere: the test
/// speaks for cms1's logs.
fn quiet(
    dir: &std::path::Path,
    calls: cms_sim::live::CallBridgeOptions,
) -> (tokio::runtime::Runtime, cms_sim::live::Running, std::path::PathBuf) {
    super::watch::simulated_with("udp://127.0.0.1:9", 2, 1.0, 0.0, dir, |c| c.scenario.peak_sessions = 0.0, calls)
}

/// Every server's API in the configuration, with the simulator's MMP user
/// (its password in a file only its owner reads); accept-new records the
/// certificates on first sight.
fn with_api(dir: &std::path::Path, running: &cms_sim::live::Running, config: &std::path::Path) {
    let password = dir.join("api-password");
    std::fs::write(&password, "unused\n").unwrap();
    std::fs::set_permissions(&password, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut text = std::fs::read_to_string(config).unwrap();
    for server in &running.endpoints.servers {
        let log_host = format!("log_host = {:?}\n", server.name);
        text = text.replace(&log_host, &format!("{log_host}api = \"https://{}\"\n", server.api));
    }
    text.push_str(&format!("\n[api]\nuser = \"admin\"\npassword_file = {:?}\n", s(&password)));
    std::fs::write(config, text).unwrap();
}

/// A quiet deployment whose call bridges post CDRs to a port of its own
/// and serve the API (in the configuration); with `wall_clock`, the
/// simulator's clock is the wall clock, so its CDR times are ours.
fn quiet_with_cdrs(
    dir: &std::path::Path,
    wall_clock: bool,
) -> (tokio::runtime::Runtime, cms_sim::live::Running, std::path::PathBuf, u16) {
    let cdr_port = super::free_port();
    let receiver: cms_sim::live::cdr::Receiver =
        format!("http://127.0.0.1:{cdr_port}/cdr?callbridge={{server}}").parse().unwrap();
    let calls = cms_sim::live::CallBridgeOptions { cdr: vec![receiver], ..Default::default() };
    let (runtime, running, config) = super::watch::simulated_with(
        "udp://127.0.0.1:9",
        2,
        1.0,
        0.0,
        dir,
        |c| {
            c.scenario.peak_sessions = 0.0;
            if wall_clock {
                c.start = Utc::now();
            }
        },
        calls,
    );
    // The API vouches for the calls that began before the guard first
    // heard a call bridge's CDRs, and is asked before a restart.
    with_api(dir, &running, &config);
    (runtime, running, config, cdr_port)
}

/// A guard in enforce mode on `config`, receiving CDRs on `cdr_port`.
fn guard_with_cdrs(dir: &std::path::Path, config: &std::path::Path, cdr_port: u16) -> Guard {
    Guard::start(&[
        "--mode",
        "enforce",
        "--config",
        s(config),
        "--state-dir",
        s(&dir.join("guard")),
        "--listen-cdr",
        &format!("http://127.0.0.1:{cdr_port}"),
    ])
}

#[test]
fn a_restart_the_logs_call_harmless_waits_while_the_api_lists_a_cma_call() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, running, config) = quiet(dir.path(), Default::default());
    let control = running.endpoints.control;
    with_api(dir.path(), &running, &config);

    // Somebody is in a call through a CMA client on cms2: no log says so yet.
    let leg = start_leg(control, "cms2");
    let guard =
        Guard::start(&["--mode", "enforce", "--config", s(&config), "--state-dir", s(&dir.path().join("guard"))]);
    at_the_limit(&guard, 0);
    let held = status_when(&guard, "held by the API", |s| {
        decision(s)["reason"].as_str().is_some_and(|r| r.contains("API: 1 CMA call(s) live on cms2 (allowed 0)"))
    });
    assert_eq!(decision(&held)["action"], "hold", "{held}");
    assert_eq!(held["api_check"]["verdict"], "held", "{held}");
    assert_eq!((held["live_calls"]["cma"].as_u64(), held["live_calls"]["source"].as_str()), (Some(1), Some("api")));
    // The logs alone would restart: every session a known leak.
    assert_eq!(decision(&held)["leaked_lower"], 149, "{held}");
    // It stays held, asking again, and no command reaches the MMP.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(restarts(control), 0);
    assert_eq!(decision(&status(&guard))["action"], "hold");

    // The call ends: the next question clears the restart, which goes out.
    super::control(control, &format!(r#"{{"end_leg": "{leg}"}}"#));
    let ended = Instant::now();
    while restarts(control) != 1 {
        assert!(ended.elapsed() < Duration::from_secs(30), "never restarted: {}", status(&guard));
        std::thread::sleep(Duration::from_millis(100));
    }
    let journal = super::watch::restarts(&guard);
    let reason = journal.last().unwrap()["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("API: no CMA call live"), "{reason}");
    assert_eq!(guard.stop(), 0);
    runtime.block_on(running.stop());
}

#[test]
fn cdrs_free_a_restart_the_moment_the_last_cma_call_of_the_cluster_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, running, config, cdr_port) = quiet_with_cdrs(dir.path(), false);
    let control = running.endpoints.control;
    let guard = guard_with_cdrs(dir.path(), &config, cdr_port);
    // Two calls through CMA clients, one on each call bridge; cms1's
    // STATS counted them, so up to 2 real calls could be on its web bridge.
    let first = start_leg(control, "cms1");
    let second = start_leg(control, "cms2");
    at_the_limit(&guard, 2);
    let held = status_when(&guard, "held on the CDRs' count", |s| {
        s["live_calls"]["source"] == "cdr" && s["live_calls"]["cma"] == 2 && decision(s)["action"] == "hold"
    });
    assert_eq!(decision(&held)["droppable_upper"], 2, "{held}");
    guard.wait_for(r#"wbguard_callbridge_cma_calls{cluster="default",callbridge="cms1"}"#, 1.0);
    guard.wait_for(r#"wbguard_callbridge_cma_calls{cluster="default",callbridge="cms2"}"#, 1.0);

    // One ends: one could still drop.
    super::control(control, &format!(r#"{{"end_leg": "{first}"}}"#));
    let one = status_when(&guard, "one CMA call left", |s| s["live_calls"]["cma"] == 1);
    assert_eq!(
        (decision(&one)["action"].as_str(), decision(&one)["calls_source"].as_str()),
        (Some("hold"), Some("cdr"))
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(restarts(control), 0);
    // The last ends: the restart follows within seconds, not at the next
    // STATS report five minutes later.
    super::control(control, &format!(r#"{{"end_leg": "{second}"}}"#));
    let ended = Instant::now();
    while restarts(control) != 1 {
        assert!(ended.elapsed() < Duration::from_secs(20), "never restarted: {}", status(&guard));
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = ended.elapsed();
    eprintln!("from the last callLegEnd to the restart: {} ms", took.as_millis());
    let journal = super::watch::restarts(&guard);
    assert!(journal.last().unwrap()["reason"].as_str().unwrap().contains("harmless"), "{journal:?}");
    assert_eq!(guard.stop(), 0);
    runtime.block_on(running.stop());
}

/// Issue 14, rule 3: one long call on cms2's web bridge, live through the
/// night, no longer keeps cms1 from a harmless restart. The cluster's STATS
/// count the call, so the logs alone leave one session on each web bridge
/// that could be it; the CDRs say when it began, and cms1's `c:` counter did
/// not move from before that moment until after it (with
/// `policy.call_connection_lead` of 1 second and the 5-second clock margin),
/// while cms2's did. The guard restarts cms1 over SSH and holds cms2; the
/// same lines without the lead hold both.
#[test]
fn a_long_call_on_one_web_bridge_no_longer_keeps_the_others_from_a_harmless_restart() {
    fn run(lead: Option<&str>) -> (Value, Value, u64) {
        let dir = tempfile::tempdir().unwrap();
        let (runtime, running, config, cdr_port) = quiet_with_cdrs(dir.path(), true);
        let control = running.endpoints.control;
        if let Some(lead) = lead {
            let mut text = std::fs::read_to_string(&config).unwrap();
            text.push_str(&format!("\n[policy]\ncall_connection_lead = \"{lead}\"\n"));
            std::fs::write(&config, text).unwrap();
        }
        let guard = guard_with_cdrs(dir.path(), &config, cdr_port);
        // The long call, on cms2; T0 lies between these two readings.
        let before = Utc::now();
        start_leg(control, "cms2");
        let after = Utc::now();
        status_when(&guard, "the long call heard", |s| {
            s["live_calls"]["cma"] == 1 && s["live_calls"]["source"] == "cdr"
        });
        // The logs, up to 11 s after T0, sent once that is past.
        std::thread::sleep((after + chrono::Duration::seconds(12) - Utc::now()).to_std().unwrap_or_default());
        let line = |at: DateTime<Utc>, host: &str, program: &str, message: String| {
            let time = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            format!("<14>1 {time} {host} {program} - - - INFO : {message}")
        };
        let web = |at, host, active: u32, c: u32| {
            line(at, host, "webbridge", format!("[DEBUGGING] Stats {active}, c:{c}, d:{}", c - active))
        };
        let cma = |at, calls: u32| line(at, "cms2", "host:server", format!(r#"STATS: {{"CMA": "{calls}/{calls}"}}"#));
        let secs = chrono::Duration::seconds;
        let lines = [
            // Eight minutes before: nobody in a call, 120 and 119 sessions leaked.
            cma(before - secs(480), 0),
            web(before - secs(479), "cms1", 120, 500),
            web(before - secs(479), "cms2", 119, 400),
            // Half a minute before: no new connection on either.
            web(before - secs(30), "cms1", 120, 500),
            web(before - secs(30), "cms2", 119, 400),
            // After T0: the call is counted; the user's connection moved
            // cms2's counter, not cms1's.
            cma(after + secs(8), 1),
            web(after + secs(9), "cms1", 120, 500),
            web(after + secs(9), "cms2", 120, 401),
            cma(after + secs(10), 1),
            web(after + secs(11), "cms1", 120, 500),
            web(after + secs(11), "cms2", 120, 401),
        ];
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = format!("127.0.0.1:{}", guard.port("udp"));
        for line in lines {
            socket.send_to(line.as_bytes(), &to).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let decided = status_when(&guard, "both decided on the last lines", |s| {
            ["cms1", "cms2"].iter().all(|host| {
                s["decisions"].as_array().unwrap().iter().any(|d| {
                    d["webbridge"] == *host
                        && d["active"] == 120
                        && d["leaked_lower"] == 119
                        && (d["action"] == "hold" || d["action"] == "restart")
                })
            })
        });
        // What the guard does within the next seconds: the API is asked
        // first, then the command goes over SSH.
        let waited = Instant::now();
        let patience = Duration::from_secs(if lead.is_some() { 30 } else { 10 });
        while restarts(control) == 0 && waited.elapsed() < patience {
            std::thread::sleep(Duration::from_millis(100));
        }
        let restarted = restarts(control);
        let last = status(&guard);
        // The decision, with the estimate's count of the calls that may be on it.
        let of = |host: &str| {
            let find = |list: &str| {
                decided[list].as_array().unwrap().iter().find(|d| d["webbridge"] == host).cloned().unwrap()
            };
            let mut decision = find("decisions");
            decision["attributable_calls"] = find("webbridges")["attributable_calls"].clone();
            decision
        };
        let journal = super::watch::restarts(&guard);
        assert_eq!(guard.stop(), 0);
        runtime.block_on(running.stop());
        let cms1 = serde_json::json!({"decision": of("cms1"), "journal": journal, "api_check": last["api_check"]});
        (cms1, of("cms2"), restarted)
    }

    let (cms1, cms2, restarted) = run(Some("1s"));
    assert_eq!(restarted, 1, "only cms1: {cms1} {cms2}");
    let decision = &cms1["decision"];
    assert_eq!(decision["droppable_upper"], 0, "{cms1}");
    assert_eq!(decision["attributable_calls"], 0, "{cms1}");
    let journal = cms1["journal"].as_array().unwrap();
    assert_eq!(journal.len(), 1, "{cms1}");
    assert_eq!(journal[0]["webbridge"], "cms1", "{cms1}");
    let reason = journal[0]["reason"].as_str().unwrap();
    assert!(reason.contains("harmless"), "{cms1}");
    // The API, asked before the restart, lists the call; the CDRs place it.
    assert!(reason.contains("API: 1 CMA call(s) live on cms2; 1 began while cms1 saw no new connection"), "{reason}");
    assert_eq!((cms2["action"].as_str(), cms2["droppable_upper"].as_u64()), (Some("hold"), Some(1)), "{cms2}");
    assert_eq!(cms2["attributable_calls"], 1, "{cms2}");

    // Without the lead, the call counts on every web bridge: both held.
    let (cms1, cms2, restarted) = run(None);
    assert_eq!(restarted, 0, "{cms1} {cms2}");
    assert_eq!(
        (cms1["decision"]["action"].as_str(), cms1["decision"]["droppable_upper"].as_u64()),
        (Some("hold"), Some(1))
    );
    assert_eq!(cms2["action"], "hold", "{cms2}");
}
