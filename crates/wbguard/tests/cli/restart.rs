//! `wbguard restart`, `trust` and `config` end to end, against simulated
//! CMS servers (in this process, on real sockets) and their truth.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cms_sim::live::{self, Credentials, LiveConfig, Running};
use cms_sim::scenario::{Release, Scenario};
use serde_json::Value;

use super::{s, wbguard_env};

const PASSWORD: &str = "correct horse battery staple";

/// A simulated deployment and a wbguard configuration pointing at it
/// (also used by `cms_api`).
pub(super) struct Lab {
    runtime: tokio::runtime::Runtime,
    running: Option<Running>,
    dir: tempfile::TempDir,
}

impl Lab {
    /// `servers` servers; `tune` may change the scenario and settings.
    pub(super) fn start(servers: usize, tune: impl FnOnce(&mut LiveConfig)) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        super::keygen(&key);
        let public = std::fs::read_to_string(dir.path().join("id_ed25519.pub")).unwrap();
        let mut config = LiveConfig {
            scenario: Scenario::with_servers(servers),
            seed: 3,
            speed: 60.0,
            start: chrono::Utc::now(),
            ssh_port: 0,
            http_port: 0,
            control_port: 0,
            syslog: Vec::new(),
            state_dir: dir.path().join("sim-state"),
            rotate_host_key: false,
            credentials: Credentials {
                user: "admin".into(),
                password: PASSWORD.into(),
                authorized_keys: vec![russh::keys::PublicKey::from_openssh(public.trim()).unwrap()],
            },
            lines_per_record: 5,
            restart_downtime: Duration::from_millis(700),
            address_per_server: false,
            warm_up: Duration::from_secs(3600),
            legacy_ssh: Vec::new(),
        };
        tune(&mut config);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let running = runtime.block_on(live::start(config)).unwrap();
        Lab { runtime, running: Some(running), dir }
    }

    pub(super) fn endpoints(&self) -> &live::Endpoints {
        &self.running.as_ref().unwrap().endpoints
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a configuration; `extra` is appended to each server's table.
    pub(super) fn config(&self, global: &str, extra: impl Fn(usize) -> String) -> PathBuf {
        let mut text = format!(
            "state_dir = {:?}\nknown_hosts = {:?}\n{global}\n[timeouts]\nconnect = 5\nauth = 5\ncommand = 10\nverify = 10\n\n[auth]\npassword_env = \"TEST_MMP_PW\"\n",
            s(&self.path("state")),
            s(&self.path("known_hosts"))
        );
        for (i, server) in self.endpoints().servers.iter().enumerate() {
            text.push_str(&format!(
                "\n[[server]]\nname = {:?}\nmmp = \"{}\"\nwebbridge_url = \"http://{}/\"\n{}\n",
                server.name,
                server.ssh,
                server.http,
                extra(i)
            ));
        }
        let path = self.path("wbguard.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    pub(super) fn truth(&self) -> Value {
        super::truth(self.endpoints().control)
    }

    pub(super) fn restarts(&self) -> Vec<usize> {
        let truth = self.truth();
        truth["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["webbridge"]["restarts"].as_array().unwrap().len())
            .collect()
    }

    fn fault(&self, server: &str, fault: &str) {
        super::control(
            self.endpoints().control,
            &format!(r#"{{"fault": {{"server": "{server}", "fault": "{fault}"}}}}"#),
        );
    }

    pub(super) fn wbguard(&self, args: &[&str]) -> Out {
        Out(wbguard_env(args, None, &[("TEST_MMP_PW", PASSWORD), ("USER", "tester")]))
    }

    fn trust_all(&self, config: &Path) {
        let mut args = vec!["trust", "--yes", "--config", s(config)];
        args.extend(self.endpoints().servers.iter().map(|s| s.name.as_str()));
        let out = self.wbguard(&args);
        assert_eq!(out.code(), 0, "{}", out.all());
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path("state").join(name)).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.stop());
        }
    }
}

