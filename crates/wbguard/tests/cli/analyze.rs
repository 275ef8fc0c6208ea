//! `wbguard analyze` end to end: logs written by the simulator, and the
//! simulator's truth to score against.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cms_sim::genlog::{self, GenOptions, Summary};
use cms_sim::scenario::Scenario;
use cms_sim::syslog::HeaderShape;
use serde_json::Value;

use super::{s, wbguard};

// ---- harness ---------------------------------------------------------------

/// Runs `wbguard analyze --format json ARGS`, returns the exit code and report.
fn analyze_json(args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["analyze", "--format", "json"];
    all.extend_from_slice(args);
    let output = wbguard(&all, None);
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)));
    (output.status.code().unwrap(), report, String::from_utf8_lossy(&output.stderr).into_owned())
}

fn options(servers: usize, hours: i64) -> GenOptions {
    GenOptions {
        scenario: Scenario::with_servers(servers),
        seed: 11,
        start: Utc.with_ymd_and_hms(2024, 3, 4, 0, 0, 0).unwrap(),
        duration: Some(Duration::hours(hours)),
        max_bytes: None,
        lines_per_record: 10,
        header: None,
        restarts: Vec::new(),
    }
}

struct Generated {
    log: Vec<u8>,
    truth: Vec<Value>,
    summary: Summary,
}

fn generate(options: &GenOptions) -> Generated {
    let mut log = Vec::new();
    let mut truth = Vec::new();
    let summary = genlog::generate(options, &mut log, Some(&mut truth)).unwrap();
    let truth =
        truth.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
    Generated { log, truth, summary }
}

/// Writes a log file whose modification time is `modified`, as a real one's is.
fn write_log(dir: &Path, name: &str, bytes: &[u8], modified: DateTime<Utc>) -> PathBuf {
    let path = dir.join(name);
    let mut file = File::create(&path).unwrap();
    file.write_all(bytes).unwrap();
    file.set_modified(modified.into()).unwrap();
    path
}

fn webbridge<'a>(report: &'a Value, host: &str) -> &'a Value {
    report["webbridges"].as_array().unwrap().iter().find(|w| w["host"] == host).unwrap_or_else(|| panic!("no {host}"))
}

/// The truth at each web bridge's last Stats line.
fn last_truth<'a>(truth: &'a [Value], host: &str) -> &'a Value {
    truth.iter().rev().find(|t| t["type"] == "webbridge" && t["host"] == host).unwrap()
}

// ---- the report against the truth -----------------------------------------

