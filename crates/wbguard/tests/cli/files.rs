//! Hostile paths and hostile text, end to end: the files wbguard writes
//! are never written through a planted link or into a device; host names
//! with terminal escapes, newlines or spreadsheet formulas are shown
//! escaped in tables, CSV, `wbguard status` and the guard's log; `CMS1`
//! and `cms1` are one host; a directory is not followed; Cisco's script is
//! read with a bound.

use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::fs::{symlink, FileTypeExt};
use std::path::Path;
use std::time::{Duration, Instant};

use super::watch::Guard;
use super::{s, wbguard};

/// A web bridge Stats line from `host`, stamped now.
fn stats(host: &str, active: u32) -> String {
    format!(
        "<14>{} {host} webbridge: INFO : [DEBUGGING] Stats {active}, c:{}, d:5",
        chrono::Utc::now().format("%b %e %H:%M:%S"),
        active + 5
    )
}

/// A log of a few records from `hosts`.
fn log(dir: &Path, hosts: &[&str]) -> std::path::PathBuf {
    let path = dir.join("cms.log");
    let mut file = std::fs::File::create(&path).unwrap();
    for (i, host) in hosts.iter().enumerate() {
        writeln!(file, "{}", stats(host, 10 + i as u32)).unwrap();
    }
    path
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Polls `what` for up to 20 s until `done` holds of it.
fn wait_until(what: impl Fn() -> String, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = what();
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never came:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_plot_into_a_device_is_refused_and_the_device_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path(), &["cms1"]);
    let output = wbguard(&["analyze", "--format", "json", "--plot", "/dev/full", s(&path)], None);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("/dev/full") && stderr(&output).contains("a device"), "{}", stderr(&output));
    assert!(std::fs::symlink_metadata("/dev/full").unwrap().file_type().is_char_device());
}

#[test]
fn a_planted_link_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path(), &["cms1"]);
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    // The old name of the temporary file, planted beside the chart.
    let chart = dir.path().join("out.svg");
    symlink(&victim, dir.path().join("out.svg.tmp")).unwrap();
    let output = wbguard(&["analyze", "--format", "json", "--plot", s(&chart), s(&path)], None);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(std::fs::read_to_string(&chart).unwrap().starts_with("<svg"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    // The chart itself a link: refused, not written through, not replaced.
    let linked = dir.path().join("linked.svg");
    symlink(&victim, &linked).unwrap();
    let output = wbguard(&["analyze", "--format", "json", "--plot", s(&linked), s(&path)], None);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("linked.svg") && stderr(&output).contains("a symbolic link"));
    assert!(std::fs::symlink_metadata(&linked).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    // No temporary file left behind, whatever happened.
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["cms.log", "linked.svg", "out.svg", "out.svg.tmp", "victim.txt"]);
}

#[test]
fn the_restart_log_is_not_appended_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    symlink(&victim, state.join("webbridge_restart_logs.txt")).unwrap();
    let config = dir.path().join("wbguard.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[auth]\npassword_env = \"WBGUARD_TEST_UNSET\"\n\
             [[server]]\nname = \"cms1\"\nmmp = \"127.0.0.1:1\"\n",
            s(&state)
        ),
    )
    .unwrap();
    let output = wbguard(&["--config", s(&config), "restart", "--force"], None);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("webbridge_restart_logs.txt") && stderr(&output).contains("a symbolic link"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn hostile_host_names_are_escaped_in_the_table_and_neutralised_in_csv() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path(), &["\u{1b}]0;pwned\u{7}cms9", "=HYPERLINK(\"http://evil/\")", "CMS1", "cms1"]);
    let output = wbguard(&["analyze", "--format", "table", s(&path)], None);
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(!table.contains('\u{1b}') && !table.contains('\u{7}'), "{table:?}");
    assert!(table.contains("\\u{1b}]0;pwned\\u{7}cms9"), "{table}");
    // One web bridge cms1, whatever the case its lines were written in.
    assert!(!table.contains("CMS1") && table.lines().filter(|l| l.starts_with("cms1 ")).count() == 1, "{table}");

    let output = wbguard(&["analyze", "--format", "csv", s(&path)], None);
    let csv = String::from_utf8(output.stdout).unwrap();
    let hosts: Vec<&str> = csv.lines().skip(1).map(|row| row.rsplitn(17, ',').last().unwrap()).collect();
    assert_eq!(hosts, ["\\u{1b}]0;pwned\\u{7}cms9", "\"'=hyperlink(\"\"http://evil/\"\")\"", "cms1"], "{csv}");
}

