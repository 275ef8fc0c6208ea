//! The Call Bridge API check end to end: `wbguard trust` and `wbguard
//! restart` against the simulator's MMP (SSH, its truth counts the
//! restarts) and a small Call Bridge API served here over real HTTPS on
//! 127.0.0.1 (rustls, a certificate made by openssl, basic auth, XML,
//! paged lists, keep-alive, chunked answers).

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::restart::{Lab, Out};
use super::{s, wbguard_env};

const API_USER: &str = "wbguard";
const API_PASSWORD: &str = "api-s3cret-Pa55";
const MMP_PASSWORD: &str = "correct horse battery staple";

/// One live leg the fake call bridge reports.
#[derive(Clone)]
struct Leg {
    id: String,
    kind: &'static str,
    sub_type: Option<&'static str>,
}

fn leg(n: u32, kind: &'static str, sub_type: Option<&'static str>) -> Leg {
    Leg { id: format!("970d1e9c-8d5f-4b5b-9a1c-{n:012}"), kind, sub_type }
}

/// What the fake call bridge holds.
#[derive(Default)]
struct State {
    legs: Vec<Leg>,
    /// Listed, but gone by the time they are fetched (404).
    vanishing: Vec<String>,
    /// Requests served, by path.
    requests: VecDeque<String>,
}

/// A Call Bridge API over HTTPS on 127.0.0.1, in its own runtime.
struct FakeApi {
    runtime: Option<tokio::runtime::Runtime>,
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    certificate: PathBuf,
}

/// A self-signed certificate for 127.0.0.1 in `dir`, named `name`.
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={name}"), "-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-keyout", s(&key), "-out", s(&cert)])
        .stderr(Stdio::null())
        .status()
        .expect("openssl (apt-get install openssl)");
    assert!(made.success(), "openssl req failed");
    (cert, key)
}

/// `sha256:hex` of a PEM certificate, as openssl computes it.
fn openssl_fingerprint(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in", s(cert)])
        .output()
        .expect("openssl (apt-get install openssl)");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.trim().rsplit('=').next().unwrap().replace(':', "").to_ascii_lowercase();
    format!("sha256:{hex}")
}

impl FakeApi {
    /// Serves on `port` (0: any) with a new certificate named `name`.
    fn start(dir: &Path, name: &str, port: u16, legs: Vec<Leg>) -> FakeApi {
        let (cert, key) = certificate(dir, name);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let state = Arc::new(Mutex::new(State { legs, ..State::default() }));
        let address = runtime.block_on(serve(&cert, &key, port, state.clone()));
        FakeApi { runtime: Some(runtime), address, state, certificate: cert }
    }

    fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    fn set_legs(&self, legs: Vec<Leg>) {
        self.state.lock().unwrap().legs = legs;
    }

    fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.iter().cloned().collect()
    }

    /// Stops serving: its port refuses connections.
    fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(cert: &Path, key: &Path, port: u16, state: Arc<Mutex<State>>) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let chain = vec![rustls::pki_types::CertificateDer::from_pem_file(cert).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (acceptor, state) = (acceptor.clone(), state.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let _ = connection(tls, state).await;
            });
        }
    });
    address
}

/// Requests on one kept-alive connection, until the client closes it.
async fn connection(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    state: Arc<Mutex<State>>,
) -> std::io::Result<()> {
    let mut stream = BufReader::new(tls);
    let expected = format!("Basic {}", data_encoding::BASE64.encode(format!("{API_USER}:{API_PASSWORD}").as_bytes()));
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut authorized = false;
        loop {
            let mut header = String::new();
            stream.read_line(&mut header).await?;
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                authorized |= name.eq_ignore_ascii_case("authorization") && value.trim() == expected;
            }
        }
        let (status, body, chunked) = if authorized { answer(&path, &state) } else { (401, String::new(), false) };
        state.lock().unwrap().requests.push_back(path);
        let reason = match status {
            200 => "OK",
            401 => "Unauthorized",
            _ => "Not Found",
        };
        let mut response = format!("HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml\r\n");
        if status == 401 {
            response.push_str("WWW-Authenticate: Basic realm=\"acano\"\r\n");
        }
        if chunked {
            // Lists come in chunks, as a server streaming its answer sends them.
            response.push_str("Transfer-Encoding: chunked\r\n\r\n");
            for piece in body.as_bytes().chunks(40) {
                response.push_str(&format!("{:x}\r\n{}\r\n", piece.len(), String::from_utf8_lossy(piece)));
            }
            response.push_str("0\r\n\r\n");
        } else {
            response.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        }
        stream.get_mut().write_all(response.as_bytes()).await?;
        stream.get_mut().flush().await?;
    }
}