#[test]
fn the_report_contains_the_truth_and_finds_every_restart() {
    let mut options = options(3, 4 * 24);
    options.scenario.leak_probability = 0.05;
    options.scenario.desktop_share = 0.2;
    options.restarts = vec!["sat 02:00".parse().unwrap(), "wed 13:00".parse().unwrap()];
    options.start = Utc.with_ymd_and_hms(2024, 3, 5, 0, 0, 0).unwrap(); // Tuesday
    let generated = generate(&options);
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), "cms.log", &generated.log, generated.summary.end);

    let (code, report, _) = analyze_json(&[s(&path)]);
    assert_eq!(code, 0);
    assert_eq!(report["lines"]["total"], generated.summary.lines);
    assert_eq!(report["lines"]["records"], generated.summary.records);
    assert_eq!(report["lines"]["malformed"], 0);
    assert_eq!(report["webbridges"].as_array().unwrap().len(), 3);
    assert_eq!(report["callbridges"].as_array().unwrap().len(), 3);
    let mut lower_total = 0;
    for host in ["cms1", "cms2", "cms3"] {
        let wb = webbridge(&report, host);
        let truth = last_truth(&generated.truth, host);
        let leaked = truth["leaked"].as_u64().unwrap();
        assert!(wb["leaked_lower"].as_u64().unwrap() <= leaked, "{host}: {wb} vs {truth}");
        assert!(leaked <= wb["leaked_upper"].as_u64().unwrap(), "{host}: {wb} vs {truth}");
        assert_eq!(wb["last"]["active"], truth["active"]);
        lower_total += wb["leaked_lower"].as_u64().unwrap();
        // Wednesday 13:00 only: the simulated Saturday is not reached.
        let restarts: Vec<&Value> =
            generated.truth.iter().filter(|t| t["type"] == "restart" && t["host"] == host).collect();
        assert_eq!(restarts.len(), 1);
        assert_eq!(wb["restarts"].as_array().unwrap().len(), 1, "{host}: {}", wb["restart_details"]);
        // Some header shapes drop the milliseconds.
        let time = |v: &Value| DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
        let off = time(&restarts[0]["time"]) - time(&wb["restarts"][0]);
        assert!(off >= Duration::zero() && off < Duration::seconds(1), "{host}: {off}");
        assert_eq!(wb["restart_details"][0]["by"], "admin");
        assert!(wb["leak_rate_per_day"].as_f64().unwrap() > 0.0);
        for field in ["samples", "first_seen", "last_seen", "max_active", "minutes_at_limit", "lockout_forecast"] {
            assert!(wb.get(field).is_some(), "{field}");
        }
    }
    let cluster = &report["cluster"];
    assert!(cluster["leaked_lower"].as_u64().unwrap() >= lower_total);
    assert!(cluster["leaked_upper"].as_u64().unwrap() >= cluster["leaked_lower"].as_u64().unwrap());
    for field in ["active_total", "cma_total"] {
        assert!(cluster.get(field).is_some(), "{field}");
    }
    let cb = &report["callbridges"][0];
    for field in ["time", "cma_current", "cma_peak", "call_legs_current", "call_legs_peak"] {
        assert!(cb["last"].get(field).is_some(), "{field}");
    }
    // Times are RFC 3339 in UTC.
    let first_seen = webbridge(&report, "cms1")["first_seen"].as_str().unwrap();
    assert!(first_seen.starts_with("2024-03-05T00:") && first_seen.ends_with('Z'), "{first_seen}");
}

#[test]
fn every_header_shape_is_read() {
    let dir = tempfile::tempdir().unwrap();
    for shape in ["wire", "mmp", "bsd-ms", "iso", "relay", "container"] {
        let mut options = options(2, 6);
        options.header = Some(shape.parse::<HeaderShape>().unwrap());
        options.restarts = vec!["03:00".parse().unwrap()];
        let generated = generate(&options);
        let path = write_log(dir.path(), shape, &generated.log, generated.summary.end);
        let (code, report, _) = analyze_json(&[s(&path)]);
        assert_eq!(code, 0, "{shape}");
        assert_eq!(report["lines"]["records"], generated.summary.records, "{shape}");
        assert_eq!(report["lines"]["malformed"], 0, "{shape}");
        let hosts: Vec<&str> =
            report["webbridges"].as_array().unwrap().iter().map(|w| w["host"].as_str().unwrap()).collect();
        assert_eq!(hosts, ["cms1", "cms2"], "{shape}");
        assert_eq!(webbridge(&report, "cms1")["restarts"].as_array().unwrap().len(), 1, "{shape}");
    }
}

#[test]
fn several_files_rotated_and_gzipped_merge_to_the_same_report() {
    let generated = generate(&options(3, 30));
    let end = generated.summary.end;
    let dir = tempfile::tempdir().unwrap();
    let whole = write_log(dir.path(), "all.log", &generated.log, end);
    let (_, expected, _) = analyze_json(&[s(&whole)]);

    // One file per server, one of them gzipped; named in any order.
    let mut per_host: Vec<Vec<u8>> = vec![Vec::new(); 3];
    for line in generated.log.split_inclusive(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line);
        let host = (1..=3).find(|i| text.contains(&format!(" cms{i} "))).unwrap();
        per_host[host - 1].extend_from_slice(line);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&per_host[1]).unwrap();
    let cms1 = write_log(dir.path(), "cms1.log", &per_host[0], end);
    let cms2 = write_log(dir.path(), "cms2.log.gz", &gz.finish().unwrap(), end);
    let cms3 = write_log(dir.path(), "cms3.log", &per_host[2], end);
    let (code, split, _) = analyze_json(&["--threads", "2", s(&cms3), s(&cms1), s(&cms2)]);
    assert_eq!(code, 0);
    assert_eq!(split["webbridges"], expected["webbridges"]);
    assert_eq!(split["cluster"], expected["cluster"]);
    assert_eq!(split["lines"]["total"], expected["lines"]["total"]);

    // Rotated: the older half in all.log.1, named after the newer half.
    let half = generated.log.len() / 2;
    let cut = half + generated.log[half..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let old = write_log(dir.path(), "all.log.1", &generated.log[..cut], end);
    let new = write_log(dir.path(), "all.log", &generated.log[cut..], end);
    let (_, rotated, _) = analyze_json(&[s(&new), s(&old)]);
    assert_eq!(rotated["webbridges"], expected["webbridges"]);

    // And through standard input.
    let output = wbguard(&["analyze", "--format", "json", "-"], Some(&generated.log));
    let piped: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(piped["lines"], expected["lines"]);
    assert_eq!(piped["webbridges"].as_array().unwrap().len(), 3);
}

