//! The CDR receiver end to end: a real `wbguard watch --listen-cdr`, a
//! real HTTP client posting CDR bodies as a Call Bridge does (batches,
//! re-sends, restarts, lost records, garbage, strangers), the live counts
//! read back from `/metrics`, and the open legs kept across a restart of
//! the guard.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;

use super::watch::Guard;
use super::{free_port, s};

/// One HTTP/1.1 request from `from` (an address on loopback) to `to`: the
/// status and the body.
fn request(from: &str, to: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&format!("{from}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let mut stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // A refused body may be cut off: the answer is what matters.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned())
}

/// Posts a CDR body from 127.0.0.1.
fn post(to: SocketAddr, body: &str) -> (u16, String) {
    request("127.0.0.1", to, "POST", "/cdr", body.as_bytes())
}

/// A body of `records` (each `(index, type, inner XML)`) in `session`.
fn records(session: &str, records: &[(u64, &str, String)]) -> String {
    let mut xml = format!("<?xml version=\"1.0\"?>\n<records session=\"{session}\" callBridge=\"5c1e3b2a-cb01\">");
    for (index, kind, inner) in records {
        xml.push_str(&format!(
            "<record type=\"{kind}\" time=\"2026-03-02T10:00:{:02}Z\" recordIndex=\"{index}\" correlatorIndex=\"{}\">{inner}</record>",
            index % 60,
            index - 1
        ));
    }
    xml.push_str("</records>");
    xml
}

/// A `<callLeg>` of `id`: its type (and subType) or none.
fn leg(id: &str, kind: &str) -> String {
    let fields = match kind {
        "acano" => "<type>acano</type><guestConnection>true</guestConnection><remoteParty>guest</remoteParty>",
        "sip" => "<type>sip</type><remoteParty>room@example.com</remoteParty><direction>incoming</direction>",
        "link" => "<type>acano</type><subType>distributionLink</subType>",
        _ => "",
    };
    format!("<callLeg id=\"{id}\">{fields}</callLeg>")
}

/// A guard receiving CDRs on a free port; `extra` as for [`Guard::start`].
fn guard(scheme: &str, extra: &[&str]) -> (Guard, SocketAddr) {
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let url = format!("{scheme}://{address}");
    let mut args = vec!["--listen-cdr", &url];
    args.extend_from_slice(extra);
    (Guard::start(&args), address)
}

fn series(name: &str, callbridge: &str, kind: Option<&str>) -> String {
    match kind {
        Some(kind) => format!("{name}{{cluster=\"default\",callbridge=\"{callbridge}\",type=\"{kind}\"}}"),
        None => format!("{name}{{cluster=\"default\",callbridge=\"{callbridge}\"}}"),
    }
}

fn counted(result: &str) -> String {
    format!("wbguard_cdr_records_total{{result=\"{result}\"}}")
}

/// Whether `/metrics` has a series for `callbridge`'s live CMA calls.
/// The call bridge as the guard first hears it: a session whose start the
/// guard cannot vouch for (a receiver added during calls is numbered from
/// 1 too), then a restart, from which on its count is known.
fn boot(from: &str, to: SocketAddr) {
    let first = records("s-0", &[(1, "callStart", String::new())]);
    let (status, body) = request(from, to, "POST", "/cdr", first.as_bytes());
    assert_eq!(status, 200, "{body}");
}

fn has_cma(guard: &Guard, callbridge: &str) -> bool {
    guard
        .get("/metrics")
        .contains(&format!("{}{{cluster=\"default\",callbridge=\"{callbridge}\"}} ", "wbguard_callbridge_cma_calls"))
}

#[test]
fn legs_of_every_kind_open_and_close_and_duplicates_are_counted() {
    let (guard, cdr) = guard("http", &[]);
    let cb = "127.0.0.1";
    boot(cb, cdr);
    assert_eq!(guard.metric(&series("wbguard_callbridge_cdr_known", cb, None)), Some(0.0), "first heard: unknown");
    let first = records(
        "s-1",
        &[
            (1, "callStart", "<call id=\"c1\"><name>Team</name></call>".into()),
            (2, "callLegStart", leg("a", "acano")),
            (3, "callLegStart", leg("s", "sip")),
            (4, "callLegStart", leg("d", "link")),
            (5, "callLegStart", leg("u", "")),
            (6, "callLegUpdate", "<callLeg id=\"a\"><state>connected</state><call>c1</call></callLeg>".into()),
            (7, "recordingStart", "<recording id=\"r\"/>".into()),
        ],
    );
    let (status, body) = post(cdr, &first);
    assert_eq!(status, 200, "{body}");
    assert_eq!(guard.metric(&series("wbguard_callbridge_cma_calls", cb, None)), Some(2.0), "acano and untyped");
    for (kind, n) in [("acano", 1.0), ("sip", 1.0), ("distribution_link", 1.0), ("untyped", 1.0), ("other", 0.0)] {
        assert_eq!(guard.metric(&series("wbguard_callbridge_calls", cb, Some(kind))), Some(n), "{kind}");
    }
    assert_eq!(guard.metric(&series("wbguard_callbridge_cdr_known", cb, None)), Some(1.0));
    assert_eq!(guard.metric(&counted("applied")), Some(8.0));
    // The Call Bridge did not hear the 200 and sends the batch again.
    assert_eq!(post(cdr, &first).0, 200);
    assert_eq!(guard.metric(&counted("duplicate")), Some(7.0));
    assert_eq!(guard.metric(&counted("applied")), Some(8.0));
    // Ends: a known leg, and one never seen open (changes nothing).
    let ends = records(
        "s-1",
        &[(8, "callLegEnd", leg("a", "")), (9, "callLegEnd", leg("never-open", "")), (10, "callEnd", String::new())],
    );
    assert_eq!(post(cdr, &ends).0, 200);
    assert_eq!(guard.metric(&series("wbguard_callbridge_cma_calls", cb, None)), Some(1.0));
    assert_eq!(guard.metric(&series("wbguard_callbridge_calls", cb, Some("acano"))), Some(0.0));
    assert_eq!(guard.metric(&counted("applied")), Some(11.0));
    assert_eq!(guard.stop(), 0);
}

#[test]
fn a_new_session_forgets_the_legs_and_lost_records_make_the_count_unknown() {
    let (guard, cdr) = guard("http", &[]);
    let cb = "127.0.0.1";
    boot(cb, cdr);
    let opened = records("s-1", &[(1, "callLegStart", leg("a", "acano")), (2, "callLegStart", leg("b", "acano"))]);
    assert_eq!(post(cdr, &opened).0, 200);
    assert_eq!(guard.metric(&series("wbguard_callbridge_cma_calls", cb, None)), Some(2.0));
    // The call bridge restarted: its calls ended with it.
    let restarted = records("s-2", &[(1, "callLegStart", leg("c", "acano"))]);
    assert_eq!(post(cdr, &restarted).0, 200);
    assert_eq!(guard.metric(&series("wbguard_callbridge_cma_calls", cb, None)), Some(1.0));
    // It threw records away: the count cannot be trusted.
    let lost = "<records session=\"s-2\"><record type=\"callLegStart\" recordIndex=\"2\" correlatorIndex=\"9\" \
                numPreceedingRecordsMissing=\"5\"><callLeg id=\"d\"><type>sip</type></callLeg></record></records>";
    assert_eq!(post(cdr, lost).0, 200);
    guard.wait_for(&series("wbguard_callbridge_cdr_known", cb, None), 0.0);
    assert!(!has_cma(&guard, cb), "{}", guard.get("/metrics"));
    // Still unknown after more records: only a reconcile makes it known.
    assert_eq!(post(cdr, &records("s-2", &[(3, "callLegEnd", leg("c", ""))])).0, 200);
    assert!(!has_cma(&guard, cb));
    // A restart of the call bridge starts it over from its first record.
    assert_eq!(post(cdr, &records("s-3", &[(1, "callStart", String::new())])).0, 200);
    assert_eq!(guard.metric(&series("wbguard_callbridge_cma_calls", cb, None)), Some(0.0));
}

#[test]
fn garbage_is_refused_and_counted_and_the_next_batch_is_applied() {
    let (guard, cdr) = guard("http", &[]);
    let laughs = r#"<?xml version="1.0"?><!DOCTYPE records [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><records session="&b;"/>"#;
    for garbage in [
        "this is not XML",
        "<records>",
        laughs,
        "<records session=\"s\"><record type=\"x\" recordIndex=\"1\"><a>&undeclared;</a></record></records>",
    ] {
        let (status, body) = post(cdr, garbage);
        assert_eq!(status, 400, "{garbage}: {body}");
    }
    let (_, body) = post(cdr, laughs);
    assert!(body.contains("DTD"), "{body}");
    guard.wait_for(&counted("malformed"), 5.0);
    boot("127.0.0.1", cdr);
    let good = records("s-1", &[(1, "callLegStart", leg("a", "acano"))]);
    assert_eq!(post(cdr, &good).0, 200);
    assert_eq!(guard.metric(&series("wbguard_callbridge_cma_calls", "127.0.0.1", None)), Some(1.0));
    // Only POST /cdr.
    assert_eq!(request("127.0.0.1", cdr, "GET", "/cdr", b"").0, 405);
    assert_eq!(request("127.0.0.1", cdr, "POST", "/metrics", good.as_bytes()).0, 404);
    // A body over 4 MiB is refused before it is read.
    let huge = format!("<records session=\"s-1\">{}</records>", " ".repeat(4 << 20));
    assert_eq!(post(cdr, &huge).0, 413);
    guard.wait_for(&counted("malformed"), 6.0);
    // The query string of the receiver's URI is sent as it is; it changes nothing.
    let next = records("s-1", &[(2, "callLegEnd", leg("a", ""))]);
    assert_eq!(request("127.0.0.1", cdr, "POST", "/cdr?site=berlin", next.as_bytes()).0, 200);
    assert_eq!(guard.metric(&series("wbguard_callbridge_cma_calls", "127.0.0.1", None)), Some(0.0));
}

#[test]
fn a_sender_not_on_the_allow_list_is_refused_and_a_server_is_named_by_its_log_host() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wbguard.toml");
    std::fs::write(
        &config,
        "[[server]]\nname = \"cms1\"\nmmp = \"192.0.2.11\"\nlog_host = \"CMS1-Core\"\nsyslog_from = [\"127.0.0.2\"]\n",
    )
    .unwrap();
    let (guard, cdr) = guard("http", &["--config", s(&config)]);
    let body = records("s-1", &[(1, "callLegStart", leg("a", "acano"))]);
    let (status, answer) = post(cdr, &body);
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("127.0.0.1 is not on the allow list"), "{answer}");
    guard.wait_for(&counted("rejected"), 1.0);
    assert!(!guard.get("/metrics").contains("wbguard_callbridge_cma_calls{"));
    // From the server's own address: applied, under its log host's name.
    boot("127.0.0.2", cdr);
    let (status, answer) = request("127.0.0.2", cdr, "POST", "/cdr", body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(guard.metric(&series("wbguard_callbridge_cma_calls", "cms1-core", None)), Some(1.0));
}