/// The API's answer to `path`: status, body, whether to send it chunked.
fn answer(path: &str, state: &Mutex<State>) -> (u16, String, bool) {
    let state = state.lock().unwrap();
    let listed: Vec<&str> =
        state.legs.iter().map(|l| l.id.as_str()).chain(state.vanishing.iter().map(String::as_str)).collect();
    if path == "/api/v1/system/status" {
        let body = format!(
            "<?xml version=\"1.0\"?><status><softwareVersion>2.9.4</softwareVersion><uptimeSeconds>9000</uptimeSeconds>\
             <activated>true</activated><callLegsActive>{}</callLegsActive><callLegsMaxActive>40</callLegsMaxActive></status>",
            listed.len()
        );
        return (200, body, false);
    }
    if let Some(query) = path.strip_prefix("/api/v1/callLegs?") {
        let value = |name: &str| {
            query.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}="))).and_then(|v| v.parse::<usize>().ok())
        };
        // Two a page at most, whatever is asked: the client must page.
        let (offset, limit) = (value("offset").unwrap_or(0), value("limit").unwrap_or(10).min(2));
        let mut body = format!("<?xml version=\"1.0\"?><callLegs total=\"{}\">", listed.len());
        for id in listed.iter().skip(offset).take(limit) {
            body.push_str(&format!(
                "<callLeg id=\"{id}\"><name>n</name><remoteParty>r</remoteParty><call>c</call></callLeg>"
            ));
        }
        body.push_str("</callLegs>");
        return (200, body, true);
    }
    if let Some(id) = path.strip_prefix("/api/v1/callLegs/") {
        if let Some(leg) = state.legs.iter().find(|l| l.id == id) {
            let sub = leg.sub_type.map(|s| format!("<subType>{s}</subType>")).unwrap_or_default();
            let body = format!(
                "<?xml version=\"1.0\"?><callLeg id=\"{id}\"><name></name><remoteParty>x</remoteParty><type>{}</type>{sub}\
                 <direction>incoming</direction><configuration/><status><state>connected</state>\
                 <durationSeconds>42</durationSeconds></status></callLeg>",
                leg.kind
            );
            return (200, body, false);
        }
    }
    (404, String::new(), false)
}

/// The lab's configuration with `apis[i]` as server i's API.
fn config(lab: &Lab, global: &str, apis: &[String]) -> PathBuf {
    let global = format!("{global}\n[api]\nuser = \"{API_USER}\"\npassword_env = \"TEST_API_PW\"\n");
    lab.config(&global, |i| apis.get(i).map(|url| format!("api = \"{url}\"")).unwrap_or_default())
}

fn run(args: &[&str], api_password: &str) -> Out {
    Out(wbguard_env(args, None, &[("TEST_MMP_PW", MMP_PASSWORD), ("TEST_API_PW", api_password), ("USER", "tester")]))
}

