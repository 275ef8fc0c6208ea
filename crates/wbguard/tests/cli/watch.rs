//! `wbguard watch` and `wbguard status` end to end: util-linux `logger`
//! over UDP and TCP, RFC 3164 and 5424, reaching `/metrics`; a source not
//! on the allow list; the simulator's syslog against its truth.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::s;

/// A running `wbguard watch` on free ports.
pub struct Guard {
    child: Child,
    syslog: Vec<String>,
    /// Its HTTP address.
    pub http: SocketAddr,
    _state: Option<tempfile::TempDir>,
}

impl Guard {
    /// A guard on free ports, with its state in a fresh directory unless
    /// `extra` names one.
    pub fn start(extra: &[&str]) -> Guard {
        Guard::spawn(Command::new(env!("CARGO_BIN_EXE_wbguard")), extra, Stdio::null())
    }

    /// [`Guard::start`], its log (standard error) going to `stderr`.
    pub fn start_with_stderr(extra: &[&str], stderr: impl Into<Stdio>) -> Guard {
        Guard::spawn(Command::new(env!("CARGO_BIN_EXE_wbguard")), extra, stderr.into())
    }

    /// A guard that may open at most `files` file descriptors, its log
    /// going to `log`.
    pub fn start_with_few_files(files: u32, log: &std::path::Path, extra: &[&str]) -> Guard {
        let mut command = Command::new("sh");
        command.args(["-c", &format!("ulimit -n {files} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_wbguard")]);
        Guard::spawn(command, extra, std::fs::File::create(log).unwrap().into())
    }

