//! The status page in a real browser: Debian's headless Chromium, driven
//! through chromedriver's WebDriver protocol, opens the page of a running
//! `wbguard demo`, checks that its rows and its fleet summary show what
//! `/api/status` says, that the cluster's chart is drawn, that a web
//! bridge's chart is drawn when it is opened and that the filter filters,
//! and saves a screenshot as a test artifact
//! (`target/tmp/artifacts/status-page.png`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(url: &str) -> Value {
    ureq::get(url).call().unwrap().body_mut().read_json().unwrap()
}

/// One WebDriver command.
fn webdriver(method: &str, url: &str, body: Option<Value>) -> Value {
    let response = match (method, body) {
        ("POST", Some(body)) => ureq::post(url).send_json(body),
        ("DELETE", _) => ureq::delete(url).call(),
        _ => ureq::get(url).call(),
    };
    let answer: Value = response.unwrap().body_mut().read_json().unwrap();
    answer["value"].clone()
}

/// What the page shows, read from its DOM.
const READ_PAGE: &str = r#"
const field = (row, name) => row.querySelector('[data-field=' + name + ']').textContent;
const rows = [...document.querySelectorAll('#webbridges tbody tr[data-webbridge]')].map((r) => ({
  webbridge: r.dataset.webbridge, active: field(r, 'active'), leaked: field(r, 'leaked'),
  harmless: field(r, 'harmless'), last_restart: field(r, 'last_restart') }));
const summary = Object.fromEntries([...document.querySelectorAll('[data-summary]')]
  .map((n) => [n.dataset.summary, Number(n.textContent)]));
const charts = [...document.querySelectorAll('#webbridges svg')].map((svg) => ({
  webbridge: svg.dataset.webbridge || null, cluster: svg.dataset.cluster || null,
  active_lines: svg.querySelectorAll('path.active').length,
  active_points: (svg.querySelector('path.active')?.getAttribute('d') || '').split('L').length,
  cma: svg.querySelector('path.cma') !== null,
  leak_range: svg.querySelector('polygon.leak-range') !== null,
  restarts: svg.querySelectorAll('line.restart').length }));
return { mode: document.querySelector('#mode').textContent, rows, summary, charts };
"#;

/// The fleet summary the page should show for `/api/status`: each web
/// bridge at the limit, to restart (or drain), held, silent, or else fine.
fn summary(status: &Value) -> Value {
    let limit = status["limit"].as_u64().unwrap();
    let mut counts = json!({"fine": 0, "needs_restart": 0, "held": 0, "at_limit": 0, "silent": 0});
    for wb in status["webbridges"].as_array().unwrap() {
        let decision = status["decisions"].as_array().unwrap().iter().find(|d| d["webbridge"] == wb["webbridge"]);
        let action = decision.and_then(|d| d["action"].as_str()).unwrap_or("");
        let mut kinds = Vec::new();
        if wb["active"].as_u64().unwrap() >= limit {
            kinds.push("at_limit");
        }
        if action == "restart" || action == "drain" {
            kinds.push("needs_restart");
        }
        if action == "hold" {
            kinds.push("held");
        }
        if wb["silent"] == true {
            kinds.push("silent");
        }
        if kinds.is_empty() {
            kinds.push("fine");
        }
        for kind in kinds {
            counts[kind] = json!(counts[kind].as_u64().unwrap() + 1);
        }
    }
    counts
}

/// Rows by name: the page puts those that need a look first.
fn by_name(mut rows: Vec<Value>) -> Vec<Value> {
    rows.sort_by_key(|r| r["webbridge"].as_str().unwrap().to_owned());
    rows
}

/// What the page should show for one web bridge of `/api/status`.
fn expected(wb: &Value) -> Value {
    let droppable = wb["droppable_upper"].as_u64().unwrap();
    let last = wb["restarts"].as_array().unwrap().last().and_then(Value::as_str);
    json!({
        "webbridge": wb["webbridge"],
        "active": wb["active"].to_string(),
        "leaked": format!("{}\u{2013}{}", wb["leaked_lower"], wb["leaked_upper"]),
        "harmless": if droppable == 0 { "harmless".to_owned() } else { format!("could drop {droppable} call(s)") },
        "last_restart": last.map_or("none seen".to_owned(), |t| t.replace('T', " ")[..16].to_owned()),
    })
}