/// A finished run of the binary.
pub(super) struct Out(pub(super) Output);

impl Out {
    pub(super) fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub(super) fn all(&self) -> String {
        format!("{}{}", String::from_utf8_lossy(&self.0.stdout), String::from_utf8_lossy(&self.0.stderr))
    }
}

#[test]
fn unknown_host_keys_are_refused_until_trusted_then_every_web_bridge_restarts() {
    let lab = Lab::start(3, |_| {});
    let config = lab.config("", |_| String::new());

    let out = lab.wbguard(&["restart", "--config", s(&config)]);
    assert_eq!(out.code(), 3, "{}", out.all());
    let first = &lab.endpoints().servers[0];
    assert!(out.all().contains("unknown host key") && out.all().contains(&first.host_key_sha256), "{}", out.all());
    assert!(out.all().contains("wbguard trust cms1"), "{}", out.all());
    assert_eq!(lab.restarts(), [0, 0, 0]);

    let out = lab.wbguard(&["trust", "--yes", "--config", s(&config), "cms1", "cms2", "cms3"]);
    assert_eq!(out.code(), 0, "{}", out.all());
    for server in &lab.endpoints().servers {
        assert!(out.all().contains(&server.host_key_sha256), "{}", out.all());
    }
    assert_eq!(std::fs::read_to_string(lab.path("known_hosts")).unwrap().lines().count(), 3);

    let out = lab.wbguard(&["restart", "--config", s(&config), "--reason", "weekly window"]);
    assert_eq!(out.code(), 0, "{}", out.all());
    assert_eq!(lab.restarts(), [1, 1, 1]);
    let log = lab.read("webbridge_restart_logs.txt");
    assert_eq!(log.lines().count(), 3, "{log}");
    for (line, server) in log.lines().zip(&lab.endpoints().servers) {
        assert!(line.ends_with(&format!("Webbridge on server: {} restarted successfully", server.ssh)), "{line}");
        assert!(line.contains("+00:00 "), "{line}");
    }
    let audit: Vec<Value> = lab.read("restart-audit.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The refusal of the first run (rolling stops there), then three restarts.
    assert_eq!(audit.len(), 4);
    assert_eq!(audit[0]["result"], "refused");
    let restarted = &audit[1..];
    assert!(restarted.iter().all(|a| a["result"] == "restarted" && a["verified"] == true), "{audit:?}");
    assert!(restarted.iter().all(|a| a["operator"] == "tester" && a["reason"] == "weekly window"));
    assert_eq!(restarted[0]["verification"], "web page answers");
    // The password appears nowhere.
    assert!(
        !out.all().contains(PASSWORD) && !log.contains(PASSWORD) && !lab.read("restart-audit.jsonl").contains(PASSWORD)
    );
}

#[test]
fn a_changed_host_key_is_refused_loudly() {
    let lab = Lab::start(2, |_| {});
    let config = lab.config("", |_| String::new());
    lab.trust_all(&config);
    // Someone else's key recorded for cms2.
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    let known = std::fs::read_to_string(lab.path("known_hosts")).unwrap();
    let lines: Vec<String> = known
        .lines()
        .map(|l| {
            if l.contains(&lab.endpoints().servers[1].ssh.port().to_string()) {
                format!("{} {other}", l.split(' ').next().unwrap())
            } else {
                l.into()
            }
        })
        .collect();
    std::fs::write(lab.path("known_hosts"), lines.join("\n") + "\n").unwrap();

    let out = lab.wbguard(&["restart", "--config", s(&config), "--keep-going"]);
    assert_eq!(out.code(), 3, "{}", out.all());
    assert!(out.all().contains("HOST KEY CHANGED for cms2"), "{}", out.all());
    assert!(out.all().contains(&lab.endpoints().servers[1].host_key_sha256), "{}", out.all());
    assert_eq!(lab.restarts(), [1, 0]);
    // `trust` does not paper over it either.
    let out = lab.wbguard(&["trust", "--yes", "--config", s(&config), "cms2"]);
    assert_eq!(out.code(), 3, "{}", out.all());
    assert!(out.all().contains("WARNING"), "{}", out.all());
}

#[test]
fn a_host_that_is_down_fails_alone() {
    let lab = Lab::start(3, |_| {});
    let config = lab.config("host_key_policy = \"accept-new\"", |_| String::new());
    lab.fault("cms2", "refuse");
    std::thread::sleep(Duration::from_millis(300));

    // Rolling stops at the first failure...
    let out = lab.wbguard(&["restart", "--config", s(&config)]);
    assert_eq!(out.code(), 1, "{}", out.all());
    assert_eq!(lab.restarts(), [1, 0, 0]);
    assert!(out.all().contains("cms3: not attempted"), "{}", out.all());
    let port = lab.endpoints().servers[1].ssh;
    let log = lab.read("webbridge_restart_logs.txt");
    assert!(log.contains(&format!("Failed to restart webbridge on server {port}. Error: ")), "{log}");
    assert!(log.contains("connection refused"), "{log}");

    // ...in parallel, the others go ahead.
    let out = lab.wbguard(&["restart", "--config", s(&config), "--parallel", "3"]);
    assert_eq!(out.code(), 1, "{}", out.all());
    assert_eq!(lab.restarts(), [2, 0, 1]);
    let out = lab.wbguard(&["restart", "--config", s(&config), "--keep-going", "--only", "cms2,cms3"]);
    assert_eq!(out.code(), 1, "{}", out.all());
    assert_eq!(lab.restarts(), [2, 0, 2]);
}

#[test]
fn dry_run_and_config_check_touch_nothing_and_show_no_secret() {
    let lab = Lab::start(2, |_| {});
    let config = lab.config("", |_| String::new());
    let out = lab.wbguard(&["restart", "--config", s(&config), "--dry-run"]);
    assert_eq!(out.code(), 0, "{}", out.all());
    assert!(out.all().contains("1. cms1") && out.all().contains("dry run"), "{}", out.all());
    assert_eq!(lab.restarts(), [0, 0]);
    assert!(!lab.path("state").join("webbridge_restart_logs.txt").exists());

    let out = lab.wbguard(&["config", "check", "--config", s(&config)]);
    assert_eq!(out.code(), 0, "{}", out.all());
    assert!(out.all().contains("password from $TEST_MMP_PW") && !out.all().contains(PASSWORD), "{}", out.all());

    let out = lab.wbguard(&["restart", "--config", s(&config), "--only", "cms7"]);
    assert_eq!(out.code(), 2);
    assert!(out.all().contains("no server named 'cms7'"), "{}", out.all());
}

#[test]
fn key_authentication_shell_mode_and_release_3() {
    let lab = Lab::start(3, |config| config.scenario.servers[2].release = Release::V3);
    let key = lab.path("id_ed25519");
    let config = lab.config("host_key_policy = \"accept-new\"", |i| match i {
        0 => format!("[server.auth]\nkey_file = {:?}", s(&key)),
        1 => "mode = \"shell\"".into(),
        _ => String::new(),
    });
    let out = lab.wbguard(&["restart", "--config", s(&config)]);
    assert_eq!(out.code(), 0, "{}", out.all());
    assert!(out.all().contains("cms3: skipped: release 3.x"), "{}", out.all());
    assert_eq!(lab.restarts(), [1, 1, 0]);
    let out = lab.wbguard(&["restart", "--config", s(&config), "--only", "cms3", "--include-webbridge3"]);
    assert_eq!(out.code(), 0, "{}", out.all());
}

#[test]
fn legacy_algorithms_only_where_a_server_opts_in() {
    let lab = Lab::start(1, |config| config.legacy_ssh = vec!["cms1".into()]);
    let config = lab.config("host_key_policy = \"accept-new\"", |_| String::new());
    let out = lab.wbguard(&["restart", "--config", s(&config)]);
    assert_eq!(out.code(), 1, "{}", out.all());
    assert!(out.all().contains("legacy_algorithms = true"), "{}", out.all());
    let config = lab.config("host_key_policy = \"accept-new\"", |_| "legacy_algorithms = true".into());
    let out = lab.wbguard(&["restart", "--config", s(&config)]);
    assert_eq!(out.code(), 0, "{}", out.all());
    assert_eq!(lab.restarts(), [1]);
}

#[test]
fn ciscos_script_imports_to_a_valid_config() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cms-sim/tests/cisco/webbridge_restart.py");
    let out = Out(wbguard_env(&["config", "import-cisco-script", s(&script)], None, &[]));
    assert_eq!(out.code(), 0, "{}", out.all());
    let text = String::from_utf8_lossy(&out.0.stdout).into_owned();
    assert!(!text.contains("\"password\""), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imported.toml");
    std::fs::write(&path, &text).unwrap();
    let out = Out(wbguard_env(&["config", "check", "--config", s(&path)], None, &[]));
    assert_eq!(out.code(), 0, "{}", out.all());
    assert!(out.all().contains("4 server(s)"), "{}", out.all());
}

#[test]
fn session_data_decides_what_is_safe() {
    let lab = Lab::start(2, |_| {});
    let config = lab.config("host_key_policy = \"accept-new\"", |_| String::new());
    // cms1: five sessions, all proven leaks. cms2: three leaks and, since
    // four minutes ago, seven real calls the call bridges count.
    let now = chrono::Utc::now();
    let at = |minutes: i64| (now - chrono::Duration::minutes(minutes)).format("%Y-%m-%dT%H:%M:%S%.3f").to_string();
    let cb = |m: i64, host: &str, cma: &str| {
        format!("{} user.info {host} host:server: INFO : STATS: {{\"CMA\": \"{cma}\"}}\n", at(m))
    };
    let wb = |m: i64, host: &str, active: u32| {
        format!("{} user.info {host} webbridge: INFO : [DEBUGGING] Stats {active}, c:100, d:90\n", at(m))
    };
    let mut log = String::new();
    for m in [20, 15, 10] {
        log += &cb(m, "cms1", "0/0");
        log += &cb(m, "cms2", "0/0");
    }
    log += &wb(9, "cms1", 5);
    log += &wb(9, "cms2", 3);
    log += &cb(5, "cms1", "0/0");
    log += &cb(5, "cms2", "0/0");
    log += &wb(4, "cms1", 5);
    log += &wb(4, "cms2", 10);
    log += &cb(1, "cms1", "0/0");
    log += &cb(1, "cms2", "7/7");
    let stats = lab.path("cms.log");
    std::fs::write(&stats, log).unwrap();

    let out = lab.wbguard(&["restart", "--config", s(&config), "--stats", s(&stats)]);
    assert_eq!(out.code(), 3, "{}", out.all());
    assert!(out.all().contains("cms1: safe"), "{}", out.all());
    assert!(out.all().contains("up to 7 live call(s) could be dropped"), "{}", out.all());
    assert_eq!(lab.restarts(), [1, 0]);
    let out = lab.wbguard(&["restart", "--config", s(&config), "--stats", s(&stats), "--force", "--only", "cms2"]);
    assert_eq!(out.code(), 0, "{}", out.all());
    assert_eq!(lab.restarts(), [1, 1]);

    // No data: it says it cannot check; --require-safe makes that a refusal.
    let out = lab.wbguard(&["restart", "--config", s(&config), "--only", "cms1"]);
    assert_eq!(out.code(), 0, "{}", out.all());
    assert!(out.all().contains("cannot check for live calls"), "{}", out.all());
    let out = lab.wbguard(&["restart", "--config", s(&config), "--require-safe"]);
    assert_eq!(out.code(), 3, "{}", out.all());
    assert_eq!(lab.restarts(), [2, 1]);
}

#[test]
fn faults_time_out_and_a_command_that_may_have_run_is_not_resent() {
    let lab = Lab::start(3, |_| {});
    let config = lab.config("host_key_policy = \"accept-new\"", |_| String::new());
    let out = lab.wbguard(&["restart", "--config", s(&config)]);
    assert_eq!(out.code(), 0, "{}", out.all());
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("connect = 5", "connect = 1")
        .replace("command = 10", "command = 2");
    std::fs::write(&config, text).unwrap();
    lab.fault("cms1", "blackhole");
    lab.fault("cms2", "hang-after-auth");
    let started = std::time::Instant::now();
    let out = lab.wbguard(&["restart", "--config", s(&config), "--parallel", "3"]);
    assert_eq!(out.code(), 1, "{}", out.all());
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    assert!(out.all().contains("cms1: FAILED: connect timed out"), "{}", out.all());
    assert!(out.all().contains("cms2: FAILED:") && out.all().contains("timed out"), "{}", out.all());
    assert_eq!(lab.restarts(), [1, 1, 2]);

    // A slow MMP within the command timeout is fine; past it, it is
    // reported as possibly done and never sent twice.
    lab.fault("cms1", "none");
    lab.fault("cms2", "none");
    super::control(lab.endpoints().control, r#"{"fault": {"server": "cms1", "fault": "slow", "seconds": 3}}"#);
    let out = lab.wbguard(&["restart", "--config", s(&config), "--only", "cms1"]);
    assert_eq!(out.code(), 1, "{}", out.all());
    assert!(out.all().contains("not re-sent") || out.all().contains("before the restart"), "{}", out.all());
}

#[test]
#[ignore = "needs ssh-agent and ssh-add (openssh-client): cargo xtask ci runs it"]
fn agent_password_file_and_the_lock() {
    let lab = Lab::start(2, |_| {});
    // The ssh-agent holds the key for cms1; a password file serves cms2.
    let socket = lab.path("agent.sock");
    let agent =
        Command::new("ssh-agent").arg("-a").arg(&socket).output().expect("ssh-agent (apt-get install openssh-client)");
    assert!(agent.status.success(), "ssh-agent: {}", String::from_utf8_lossy(&agent.stderr));
    let pid = String::from_utf8_lossy(&agent.stdout)
        .split("SSH_AGENT_PID=")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap()
        .to_owned();
    let added = Command::new("ssh-add")
        .arg(lab.path("id_ed25519"))
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .expect("ssh-add (apt-get install openssh-client)");
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let password_file = lab.path("mmp-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    Command::new("chmod").arg("0644").arg(&password_file).status().unwrap();
    let config = lab.config("host_key_policy = \"accept-new\"", |i| match i {
        0 => "[server.auth]\nagent = true".into(),
        _ => format!("[server.auth]\npassword_file = {:?}", s(&password_file)),
    });
    let run = {
        let (config, socket) = (config.clone(), socket.clone());
        move || {
            Out(wbguard_env(
                &["restart", "--config", s(&config), "--keep-going"],
                None,
                &[("SSH_AUTH_SOCK", s(&socket))],
            ))
        }
    };
    let out = run();
    assert_eq!(out.code(), 1, "{}", out.all());
    assert!(out.all().contains("readable by group or others") && out.all().contains("chmod 600"), "{}", out.all());
    assert_eq!(lab.restarts(), [1, 0]);
    Command::new("chmod").arg("0600").arg(&password_file).status().unwrap();

    // Another run holds the lock: this one waits for it.
    std::fs::create_dir_all(lab.path("state")).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lab.path("state/restart.lock"))
        .unwrap();
    lock.lock().unwrap();
    let waiting = std::thread::spawn(run.clone());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lab.restarts(), [1, 0], "it did not wait for the lock");
    lock.unlock().unwrap();
    let out = waiting.join().unwrap();
    assert_eq!(out.code(), 0, "{}", out.all());
    assert!(out.all().contains("waiting for another wbguard restart"), "{}", out.all());
    assert_eq!(lab.restarts(), [2, 1]);
    let _ = Command::new("kill").arg(pid).status();
}

#[test]
#[ignore = "needs script (util-linux): cargo xtask ci runs it"]
fn progress_is_live_on_a_terminal() {
    let lab = Lab::start(3, |_| {});
    let config = lab.config("host_key_policy = \"accept-new\"", |_| String::new());
    // util-linux's script(1) gives wbguard a terminal.
    let command = format!("{} restart --config {} --parallel 3", env!("CARGO_BIN_EXE_wbguard"), s(&config));
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TEST_MMP_PW", PASSWORD)
        .env("TERM", "xterm")
        .output()
        .expect("script (util-linux)");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    // The block of three lines is redrawn in place: cursor up, clear line.
    assert!(screen.contains("\x1b[3A") && screen.contains("\x1b[2K"), "{screen:?}");
    assert!(screen.contains("cms1: waiting") && screen.contains("cms3: restarted in"), "{screen:?}");
    assert_eq!(lab.restarts(), [1, 1, 1]);
}

#[test]
#[ignore = "needs ssh-keygen (openssh-client): cargo xtask ci runs it"]
fn a_wrong_password_is_tried_once_and_a_key_passphrase_comes_from_the_environment() {
    let lab = Lab::start(2, |_| {});
    let protected = lab.path("id_protected");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "open sesame", "-f"])
        .arg(&protected)
        .status()
        .expect("ssh-keygen (apt-get install openssh-client)");
    assert!(made.success(), "ssh-keygen failed");
    // The simulator accepts the lab key only: authorise this one too by
    // using it for cms2 alongside a password fallback.
    let config = lab.config("host_key_policy = \"accept-new\"", |i| match i {
        0 => String::new(),
        _ => format!("[server.auth]\nkey_file = {:?}\nkey_passphrase_env = \"TEST_KEY_PASSPHRASE\"\npassword_env = \"TEST_MMP_PW\"", s(&protected)),
    });
    // The MMP locks the user out after two wrong passwords in a row.
    super::control(
        lab.endpoints().control,
        r#"{"fault": {"server": "cms1", "lockout_after": 2, "lockout_seconds": 60}}"#,
    );

    let wrong = wbguard_env(&["restart", "--config", s(&config), "--only", "cms1"], None, &[("TEST_MMP_PW", "wrong")]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stdout).contains("authentication as admin failed"));
    // One wrong try only: the account is not locked, the right password works.
    let out = lab.wbguard(&["restart", "--config", s(&config), "--only", "cms1"]);
    assert_eq!(out.code(), 0, "{}", out.all());

    // cms2: the key is not authorised there, its passphrase opens it, and
    // the password after it gets in.
    let out = Out(wbguard_env(
        &["restart", "--config", s(&config), "--only", "cms2"],
        None,
        &[("TEST_MMP_PW", PASSWORD), ("TEST_KEY_PASSPHRASE", "open sesame")],
    ));
    assert_eq!(out.code(), 0, "{}", out.all());
    let out = Out(wbguard_env(
        &["restart", "--config", s(&config), "--only", "cms2"],
        None,
        &[("TEST_MMP_PW", PASSWORD), ("TEST_KEY_PASSPHRASE", "wrong")],
    ));
    assert_eq!(out.code(), 1, "{}", out.all());
    assert!(out.all().contains("cannot load key"), "{}", out.all());
    assert!(!out.all().contains("open sesame"));
    assert_eq!(lab.restarts(), [1, 1]);
}