    /// `command` (the binary, or what execs it) with `watch` and the
    /// arguments for free ports appended.
    fn spawn(mut command: Command, extra: &[&str], stderr: Stdio) -> Guard {
        let state = (!extra.contains(&"--state-dir")).then(|| tempfile::tempdir().unwrap());
        command.arg("watch");
        for (flag, value) in [
            ("--listen-syslog", "udp://127.0.0.1:0"),
            ("--listen-syslog", "tcp://127.0.0.1:0"),
            ("--listen-http", "127.0.0.1:0"),
        ] {
            command.args([flag, value]);
        }
        if let Some(state) = &state {
            command.arg("--state-dir").arg(state.path());
        }
        let mut child = command.args(extra).stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let endpoints: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let syslog = endpoints["syslog"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
        Guard { child, syslog, http: endpoints["http"].as_str().unwrap().parse().unwrap(), _state: state }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn port(&self, scheme: &str) -> String {
        self.syslog.iter().find(|u| u.starts_with(scheme)).unwrap().rsplit(':').next().unwrap().to_owned()
    }

    pub fn get(&self, path: &str) -> String {
        super::http(self.http, "GET", path, None).1
    }

    /// The value of one metric line, waiting up to 10 s for it.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let metrics = self.get("/metrics");
            if let Some(line) = metrics.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' ')) {
                return line.rsplit(' ').next().unwrap().parse().ok();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `series` shows `value` (a counter may lag what was sent:
    /// it shows 0 from the start).
    pub fn wait_for(&self, series: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.metric(series) != Some(value) {
            assert!(Instant::now() < deadline, "{series} never became {value}:\n{}", self.get("/metrics"));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a signal (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }

    pub fn stop(mut self) -> i32 {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the guard did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn logger(args: &[&str], message: &str) {
    let status = Command::new("logger").args(args).arg(message).status().expect("logger (util-linux)");
    assert!(status.success());
}

pub fn hostname() -> String {
    String::from_utf8(Command::new("hostname").output().unwrap().stdout).unwrap().trim().to_owned()
}

#[test]
#[ignore = "needs logger (util-linux): cargo xtask ci runs it"]
fn logger_over_udp_and_tcp_in_both_formats_reaches_the_metrics() {
    let guard = Guard::start(&[]);
    let (udp, tcp) = (guard.port("udp"), guard.port("tcp"));
    let host = hostname();
    let short = host.split('.').next().unwrap().to_owned();
    let series = |name: &str, label: &str, value: &str| format!("{name}{{cluster=\"default\",{label}=\"{value}\"}}");
    logger(
        &["--rfc3164", "-d", "-n", "127.0.0.1", "-P", &udp, "-t", "webbridge"],
        "INFO : [DEBUGGING] Stats 7, c:9, d:2",
    );
    // logger's RFC 3164 header carries the short host name.
    assert_eq!(guard.metric(&series("wbguard_webbridge_active_sessions", "webbridge", &short)), Some(7.0));
    logger(&["--rfc5424", "-T", "-n", "127.0.0.1", "-P", &tcp, "-t", "host:server"], r#"INFO : STATS: {"CMA": "3/4"}"#);
    logger(
        &["--rfc5424", "--octet-count", "-T", "-n", "127.0.0.1", "-P", &tcp, "-t", "webbridge"],
        "INFO : [DEBUGGING] Stats 8, c:10, d:2",
    );
    let hosts = [host.clone(), short.clone()];
    let found = |name: &str, label: &str| hosts.iter().find_map(|h| guard.metric(&series(name, label, h)));
    assert_eq!(found("wbguard_callbridge_cma_sessions", "callbridge"), Some(3.0));
    assert!(guard.metric(r#"wbguard_syslog_messages_total{result="parsed"}"#).unwrap() >= 3.0);
    // `wbguard status` asks the same guard.
    let out = Command::new(env!("CARGO_BIN_EXE_wbguard"))
        .args(["status", "--url", &format!("http://{}", guard.http)])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("observe mode"), "{table}");
    // Columns line up: each session count ends where ACTIVE ends.
    let header = table.lines().find(|l| l.starts_with("WEB BRIDGE")).unwrap();
    let end = header.find("ACTIVE").unwrap() + "ACTIVE".len();
    let rows: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("WEB BRIDGE"))
        .skip(1)
        .take_while(|l| !l.starts_with("syslog"))
        .collect();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.as_bytes()[end - 1].is_ascii_digit() && r.as_bytes()[end] == b' '),
        "{table}"
    );
    assert_eq!(guard.get("/healthz"), "ok\n");
    assert_eq!(guard.stop(), 0);
}

#[test]
#[ignore = "needs logger (util-linux): cargo xtask ci runs it"]
fn a_source_not_on_the_allow_list_is_counted_and_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wbguard.toml");
    std::fs::write(&config, "[[server]]\nname = \"cms1\"\nmmp = \"192.0.2.11\"\n").unwrap();
    let guard = Guard::start(&["--config", s(&config)]);
    logger(
        &["--rfc3164", "-d", "-n", "127.0.0.1", "-P", &guard.port("udp"), "-t", "webbridge"],
        "INFO : [DEBUGGING] Stats 148, c:9, d:2",
    );
    guard.wait_for(r#"wbguard_syslog_messages_total{result="rejected"}"#, 1.0);
    assert!(!guard.get("/metrics").contains("wbguard_webbridge_active_sessions{"));
    let status: Value = serde_json::from_str(&guard.get("/api/status")).unwrap();
    assert_eq!(status["webbridges"], Value::Array(Vec::new()));
}

#[test]
fn enforce_mode_is_refused_until_it_can_act() {
    let out = Command::new(env!("CARGO_BIN_EXE_wbguard")).args(["watch", "--mode", "enforce"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --config"));
}

/// The guard fetches the secrets it needs when it starts: a webhook whose
/// URL variable is not set, or a page token too short to be safe, keeps it
/// from starting, and the error names the key (never the secret).
#[test]
fn the_guard_refuses_to_start_without_a_secret_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wbguard.toml");
    let start = |text: &str, env: &[(&str, &str)]| {
        std::fs::write(
            &config,
            format!("state_dir = {:?}\n{text}\n[[server]]\nname = \"cms1\"\nmmp = \"127.0.0.1\"\n", s(dir.path())),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wbguard"))
            .args([
                "--config",
                s(&config),
                "watch",
                "--listen-syslog",
                "udp://127.0.0.1:0",
                "--listen-http",
                "127.0.0.1:0",
            ])
            .env_remove("WBGUARD_HOOK_NOT_SET")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = start("[[webhook]]\nurl_env = \"WBGUARD_HOOK_NOT_SET\"", &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("webhook[0]") && stderr.contains("WBGUARD_HOOK_NOT_SET"), "{stderr}");
    let (code, stderr) =
        start("[watch]\nrestart_token_env = \"WBGUARD_TEST_TOKEN\"", &[("WBGUARD_TEST_TOKEN", "short-t0ken")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("watch.restart_token_env") && !stderr.contains("short-t0ken"), "{stderr}");
}

#[test]
fn the_simulators_syslog_gives_the_truths_numbers() {
    use cms_sim::live::{self, Credentials, LiveConfig};
    use cms_sim::scenario::Scenario;

    let guard = Guard::start(&["--clock", "data"]);
    let dir = tempfile::tempdir().unwrap();
    let mut scenario = Scenario::with_servers(2);
    scenario.leak_probability = 0.5;
    let config = LiveConfig {
        scenario,
        seed: 9,
        speed: 600.0,
        start: chrono::Utc::now(),
        ssh_port: 0,
        http_port: 0,
        control_port: 0,
        syslog: vec![guard.syslog.iter().find(|u| u.starts_with("tcp")).unwrap().parse().unwrap()],
        state_dir: dir.path().join("sim"),
        rotate_host_key: false,
        credentials: Credentials { user: "admin".into(), password: "x".into(), authorized_keys: Vec::new() },
        lines_per_record: 5,
        restart_downtime: Duration::from_millis(100),
        address_per_server: false,
        warm_up: Duration::from_secs(6 * 3600),
        legacy_ssh: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let running = runtime.block_on(live::start(config)).unwrap();
    let control = running.endpoints.control;
    // Nobody joins any more: the counts settle to the leaks.
    super::control(control, r#"{"load_factor": 0}"#);
    let truth = || super::truth(control);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = truth();
        let quiet = now["servers"].as_array().unwrap().iter().all(|s| s["webbridge"]["real"] == 0);
        if quiet {
            break;
        }
        assert!(Instant::now() < deadline, "never quiet");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A few virtual minutes more for the next Stats of each.
    std::thread::sleep(Duration::from_secs(1));
    let truth = truth();
    for server in truth["servers"].as_array().unwrap() {
        let name = server["name"].as_str().unwrap();
        let active =
            guard.metric(&format!("wbguard_webbridge_active_sessions{{cluster=\"default\",webbridge=\"{name}\"}}"));
        assert_eq!(active, server["webbridge"]["active"].as_f64(), "{name}");
    }
    runtime.block_on(running.stop());
}

#[test]
#[ignore = "needs logger (util-linux): cargo xtask ci runs it"]
fn history_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let guard = Guard::start(&["--state-dir", s(&state)]);
    let udp = guard.port("udp");
    logger(
        &["--rfc3164", "-d", "-n", "127.0.0.1", "-P", &udp, "-t", "webbridge"],
        "INFO : [DEBUGGING] Stats 11, c:9, d:2",
    );
    let host = hostname();
    let short = host.split('.').next().unwrap().to_owned();
    assert_eq!(
        guard.metric(&format!("wbguard_webbridge_active_sessions{{cluster=\"default\",webbridge=\"{short}\"}}")),
        Some(11.0)
    );
    // Samples reach the disk within a decision round (5 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    while !guard.get("/api/history").contains("\"active\":11") {
        assert!(Instant::now() < deadline, "{}", guard.get("/api/history"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut guard = guard;
    guard.child.kill().unwrap(); // SIGKILL: no goodbye
    let _ = guard.child.wait();
    drop(guard);
    let again = Guard::start(&["--state-dir", s(&state)]);
    let history: Value = serde_json::from_str(&again.get("/api/history")).unwrap();
    let series = history["samples"].as_array().unwrap();
    let webbridge = series.iter().find(|s| s["kind"] == "webbridge").expect("a web bridge series");
    assert!(webbridge["points"].as_array().unwrap().iter().any(|p| p["active"] == 11), "{history}");
    assert!(again.get("/api/history?from=yesterday").contains("not an RFC 3339 time"));
    assert!(state.join("wbguard.sqlite").exists());
}

/// A simulated deployment sending its syslog to a guard, and the guard's
/// configuration for it.
pub fn simulated(
    guard_syslog: &str,
    servers: usize,
    speed: f64,
    leak: f64,
    dir: &std::path::Path,
    tune: impl FnOnce(&mut cms_sim::live::LiveConfig),
) -> (tokio::runtime::Runtime, cms_sim::live::Running, std::path::PathBuf) {
    simulated_with(guard_syslog, servers, speed, leak, dir, tune, Default::default())
}

/// [`simulated`], its call bridges posting CDRs and serving their API as
/// `calls` says.
pub fn simulated_with(
    guard_syslog: &str,
    servers: usize,
    speed: f64,
    leak: f64,
    dir: &std::path::Path,
    tune: impl FnOnce(&mut cms_sim::live::LiveConfig),
    calls: cms_sim::live::CallBridgeOptions,
) -> (tokio::runtime::Runtime, cms_sim::live::Running, std::path::PathBuf) {
    use cms_sim::live::{self, Credentials, LiveConfig};
    use cms_sim::scenario::Scenario;

    let key = dir.join("id");
    super::keygen(&key);
    let public = std::fs::read_to_string(dir.join("id.pub")).unwrap();
    let mut scenario = Scenario::with_servers(servers);
    scenario.leak_probability = leak;
    // The next 20:00 UTC: never behind the guard's clock (it refuses to
    // decide on old data), and the same nights whenever the test runs.
    // Weekends are as busy as weekdays.
    scenario.weekend_factor = 1.0;
    let now = chrono::Utc::now();
    let evening = now.date_naive().and_hms_opt(20, 0, 0).unwrap().and_utc();
    let start = if evening >= now { evening } else { evening + chrono::Duration::days(1) };
    let mut config = LiveConfig {
        scenario,
        seed: 21,
        speed,
        start,
        ssh_port: 0,
        http_port: 0,
        control_port: 0,
        syslog: vec![guard_syslog.parse().unwrap()],
        state_dir: dir.join("sim"),
        rotate_host_key: false,
        credentials: Credentials {
            user: "admin".into(),
            password: "unused".into(),
            authorized_keys: vec![russh::keys::PublicKey::from_openssh(public.trim()).unwrap()],
        },
        lines_per_record: 3,
        restart_downtime: Duration::from_millis(50),
        address_per_server: false,
        warm_up: Duration::ZERO,
        legacy_ssh: Vec::new(),
    };
    tune(&mut config);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let running = runtime.block_on(live::start_with(config, calls)).unwrap();
    let mut text = format!(
        "host_key_policy = \"accept-new\"\nknown_hosts = {:?}\nstate_dir = {:?}\n[auth]\nkey_file = {:?}\n",
        s(&dir.join("known_hosts")),
        s(&dir.join("guard")),
        s(&key)
    );
    for server in &running.endpoints.servers {
        text.push_str(&format!(
            "\n[[server]]\nname = {:?}\nmmp = \"{}\"\nlog_host = {:?}\n",
            server.name, server.ssh, server.name
        ));
    }
    let config = dir.join("wbguard.toml");
    std::fs::write(&config, text).unwrap();
    (runtime, running, config)
}

/// Two simulated days at 2,880 times real speed: without the guard the web
/// bridges would lock users out on the second day; with it in enforce
/// mode, each is restarted when that is harmless, nobody is refused and no
/// call is dropped.
#[test]
fn enforce_mode_keeps_every_web_bridge_open_without_dropping_a_call() {
    let dir = tempfile::tempdir().unwrap();
    // The configuration names the simulator's ports, so the simulator starts first.
    let port = super::free_port();
    // About 80 leaks a day per web bridge: a day's leaks and the busy hour
    // fit under the limit, two days' do not.
    let (runtime, running, config) = simulated(&format!("tcp://127.0.0.1:{port}"), 2, 2880.0, 0.12, dir.path(), |_| {});
    let guard = Guard::start(&[
        "--mode",
        "enforce",
        "--config",
        s(&config),
        "--state-dir",
        s(&dir.path().join("guard")),
        "--listen-syslog",
        &format!("tcp://127.0.0.1:{port}"),
        // The simulator runs faster than real time.
        "--clock",
        "data",
    ]);
    let control = running.endpoints.control;
    std::thread::sleep(Duration::from_secs(62));
    let truth = super::truth(control);
    let status: Value = serde_json::from_str(&guard.get("/api/status")).unwrap();
    runtime.block_on(running.stop());
    let totals = &truth["totals"];
    assert_eq!(totals["refused_joins"], 0, "{truth}\n{status}");
    assert_eq!(totals["dropped_calls"], 0, "{truth}");
    for server in truth["servers"].as_array().unwrap() {
        let restarts = server["webbridge"]["restarts"].as_array().unwrap();
        assert!(!restarts.is_empty(), "{} was never restarted: {truth}", server["name"]);
        assert!(restarts.iter().all(|r| r["dropped_real"] == 0));
    }
    let metrics = guard.get("/metrics");
    assert!(metrics.contains(r#"result="restarted"} "#) && metrics.contains(r#"result="verified"} "#), "{metrics}");
    let history: Value =
        serde_json::from_str(&guard.get("/api/history?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z")).unwrap();
    assert!(history["restarts"].as_array().unwrap().iter().all(|r| r["result"] == "restarted"), "{history}");
}

/// The same deployment watched in observe mode: decisions, no restarts.
#[test]
fn observe_mode_restarts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = super::free_port();
    let (runtime, running, config) = simulated(&format!("tcp://127.0.0.1:{port}"), 2, 2880.0, 0.25, dir.path(), |_| {});
    let guard = Guard::start(&[
        "--config",
        s(&config),
        "--listen-syslog",
        &format!("tcp://127.0.0.1:{port}"),
        "--clock",
        "data",
    ]);
    std::thread::sleep(Duration::from_secs(25));
    let truth = super::truth(running.endpoints.control);
    let status: Value = serde_json::from_str(&guard.get("/api/status")).unwrap();
    runtime.block_on(running.stop());
    assert_eq!(truth["totals"]["restarts"], 0, "{truth}");
    assert_eq!(status["mode"], "observe");
    // It found restarts needed (held for live calls, or due), and made none.
    let history: Value =
        serde_json::from_str(&guard.get("/api/history?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z")).unwrap();
    let needed = history["decisions"].as_array().unwrap().iter().filter(|d| d["action"] != "none").count();
    assert!(needed > 0, "no decision found a restart needed");
    assert!(history["restarts"].as_array().unwrap().is_empty());
}

/// Killed with SIGKILL while a restart hangs, the guard starts again, finds
/// the unfinished journal entry, records it as interrupted, and does not
/// restart that web bridge again within the minimum interval.
#[test]
fn a_guard_killed_mid_restart_loses_nothing_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, running, args) = night_with_a_slow_mmp(dir.path(), 60);
    let control = running.endpoints.control;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut guard = Guard::start(&args);
    wait_for_a_restart_in_flight(&guard);
    guard.child.kill().unwrap(); // SIGKILL, mid-restart
    let _ = guard.child.wait();
    drop(guard);
    super::control(control, r#"{"fault": {"server": "cms1", "fault": "none"}}"#);
    let before = super::truth(control)["totals"]["restarts"].clone();

    let again = Guard::start(&args);
    std::thread::sleep(Duration::from_secs(8));
    let restarts = restarts(&again);
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert_eq!(restarts[0]["result"], "interrupted");
    // Still needed, and safe, but within the minimum interval: held.
    assert_eq!(super::truth(control)["totals"]["restarts"], before);
    let status: Value = serde_json::from_str(&again.get("/api/status")).unwrap();
    let decision = &status["decisions"][0];
    assert_eq!(decision["action"], "hold", "{status}");
    assert!(decision["reason"].as_str().unwrap().contains("restarted"), "{decision}");
    runtime.block_on(running.stop());
}

/// SIGTERM in the middle of a restart: the guard lets it finish, journals
/// the outcome, then exits.
#[test]
fn a_guard_stopped_mid_restart_finishes_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, running, args) = night_with_a_slow_mmp(dir.path(), 4);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let guard = Guard::start(&args);
    wait_for_a_restart_in_flight(&guard);
    assert_eq!(guard.stop(), 0);
    assert_eq!(super::truth(running.endpoints.control)["totals"]["restarts"], 1);
    let observer = Guard::start(&args[2..]); // the same state, observe mode
    let restarts = restarts(&observer);
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert_eq!(restarts[0]["result"], "restarted", "{restarts:?}");
    runtime.block_on(running.stop());
}

/// One web bridge at 03:00 after a day of heavy leaks (full of proven leaks,
/// nobody in a call: a restart is needed and safe), whose MMP takes
/// `slow_seconds` to answer; and the guard's arguments for it (enforce mode).
fn night_with_a_slow_mmp(
    dir: &std::path::Path,
    slow_seconds: u32,
) -> (tokio::runtime::Runtime, cms_sim::live::Running, Vec<String>) {
    let port = super::free_port();
    let now = chrono::Utc::now();
    let night = now.date_naive().and_hms_opt(3, 0, 0).unwrap().and_utc();
    let start = if night >= now { night } else { night + chrono::Duration::days(1) };
    let (runtime, running, config) = simulated(&format!("tcp://127.0.0.1:{port}"), 1, 60.0, 0.6, dir, |c| {
        c.start = start;
        c.warm_up = Duration::from_secs(20 * 3600);
    });
    let fault = format!(r#"{{"fault": {{"server": "cms1", "fault": "slow", "seconds": {slow_seconds}}}}}"#);
    super::control(running.endpoints.control, &fault);
    let state = dir.join("guard");
    let args = [
        "--mode",
        "enforce",
        "--config",
        s(&config),
        "--state-dir",
        s(&state),
        "--listen-syslog",
        &format!("tcp://127.0.0.1:{port}"),
        // The simulator runs faster than real time.
        "--clock",
        "data",
    ];
    (runtime, running, args.iter().map(|a| a.to_string()).collect())
}

/// The guard's restarts, from its history.
pub fn restarts(guard: &Guard) -> Vec<Value> {
    let history: Value =
        serde_json::from_str(&guard.get("/api/history?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z")).unwrap();
    history["restarts"].as_array().unwrap().clone()
}

fn wait_for_a_restart_in_flight(guard: &Guard) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !restarts(guard).iter().any(|r| r["result"].is_null()) {
        assert!(Instant::now() < deadline, "no restart started: {}", guard.get("/api/status"));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `POST /api/restart` as the status page sends it; the status and the answer.
pub fn restart_now(guard: &Guard, token: Option<&str>, webbridge: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut request = agent.post(&format!("http://{}/api/restart", guard.http));
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.send_json(serde_json::json!({ "webbridge": webbridge })).unwrap();
    (response.status().as_u16(), response.body_mut().read_to_string().unwrap())
}

/// The page's "restart now": refused without the token, and without a
/// token configured at all; with it, in enforce mode, the web bridge is
/// restarted through the same journal and machinery, and a second press
/// within `min_interval` is refused with 409 and the time it is allowed
/// again. A stranger's body is never read: a forged name is not logged.
#[test]
fn restart_now_needs_the_token_and_enforce_mode() {
    let plain = Guard::start(&[]);
    assert_eq!(restart_now(&plain, Some("x"), "cms1").0, 403);
    let status: Value = serde_json::from_str(&plain.get("/api/status")).unwrap();
    assert_eq!(status["restart_now"], false);
    drop(plain);

    let dir = tempfile::tempdir().unwrap();
    let port = super::free_port();
    let (runtime, running, config) = simulated(&format!("tcp://127.0.0.1:{port}"), 1, 60.0, 0.3, dir.path(), |_| {});
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[watch]\nrestart_token_env = \"WBGUARD_TEST_RESTART_TOKEN\"\n");
    std::fs::write(&config, text).unwrap();
    let token = "a-long-operator-token-0123";
    std::env::set_var("WBGUARD_TEST_RESTART_TOKEN", token);
    let log = dir.path().join("guard.log");
    let guard = Guard::start_with_stderr(
        &[
            "--mode",
            "enforce",
            "--config",
            s(&config),
            "--listen-syslog",
            &format!("tcp://127.0.0.1:{port}"),
            // The simulator runs faster than real time.
            "--clock",
            "data",
        ],
        std::fs::File::create(&log).unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status: Value = serde_json::from_str(&guard.get("/api/status")).unwrap();
        if status["decisions"].as_array().is_some_and(|d| !d.is_empty()) {
            assert_eq!(status["restart_now"], true);
            break;
        }
        assert!(Instant::now() < deadline, "no data: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(restart_now(&guard, None, "cms1").0, 401);
    assert_eq!(restart_now(&guard, Some("a-long-operator-token-0124"), "cms1").0, 401);
    let forged = "cms1\n2026-03-05T00:00:00Z WARN wbguard: forged";
    assert_eq!(restart_now(&guard, Some("a-long-operator-token-0124"), forged).0, 401);
    let (code, answer) = restart_now(&guard, Some(token), forged);
    assert_eq!(
        (code, answer.as_str()),
        (404, "no web bridge \"cms1\\n2026-03-05T00:00:00Z WARN wbguard: forged\" in the guard's data\n")
    );
    assert_eq!(restart_now(&guard, Some(token), "cms9").0, 404);
    let control = running.endpoints.control;
    assert_eq!(super::truth(control)["totals"]["restarts"], 0);
    // Names are one whatever their case.
    let (code, answer) = restart_now(&guard, Some(token), "CMS1");
    assert_eq!(code, 202, "{answer}");
    assert!(answer.contains("restarting cms1"), "{answer}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while super::truth(control)["totals"]["restarts"] != 1 {
        assert!(Instant::now() < deadline, "not restarted: {}", super::truth(control));
        std::thread::sleep(Duration::from_millis(200));
    }
    let restarts = restarts(&guard);
    assert!(restarts[0]["reason"].as_str().unwrap().contains("operator"), "{restarts:?}");
    // Pressed again once the first has ended: too soon for min_interval.
    let deadline = Instant::now() + Duration::from_secs(30);
    while self::restarts(&guard)[0]["result"].is_null() {
        assert!(Instant::now() < deadline, "the restart never ended: {:?}", self::restarts(&guard));
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(8));
    let (code, answer) = restart_now(&guard, Some(token), "cms1");
    assert_eq!(code, 409, "{answer}");
    assert!(answer.contains("min_interval is 60 min: allowed again in"), "{answer}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(super::truth(control)["totals"]["restarts"], 1, "{}", super::truth(control));
    assert_eq!(self::restarts(&guard).len(), 1);
    runtime.block_on(running.stop());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("restart now: refused, wrong or missing token"), "{log}");
    assert!(!log.contains("forged"), "{log}");
}