#[test]
#[ignore = "needs openssl: cargo xtask ci runs it"]
fn trust_pins_the_api_certificate_and_restart_refuses_an_unknown_or_changed_one() {
    let lab = Lab::start(1, |_| {});
    let api = FakeApi::start(lab.path("").as_path(), "cms1-api", 0, Vec::new());
    let config = config(&lab, "", &[api.url()]);
    let fingerprint = openssl_fingerprint(&api.certificate);
    let pins = lab.path("api_certificates");

    // Unknown: refused with its fingerprint and the cure, no SSH command sent.
    let out = run(&["restart", "--config", s(&config)], API_PASSWORD);
    assert_eq!(out.code(), 3, "{}", out.all());
    assert!(out.all().contains("unknown API certificate") && out.all().contains(&fingerprint), "{}", out.all());
    assert!(out.all().contains("wbguard trust cms1"), "{}", out.all());
    assert_eq!(lab.restarts(), [0]);
    assert!(api.requests().is_empty(), "a request went to an untrusted API: {:?}", api.requests());

    // trust records the host key and the API certificate.
    let out = run(&["trust", "--yes", "--config", s(&config), "cms1"], API_PASSWORD);
    assert_eq!(out.code(), 0, "{}", out.all());
    assert!(out.all().contains(&fingerprint) && out.all().contains("CN=cms1-api, valid "), "{}", out.all());
    let address = api.address.to_string();
    assert_eq!(std::fs::read_to_string(&pins).unwrap(), format!("{address} {fingerprint}\n"));
    assert!(api.requests().is_empty(), "trust sent a request: {:?}", api.requests());

    // A host key already trusted does not stop the API certificate's turn.
    std::fs::remove_file(&pins).unwrap();
    let out = run(&["trust", "--yes", "--config", s(&config), "cms1"], API_PASSWORD);
    assert_eq!(out.code(), 0, "{}", out.all());
    assert!(out.all().contains("is already trusted") && out.all().contains("recorded in"), "{}", out.all());
    let out = run(&["trust", "--yes", "--config", s(&config), "cms1"], API_PASSWORD);
    assert!(out.all().contains(&format!("the API certificate at {address} is already trusted")), "{}", out.all());

    // Trusted, no legs: one request, and the restart goes ahead.
    let out = run(&["restart", "--config", s(&config)], API_PASSWORD);
    assert_eq!(out.code(), 0, "{}", out.all());
    assert_eq!(lab.restarts(), [1]);
    assert_eq!(api.requests(), ["/api/v1/system/status"]);

    // A wrong password: refused, not shown, nothing restarted.
    let out = run(&["restart", "--config", s(&config)], "wrong-guess-77");
    assert_eq!(out.code(), 3, "{}", out.all());
    assert!(out.all().contains("refused the configured API user and password (401)"), "{}", out.all());
    assert!(!out.all().contains("wrong-guess-77") && !out.all().contains(API_PASSWORD), "{}", out.all());
    assert_eq!(lab.restarts(), [1]);

    // Another certificate on the same address: refused as changed, by
    // restart and by trust alike.
    let port = api.address.port();
    drop(api);
    let other = FakeApi::start(lab.path("").as_path(), "impostor", port, Vec::new());
    let out = run(&["restart", "--config", s(&config)], API_PASSWORD);
    assert_eq!(out.code(), 3, "{}", out.all());
    assert!(out.all().contains("API CERTIFICATE CHANGED") && out.all().contains(&fingerprint), "{}", out.all());
    assert!(out.all().contains(&openssl_fingerprint(&other.certificate)), "{}", out.all());
    let out = run(&["trust", "--yes", "--config", s(&config), "cms1"], API_PASSWORD);
    assert_eq!(out.code(), 3, "{}", out.all());
    assert!(out.all().contains("WARNING") && out.all().contains("Not recorded"), "{}", out.all());
    assert_eq!(lab.restarts(), [1]);
    assert!(other.requests().is_empty(), "the password went to an impostor: {:?}", other.requests());
}

