//! End-to-end tests of the Call Bridge side of `cms-sim run`: the real
//! binary posts CDRs to a real HTTP receiver (axum, in the test) and serves
//! the Call Bridge API over HTTPS to a real client (ureq with rustls),
//! checked against `/truth`. The receiver parses every body with a real
//! XML parser (quick-xml).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quick_xml::events::Event;
use serde_json::Value;

// ---- the simulator -----------------------------------------------------------

struct Sim {
    child: Child,
    endpoints: Value,
    _dir: tempfile::TempDir,
}

impl Sim {
    fn start(args: &[&str]) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_cms-sim"));
        command.arg("run").arg("--state-dir").arg(dir.path().join("state"));
        command.args(["--ssh-port", "0", "--http-port", "0", "--control-port", "0", "--api-port", "0"]);
        command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("cms-sim starts");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver.recv_timeout(Duration::from_secs(30)).expect("the endpoints line");
        let endpoints: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!("no endpoints ({e}): {line} {stderr}")
        });
        Sim { child, endpoints, _dir: dir }
    }

    fn control(&self) -> SocketAddr {
        self.endpoints["control"].as_str().unwrap().parse().unwrap()
    }

    fn truth(&self) -> Value {
        let (status, body) = http(self.control(), "GET", "/truth", None);
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    fn set(&self, body: &str) -> String {
        let (status, text) = http(self.control(), "POST", "/control", Some(body));
        assert_eq!(status, 200, "{body}: {text}");
        text
    }

    /// Starts a leg by hand; its id.
    fn start_leg(&self, server: &str, kind: &str) -> String {
        let answer = self.set(&format!(r#"{{"leg": {{"server": "{server}", "type": "{kind}"}}}}"#));
        let answer: Value = serde_json::from_str(&answer).unwrap();
        answer["leg"].as_str().unwrap().to_owned()
    }

    fn server(&self, i: usize) -> &Value {
        &self.endpoints["servers"][i]
    }

    /// Waits until every CDR queue is empty.
    fn drain(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let truth = self.truth();
            let receivers = truth["cdr"]["receivers"].as_array().unwrap().clone();
            if receivers.iter().all(|r| r["queued"] == 0) {
                return;
            }
            assert!(Instant::now() < deadline, "CDR queues never drained: {receivers:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
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

// ---- a CDR receiver ---------------------------------------------------------------

/// How the receiver answers the next posts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Applies and answers 200.
    Ok,
    /// Answers 500 without applying.
    Fail,
    /// Applies, then answers only after the sender gave up (a lost answer).
    ApplyAndStall,
}

/// What the receiver's handler shares with the test.
type Shared = (Arc<Mutex<Inbox>>, Arc<Mutex<Mode>>);

#[derive(Default)]
struct Inbox {
    /// Every body applied, in order of arrival.
    applied: Vec<String>,
    /// Posts answered 500.
    refused: usize,
}

struct CdrReceiver {
    url: String,
    inbox: Arc<Mutex<Inbox>>,
    mode: Arc<Mutex<Mode>>,
    _runtime: tokio::runtime::Runtime,
}

impl CdrReceiver {
    fn start() -> CdrReceiver {
        use axum::routing::post;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let mode = Arc::new(Mutex::new(Mode::Ok));
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}/cdr?site=test", listener.local_addr().unwrap());
        let state = (inbox.clone(), mode.clone());
        let app = axum::Router::new()
            .route(
                "/cdr",
                post(
                    |axum::extract::State((inbox, mode)): axum::extract::State<Shared>,
                     query: axum::extract::RawQuery,
                     body: String| async move {
                        assert_eq!(query.0.as_deref(), Some("site=test"), "the query is sent as written");
                        let now = *mode.lock().unwrap();
                        match now {
                            Mode::Fail => {
                                inbox.lock().unwrap().refused += 1;
                                axum::http::StatusCode::INTERNAL_SERVER_ERROR
                            }
                            Mode::Ok | Mode::ApplyAndStall => {
                                inbox.lock().unwrap().applied.push(body);
                                if now == Mode::ApplyAndStall {
                                    // Once: the sender's 5 s deadline passes.
                                    *mode.lock().unwrap() = Mode::Ok;
                                    tokio::time::sleep(Duration::from_secs(7)).await;
                                }
                                axum::http::StatusCode::OK
                            }
                        }
                    },
                ),
            )
            .with_state(state);
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CdrReceiver { url, inbox, mode, _runtime: runtime }
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn batches(&self) -> Vec<Batch> {
        self.inbox.lock().unwrap().applied.iter().map(|body| parse(body)).collect()
    }
}

#[derive(Debug, Clone)]
struct Batch {
    session: String,
    callbridge: Option<String>,
    records: Vec<CdrRecord>,
}

#[derive(Debug, Clone)]
struct CdrRecord {
    kind: String,
    time: String,
    index: u64,
    correlator: u64,
    missing: Option<u64>,
    /// The `<callLeg id>` or `<call id>` inside.
    object: String,
    leg_type: Option<String>,
    sub_type: Option<String>,
}

fn attribute(element: &quick_xml::events::BytesStart<'_>, name: &str) -> Option<String> {
    element
        .attributes()
        .map(|a| a.expect("a well-formed attribute"))
        .find(|a| a.key.as_ref() == name.as_bytes())
        .map(|a| a.unescape_value().expect("a well-escaped attribute").into_owned())
}

/// Parses a POST body with a real XML parser; panics on anything malformed.
fn parse(body: &str) -> Batch {
    assert!(body.starts_with("<?xml version=\"1.0\"?>"), "{body}");
    let mut reader = quick_xml::Reader::from_str(body);
    let mut batch: Option<Batch> = None;
    let mut path: Vec<String> = Vec::new();
    loop {
        let event = reader.read_event().unwrap_or_else(|e| panic!("malformed XML ({e}): {body}"));
        match event {
            Event::Start(element) => {
                let name = String::from_utf8(element.name().as_ref().to_vec()).unwrap();
                match name.as_str() {
                    "records" => {
                        batch = Some(Batch {
                            session: attribute(&element, "session").expect("a session"),
                            callbridge: attribute(&element, "callBridge"),
                            records: Vec::new(),
                        })
                    }
                    "record" => batch.as_mut().expect("inside records").records.push(CdrRecord {
                        kind: attribute(&element, "type").unwrap(),
                        time: attribute(&element, "time").unwrap(),
                        index: attribute(&element, "recordIndex").unwrap().parse().unwrap(),
                        correlator: attribute(&element, "correlatorIndex").unwrap().parse().unwrap(),
                        missing: attribute(&element, "numPreceedingRecordsMissing").map(|m| m.parse().unwrap()),
                        object: String::new(),
                        leg_type: None,
                        sub_type: None,
                    }),
                    "callLeg" | "call" if path.last().map(String::as_str) == Some("record") => {
                        let record = batch.as_mut().unwrap().records.last_mut().unwrap();
                        record.object = attribute(&element, "id").expect("an id");
                    }
                    _ => {}
                }
                path.push(name);
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(text) => {
                let text = text.decode().unwrap().into_owned();
                let record = batch.as_mut().and_then(|b| b.records.last_mut());
                match (path.last().map(String::as_str), record) {
                    (Some("type"), Some(record)) => record.leg_type = Some(text),
                    (Some("subType"), Some(record)) => record.sub_type = Some(text),
                    _ => {}
                }
            }
            Event::GeneralRef(reference) => {
                let name = reference.decode().unwrap().into_owned();
                assert!(["amp", "lt", "gt", "quot", "apos"].contains(&name.as_str()), "&{name}; in {body}");
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(path.is_empty(), "unclosed elements {path:?}");
    batch.expect("a <records> element")
}

/// The records a receiver holds, once each: by (session, recordIndex).
fn unique(batches: &[Batch]) -> (BTreeMap<(String, u64), CdrRecord>, usize) {
    let mut records = BTreeMap::new();
    let mut duplicates = 0;
    for batch in batches {
        for record in &batch.records {
            if records.insert((batch.session.clone(), record.index), record.clone()).is_some() {
                duplicates += 1;
            }
        }
    }
    (records, duplicates)
}

/// Checks that each session's records are numbered 1, 2, 3... with no gap,
/// that correlatorIndex grows with them, and that times are whole UTC
/// seconds.
fn assert_complete(records: &BTreeMap<(String, u64), CdrRecord>) {
    let mut by_session: HashMap<&str, Vec<&CdrRecord>> = HashMap::new();
    for ((session, _), record) in records {
        by_session.entry(session).or_default().push(record);
    }
    for (session, mut list) in by_session {
        list.sort_by_key(|r| r.index);
        for (n, record) in list.iter().enumerate() {
            assert_eq!(record.index, n as u64 + 1, "session {session}: record indexes 1.. without a gap");
            assert!(record.missing.is_none());
            assert!(
                chrono::NaiveDateTime::parse_from_str(&record.time, "%Y-%m-%dT%H:%M:%SZ").is_ok(),
                "{}",
                record.time
            );
        }
        assert!(list.windows(2).all(|w| w[0].correlator < w[1].correlator));
        assert_eq!(list[0].correlator, 0);
    }
}

// ---- CDRs ---------------------------------------------------------------------

#[test]
fn cdrs_for_every_leg_agree_with_the_truth() {
    let receiver = CdrReceiver::start();
    let sim =
        Sim::start(&["--servers", "3", "--speed", "600", "--start", "2024-03-04T09:00:00Z", "--cdr", &receiver.url]);
    std::thread::sleep(Duration::from_secs(4));
    let hand = sim.start_leg("cms2", "acano");
    std::thread::sleep(Duration::from_secs(2));
    sim.set(&format!(r#"{{"end_leg": "{hand}"}}"#));
    let (status, text) = http(sim.control(), "POST", "/control", Some(&format!(r#"{{"end_leg": "{hand}"}}"#)));
    assert_eq!(status, 404, "{text}");
    sim.set(r#"{"paused": true}"#);
    sim.drain();
    let truth = sim.truth();
    let batches = receiver.batches();
    assert!(!batches.is_empty());
    let ids: Vec<&str> = (0..3).map(|i| sim.server(i)["callbridge_id"].as_str().unwrap()).collect();
    for batch in &batches {
        let callbridge = batch.callbridge.as_deref().expect("a cluster names the call bridge");
        assert!(ids.contains(&callbridge), "{callbridge}");
        assert!(batch.records.len() <= 100);
        assert!(batch.records.windows(2).all(|w| w[0].index + 1 == w[1].index), "one batch, consecutive indexes");
    }
    let (records, duplicates) = unique(&batches);
    assert_eq!(duplicates, 0, "a receiver that always answers 200 gets nothing twice");
    assert_complete(&records);

    let started: BTreeSet<&str> =
        records.values().filter(|r| r.kind == "callLegStart").map(|r| r.object.as_str()).collect();
    let ended: BTreeSet<&str> =
        records.values().filter(|r| r.kind == "callLegEnd").map(|r| r.object.as_str()).collect();
    let live: BTreeSet<&str> = truth["legs"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert!(ended.is_subset(&started));
    assert_eq!(started.len(), ended.len() + live.len(), "legs started = legs ended + live legs");
    assert!(live.is_subset(&started));
    assert!(started.contains(hand.as_str()) && ended.contains(hand.as_str()), "the hand-made leg's start and end");
    assert!(records.values().any(|r| r.sub_type.as_deref() == Some("distributionLink")), "links in a cluster");
    assert!(records.values().any(|r| r.leg_type.as_deref() == Some("sip")), "room systems");
    let calls_started = records.values().filter(|r| r.kind == "callStart").count();
    let calls_ended = records.values().filter(|r| r.kind == "callEnd").count();
    assert!(calls_started >= calls_ended && calls_ended > 0);

    // Per call bridge, cma_live counts its acano legs that are not links.
    for server in truth["servers"].as_array().unwrap() {
        let name = server["name"].as_str().unwrap();
        let cma = truth["legs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["server"] == name && l["type"] == "acano" && l["subType"].is_null())
            .count();
        assert_eq!(server["callbridge"]["cma_live"], cma, "{name}");
        assert_eq!(server["callbridge"]["cma"], cma, "{name}: STATS agree with the legs");
    }
    let stats = &truth["cdr"]["receivers"][0];
    assert_eq!(stats["records_delivered"], records.len());
    assert_eq!(stats["posts_failed"], 0);
}

#[test]
fn a_failing_receiver_gets_everything_later_with_duplicates_never_loss() {
    let receiver = CdrReceiver::start();
    receiver.set_mode(Mode::Fail);
    let sim =
        Sim::start(&["--servers", "2", "--speed", "300", "--start", "2024-03-04T09:00:00Z", "--cdr", &receiver.url]);
    let hand = sim.start_leg("cms1", "sip");
    std::thread::sleep(Duration::from_secs(3));
    assert!(receiver.inbox.lock().unwrap().refused > 0, "posts while the receiver fails");
    assert!(receiver.batches().is_empty());
    // An answer lost after the receiver applied the batch, then all well.
    receiver.set_mode(Mode::ApplyAndStall);
    std::thread::sleep(Duration::from_secs(9));
    sim.set(&format!(r#"{{"end_leg": "{hand}"}}"#));
    sim.set(r#"{"paused": true}"#);
    sim.drain();
    assert!(unique(&receiver.batches()).1 > 0, "the batch whose answer was lost came again");
    // And a duplicate on request.
    let before = receiver.batches().len();
    sim.set(r#"{"cdr_duplicate": true}"#);
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.batches().len() < before + 2 {
        assert!(Instant::now() < deadline, "no forced duplicates");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (records, duplicates) = unique(&receiver.batches());
    assert!(duplicates > 0, "a lost answer and cdr_duplicate repeat records");
    assert_complete(&records);
    assert!(records.values().any(|r| r.kind == "callLegEnd" && r.object == hand));
    let truth = sim.truth();
    let stats = &truth["cdr"]["receivers"][0];
    assert!(stats["posts_failed"].as_u64().unwrap() > 0);
    assert_eq!(stats["records_delivered"], records.len(), "delivered once each, all of them");
    assert!(stats["duplicates_sent"].as_u64().unwrap() >= 2);
    assert_eq!(stats["records_dropped"], 0);
}

#[test]
fn a_callbridge_restart_starts_a_new_session() {
    let receiver = CdrReceiver::start();
    let sim =
        Sim::start(&["--servers", "1", "--speed", "60", "--start", "2024-03-04T10:00:00Z", "--cdr", &receiver.url]);
    let before = sim.start_leg("cms1", "acano");
    sim.drain();
    let first = receiver.batches();
    assert!(first.iter().all(|b| b.callbridge.is_none()), "one server: no callBridge attribute");
    let old_session = first[0].session.clone();
    sim.set(r#"{"callbridge_restart": "cms1"}"#);
    let truth = sim.truth();
    assert!(truth["legs"].as_array().unwrap().is_empty(), "a restart ends every leg");
    assert_ne!(truth["servers"][0]["callbridge"]["cdr_session"], old_session.as_str());
    let after = sim.start_leg("cms1", "acano");
    sim.drain();
    let batches = receiver.batches();
    let (records, _) = unique(&batches);
    assert_complete(&records);
    let new: Vec<&CdrRecord> =
        batches.iter().filter(|b| b.session != old_session).flat_map(|b| b.records.iter()).collect();
    assert!(!new.is_empty());
    assert_eq!(new[0].index, 1, "a new session numbers from 1");
    assert!(new.iter().any(|r| r.kind == "callLegStart" && r.object == after));
    assert!(
        !records.values().any(|r| r.kind == "callLegEnd" && r.object == before),
        "a crash writes no callLegEnd for the legs it took"
    );
}

// ---- the Call Bridge API ----------------------------------------------------------

fn api_agent(sim: &Sim, server: usize) -> ureq::Agent {
    let pem = std::fs::read(sim.server(server)["api_cert"].as_str().unwrap()).unwrap();
    let certificate = ureq::tls::Certificate::from_pem(&pem).unwrap();
    let tls =
        ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![certificate]))).build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

/// GET with basic auth (admin:password unless `auth` says otherwise).
fn api_get(
    agent: &ureq::Agent,
    sim: &Sim,
    server: usize,
    path: &str,
    auth: Option<&str>,
) -> Result<(u16, String), String> {
    let url = format!("https://{}{path}", sim.server(server)["api"].as_str().unwrap());
    let mut request = agent.get(&url);
    if let Some(user_password) = auth.or(Some("admin:password")).filter(|a| !a.is_empty()) {
        let encoded = base64(user_password.as_bytes());
        request = request.header("Authorization", &format!("Basic {encoded}"));
    }
    let mut response = request.call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let www = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    let body = response.body_mut().read_to_string().unwrap_or_default();
    if status == 401 {
        assert_eq!(www.as_deref(), Some("Basic realm=\"acano\""));
    }
    Ok((status, body))
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `id`s of `<callLeg>` elements, and the `total`.
fn call_leg_ids(body: &str) -> (usize, Vec<String>) {
    let mut reader = quick_xml::Reader::from_str(body);
    let (mut total, mut ids) = (0, Vec::new());
    loop {
        match reader.read_event().unwrap_or_else(|e| panic!("malformed XML ({e}): {body}")) {
            Event::Start(e) if e.name().as_ref() == b"callLegs" => {
                total = attribute(&e, "total").unwrap().parse().unwrap()
            }
            Event::Empty(e) if e.name().as_ref() == b"callLegs" => {
                total = attribute(&e, "total").unwrap().parse().unwrap()
            }
            Event::Start(e) if e.name().as_ref() == b"callLeg" => ids.push(attribute(&e, "id").unwrap()),
            Event::Eof => break,
            _ => {}
        }
    }
    (total, ids)
}

/// The text of the first `<name>` element.
fn element_text(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("<{name}>"))? + name.len() + 2;
    let end = body[start..].find(&format!("</{name}>"))?;
    Some(body[start..start + end].to_owned())
}

#[test]
fn the_api_over_https_answers_for_the_legs_each_call_bridge_hosts() {
    let sim = Sim::start(&["--servers", "2", "--speed", "600", "--start", "2024-03-04T09:00:00Z"]);
    std::thread::sleep(Duration::from_secs(3));
    let hand = sim.start_leg("cms2", "acano");
    sim.set(r#"{"paused": true}"#);
    let truth = sim.truth();
    let agent = api_agent(&sim, 1);

    let (status, _) = api_get(&agent, &sim, 1, "/api/v1/callLegs", Some("")).unwrap();
    assert_eq!(status, 401, "no credentials");
    let (status, _) = api_get(&agent, &sim, 1, "/api/v1/callLegs", Some("admin:wrong")).unwrap();
    assert_eq!(status, 401, "a wrong password");

    for server in 0..2 {
        let agent = api_agent(&sim, server);
        let name = sim.server(server)["name"].as_str().unwrap();
        let expected: BTreeSet<String> = truth["legs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["server"] == name)
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(expected.len() > 3, "enough legs to page: {}", expected.len());
        let (status, body) = api_get(&agent, &sim, server, "/api/v1/callLegs", None).unwrap();
        assert_eq!(status, 200);
        let (total, first_page) = call_leg_ids(&body);
        assert_eq!(total, expected.len());
        assert_eq!(first_page.len(), expected.len().min(10), "10 to a page by default");
        let mut seen = BTreeSet::new();
        let mut offset = 0;
        while offset < total {
            let (_, body) =
                api_get(&agent, &sim, server, &format!("/api/v1/callLegs?offset={offset}&limit=3"), None).unwrap();
            let (_, page) = call_leg_ids(&body);
            assert!(page.len() <= 3 && !page.is_empty());
            seen.extend(page);
            offset += 3;
        }
        assert_eq!(seen, expected, "{name}: the pages hold exactly its live legs");
        let (status, body) = api_get(&agent, &sim, server, "/api/v1/system/status", None).unwrap();
        assert_eq!(status, 200);
        assert_eq!(element_text(&body, "callLegsActive").unwrap(), expected.len().to_string());
        assert_eq!(element_text(&body, "clusterEnabled").unwrap(), "true");
        let (_, body) = api_get(&agent, &sim, server, "/api/v1/callBridges", None).unwrap();
        assert!(
            body.contains("<callBridges total=\"2\">")
                && body.contains(sim.server(1)["callbridge_id"].as_str().unwrap())
        );
    }

    // The hand-made leg: in /truth, in its call bridge's API, not the other's.
    let leg = truth["legs"].as_array().unwrap().iter().find(|l| l["id"] == hand.as_str()).unwrap().clone();
    assert_eq!(
        (leg["server"].as_str(), leg["type"].as_str(), leg["webrtc"].as_bool()),
        (Some("cms2"), Some("acano"), Some(false))
    );
    let (status, body) = api_get(&agent, &sim, 1, &format!("/api/v1/callLegs/{hand}"), None).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(element_text(&body, "type").as_deref(), Some("acano"));
    assert_eq!(element_text(&body, "state").as_deref(), Some("connected"));
    assert!(element_text(&body, "subType").is_none());
    let other = api_agent(&sim, 0);
    assert_eq!(api_get(&other, &sim, 0, &format!("/api/v1/callLegs/{hand}"), None).unwrap().0, 404);
    assert_eq!(api_get(&agent, &sim, 1, "/api/v1/callLegs/not-a-guid", None).unwrap().0, 404);
    assert_eq!(api_get(&agent, &sim, 1, "/api/v1/callLegs?limit=x", None).unwrap().0, 400);
    let link = truth["legs"].as_array().unwrap().iter().find(|l| l["subType"] == "distributionLink");
    if let Some(link) = link {
        let server = if link["server"] == "cms1" { 0 } else { 1 };
        let agent = api_agent(&sim, server);
        let (_, body) =
            api_get(&agent, &sim, server, &format!("/api/v1/callLegs/{}", link["id"].as_str().unwrap()), None).unwrap();
        assert_eq!(element_text(&body, "subType").as_deref(), Some("distributionLink"));
    }

    // Faults: 500, refused, and back.
    sim.set(r#"{"api_fault": {"server": "cms2", "kind": "error"}}"#);
    assert_eq!(api_get(&agent, &sim, 1, "/api/v1/system/status", None).unwrap().0, 500);
    sim.set(r#"{"api_fault": {"server": "cms2", "kind": "down"}}"#);
    std::thread::sleep(Duration::from_millis(500));
    let api: SocketAddr = sim.server(1)["api"].as_str().unwrap().parse().unwrap();
    assert!(TcpStream::connect_timeout(&api, Duration::from_secs(2)).is_err(), "down: connections refused");
    sim.set(r#"{"api_fault": {"server": "cms2", "kind": "none"}}"#);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(api_get(&agent, &sim, 1, "/api/v1/system/status", None).unwrap().0, 200);
    let (status, text) =
        http(sim.control(), "POST", "/control", Some(r#"{"api_fault": {"server": "cms2", "kind": "flaky"}}"#));
    assert_eq!(status, 400);
    assert!(text.contains("flaky"), "{text}");

    // A client that does not trust the certificate is refused.
    let untrusting = ureq::Agent::config_builder().build().new_agent();
    let url = format!("https://{}/api/v1/system/status", sim.server(1)["api"].as_str().unwrap());
    assert!(untrusting.get(&url).call().is_err(), "an unknown self-signed certificate");
}

// ---- CDRs over HTTPS ------------------------------------------------------------

/// An HTTPS CDR receiver with a fresh self-signed certificate (written to
/// `ca`); counts the records it was posted and answers 200.
fn https_receiver(ca: &std::path::Path) -> (String, Arc<Mutex<usize>>, tokio::runtime::Runtime) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(ca, certificate.pem()).unwrap();
    let der = rustls::pki_types::CertificateDer::from(certificate.der().to_vec());
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], private)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("https://{}/cdr", listener.local_addr().unwrap());
    let records = Arc::new(Mutex::new(0));
    let counted = records.clone();
    runtime.spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { continue };
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(socket).await else { return };
                let mut request = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then the body its Content-Length announces.
                let body_start = loop {
                    let Ok(n) = stream.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&chunk[..n]);
                    if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end + 4;
                    }
                };
                let head = String::from_utf8_lossy(&request[..body_start]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap();
                while request.len() < body_start + length {
                    let Ok(n) = stream.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&chunk[..n]);
                }
                let batch = parse(std::str::from_utf8(&request[body_start..]).unwrap());
                *counted.lock().unwrap() += batch.records.len();
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (url, records, runtime)
}

#[test]
fn https_receivers_are_verified_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("receiver.pem");
    let (url, records, _runtime) = https_receiver(&ca);
    let ca_text = ca.to_str().unwrap();
    for (extra, trusted) in [(vec![], false), (vec!["--cdr-ca", ca_text], true), (vec!["--cdr-insecure"], true)] {
        *records.lock().unwrap() = 0;
        let mut args = vec!["--servers", "1", "--speed", "60", "--start", "2024-03-04T10:00:00Z", "--cdr", &url];
        args.extend(extra.iter().copied());
        let sim = Sim::start(&args);
        sim.start_leg("cms1", "acano");
        let deadline = Instant::now() + Duration::from_secs(15);
        let stats = loop {
            let stats = sim.truth()["cdr"]["receivers"][0].clone();
            let settled = if trusted { stats["queued"] == 0 } else { stats["posts_failed"].as_u64().unwrap() >= 2 };
            if settled {
                break stats;
            }
            assert!(Instant::now() < deadline, "{extra:?}: {stats}");
            std::thread::sleep(Duration::from_millis(200));
        };
        let received = *records.lock().unwrap();
        if trusted {
            assert!(received > 0, "{extra:?}");
            assert_eq!(stats["records_delivered"], received, "{extra:?}");
        } else {
            assert_eq!(received, 0, "an unknown self-signed certificate is refused by default");
            assert_eq!(stats["records_delivered"], 0);
        }
    }
}