#[test]
fn open_legs_survive_a_restart_of_the_guard() {
    let state = tempfile::tempdir().unwrap();
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let url = format!("http://{address}");
    let start = || Guard::start(&["--listen-cdr", &url, "--state-dir", s(state.path())]);
    let guard = start();
    boot("127.0.0.1", address);
    let opened = records(
        "s-1",
        &[
            (1, "callLegStart", leg("a", "acano")),
            (2, "callLegStart", leg("b", "acano")),
            (3, "callLegStart", leg("s", "sip")),
        ],
    );
    assert_eq!(post(address, &opened).0, 200);
    assert_eq!(post(address, &records("s-1", &[(4, "callLegEnd", leg("b", ""))])).0, 200);
    assert_eq!(guard.stop(), 0);
    let guard = start();
    assert_eq!(guard.metric(&series("wbguard_callbridge_cma_calls", "127.0.0.1", None)), Some(1.0));
    assert_eq!(guard.metric(&series("wbguard_callbridge_calls", "127.0.0.1", Some("sip"))), Some(1.0));
    assert_eq!(guard.metric(&series("wbguard_callbridge_cdr_known", "127.0.0.1", None)), Some(1.0));
    // What it had applied is still a duplicate; what comes next applies.
    assert_eq!(post(address, &records("s-1", &[(4, "callLegEnd", leg("b", ""))])).0, 200);
    assert_eq!(guard.metric(&counted("duplicate")), Some(1.0));
    assert_eq!(post(address, &records("s-1", &[(5, "callLegEnd", leg("a", ""))])).0, 200);
    assert_eq!(guard.metric(&series("wbguard_callbridge_cma_calls", "127.0.0.1", None)), Some(0.0));
    assert_eq!(guard.stop(), 0);
    // Killed without a word, it keeps what it answered 200 for.
    let guard = start();
    assert_eq!(post(address, &records("s-1", &[(6, "callLegStart", leg("e", "acano"))])).0, 200);
    drop(guard);
    let guard = start();
    assert_eq!(guard.metric(&series("wbguard_callbridge_cma_calls", "127.0.0.1", None)), Some(1.0));
}