#[test]
fn status_and_the_guards_log_show_hostile_text_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("guard.log");
    // A followed path with a newline and an escape: its "waiting for it"
    // line must stay one line, and not drive the terminal.
    let forged = dir.path().join("cms\u{1b}[2J\n2026-01-01T00:00:00Z ERROR forged.log");
    let guard = Guard::start_with_stderr(&["--follow", s(&forged)], std::fs::File::create(&log).unwrap());
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = format!("127.0.0.1:{}", guard.port("udp"));
    for line in [stats("\u{1b}]0;pwned\u{7}cms9", 20), stats("CMS1", 30), stats("cms1", 31)] {
        socket.send_to(line.as_bytes(), &to).unwrap();
    }
    let url = format!("http://{}", guard.http);
    let status = wait_until(
        || String::from_utf8_lossy(&wbguard(&["status", "--url", &url], None).stdout).into_owned(),
        |text| text.contains("\\u{1b}]0;pwned\\u{7}cms9") && text.contains("cms1") && text.contains("31"),
    );
    assert!(!status.contains('\u{1b}'), "{status:?}");
    assert!(!status.contains("CMS1"), "{status}");
    assert!(!guard.get("/metrics").contains("webbridge=\"CMS1\""));

    let text = wait_until(|| std::fs::read_to_string(&log).unwrap(), |text| text.contains("cannot follow"));
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(text.contains("cms\\u{1b}[2J\\n2026-01-01T00:00:00Z ERROR forged.log"), "{text}");
    assert!(!text.lines().any(|line| line.starts_with("2026-01-01")), "{text}");
}

/// `restart --stats` finds a server's sessions whatever the case of its
/// `log_host` and of the host name in its lines.
#[test]
fn a_host_is_one_whatever_its_case_for_restart_too() {
    let dir = tempfile::tempdir().unwrap();
    let stats_log = log(dir.path(), &["Cms1"]);
    let config = dir.path().join("wbguard.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[auth]\npassword_env = \"WBGUARD_TEST_UNSET\"\n\
             [[server]]\nname = \"one\"\nlog_host = \"CMS1\"\nmmp = \"127.0.0.1:1\"\n",
            s(&dir.path().join("state"))
        ),
    )
    .unwrap();
    let output = wbguard(&["--config", s(&config), "restart", "--stats", s(&stats_log)], None);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("one: up to 10 live call(s) could be dropped (10 sessions"), "{stdout}{}", stderr(&output));
}

#[test]
fn a_directory_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let output = wbguard(
        &[
            "watch",
            "--listen-http",
            "127.0.0.1:0",
            "--state-dir",
            s(&dir.path().join("state")),
            "--follow",
            s(dir.path()),
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains(s(dir.path())) && stderr(&output).contains("is a directory"));

    // A followed file that becomes a directory is said once, not four times a second.
    let path = dir.path().join("cms.log");
    std::fs::write(&path, format!("{}\n", stats("cmsfile", 10))).unwrap();
    let log = dir.path().join("guard.log");
    let guard = Guard::start_with_stderr(&["--follow", s(&path)], std::fs::File::create(&log).unwrap());
    guard.wait_for("wbguard_webbridge_active_sessions{cluster=\"default\",webbridge=\"cmsfile\"}", 10.0);
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    wait_until(|| std::fs::read_to_string(&log).unwrap(), |text| text.contains("it is a directory"));
    // Eight rounds of the follower's poll.
    std::thread::sleep(Duration::from_secs(2));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("is a directory").count(), 1, "{text}");
    assert_eq!(text.matches(" WARN ").count(), 1, "{text}");
}

#[test]
fn an_endless_cisco_script_is_refused_at_a_bound() {
    let output = wbguard(&["config", "import-cisco-script", "/dev/zero"], None);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("/dev/zero") && stderr(&output).contains("larger than"), "{}", stderr(&output));
}