// ---- bad input ---------------------------------------------------------------

#[test]
fn a_missing_file_is_named_and_the_others_are_still_analysed() {
    let generated = generate(&options(1, 3));
    let dir = tempfile::tempdir().unwrap();
    let good = write_log(dir.path(), "good.log", &generated.log, generated.summary.end);
    let missing = dir.path().join("missing.log");
    let (code, report, stderr) = analyze_json(&[s(&missing), s(&good), s(dir.path())]);
    assert_eq!(code, 2);
    assert!(stderr.contains("missing.log") && stderr.contains("no such file"), "{stderr}");
    assert!(stderr.contains("is a directory"), "{stderr}");
    assert_eq!(report["errors"].as_array().unwrap().len(), 2);
    assert_eq!(report["lines"]["records"], generated.summary.records);
    assert_eq!(report["webbridges"].as_array().unwrap().len(), 1);
}

#[test]
fn garbage_truncated_gzip_and_huge_lines_are_counted_not_fatal() {
    let generated = generate(&options(1, 3));
    let end = generated.summary.end;
    let dir = tempfile::tempdir().unwrap();

    // Binary garbage between good lines.
    let mut garbage: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    garbage.extend_from_slice(
        b"\n<14>Mar  4 00:00:03.000 user.info cms1 webbridge: INFO : [DEBUGGING] Stats 7, c:x, d:1\n",
    );
    let mut mixed = generated.log.clone();
    mixed.extend_from_slice(&garbage);
    // A 10 MB line, then the log once more.
    mixed.extend(std::iter::repeat_n(b'Z', 10 << 20));
    mixed.push(b'\n');
    mixed.extend_from_slice(&generated.log);
    let path = write_log(dir.path(), "mixed.log", &mixed, end);
    let (code, report, _) = analyze_json(&[s(&path)]);
    assert_eq!(code, 0);
    assert_eq!(report["lines"]["records"].as_u64().unwrap(), 2 * generated.summary.records);
    assert_eq!(report["lines"]["malformed_by_reason"]["stats_number"], 1);
    assert_eq!(report["lines"]["overlong"], 1);

    // A gzip file cut short: what was read counts, the file is named.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&generated.log).unwrap();
    let compressed = gz.finish().unwrap();
    let truncated = write_log(dir.path(), "cut.log.gz", &compressed[..compressed.len() / 2], end);
    let (code, report, stderr) = analyze_json(&[s(&truncated)]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cut.log.gz"), "{stderr}");
    let records = report["lines"]["records"].as_u64().unwrap();
    assert!(records > 0 && records < generated.summary.records, "{records}");
    // The lines read are those of the whole input.
    let read = format!("read failed after {} lines", report["lines"]["total"]);
    assert!(report["errors"][0].as_str().unwrap().contains(&read), "{report}");

    // Empty input is a valid, empty report.
    let empty = write_log(dir.path(), "empty.log", b"", end);
    let (code, report, _) = analyze_json(&[s(&empty)]);
    assert_eq!(code, 0);
    assert_eq!(report["lines"]["total"], 0);
    assert_eq!(report["webbridges"], Value::Array(Vec::new()));
    assert_eq!(report["now"], Value::Null);
}

#[test]
fn bad_options_exit_2_with_a_clear_message() {
    let output = wbguard(&["analyze", "--tz", "Mars/Olympus", "-"], Some(b""));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("Mars/Olympus"));
    let output = wbguard(&["analyze"], None);
    assert_eq!(output.status.code(), Some(2));
}