#[test]
#[ignore = "needs openssl and curl: cargo xtask ci runs it"]
fn cdrs_over_https_use_the_guards_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = super::watch_limits::certificate(dir.path());
    let config = dir.path().join("wbguard.toml");
    let server = "[[server]]\nname = \"cms1\"\nmmp = \"192.0.2.11\"\nsyslog_from = [\"127.0.0.1\"]\n";
    let text = format!("[watch]\ntls_certificate = {:?}\ntls_key = {:?}\n{server}", s(&cert), s(&key));
    std::fs::write(&config, text).unwrap();
    let (guard, cdr) = guard("https", &["--config", s(&config)]);
    let body = records("s-1", &[(1, "callLegStart", leg("a", "acano"))]);
    let curl = Command::new("curl")
        .args(["-sS", "--cacert", s(&cert), "--connect-to", &format!("localhost:{0}:127.0.0.1:{0}", cdr.port())])
        .args(["--data-binary", &body, "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://localhost:{}/cdr", cdr.port()))
        .output()
        .expect("curl (apt-get install curl)");
    let code = String::from_utf8_lossy(&curl.stdout);
    assert_eq!(code, "200", "{}", String::from_utf8_lossy(&curl.stderr));
    assert_eq!(guard.metric(&counted("applied")), Some(1.0));
    // Applied under the server's name (its first session: known only later).
    assert_eq!(guard.metric(&series("wbguard_callbridge_cdr_known", "cms1", None)), Some(0.0));
    // Plain HTTP on the HTTPS port is not a CDR.
    let (status, _) = post(cdr, &body);
    assert_ne!(status, 200);
}