#[test]
#[ignore = "needs chromium and chromedriver: cargo xtask ci runs it"]
fn the_status_page_shows_what_the_api_says_and_draws_its_charts() {
    let chromedriver = which("chromedriver").expect("chromedriver (apt-get install chromium-driver)");
    let chromium = which("chromium").expect("chromium (apt-get install chromium)");
    let http_port = super::free_port();
    let mut demo = Killed(
        Command::new(env!("CARGO_BIN_EXE_wbguard"))
            .args(["demo", "--duration", "600s", "--listen-http", &format!("127.0.0.1:{http_port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(demo.0.stdout.take().unwrap()).lines();
    let mut control: Option<SocketAddr> = None;
    let mut page = None;
    while control.is_none() || page.is_none() {
        let line = lines.next().expect("the demo prints its addresses").unwrap();
        if let Some(url) = line.strip_prefix("Status page: ") {
            page = Some(url.to_owned());
        }
        if let Some(rest) = line.strip_prefix("Simulator: the truth at http://") {
            control = rest.split('/').next().unwrap().parse().ok();
        }
    }
    let (control, page) = (control.unwrap(), page.unwrap());
    // Let the leak grow until the guard has restarted a web bridge, then
    // stop simulated time: the page and the API then describe one state.
    let deadline = Instant::now() + Duration::from_secs(240);
    while super::truth(control)["totals"]["restarts"].as_u64().unwrap() < 2 {
        assert!(Instant::now() < deadline, "no restart: {}", super::truth(control));
        std::thread::sleep(Duration::from_millis(500));
    }
    super::control(control, r#"{"paused": true}"#);
    std::thread::sleep(Duration::from_secs(3));

    let driver_port = super::free_port();
    let _driver = Killed(
        Command::new(chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let driver = format!("http://127.0.0.1:{driver_port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while ureq::get(&format!("{driver}/status")).call().is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let session = webdriver(
        "POST",
        &format!("{driver}/session"),
        Some(json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1200"],
        }}}})),
    );
    let session = format!("{driver}/session/{}", session["sessionId"].as_str().expect("a browser session"));
    webdriver("POST", &format!("{session}/url"), Some(json!({ "url": page })));

    let status_url = format!("{page}api/status");
    let read = || webdriver("POST", &format!("{session}/execute/sync"), Some(json!({"script": READ_PAGE, "args": []})));
    let deadline = Instant::now() + Duration::from_secs(30);
    let (shown, status) = loop {
        let shown = read();
        let status = get(&status_url);
        let want = by_name(status["webbridges"].as_array().unwrap().iter().map(expected).collect());
        let rows = by_name(shown["rows"].as_array().cloned().unwrap_or_default());
        if rows == want
            && shown["summary"] == summary(&status)
            && shown["charts"].as_array().is_some_and(|c| !c.is_empty())
        {
            assert_eq!(shown["mode"], status["mode"]);
            break (shown, status);
        }
        assert!(Instant::now() < deadline, "the page shows {shown}\nthe API says {want:?}, {}", summary(&status));
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(shown["rows"].as_array().unwrap().len(), 4, "{shown}");
    // One cluster: its chart is open, each web bridge's sessions against
    // the cluster's CMA, with the restarts.
    let cluster = &shown["charts"][0];
    assert_eq!((cluster["cluster"].as_str(), cluster["active_lines"].as_u64()), (Some("default"), Some(4)), "{shown}");
    assert!(cluster["cma"] == true && cluster["restarts"].as_u64().unwrap() > 0, "{shown}");

    // A web bridge's chart is drawn when it is opened: one that restarted.
    let restarted = status["webbridges"].as_array().unwrap().iter().find(|w| w["restarts_total"].as_u64() > Some(0));
    let name = restarted.expect("a restarted web bridge")["webbridge"].as_str().unwrap().to_owned();
    click(&session, &format!("button[data-open='webbridge:{name}']"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let chart = loop {
        let shown = read();
        let chart = shown["charts"].as_array().unwrap().iter().find(|c| c["webbridge"] == name.as_str()).cloned();
        if let Some(chart) = chart.filter(|c| c["active_points"].as_u64() > Some(10)) {
            break chart;
        }
        assert!(Instant::now() < deadline, "no chart for {name}: {shown}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(chart["leak_range"] == true && chart["restarts"].as_u64().unwrap() > 0, "{chart}");
    // The filter keeps the web bridges (and clusters) whose name has the text.
    let filter = find(&session, "#filter");
    webdriver("POST", &format!("{session}/element/{filter}/value"), Some(json!({"text": name})));
    let shown = read();
    let names: Vec<&Value> = shown["rows"].as_array().unwrap().iter().map(|r| &r["webbridge"]).collect();
    assert_eq!(names, [&json!(name)], "{shown}");
    webdriver("POST", &format!("{session}/element/{filter}/clear"), Some(json!({})));

    let screenshot = webdriver("GET", &format!("{session}/screenshot"), None);
    let png = data_encoding::BASE64.decode(screenshot.as_str().unwrap().as_bytes()).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("status-page.png"), png).unwrap();
    webdriver("DELETE", &session, None);

    // Interrupted, the demo ends with the month's comparison.
    let status = Command::new("kill").args(["-INT", &demo.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let text = rest.join("\n");
    assert!(text.contains("REFUSED JOINS") && text.contains("Cisco's script, Saturdays 02:00"), "{text}");
    assert_eq!(demo.0.wait().unwrap().code(), Some(0));
}

/// The WebDriver id of the element `css` finds.
fn find(session: &str, css: &str) -> String {
    let found = webdriver("POST", &format!("{session}/element"), Some(json!({"using": "css selector", "value": css})));
    let id = found.as_object().and_then(|o| o.values().next()).and_then(Value::as_str);
    id.unwrap_or_else(|| panic!("no {css}: {found}")).to_owned()
}

/// Clicks the element `css` finds, as a user would.
fn click(session: &str, css: &str) {
    let element = find(session, css);
    webdriver("POST", &format!("{session}/element/{element}/click"), Some(json!({})));
}

fn which(program: &str) -> Option<String> {
    let out = Command::new("sh").args(["-c", &format!("command -v {program}")]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