#[test]
#[ignore = "needs openssl: cargo xtask ci runs it"]
fn restart_waits_for_live_cma_calls_skips_while_they_last_and_force_overrides() {
    let lab = Lab::start(2, |_| {});
    let dir = lab.path("");
    // cms1's call bridge: two room systems, a link to cms2 and a leg gone
    // before it is fetched; cms2's: one CMA call.
    let cms1 = FakeApi::start(
        &dir,
        "cms1-api",
        0,
        vec![leg(1, "sip", None), leg(2, "sip", None), leg(3, "acano", Some("distributionLink"))],
    );
    cms1.state.lock().unwrap().vanishing.push(leg(4, "acano", None).id);
    let mut cms2 = FakeApi::start(&dir, "cms2-api", 0, vec![leg(5, "acano", None)]);
    let config = config(&lab, "host_key_policy = \"accept-new\"", &[cms1.url(), cms2.url()]);

    // A live CMA call: both web bridges skipped, exit 3, the reason said.
    let out = run(&["restart", "--config", s(&config)], API_PASSWORD);
    assert_eq!(out.code(), 3, "{}", out.all());
    assert!(out.all().contains("API: 1 CMA call live on cms2"), "{}", out.all());
    assert!(out.all().contains("recorded the API certificate of cms1"), "{}", out.all());
    assert_eq!(lab.restarts(), [0, 0]);
    // cms1 was read page by page (two a page), every listed leg fetched
    // once, by each of the two checks (one before each web bridge).
    let asked = cms1.requests();
    assert_eq!(asked.iter().filter(|p| p.starts_with("/api/v1/system/status")).count(), 2, "{asked:?}");
    assert_eq!(asked.iter().filter(|p| p.starts_with("/api/v1/callLegs?")).count(), 2 * 2, "{asked:?}");
    assert_eq!(asked.iter().filter(|p| p.starts_with("/api/v1/callLegs/")).count(), 2 * 4, "{asked:?}");
    let pins = std::fs::read_to_string(lab.path("api_certificates")).unwrap();
    assert_eq!(pins.lines().count(), 2, "{pins}");

    // --force restarts anyway, and says so.
    let out = run(&["restart", "--config", s(&config), "--force", "--only", "cms1"], API_PASSWORD);
    assert_eq!(out.code(), 0, "{}", out.all());
    assert!(out.all().contains("restarting anyway (--force)"), "{}", out.all());
    assert_eq!(lab.restarts(), [1, 0]);

    // --wait-idle: the call ends after a second, then both restart.
    let ender = {
        let state = cms2.state.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            state.lock().unwrap().legs.clear();
        })
    };
    let started = Instant::now();
    let out = run(&["restart", "--config", s(&config), "--wait-idle", "30s"], API_PASSWORD);
    ender.join().unwrap();
    assert_eq!(out.code(), 0, "{}", out.all());
    assert!(out.all().contains("waiting: API: 1 CMA call live on cms2"), "{}", out.all());
    assert!(started.elapsed() >= Duration::from_secs(1) && started.elapsed() < Duration::from_secs(25));
    assert_eq!(lab.restarts(), [2, 1]);

    // Room systems and links only: no CMA call, restarts go ahead.
    let out = run(&["restart", "--config", s(&config)], API_PASSWORD);
    assert_eq!(out.code(), 0, "{}", out.all());
    assert_eq!(lab.restarts(), [3, 2]);

    // A call that lasts past --wait-idle: skipped after the wait.
    cms2.set_legs(vec![leg(6, "acano", None)]);
    let out = run(&["restart", "--config", s(&config), "--only", "cms1", "--wait-idle", "3s"], API_PASSWORD);
    assert_eq!(out.code(), 3, "{}", out.all());
    assert!(out.all().contains("skipped: API: 1 CMA call live on cms2 (after waiting"), "{}", out.all());
    assert_eq!(lab.restarts(), [3, 2]);
    let audit = std::fs::read_to_string(lab.path("state/restart-audit.jsonl")).unwrap();
    assert!(audit.lines().last().unwrap().contains("API: 1 CMA call live on cms2"), "{audit}");

    // An API that does not answer: skipped, unless --force.
    cms2.stop();
    let out = run(&["restart", "--config", s(&config), "--only", "cms1"], API_PASSWORD);
    assert_eq!(out.code(), 3, "{}", out.all());
    assert!(out.all().contains("cms2: the Call Bridge API does not answer"), "{}", out.all());
    assert_eq!(lab.restarts(), [3, 2]);
    let out = run(&["restart", "--config", s(&config), "--only", "cms1", "--force"], API_PASSWORD);
    assert_eq!(out.code(), 0, "{}", out.all());
    assert_eq!(lab.restarts(), [4, 2]);
    assert!(!out.all().contains(API_PASSWORD));
}

#[test]
fn config_check_shows_the_api_without_its_password_and_warns_about_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("api-password");
    std::fs::write(&password, API_PASSWORD).unwrap();
    std::fs::set_permissions(&password, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let path = dir.path().join("wbguard.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    write!(
        file,
        "[api]\nuser = \"{API_USER}\"\npassword_file = {:?}\n[policy]\napi_unreachable = \"logs\"\n\
         [[server]]\nname = \"cms1\"\nmmp = \"10.0.0.1\"\napi = \"https://10.0.0.1:445\"\n\
         [[server]]\nname = \"lab\"\nmmp = \"10.0.0.2\"\napi = \"http://10.0.0.2:8080\"\n[server.api_auth]\npassword_env = \"LAB_PW\"\n",
        s(&password)
    )
    .unwrap();
    let out = Out(wbguard_env(&["config", "check", "--config", s(&path)], None, &[("LAB_PW", "x")]));
    assert_eq!(out.code(), 0, "{}", out.all());
    let text = out.all();
    assert!(text.contains("Call Bridge API: https://10.0.0.1:445 as wbguard, password from"), "{text}");
    assert!(text.contains("certificate pinned (wbguard trust)") && text.contains("$LAB_PW"), "{text}");
    assert!(text.contains("warning: server[1] (lab).api") && text.contains("plain http://"), "{text}");
    assert!(text.contains("\"api_unreachable\": \"logs\""), "{text}");
    assert!(!text.contains(API_PASSWORD), "{text}");

    // A password in the URL: refused by its key, and not repeated.
    std::fs::write(&path, "[[server]]\nname = \"cms1\"\nmmp = \"h\"\napi = \"https://admin:hunter2@10.0.0.1:445\"\n")
        .unwrap();
    let out = Out(wbguard_env(&["config", "check", "--config", s(&path)], None, &[]));
    assert_eq!(out.code(), 2, "{}", out.all());
    assert!(out.all().contains("server[0].api") && !out.all().contains("hunter2"), "{}", out.all());
}
