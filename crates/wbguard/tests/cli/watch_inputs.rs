//! The guard's other inputs and outputs, end to end: syslog over TLS from
//! `openssl s_client`, a followed log file across rotation, a source that
//! speaks for another server, webhooks received by a local HTTP server,
//! and a reload on SIGHUP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::s;
use super::watch::Guard;

/// An RFC 3164 line from `host`, stamped now (UTC).
fn line(host: &str, program: &str, text: &str) -> String {
    format!("<14>{} {host} {program}: {text}", chrono::Utc::now().format("%b %e %H:%M:%S"))
}

fn stats(host: &str, active: u32) -> String {
    line(host, "webbridge", &format!("INFO : [DEBUGGING] Stats {active}, c:{}, d:5", active + 5))
}

fn active(host: &str) -> String {
    format!("wbguard_webbridge_active_sessions{{cluster=\"default\",webbridge=\"{host}\"}}")
}

#[test]
#[ignore = "needs openssl: cargo xtask ci runs it"]
fn syslog_over_tls_is_received_and_plain_text_on_its_port_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = super::watch_limits::certificate(dir.path());
    let config = dir.path().join("wbguard.toml");
    let text = format!("[watch]\ntls_certificate = {:?}\ntls_key = {:?}\n", s(&cert), s(&key));
    // The key is readable by others: refused, named.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&config, format!("{text}[[server]]\nname = \"cms1\"\nmmp = \"127.0.0.1\"\n")).unwrap();
    let out = super::wbguard(
        &["watch", "--config", s(&config), "--listen-syslog", "tls://127.0.0.1:0", "--listen-http", "127.0.0.1:0"],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("TLS key") && stderr.contains("chmod 600"), "{stderr}");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    let guard = Guard::start(&["--config", s(&config), "--listen-syslog", "tls://127.0.0.1:0"]);
    let port = guard.port("tls");
    let (mut client, mut stdin) = super::watch_limits::tls_sender(format!("127.0.0.1:{port}").parse().unwrap());
    writeln!(stdin, "{}", stats("cms1", 42)).unwrap();
    // Octet counting works inside TLS too.
    let framed = stats("cms1", 43);
    write!(stdin, "{} {framed}", framed.len()).unwrap();
    stdin.flush().unwrap();
    guard.wait_for(&active("cms1"), 43.0);
    drop(stdin);
    let _ = client.wait();
    // Plain text on the TLS port is a failed handshake, never a message.
    let mut plain = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    writeln!(plain, "{}", stats("cms1", 99)).unwrap();
    let _ = plain.read(&mut [0u8; 64]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(guard.metric(&active("cms1")), Some(43.0));
    assert_eq!(guard.stop(), 0);
}

#[test]
fn a_followed_file_is_read_across_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("cms.log");
    std::fs::write(&log, format!("{}\n", stats("cmsfile", 10))).unwrap();
    let guard = Guard::start(&["--follow", s(&log)]);
    guard.wait_for(&active("cmsfile"), 10.0);
    // Appended, then rotated as logrotate does (rename, new file).
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(file, "{}", stats("cmsfile", 11)).unwrap();
    guard.wait_for(&active("cmsfile"), 11.0);
    writeln!(file, "{}", stats("cmsfile", 12)).unwrap();
    std::fs::rename(&log, dir.path().join("cms.log.1")).unwrap();
    std::fs::write(&log, format!("{}\n", stats("cmsfile", 13))).unwrap();
    guard.wait_for(&active("cmsfile"), 13.0);
    guard.wait_for(r#"wbguard_syslog_messages_total{result="parsed"}"#, 4.0);
    assert_eq!(guard.stop(), 0);
}