// ---- options and formats -------------------------------------------------------

#[test]
fn host_time_zone_and_year_options() {
    let dir = tempfile::tempdir().unwrap();
    // No host in the lines; local Berlin time; written on 2 January 2025.
    let lines = b"Dec 31 23:59:00 webbridge: INFO : [DEBUGGING] Stats 5, c:9, d:4\n\
                  2025-01-01T10:00:00.500 user.info cms9 webbridge: INFO : [DEBUGGING] Stats 6, c:10, d:4\n";
    let written = Utc.with_ymd_and_hms(2025, 1, 2, 8, 0, 0).unwrap();
    let path = write_log(dir.path(), "old.log", lines, written);
    let (_, report, _) = analyze_json(&[s(&path)]);
    assert_eq!(report["lines"]["malformed_by_reason"]["host"], 1);
    let (_, report, _) = analyze_json(&["--host", "cms7", "--tz", "Europe/Berlin", s(&path)]);
    let cms7 = webbridge(&report, "cms7");
    assert_eq!(cms7["first_seen"], "2024-12-31T22:59:00Z");
    assert_eq!(webbridge(&report, "cms9")["last"]["time"], "2025-01-01T09:00:00.500Z");
}

#[test]
fn table_csv_and_chart() {
    let mut options = options(2, 30);
    options.restarts = vec!["02:00".parse().unwrap()];
    let generated = generate(&options);
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), "cms.log", &generated.log, generated.summary.end);
    let chart = dir.path().join("chart.svg");

    let output = wbguard(&["analyze", "--format", "table", "--plot", s(&chart), s(&path)], None);
    assert_eq!(output.status.code(), Some(0));
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("WEB BRIDGE") && table.contains("cms2") && table.contains("cluster:"), "{table}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches(r#"class="active""#).count(), 2);
    assert_eq!(svg.matches(r#"class="leak-lower""#).count(), 2);
    // Two nights at 02:00, two web bridges.
    assert_eq!(svg.matches(r#"class="restart""#).count(), 4);
    assert!(svg.contains(r#"class="cma""#) && svg.contains(r#"class="limit""#));

    let output = wbguard(&["analyze", "--format", "csv", s(&path)], None);
    let csv = String::from_utf8(output.stdout).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3);
    assert!(rows[0].starts_with("host,samples,first_seen,last_seen"));
    assert!(rows[1].starts_with("cms1,") && rows[2].starts_with("cms2,"));
    assert_eq!(rows[1].split(',').count(), rows[0].split(',').count());

    // Not a terminal, no --format: JSON.
    let output = wbguard(&["analyze", s(&path)], None);
    assert!(serde_json::from_slice::<Value>(&output.stdout).is_ok());
}

#[test]
fn the_built_in_example_runs() {
    let output = wbguard(&["analyze", "--example", "--format", "table"], None);
    assert_eq!(output.status.code(), Some(0));
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("cms4"), "{table}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("truth"));
}

// ---- the live simulator's syslog, received by netcat --------------------------------

/// `cms-sim run` (in-process) sends syslog over TCP to `nc`; `wbguard
/// analyze` reads what nc received and must find the truth API's numbers.
#[test]
#[ignore = "needs nc and ssh (netcat-openbsd, openssh-client): cargo xtask ci runs it"]
fn analyze_agrees_with_the_live_simulators_truth() {
    use cms_sim::live::{self, Credentials, LiveConfig};
    use std::io::Read;

    let dir = tempfile::tempdir().unwrap();
    let port = super::free_port();
    let received = dir.path().join("received.log");
    let mut nc = Command::new("nc")
        .args(["-l", "127.0.0.1", &port.to_string()])
        .stdout(File::create(&received).unwrap())
        .spawn()
        .expect("nc (apt-get install netcat-openbsd)");
    std::thread::sleep(std::time::Duration::from_millis(300));

    let key = dir.path().join("id_test");
    super::keygen(&key);
    let public = std::fs::read_to_string(dir.path().join("id_test.pub")).unwrap();
    let mut scenario = Scenario::with_servers(3);
    scenario.leak_probability = 0.3;
    scenario.desktop_share = 0.2;
    scenario.weekend_factor = 1.0;
    let today = Utc::now().date_naive().and_hms_opt(9, 0, 0).unwrap().and_utc();
    let config = LiveConfig {
        scenario,
        seed: 5,
        speed: 3600.0,
        start: today,
        ssh_port: 0,
        http_port: 0,
        control_port: 0,
        syslog: vec![format!("tcp://127.0.0.1:{port}").parse().unwrap()],
        state_dir: dir.path().join("state"),
        rotate_host_key: false,
        credentials: Credentials {
            user: "admin".into(),
            password: "not-used".into(),
            authorized_keys: vec![russh_key(&public)],
        },
        lines_per_record: 5,
        restart_downtime: std::time::Duration::from_millis(500),
        address_per_server: false,
        warm_up: std::time::Duration::ZERO,
        legacy_ssh: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let running = runtime.block_on(live::start(config)).unwrap();
    let control = running.endpoints.control;
    let ssh_port = running.endpoints.servers[1].ssh.port();
    let truth = || super::truth(control);

    // Two busy virtual hours, a restart of cms2 by SSH, then nobody joins.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let restart = Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-i"])
        .arg(&key)
        .args(["-p", &ssh_port.to_string(), "admin@127.0.0.1", "webbridge restart"])
        .output()
        .expect("ssh (apt-get install openssh-client)");
    assert!(restart.status.success(), "{}", String::from_utf8_lossy(&restart.stderr));
    std::thread::sleep(std::time::Duration::from_secs(1));
    super::control(control, r#"{"load_factor": 0}"#);
    // Sessions last at most six virtual hours: then only leaks remain.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = truth();
        let quiet = now["servers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["webbridge"]["real"] == 0 && s["callbridge"]["cma"] == 0);
        if quiet {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never quiet: {now}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A virtual hour more, so that every Stats line and call bridge report
    // after the last session is out.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let truth = truth();
    runtime.block_on(running.stop());
    let _ = nc.wait();
    let mut log = String::new();
    File::open(&received).unwrap().read_to_string(&mut log).unwrap();
    assert!(log.lines().count() > 1000, "{} lines", log.lines().count());

    let (code, report, stderr) = analyze_json(&[s(&received)]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["lines"]["malformed"], 0);
    for server in truth["servers"].as_array().unwrap() {
        let host = server["name"].as_str().unwrap();
        let wb = webbridge(&report, host);
        let leaked = &server["webbridge"]["leaked"];
        assert!(leaked.as_u64().unwrap() > 0, "{host} leaked nothing");
        assert_eq!(&wb["last"]["active"], leaked, "{host}");
        assert_eq!(&wb["leaked_lower"], leaked, "{host}");
        assert_eq!(&wb["leaked_upper"], leaked, "{host}");
        let restarts = server["webbridge"]["restarts"].as_array().unwrap();
        assert_eq!(wb["restarts"].as_array().unwrap().len(), restarts.len(), "{host}");
        for (seen, real) in wb["restarts"].as_array().unwrap().iter().zip(restarts) {
            let time = |v: &Value| DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
            let off = (time(&real["time"]) - time(seen)).num_milliseconds().abs();
            assert!(off < 1000, "{host}: restart at {seen} vs {}", real["time"]);
        }
    }
    assert_eq!(webbridge(&report, "cms2")["restarts"].as_array().unwrap().len(), 1);
}

fn russh_key(line: &str) -> russh::keys::PublicKey {
    russh::keys::PublicKey::from_openssh(line.trim()).unwrap()
}

/// `wbguard analyze ... | head -1`: the reader goes away after one line and
/// analyze ends quietly, as `cat` would (SIGPIPE), instead of panicking on
/// "failed printing to stdout".
#[test]
fn a_reader_that_goes_away_ends_analyze_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("many.log");
    // Enough web bridges for a table far larger than a pipe holds.
    let lines: String = (0..4000)
        .map(|i| format!("2026-03-05T10:00:00Z cms{i} webbridge: INFO : [DEBUGGING] Stats 3, c:9, d:6\n"))
        .collect();
    std::fs::write(&log, lines).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wbguard"))
        .args(["analyze", "--format", "table", super::s(&log)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(!first.is_empty());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(13), "{:?} {stderr}", out.status);
}
