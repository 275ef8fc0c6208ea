//! End-to-end tests of `cms-sim run`: the real binary on real sockets,
//! driven by real clients (OpenSSH's ssh, Cisco's Python script with
//! paramiko, curl-like HTTP), checked against the truth API.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

// ---- harness ---------------------------------------------------------------

/// A new ed25519 key pair without passphrase at `path` (mode 600) and
/// `path.pub`, as `ssh-keygen -t ed25519 -N ''` writes them: made by the
/// simulator, so that a test which only needs a key needs no OpenSSH.
fn keygen(path: &Path) {
    cms_sim::live::hostkey::client_key_pair(path, "cms-sim-test").unwrap();
}

struct Sim {
    child: Child,
    endpoints: Value,
    /// Taken by `stop`, to start again in the same state directory.
    dir: Option<tempfile::TempDir>,
}

impl Sim {
    /// Starts `cms-sim run` with any free ports, a fresh state directory, a
    /// test key, and `args`; waits for its endpoints line.
    fn start(args: &[&str]) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, args)
    }

    fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Sim {
        let key = dir.path().join("id_test");
        if !key.exists() {
            keygen(&key);
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_cms-sim"));
        command.arg("run").arg("--state-dir").arg(dir.path().join("state"));
        command.arg("--authorized-key").arg(dir.path().join("id_test.pub"));
        for (flag, default) in [("--ssh-port", "0"), ("--http-port", "0"), ("--control-port", "0"), ("--api-port", "0")]
        {
            if !args.contains(&flag) {
                command.args([flag, default]);
            }
        }
        command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("cms-sim starts");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver.recv_timeout(Duration::from_secs(20)).expect("the endpoints line");
        let endpoints: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!("no endpoints ({e}): {line} {stderr}")
        });
        Sim { child, endpoints, dir: Some(dir) }
    }

    fn ssh_port(&self, server: usize) -> String {
        self.address("ssh", server).port().to_string()
    }

    fn address(&self, kind: &str, server: usize) -> SocketAddr {
        self.endpoints["servers"][server][kind].as_str().unwrap().parse().unwrap()
    }

    fn control(&self) -> SocketAddr {
        self.endpoints["control"].as_str().unwrap().parse().unwrap()
    }

    fn truth(&self) -> Value {
        let (status, body) = http(self.control(), "GET", "/truth", None);
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    fn set(&self, body: &str) {
        let (status, text) = http(self.control(), "POST", "/control", Some(body));
        assert_eq!(status, 200, "{text}");
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("not stopped").path()
    }

    fn key(&self) -> PathBuf {
        self.dir().join("id_test")
    }

    /// Stops it with SIGTERM (it must go within 10 s); returns its directory.
    fn stop(mut self) -> tempfile::TempDir {
        self.terminate();
        self.dir.take().expect("not stopped")
    }

    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("cms-sim did not stop on SIGTERM");
    }

    /// `ssh` with the test key in batch mode, trusting the host key on first
    /// use into a file of the test's own.
    fn ssh(&self, server: usize, extra: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new("timeout");
        command.arg("20").arg("ssh").args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new"]);
        command.arg("-o").arg(format!("UserKnownHostsFile={}", self.dir().join("known_hosts").display()));
        command.arg("-i").arg(self.key()).args(["-p", &self.ssh_port(server), "-l", "admin"]);
        command.arg(self.address("ssh", server).ip().to_string()).args(extra);
        command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        if let Some(text) = stdin {
            let mut input = child.stdin.take().unwrap();
            let text = text.to_owned();
            // Typed slowly, as a person would: each line after the prompt.
            std::thread::spawn(move || {
                for line in text.split_inclusive('\n') {
                    std::thread::sleep(Duration::from_millis(300));
                    let _ = input.write_all(line.as_bytes());
                }
            });
        }
        let output = child.wait_with_output().unwrap();
        // timeout(1) exits 126 or 127 when it cannot run its command.
        let ran = !matches!(output.status.code(), Some(126 | 127));
        assert!(ran, "ssh did not run (apt-get install openssh-client): {}", text(&output.stderr));
        output
    }

    fn restarts(&self, server: usize) -> Vec<Value> {
        self.truth()["servers"][server]["webbridge"]["restarts"].as_array().unwrap().clone()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.terminate();
        } else {
            let _ = self.child.kill();
        }
    }
}

