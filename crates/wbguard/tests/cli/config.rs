//! The configuration end to end: hostile values are refused by their key's
//! name (exit 2, never a panic), `config check` tells errors from warnings,
//! no command shows a secret, a cron-like environment is enough for a dry
//! run, and a guard refuses a broken file on SIGHUP and keeps running.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::watch::Guard;
use super::{s, wbguard_env};

/// A folder with a configuration file in it.
struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `wbguard.toml`: `top` (top-level keys), one server with
    /// `server` appended (its own `mmp` replaces the default), then
    /// `sections`.
    fn config(&self, top: &str, server: &str, sections: &str) -> PathBuf {
        let mmp = if server.contains("mmp =") { "" } else { "mmp = \"127.0.0.1\"\n" };
        let text = format!(
            "state_dir = {:?}\n{top}\n[[server]]\nname = \"cms1\"\n{mmp}{server}\n{sections}\n",
            s(&self.path("state"))
        );
        let path = self.path("wbguard.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn both(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

#[test]
fn hostile_values_exit_2_naming_the_key() {
    let dir = Dir::new();
    let window = |cron: &str, duration: &str| format!("[[policy.window]]\ncron = {cron:?}\nduration = {duration:?}\n");
    let cases: Vec<(&str, &str, String, &str)> = vec![
        ("", "", "[policy]\nmin_interval = \"9999999999999999s\"".into(), "policy.min_interval"),
        ("", "", "[policy]\nstale_after = \"0m\"".into(), "policy.stale_after"),
        ("", "", "[policy]\nleak_at_least = 1e3".into(), "policy.leak_at_least"),
        ("", "", "[policy]\nlimit = 99999".into(), "policy.limit"),
        ("", "", window("0 2 * * 6", "99999999999999h"), "policy.window[0].duration"),
        ("", "", window("0 2 31 2 *", "1h"), "policy.window[0].cron"),
        ("", "", "[watch]\nretention_days = -1".into(), "watch.retention_days"),
        ("", "", "[watch]\nlisten_http = \"127.0.0.1:99999\"".into(), "watch.listen_http"),
        ("", "", "[watch]\nlisten_syslog = [\"udp://127.0.0.1:70000\"]".into(), "watch.listen_syslog[0]"),
        ("", "", "[timeouts]\nconnect = 1e308".into(), "timeouts.connect"),
        ("", "", "[timeouts]\nverify = nan".into(), "timeouts.verify"),
        ("", "mmp = \"h:99999\"", String::new(), "server[0]"),
        ("", "webbridge_url = \"http://[::1\"", String::new(), "server[0].webbridge_url"),
        ("", "webbridge_url = \"https://join.example.com:99999/\"", String::new(), "server[0].webbridge_url"),
        (
            "",
            "log_host = \"CMS\"",
            "[[server]]\nname = \"cms2\"\nmmp = \"127.0.0.2\"\nlog_host = \"cms\"".into(),
            "log_host",
        ),
        ("user = \"\"", "", String::new(), "user"),
        ("", "user = \"ad\tmin\"", String::new(), "server[0].user"),
        ("", "", "[[webhook]]\nurl = \"https://hooks.example.com:99999/x\"".into(), "webhook[0].url"),
        ("", "", "[[webhook]]\nurl_env = \"A\"\nurl_file = \"f\"".into(), "webhook[0]"),
    ];
    for (top, server, sections, key) in &cases {
        let config = dir.config(top, server, sections);
        for args in
            [&["config", "check", "--config", s(&config)][..], &["restart", "--dry-run", "--config", s(&config)]]
        {
            let out = wbguard_env(args, None, &[]);
            assert_eq!(code(&out), 2, "{args:?} with {key}: {}", both(&out));
            assert!(stderr(&out).contains(key), "{args:?}: {key} not named: {}", stderr(&out));
        }
    }
    // Only what looks at the file system sees a state directory that is a file.
    let config = dir.config("", "", "");
    let text = std::fs::read_to_string(&config).unwrap().replacen(s(&dir.path("state")), "/etc/passwd", 1);
    std::fs::write(&config, text).unwrap();
    let out = wbguard_env(&["config", "check", "--config", s(&config)], None, &[]);
    assert_eq!(code(&out), 2, "{}", both(&out));
    assert!(stderr(&out).contains("state_dir") && stderr(&out).contains("/etc/passwd"), "{}", stderr(&out));
}

/// A configuration that is no text file (an endless device, a log named
/// by mistake) is refused at a bound, not read until memory runs out.
#[test]
fn an_endless_configuration_is_refused_not_read() {
    let out = wbguard_env(&["--config", "/dev/zero", "config", "check"], None, &[]);
    assert_eq!(code(&out), 2, "{}", both(&out));
    assert!(stderr(&out).contains("/dev/zero") && stderr(&out).contains("larger than"), "{}", stderr(&out));
}

#[test]
fn a_demo_too_long_is_refused_by_its_flag() {
    let out = wbguard_env(&["demo", "--duration", "99999999999999d"], None, &[]);
    assert_eq!(code(&out), 2, "{}", both(&out));
    assert!(stderr(&out).contains("--duration"), "{}", stderr(&out));
}

#[test]
fn a_password_file_others_may_read_is_an_error_before_anything_happens() {
    let dir = Dir::new();
    let password = dir.path("mmp-password");
    std::fs::write(&password, "hunter2hunter2\n").unwrap();
    Command::new("chmod").arg("0644").arg(&password).status().unwrap();
    let config = dir.config("", &format!("[server.auth]\npassword_file = {:?}", s(&password)), "");
    for args in [
        &["config", "check", "--config", s(&config)][..],
        &["restart", "--dry-run", "--config", s(&config)],
        &["watch", "--mode", "enforce", "--config", s(&config), "--listen-http", "127.0.0.1:0"],
    ] {
        let out = wbguard_env(args, None, &[]);
        assert_eq!(code(&out), 2, "{args:?}: {}", both(&out));
        assert!(stderr(&out).contains(s(&password)) && stderr(&out).contains("chmod 600"), "{}", stderr(&out));
        assert!(!both(&out).contains("hunter2"));
    }
    assert!(!dir.path("state").exists(), "a check touched the state");
    // With mode 600 it is fine.
    Command::new("chmod").arg("0600").arg(&password).status().unwrap();
    let out = wbguard_env(&["config", "check", "--config", s(&config)], None, &[]);
    assert_eq!(code(&out), 0, "{}", both(&out));
}

#[test]
fn an_enforcing_guard_refuses_credentials_it_cannot_use() {
    let dir = Dir::new();
    let variable = "WBGUARD_TEST_PASSWORD_NOT_SET_4711";
    let config = dir.config("", &format!("[server.auth]\npassword_env = {variable:?}"), "");
    let out =
        wbguard_env(&["watch", "--mode", "enforce", "--config", s(&config), "--listen-http", "127.0.0.1:0"], None, &[]);
    assert_eq!(code(&out), 2, "{}", both(&out));
    assert!(stderr(&out).contains(variable) && stderr(&out).contains("cms1"), "{}", stderr(&out));
    // The same file is only a warning for `config check`: cron may set it.
    let out = wbguard_env(&["config", "check", "--config", s(&config)], None, &[]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    assert!(stderr(&out).contains("warning") && stderr(&out).contains(variable), "{}", stderr(&out));
}

#[test]
fn an_unset_webhook_variable_is_a_warning() {
    let dir = Dir::new();
    let variable = "WBGUARD_TEST_HOOK_NOT_SET_4711";
    let config = dir.config("", "", &format!("[[webhook]]\nurl_env = {variable:?}"));
    let out = wbguard_env(&["config", "check", "--config", s(&config)], None, &[]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    assert!(both(&out).contains("warning") && both(&out).contains(variable), "{}", both(&out));
}

#[test]
fn credentials_in_urls_are_never_shown() {
    let dir = Dir::new();
    let config = dir.config(
        "",
        "webbridge_url = \"https://admin:pagepw99@join.example.com/webrtc?key=pagekey77\"",
        "[[webhook]]\nurl = \"https://user:s3cretpw@hooks.example.com/services/T0/B0/tok3n\"",
    );
    let secrets = ["s3cretpw", "tok3n", "pagepw99", "pagekey77"];
    let check = wbguard_env(&["config", "check", "--config", s(&config)], None, &[]);
    let dry_run = wbguard_env(&["restart", "--dry-run", "--config", s(&config)], None, &[]);
    for out in [&check, &dry_run] {
        assert_eq!(code(out), 0, "{}", both(out));
        assert!(secrets.iter().all(|secret| !both(out).contains(secret)), "{}", both(out));
    }
    // What may be shown is.
    assert!(both(&check).contains("hooks.example.com") && both(&check).contains("join.example.com/webrtc"));
    assert!(both(&dry_run).contains("https://***@join.example.com/webrtc"), "{}", both(&dry_run));

    let log = dir.path("guard.log");
    let guard = Guard::start_with_stderr(&["--config", s(&config)], std::fs::File::create(&log).unwrap());
    assert_eq!(guard.get("/healthz"), "ok\n");
    assert_eq!(guard.stop(), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("watching"), "{text}");
    assert!(secrets.iter().all(|secret| !text.contains(secret)), "{text}");
}

/// cron runs with next to no environment: no password, no webhook URL, no
/// token, no HOME. A dry run needs none of them.
#[test]
fn a_dry_run_works_in_a_cron_like_environment() {
    let dir = Dir::new();
    let config = dir.config(
        "",
        "",
        "[watch]\nrestart_token_env = \"WBGUARD_TOKEN_NOT_IN_CRON\"\n[[webhook]]\nurl_env = \"WBGUARD_HOOK_NOT_IN_CRON\"",
    );
    let cron = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_wbguard"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    for args in
        [&["restart", "--dry-run", "--config", s(&config)][..], &["--config", s(&config), "restart", "--dry-run"]]
    {
        let out = cron(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", both(&out));
        assert!(stdout(&out).contains("1. cms1 at 127.0.0.1:22") && stdout(&out).contains("dry run"), "{}", both(&out));
    }
}

/// A broken file on SIGHUP is refused by its key's name; the guard keeps
/// running with the configuration it had.
#[test]
fn sighup_with_a_hostile_value_keeps_the_guard_running() {
    let dir = Dir::new();
    let config = dir.config("", "", "");
    let log = dir.path("guard.log");
    let guard = Guard::start_with_stderr(&["--config", s(&config)], std::fs::File::create(&log).unwrap());
    dir.config("", "", "[policy]\nmin_interval = \"9999999999999999s\"");
    guard.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("reload refused") {
            break text;
        }
        assert!(Instant::now() < deadline, "no refusal logged: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains("policy.min_interval"), "{text}");
    assert_eq!(guard.get("/healthz"), "ok\n");
    assert_eq!(guard.stop(), 0);
}