#[test]
fn an_allowed_source_cannot_speak_for_another_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wbguard.toml");
    std::fs::write(
        &config,
        "[[server]]\nname = \"cms1\"\nmmp = \"192.0.2.11\"\nsyslog_from = [\"127.0.0.1\"]\n\
         [[server]]\nname = \"cms2\"\nmmp = \"192.0.2.12\"\n",
    )
    .unwrap();
    let guard = Guard::start(&["--config", s(&config)]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = format!("127.0.0.1:{}", guard.port("udp"));
    socket.send_to(stats("cms2", 148).as_bytes(), &to).unwrap();
    socket.send_to(stats("cms1", 20).as_bytes(), &to).unwrap();
    guard.wait_for(&active("cms1"), 20.0);
    guard.wait_for(r#"wbguard_syslog_messages_total{result="rejected"}"#, 1.0);
    assert!(!guard.get("/metrics").contains("webbridge=\"cms2\""));
}

/// A local webhook receiver: each POST's body, answered 200.
pub fn receiver() -> (String, mpsc::Receiver<(String, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (posts, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).unwrap();
            let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
            let _ = posts.send((path, serde_json::from_slice(&body).unwrap()));
            let _ = reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, received)
}

#[test]
fn webhooks_hear_of_a_lockout_in_their_own_shapes() {
    let (url, posts) = receiver();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wbguard.toml");
    std::fs::write(
        &config,
        format!(
            "[[webhook]]\nurl = \"{url}/generic\"\n\
             [[webhook]]\nformat = \"slack\"\nurl_env = \"WBGUARD_TEST_SLACK\"\nevents = [\"lockout\"]\n\
             [[server]]\nname = \"cms1\"\nmmp = \"127.0.0.1\"\n"
        ),
    )
    .unwrap();
    std::env::set_var("WBGUARD_TEST_SLACK", format!("{url}/slack"));
    let guard = Guard::start(&["--config", s(&config)]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(stats("cms1", 149).as_bytes(), format!("127.0.0.1:{}", guard.port("udp"))).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let post = posts.recv_timeout(left).unwrap_or_else(|_| panic!("only {seen:?}"));
        seen.push(post);
    }
    let slack: Vec<&Value> = seen.iter().filter(|(path, _)| path == "/slack").map(|(_, body)| body).collect();
    assert_eq!(slack.len(), 1, "{seen:?}");
    assert!(slack[0]["text"].as_str().unwrap().starts_with("wbguard cms1: at its limit (149 sessions)"), "{seen:?}");
    let events: Vec<&str> =
        seen.iter().filter(|(path, _)| path == "/generic").map(|(_, body)| body["event"].as_str().unwrap()).collect();
    // At its limit the decision is a restart for the lockout: its own event.
    assert!(events.contains(&"lockout") && events.contains(&"lockout_restart"), "{seen:?}");
    let decision = &seen.iter().find(|(_, body)| body["event"] == "lockout_restart").unwrap().1;
    assert_eq!(decision["webbridge"], "cms1");
    assert_eq!(decision["details"]["active"], 149);
    assert_eq!(decision["details"]["lockout"]["at_limit"], true);
    // Edge-triggered: the same state is not announced again.
    std::thread::sleep(Duration::from_secs(2));
    assert!(posts.try_recv().is_err());
    guard.wait_for(r#"wbguard_webhook_notifications_total{result="sent"}"#, 3.0);
}

#[test]
fn sighup_rereads_the_configuration_and_a_broken_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wbguard.toml");
    // Enforce mode needs credentials the guard could use: a password file.
    let password = dir.path().join("mmp-password");
    std::fs::write(&password, "unused\n").unwrap();
    std::fs::set_permissions(&password, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let servers = "[[server]]\nname = \"cms1\"\nmmp = \"127.0.0.1\"\n[server.auth]\npassword_file = \"mmp-password\"\n";
    std::fs::write(&config, servers).unwrap();
    let guard = Guard::start(&["--config", s(&config)]);
    let mode = || {
        let status: Value = serde_json::from_str(&guard.get("/api/status")).unwrap();
        status["mode"].as_str().unwrap().to_owned()
    };
    let wait_mode = |wanted: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while mode() != wanted {
            assert!(Instant::now() < deadline, "the mode stayed {}", mode());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(mode(), "observe");
    std::fs::write(&config, format!("[policy]\nmode = \"enforce\"\n{servers}")).unwrap();
    guard.signal("HUP");
    wait_mode("enforce");
    std::fs::write(&config, format!("[policy]\nmode = \"observe\"\nmin_interval = \"soon\"\n{servers}")).unwrap();
    guard.signal("HUP");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(mode(), "enforce");
    assert_eq!(guard.stop(), 0);
}

/// At most 256 TCP senders are served at once: the next one waits for a
/// place, and is served as soon as one closes.
#[test]
fn tcp_senders_beyond_the_bound_wait_for_a_place() {
    let guard = Guard::start(&[]);
    let to = format!("127.0.0.1:{}", guard.port("tcp"));
    let idle: Vec<std::net::TcpStream> = (0..256).map(|_| std::net::TcpStream::connect(&to).unwrap()).collect();
    let mut waiting = std::net::TcpStream::connect(&to).unwrap();
    writeln!(waiting, "{}", stats("cmswait", 5)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(!guard.get("/metrics").contains("cmswait"), "served beyond the bound");
    drop(idle);
    guard.wait_for(&active("cmswait"), 5.0);
}

/// At most 256 HTTP connections are served at once: with every place
/// taken, the next one is answered at once, and the connection silent
/// longest (the first) is closed to make room; the others stay.
#[test]
fn an_http_connection_beyond_the_bound_takes_the_place_of_the_one_silent_longest() {
    let guard = Guard::start(&[]);
    let opened = Instant::now();
    let idle: Vec<std::net::TcpStream> = (0..256).map(|_| std::net::TcpStream::connect(guard.http).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut newcomer = std::net::TcpStream::connect(guard.http).unwrap();
    newcomer.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    newcomer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    newcomer.read_to_end(&mut answer).unwrap();
    assert!(String::from_utf8_lossy(&answer).ends_with("ok\n"), "{}", String::from_utf8_lossy(&answer));
    let closed = || -> Vec<usize> { (0..idle.len()).filter(|&i| closed_by_the_guard(&idle[i])).collect() };
    let deadline = Instant::now() + Duration::from_secs(5);
    while closed().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Before HEAD (10 s) closes the silent ones anyway.
    if opened.elapsed() < Duration::from_secs(8) {
        assert_eq!(closed(), [0]);
    }
}

/// Whether the guard closed `stream` (end of stream, or a reset), without
/// waiting: a stream still open has nothing to read.
fn closed_by_the_guard(stream: &std::net::TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    match (&*stream).read(&mut [0u8; 1]) {
        Ok(n) => n == 0,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Waits until the guard has parsed `records` messages, and says how many
/// it parsed and found malformed.
fn parsed_when_settled(guard: &Guard, records: u64) -> (u64, u64) {
    let count = |result: &str| {
        guard.metric(&format!("wbguard_syslog_messages_total{{result=\"{result}\"}}")).unwrap_or(0.0) as u64
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while count("parsed") < records && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    (count("parsed"), count("malformed"))
}

/// One mixed log, in every header shape CMS servers and relays write (the
/// ISO and relay ones open with digits), sent over one TCP connection and
/// followed as a file: every record arrives both ways. TCP used to read a
/// line that opens with digits as an octet count and close the connection.
#[test]
fn every_header_shape_arrives_over_tcp_as_from_a_file() {
    use cms_sim::genlog::{self, GenOptions};
    use cms_sim::scenario::Scenario;

    let options = GenOptions {
        scenario: Scenario::with_servers(6),
        seed: 5,
        start: chrono::Utc::now() - chrono::Duration::hours(3),
        duration: Some(chrono::Duration::hours(2)),
        max_bytes: None,
        lines_per_record: 3,
        header: None, // each server its own shape: all six
        restarts: Vec::new(),
    };
    let mut log = Vec::new();
    let summary = genlog::generate(&options, &mut log, None).unwrap();
    assert!(log.split(|&b| b == b'\n').any(|l| l.first().is_some_and(u8::is_ascii_digit)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cms.log");
    std::fs::write(&path, &log).unwrap();

    let followed = Guard::start(&["--follow", s(&path)]);
    let streamed = Guard::start(&[]);
    let mut tcp = std::net::TcpStream::connect(format!("127.0.0.1:{}", streamed.port("tcp"))).unwrap();
    tcp.write_all(&log).unwrap();
    drop(tcp);
    assert_eq!(parsed_when_settled(&followed, summary.records), (summary.records, 0), "followed");
    assert_eq!(parsed_when_settled(&streamed, summary.records), (summary.records, 0), "over TCP");
}

/// CPU time a process has used so far, in clock ticks (user + system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// With few file descriptors (64), the guard lowers its connection bounds
/// to fit, and says so: 100 senders then wait in the listen backlog
/// instead of running it out of descriptors (accepts failing with EMFILE,
/// a spinning core); `/healthz` is answered meanwhile, and a new sender is
/// served as soon as the others go.
#[test]
fn with_few_file_descriptors_the_bounds_are_lowered_to_fit() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("guard.log");
    let guard = Guard::start_with_few_files(64, &log, &[]);
    let to = format!("127.0.0.1:{}", guard.port("tcp"));
    let senders: Vec<std::net::TcpStream> = (0..100).map(|_| std::net::TcpStream::connect(&to).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(guard.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(guard.pid()) - before;
    // Spinning would use about 2 s (200 ticks at 100 Hz); waiting, almost nothing.
    assert!(used < 40, "{used} ticks of CPU in 2 s");
    assert_eq!(guard.get("/healthz"), "ok\n");
    drop(senders);
    let mut sender = std::net::TcpStream::connect(&to).unwrap();
    writeln!(sender, "{}", stats("cmsfiles", 3)).unwrap();
    drop(sender);
    guard.wait_for(&active("cmsfiles"), 3.0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("file limit 64") && text.contains("too low for 256 HTTP"), "{text}");
    assert!(!text.contains("cannot accept connections"), "{text}");
}