/// A minimal HTTP/1.0 client: status and body.
fn http(address: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---- OpenSSH ---------------------------------------------------------------

#[test]
#[ignore = "needs ssh (OpenSSH client): cargo xtask ci runs it"]
fn openssh_runs_commands_by_exec_and_in_a_shell() {
    let sim = Sim::start(&["--servers", "2"]);
    let output = sim.ssh(0, &["version"], None);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "version : 2.9.7\n");

    let output = sim.ssh(0, &["webbridge", "restart"], None);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let restarts = sim.restarts(0);
    assert_eq!(restarts.len(), 1);
    assert_eq!(restarts[0]["by"], "admin");
    assert!(sim.restarts(1).is_empty());

    let output = sim.ssh(0, &["no-such-command"], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stdout).contains("FAILURE"));

    // An interactive shell on a terminal: prompt, echo, commands, exit.
    let output = sim.ssh(1, &["-tt"], Some("version\nwebbridge restart\nexit\n"));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let screen = text(&output.stdout);
    assert!(screen.starts_with("cms2> "), "{screen:?}");
    assert!(screen.contains("version : 2.9.7\r\n") && screen.contains("cms2> webbridge restart\r\n"), "{screen:?}");
    assert_eq!(sim.restarts(1).len(), 1);

    // The audit lines reach the MMP's own log.
    let output = sim.ssh(1, &["syslog"], None);
    let log = text(&output.stdout);
    assert!(
        log.contains("cli: User admin from 127.0.0.1:")
            && log.contains("issued command <webbridge restart>: permission granted"),
        "{log}"
    );
}

#[test]
#[ignore = "needs ssh (OpenSSH client): cargo xtask ci runs it"]
fn the_host_key_stays_and_rotates_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_path_buf();
    // The same port each time, so known_hosts has one entry to compare.
    let port = free_port().to_string();
    let sim = Sim::start_in(dir, &["--servers", "1", "--ssh-port", &port]);
    let first = sim.endpoints["servers"][0]["host_key_sha256"].clone();
    assert!(sim.ssh(0, &["version"], None).status.success());
    let dir = sim.stop();
    // Same state directory: same key; the known_hosts entry still fits.
    let sim = Sim::start_in(dir, &["--servers", "1", "--ssh-port", &port]);
    assert_eq!(sim.endpoints["servers"][0]["host_key_sha256"], first);
    assert!(sim.ssh(0, &["version"], None).status.success());
    let dir = sim.stop();
    let sim = Sim::start_in(dir, &["--servers", "1", "--ssh-port", &port, "--rotate-host-key"]);
    assert_ne!(sim.endpoints["servers"][0]["host_key_sha256"], first);
    // OpenSSH refuses the changed key loudly.
    let output = sim.ssh(0, &["version"], None);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("REMOTE HOST IDENTIFICATION HAS CHANGED"), "{}", text(&output.stderr));
    assert!(state.join("state/cms1/ssh_host_ed25519_key").exists());
}

