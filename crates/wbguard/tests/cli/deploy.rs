//! What ships beside the binary: shell completions and manual pages made
//! from the command line's own definitions, and the Prometheus alert rules
//! and Grafana dashboard in `deploy/`, which must only use metrics a
//! running guard exports.

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
