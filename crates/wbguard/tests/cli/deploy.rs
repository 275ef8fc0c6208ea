//! What ships beside the binary: shell completions and manual pages made
//! from the command line's own definitions, and the Prometheus alert rules
//! and Grafana dashboard in `deploy/`, which must only use metrics a
//! running guard exports; and those metrics, as Prometheus's own
//! `promtool` reads them.

use std::collections::BTreeSet;

use super::watch::Guard;
use super::{s, wbguard};

#[test]
fn completions_and_manual_pages_come_from_the_command_line() {
    for shell in ["bash", "zsh", "fish"] {
        let out = wbguard(&["completions", shell], None);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("demo") && text.contains("listen-syslog"), "{shell}: {text}");
    }
    assert_eq!(wbguard(&["completions", "tcsh"], None).status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    assert!(wbguard(&["man", "--dir", s(dir.path())], None).status.success());
    let watch = std::fs::read_to_string(dir.path().join("wbguard-watch.1")).unwrap();
    assert!(watch.starts_with(".ie") && watch.contains("wbguard\\-watch") && watch.contains("listen\\-syslog"));
    for page in ["wbguard.1", "wbguard-analyze.1", "wbguard-restart.1", "wbguard-demo.1"] {
        assert!(dir.path().join(page).exists(), "{page}");
    }
}

/// Every `wbguard_...` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("wbguard_") {
        let name: String =
            rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[test]
fn alert_rules_and_the_dashboard_use_only_exported_metrics() {
    let guard = Guard::start(&[]);
    let exported: BTreeSet<String> = guard
        .get("/metrics")
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    assert!(exported.len() >= 8, "{exported:?}");
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let rules = std::fs::read_to_string(deploy.join("prometheus-alerts.yml")).unwrap();
    let dashboard = std::fs::read_to_string(deploy.join("grafana-dashboard.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().unwrap().len() >= 6);
    for (file, text) in [("prometheus-alerts.yml", &rules), ("grafana-dashboard.json", &dashboard)] {
        let used = metric_names(text);
        assert!(!used.is_empty());
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(unknown.is_empty(), "{file} uses metrics the guard does not export: {unknown:?}");
    }
    for alert in ["WbguardLeakRising", "WbguardLockoutWithin24h", "WbguardRestartFailed", "WbguardNoStats"] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
}

/// The unit gives the guard room for its connection bounds and the
/// descriptors it keeps (the default 1,024 is tight, and the guard only
/// raises its soft limit up to the hard one).
#[test]
fn the_unit_sets_a_file_limit_above_the_guards_needs() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let unit = std::fs::read_to_string(deploy.join("wbguard.service")).unwrap();
    let limit: u32 = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("LimitNOFILE in the unit")
        .parse()
        .expect("a number");
    // HTTP, TCP and TLS syslog at 256 each (and one more each), 64 kept, and
    // what the process opens itself.
    assert!(limit >= 3 * 257 + 64 + 100, "LimitNOFILE={limit}");
}

#[test]
fn the_documented_example_configuration_is_valid() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let text = std::fs::read_to_string(docs).unwrap();
    let example = text.rsplit("```toml\n").next().unwrap().split("```").next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, example).unwrap();
    let out = super::wbguard_env(
        &["config", "check", "--config", s(&config)],
        None,
        &[("WBGUARD_RESTART_TOKEN", "a-token-of-sixteen-or-more"), ("WBGUARD_WEBEX_HOOK", "https://webexapis.com/x")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("2 server(s)") && stdout.contains("\"mode\": \"enforce\""), "{stdout}");
    assert!(!stdout.contains("a-token-of-sixteen") && !stdout.contains("webexapis.com/x"), "{stdout}");
}

/// One HTTP/1.0 GET with an `Accept` header: the response's head and body.
fn get_accepting(address: std::net::SocketAddr, path: &str, accept: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nAccept: {accept}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_ascii_lowercase(), body.to_owned())
}

/// A running guard's `/metrics`, with data in it, passes
/// `promtool check metrics` (the Prometheus project's own linter); a
/// scraper that asks for OpenMetrics gets the same series in it.
#[test]
#[ignore = "needs promtool (prometheus): cargo xtask ci runs it"]
fn promtool_accepts_a_running_guards_metrics() {
    let guard = Guard::start(&[]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = format!("127.0.0.1:{}", guard.port("udp"));
    let now = chrono::Utc::now().format("%b %e %H:%M:%S");
    for line in [
        format!("<14>{now} cms1 webbridge: INFO : [DEBUGGING] Stats 7, c:9, d:2"),
        format!(r#"<14>{now} cms1 host:server: INFO : STATS: {{"CMA": "3/4"}}"#),
        "not syslog at all".to_owned(),
    ] {
        socket.send_to(line.as_bytes(), &to).unwrap();
    }
    assert_eq!(guard.metric(r#"wbguard_callbridge_cma_sessions{cluster="default",callbridge="cms1"}"#), Some(3.0));
    let (head, metrics) = get_accepting(guard.http, "/metrics", "text/plain");
    assert!(head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), metrics.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    assert!(checked.status.success() && said.trim().is_empty(), "promtool: {said}\n{metrics}");

    let prometheus = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (head, open) = get_accepting(guard.http, "/metrics", prometheus);
    assert!(head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"), "{head}");
    assert!(open.ends_with("# EOF\n"), "{open}");
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).map(str::to_owned).collect::<BTreeSet<_>>();
    assert!(series(&metrics)
        .iter()
        .any(|s| s.starts_with("wbguard_webbridge_active_sessions{cluster=\"default\",webbridge=\"cms1\"} 7")));
    // The same series, unless a counter moved between the two scrapes.
    let names = |text: &str| {
        series(text).into_iter().map(|s| s.rsplit_once(' ').unwrap().0.to_owned()).collect::<BTreeSet<_>>()
    };
    assert_eq!(names(&metrics), names(&open));
}