// ---- Cisco's own script ------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
#[ignore = "needs python3 with paramiko: cargo xtask ci runs it"]
fn ciscos_script_restarts_every_web_bridge() {
    let port = free_port().to_string();
    let sim = Sim::start(&["--servers", "4", "--address-per-server", "--ssh-port", &port]);
    let script =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cisco/webbridge_restart.py"))
            .unwrap();
    let servers: Vec<String> = (0..4).map(|i| format!("{}:\"{}\"", i + 1, sim.address("ssh", i).ip())).collect();
    let script = script
        .replace(
            r#"webbridges={1:"127.0.0.1",2:"127.0.0.1",3:"127.0.0.1",4:"127.0.0.1"}"#,
            &format!("webbridges={{{}}}", servers.join(",")),
        )
        .replace("mmp_port = 22", &format!("mmp_port = {port}"));
    let work = sim.dir().join("cisco");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("webbridge_restart.py"), script).unwrap();
    let output =
        Command::new("timeout").args(["60", "python3", "webbridge_restart.py"]).current_dir(&work).output().unwrap();
    assert_python_ran(&output);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let log = std::fs::read_to_string(work.join("webbridge_restart_logs.txt")).unwrap();
    assert_eq!(log.matches("restarted successfully").count(), 4, "{log}");
    for server in 0..4 {
        let restarts = sim.restarts(server);
        assert_eq!(restarts.len(), 1, "server {server}: {log}");
        assert_eq!(restarts[0]["by"], "admin");
    }
}

// ---- faults and bad clients -----------------------------------------------------

fn paramiko(address: SocketAddr, password: &str, command: &str) -> Output {
    let script = format!(
        "import paramiko, sys\nc = paramiko.SSHClient()\nc.set_missing_host_key_policy(paramiko.AutoAddPolicy())\n\
         try:\n    c.connect('{}', {}, 'admin', '{password}', timeout=5, auth_timeout=5, banner_timeout=5, look_for_keys=False, allow_agent=False)\n\
         except paramiko.AuthenticationException:\n    sys.exit(3)\n\
         _, out, _ = c.exec_command('{command}', timeout=5)\nsys.stdout.write(out.read().decode())\n",
        address.ip(),
        address.port()
    );
    let output = Command::new("timeout").args(["30", "python3", "-c", &script]).output().unwrap();
    assert_python_ran(&output);
    output
}

/// Fails, naming what is missing, when python3 or paramiko is not there.
fn assert_python_ran(output: &Output) {
    // timeout(1) exits 126 or 127 when it cannot run its command.
    let ran = !matches!(output.status.code(), Some(126 | 127)) && !text(&output.stderr).contains("ModuleNotFoundError");
    assert!(ran, "python3 with paramiko did not run (apt-get install python3-paramiko): {}", text(&output.stderr));
}

#[test]
#[ignore = "needs python3 with paramiko: cargo xtask ci runs it"]
fn passwords_and_lockout() {
    let sim = Sim::start(&["--servers", "1"]);
    let address = sim.address("ssh", 0);
    let output = paramiko(address, "password", "version");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "version : 2.9.7\n");
    assert_eq!(paramiko(address, "wrong", "version").status.code(), Some(3));

    sim.set(r#"{"fault": {"server": "cms1", "lockout_after": 2, "lockout_seconds": 60}}"#);
    assert_eq!(paramiko(address, "wrong", "version").status.code(), Some(3));
    assert_eq!(paramiko(address, "wrong", "version").status.code(), Some(3));
    // Locked: even the right password is refused now.
    assert_eq!(paramiko(address, "password", "version").status.code(), Some(3));
}

#[test]
#[ignore = "needs ssh (OpenSSH client): cargo xtask ci runs it"]
fn injected_faults() {
    let sim = Sim::start(&["--servers", "2"]);
    let fault =
        |name: &str, extra: &str| sim.set(&format!(r#"{{"fault": {{"server": "cms1", "fault": "{name}"{extra}}}}}"#));

    fault("refuse", "");
    std::thread::sleep(Duration::from_millis(300));
    let output = sim.ssh(0, &["version"], None);
    assert!(text(&output.stderr).contains("Connection refused"), "{}", text(&output.stderr));
    // The other server is unaffected.
    assert!(sim.ssh(1, &["version"], None).status.success());

    fault("blackhole", "");
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let output = sim.ssh(0, &["-o", "ConnectTimeout=2", "version"], None);
    assert!(!output.status.success());
    assert!(started.elapsed() >= Duration::from_secs(2), "it answered: {}", text(&output.stderr));

    fault("slow", r#", "seconds": 1.5"#);
    let started = Instant::now();
    let output = sim.ssh(0, &["version"], None);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(started.elapsed() >= Duration::from_millis(1500));

    fault("hang-after-auth", "");
    let started = Instant::now();
    let mut hung = Command::new("ssh");
    hung.args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-i"])
        .arg(sim.key())
        .args(["-p", &sim.ssh_port(0), "admin@127.0.0.1", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = hung.spawn().expect("ssh (apt-get install openssh-client)");
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "it answered after {:?}", started.elapsed());
    let _ = child.kill();
    let _ = child.wait();

    fault("none", "");
    assert!(sim.ssh(0, &["version"], None).status.success());
    let (status, text) =
        http(sim.control(), "POST", "/control", Some(r#"{"fault": {"server": "cms9", "fault": "refuse"}}"#));
    assert_eq!(status, 400);
    assert!(text.contains("cms9"));
}

#[test]
#[ignore = "needs ssh (OpenSSH client): cargo xtask ci runs it"]
fn garbage_half_handshakes_and_500_connections_do_not_stall_a_server() {
    let sim = Sim::start(&["--servers", "2"]);
    let address = sim.address("ssh", 0);
    // Garbage instead of a protocol.
    let mut garbage = TcpStream::connect(address).unwrap();
    let _ = garbage.write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(1000));
    drop(garbage);
    // A client that leaves in the middle of the handshake.
    let mut half = TcpStream::connect(address).unwrap();
    let _ = half.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
    let _ = half.read(&mut [0u8; 64]);
    drop(half);
    // Five hundred connections at once, held open.
    let held: Vec<TcpStream> = (0..500).filter_map(|_| TcpStream::connect(address).ok()).collect();
    assert!(held.len() >= 400, "only {} connected", held.len());
    let started = Instant::now();
    assert!(sim.ssh(0, &["version"], None).status.success());
    assert!(sim.ssh(1, &["version"], None).status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(held);
    assert!(sim.ssh(0, &["version"], None).status.success());
}

// ---- the web bridge page, the scenario file ------------------------------------------

#[test]
#[ignore = "needs ssh (OpenSSH client): cargo xtask ci runs it"]
fn the_page_goes_away_during_a_restart_and_join_fails_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("full.toml");
    std::fs::write(
        &scenario,
        "speed = 3600\nrestart_downtime_seconds = 2\n\n[[server]]\nname = \"edge1\"\n\n[[server]]\nname = \"edge2\"\n\n\
         [load]\nlimit = 3\nleak_probability = 1.0\nmean_session_minutes = 2\nweekend_factor = 1.0\n",
    )
    .unwrap();
    let sim = Sim::start_in(dir, &["--scenario", scenario.to_str().unwrap(), "--start", "2024-03-04T09:00:00Z"]);
    assert_eq!(sim.endpoints["servers"][1]["name"], "edge2");
    let page = sim.address("http", 0);
    let (status, body) = http(page, "GET", "/", None);
    assert_eq!(status, 200);
    assert!(body.contains("Sign in") && body.contains("Join meeting"));
    // Every session leaks and the limit is 3: full within seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    while http(page, "GET", "/join", None).0 != 503 {
        assert!(Instant::now() < deadline, "never full: {}", sim.truth());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(sim.truth()["servers"][0]["webbridge"]["active"].as_u64().unwrap() >= 3);
    assert!(sim.ssh(0, &["webbridge", "restart"], None).status.success());
    assert_eq!(http(page, "GET", "/", None).0, 503);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(http(page, "GET", "/", None).0, 200);
}

#[test]
fn a_bad_scenario_is_named_by_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("bad.toml");
    std::fs::write(&scenario, "speed = 60\n\n[load]\nleak_probabilty = 0.5\n").unwrap();
    let output =
        Command::new(env!("CARGO_BIN_EXE_cms-sim")).args(["run", "--scenario"]).arg(&scenario).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("bad.toml") && stderr.contains("line 4") && stderr.contains("leak_probabilty"), "{stderr}");
}

#[test]
#[ignore = "needs ssh (OpenSSH client): cargo xtask ci runs it"]
fn the_legacy_profile_offers_only_old_algorithms() {
    let sim = Sim::start(&["--servers", "1", "--legacy-ssh"]);
    // A modern OpenSSH refuses them by default...
    let output = sim.ssh(0, &["version"], None);
    assert!(!output.status.success());
    let refusal = text(&output.stderr);
    assert!(refusal.contains("no matching") || refusal.contains("Unable to negotiate"), "{refusal}");
    // ...and talks when told to accept them.
    let legacy = [
        "-o",
        "KexAlgorithms=+diffie-hellman-group14-sha1",
        "-o",
        "HostKeyAlgorithms=+ssh-rsa",
        "-o",
        "Ciphers=+aes128-cbc",
        "-o",
        "MACs=+hmac-sha1",
        "-v",
        "version",
    ];
    let output = sim.ssh(0, &legacy, None);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "version : 2.9.7\n");
    let debug = text(&output.stderr);
    assert!(debug.contains("kex: algorithm: diffie-hellman-group14-sha1"), "{debug}");
    assert!(debug.contains("host key algorithm: ssh-rsa"), "{debug}");
    assert!(debug.contains("cipher: aes128-cbc"), "{debug}");
}

#[test]
#[ignore = "needs ssh (OpenSSH client): cargo xtask ci runs it"]
fn release_3_has_only_web_bridge_3() {
    let sim = Sim::start(&["--servers", "1", "--release", "3.x"]);
    let output = sim.ssh(0, &["webbridge", "restart"], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stdout).starts_with("FAILURE:"), "{}", text(&output.stdout));
    assert!(sim.ssh(0, &["webbridge3", "restart"], None).status.success());
    assert_eq!(text(&sim.ssh(0, &["version"], None).stdout), "version : 3.8.1\n");
    assert_eq!(sim.truth()["servers"][0]["webbridge"]["leaks"], false);
    assert!(sim.restarts(0).is_empty());
}

#[test]
fn syslog_over_tcp_with_octet_counting() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let destination = format!("tcp://{}?framing=octet-counting", listener.local_addr().unwrap());
    let sim = Sim::start(&["--servers", "2", "--speed", "600", "--syslog", &destination]);
    assert_eq!(sim.endpoints["syslog"][0], destination.as_str());
    let (mut stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.len() < 20_000 && Instant::now() < deadline {
        let n = stream.read(&mut buffer).unwrap();
        received.extend_from_slice(&buffer[..n]);
    }
    // Frames: LENGTH SP MESSAGE, back to back, each message with its <PRI>.
    let mut rest = &received[..];
    let mut frames = 0;
    let mut stats = 0;
    while let Some(space) = rest.iter().position(|&b| b == b' ') {
        let length: usize = std::str::from_utf8(&rest[..space]).unwrap().parse().unwrap();
        if rest.len() < space + 1 + length {
            break; // the last frame may be cut off by our read
        }
        let message = &rest[space + 1..space + 1 + length];
        assert!(message.starts_with(b"<"), "{}", text(message));
        assert!(!message.contains(&b'\n'));
        stats += usize::from(text(message).contains("[DEBUGGING] Stats "));
        frames += 1;
        rest = &rest[space + 1 + length..];
    }
    assert!(frames > 50 && stats > 0, "{frames} frames, {stats} Stats");
}

#[test]
fn virtual_time_stands_still_while_paused() {
    let sim = Sim::start(&["--speed", "600"]);
    let time = |sim: &Sim| sim.truth()["time"].as_str().unwrap().to_owned();
    sim.set(r#"{"paused": true}"#);
    std::thread::sleep(Duration::from_millis(200));
    let stopped = time(&sim);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(time(&sim), stopped);
    assert_eq!(sim.truth()["paused"], true);
    sim.set(r#"{"paused": false}"#);
    std::thread::sleep(Duration::from_millis(500));
    // Resumed where it stopped: 0.5 s at 600x is five minutes, not a jump.
    let resumed = chrono::DateTime::parse_from_rfc3339(&time(&sim)).unwrap();
    let stopped = chrono::DateTime::parse_from_rfc3339(&stopped).unwrap();
    let advanced = (resumed - stopped).num_seconds();
    assert!((60..=900).contains(&advanced), "{advanced} s");
}

/// A real HTTP client joins through a web bridge page: the session is on
/// that web bridge (its Stats count it, `c:` moves), its CMA leg is live on
/// the call bridge, ending the leg through the control API frees the
/// session, and a restart while one is live drops it (counted in the
/// truth); the old `/join` only asks, as before.
#[test]
#[ignore = "needs ssh (OpenSSH client): cargo xtask ci runs it"]
fn a_join_through_the_page_is_a_live_session_and_call_until_ended_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("quiet.toml");
    std::fs::write(
        &scenario,
        "speed = 1\nrestart_downtime_seconds = 1\n\n[[server]]\nname = \"edge1\"\n\n[[server]]\nname = \"edge2\"\n\n\
         [load]\npeak_sessions = 0\nlimit = 2\nleak_probability = 0.0\n",
    )
    .unwrap();
    let sim = Sim::start_in(dir, &["--scenario", scenario.to_str().unwrap(), "--start", "2024-03-04T09:00:00Z"]);
    let page = sim.address("http", 0);
    let json = |body: &str| serde_json::from_str::<Value>(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let webbridge = |truth: &Value, i: usize| truth["servers"][i]["webbridge"].clone();

    let (status, body) = http(page, "POST", "/join/session", None);
    assert_eq!(status, 200, "{body}");
    let joined = json(&body);
    assert_eq!((joined["server"].as_str(), joined["callbridge"].as_str()), (Some("edge1"), Some("edge1")));
    let leg = joined["leg"].as_str().unwrap().to_owned();
    let truth = sim.truth();
    assert_eq!(
        (webbridge(&truth, 0)["real"].as_u64(), webbridge(&truth, 0)["connections"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(truth["servers"][0]["callbridge"]["cma_live"], 1);
    assert!(truth["legs"].as_array().unwrap().iter().any(|l| l["id"] == leg.as_str()), "{truth}");
    // Its call on the other call bridge; an unknown one is refused by name.
    let (status, body) = http(page, "POST", "/join/session?callbridge=edge2", None);
    assert_eq!((status, json(&body)["callbridge"].as_str()), (200, Some("edge2")));
    let second = json(&body)["leg"].as_str().unwrap().to_owned();
    let (status, body) = http(page, "POST", "/join/session?callbridge=edge9", None);
    assert_eq!(status, 400);
    assert!(body.contains("edge9"), "{body}");
    // At the limit (2): refused as a user would be; /join says so too.
    assert_eq!(http(page, "POST", "/join/session", None).0, 503);
    assert_eq!(http(page, "GET", "/join", None).0, 503);

    // The user hangs up: the session leaves the web bridge, nothing leaks.
    sim.set(&format!(r#"{{"end_leg": "{leg}"}}"#));
    let truth = sim.truth();
    assert_eq!(webbridge(&truth, 0)["real"], 1);
    assert_eq!(
        (webbridge(&truth, 0)["disconnections"].as_u64(), webbridge(&truth, 0)["leaked"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(http(page, "GET", "/join", None).0, 200);

    // A restart with one still live drops it.
    assert!(sim.ssh(0, &["webbridge", "restart"], None).status.success());
    let truth = sim.truth();
    assert_eq!(truth["totals"]["dropped_calls"], 1, "{truth}");
    assert_eq!(webbridge(&truth, 0)["restarts"][0]["dropped_real"], 1);
    assert_eq!(webbridge(&truth, 0)["real"], 0);
    assert!(!truth["legs"].as_array().unwrap().iter().any(|l| l["id"] == second.as_str()), "{truth}");
    // While it restarts, joins are refused; then accepted again.
    assert_eq!(http(page, "POST", "/join/session", None).0, 503);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(http(page, "POST", "/join/session", None).0, 200);
}
