//! Two clusters under one guard (`[[cluster]]`): each adds up only its own
//! call bridges' CMA, so one cluster's calls never hold the other's
//! restarts; restarts run in parallel across clusters and one at a time
//! within one; the status, `wbguard status` and the metrics say which
//! cluster each web bridge is in.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::s;
use super::watch::Guard;

const EU_AND_US: &str = "\n[[cluster]]\nname = \"eu\"\nservers = [\"cms1\", \"cms2\"]\n\
                         [[cluster]]\nname = \"us\"\nservers = [\"cms3\", \"cms4\"]\n";

/// The last quarter hour of every server's logs, dated now: each web
/// bridge at the limit, each call bridge reporting the CMA calls `cma`
/// gives it, before and after the web bridges' samples.
fn at_the_limit(guard: &Guard, cma: impl Fn(&str) -> u32) {
    let now = Utc::now();
    let at = |minutes: i64| -> String {
        (now + chrono::Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let stats = |host: &str, minutes: i64| {
        format!("<14>1 {} {host} webbridge - - - INFO : [DEBUGGING] Stats 149, c:154, d:5", at(minutes))
    };
    let calls = |host: &str, minutes: i64| {
        let n = cma(host);
        format!(r#"<14>1 {} {host} host:server - - - INFO : STATS: {{"CMA": "{n}/{n}"}}"#, at(minutes))
    };
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = format!("127.0.0.1:{}", guard.port("udp"));
    for minutes in [-16, -11, -8, -6, -1] {
        for host in ["cms1", "cms2", "cms3", "cms4"] {
            let line = if minutes == -8 || minutes == -1 { stats(host, minutes) } else { calls(host, minutes) };
            socket.send_to(line.as_bytes(), &to).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(guard: &Guard) -> Value {
    serde_json::from_str(&guard.get("/api/status")).unwrap()
}

/// The status once every web bridge has a decision.
fn decided(guard: &Guard) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = status(guard);
        if status["decisions"].as_array().is_some_and(|d| d.len() == 4) {
            return status;
        }
        assert!(Instant::now() < deadline, "no decisions: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn webbridge<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["webbridges"].as_array().unwrap().iter().find(|w| w["webbridge"] == name).unwrap()
}

/// Four servers on this machine (nothing listens on their MMP port: the
/// guard only observes), in one cluster or in `clusters`.
fn observing(dir: &std::path::Path, clusters: &str) -> (Guard, std::path::PathBuf) {
    let mut text = String::new();
    for n in 1..=4 {
        text.push_str(&format!("[[server]]\nname = \"cms{n}\"\nmmp = \"127.0.0.1:9\"\n"));
    }
    text.push_str(clusters);
    let config = dir.join(format!("wbguard{}.toml", clusters.len()));
    std::fs::write(&config, text).unwrap();
    (Guard::start(&["--config", s(&config)]), config)
}

/// Calls in one cluster bound its own web bridges' leaks, not the other's:
/// with 30 CMA calls on cms3's call bridge, the US web bridges may hold
/// them, the EU ones cannot. In one cluster, every web bridge may.
#[test]
fn a_clusters_calls_bound_only_its_own_web_bridges() {
    let dir = tempfile::tempdir().unwrap();
    let calls = |host: &str| if host == "cms3" { 30 } else { 0 };

    let (guard, _) = observing(dir.path(), EU_AND_US);
    at_the_limit(&guard, calls);
    let split = decided(&guard);
    for (name, cluster, leaked, droppable) in
        [("cms1", "eu", 149, 0), ("cms2", "eu", 149, 0), ("cms3", "us", 119, 30), ("cms4", "us", 119, 30)]
    {
        let w = webbridge(&split, name);
        assert_eq!(
            (w["cluster"].as_str(), w["leaked_lower"].as_u64(), w["droppable_upper"].as_u64()),
            (Some(cluster), Some(leaked), Some(droppable)),
            "{name}: {split}"
        );
    }
    let clusters: Vec<(&str, Option<u64>)> = split["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["cma_total"].as_u64()))
        .collect();
    assert_eq!(clusters, [("eu", Some(0)), ("us", Some(30))], "{split}");
    assert_eq!(split["cluster"]["cma_total"], 30, "{split}");
    // Every series about a web bridge or call bridge names its cluster.
    let metrics = guard.get("/metrics");
    for series in [
        r#"wbguard_webbridge_leaked_sessions_lower{cluster="eu",webbridge="cms1"} 149"#,
        r#"wbguard_webbridge_leaked_sessions_lower{cluster="us",webbridge="cms3"} 119"#,
        r#"wbguard_callbridge_cma_sessions{cluster="us",callbridge="cms3"} 30"#,
        r#"wbguard_restarts_total{cluster="eu",webbridge="cms2",result="observed"} 0"#,
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    // The history of one cluster, or of one web bridge, holds only theirs.
    const ALL: &str = "/api/history?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z";
    let hosts = |query: &str| -> Vec<String> {
        let history: Value = serde_json::from_str(&guard.get(&format!("{ALL}{query}"))).unwrap();
        let series = history["samples"].as_array().unwrap().iter().chain(history["estimates"].as_array().unwrap());
        let mut hosts: Vec<String> =
            series.map(|s| s["host"].as_str().or(s["webbridge"].as_str()).unwrap().to_owned()).collect();
        hosts.sort();
        hosts.dedup();
        hosts
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while hosts("") != ["cms1", "cms2", "cms3", "cms4"] {
        assert!(Instant::now() < deadline, "history: {:?}", hosts(""));
        std::thread::sleep(Duration::from_millis(200));
    }
    // A cluster's chart: its web bridges' sessions and its call bridges' CMA summed.
    let chart: Value = serde_json::from_str(&guard.get(&format!("{ALL}&cluster=eu"))).unwrap();
    let series: Vec<(&str, &str)> = chart["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["host"].as_str().unwrap(), s["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(series, [("cms1", "webbridge"), ("cms2", "webbridge"), ("eu", "cluster")], "{chart}");
    let us: Value = serde_json::from_str(&guard.get(&format!("{ALL}&cluster=us"))).unwrap();
    let total = us["samples"].as_array().unwrap().iter().find(|s| s["kind"] == "cluster").unwrap();
    assert_eq!(total["points"].as_array().unwrap().last().unwrap()["cma_current"], 30, "{us}");
    assert_eq!(hosts("&webbridge=CMS3"), ["cms3"]);
    let refused = |query: &str| super::http(guard.http, "GET", &format!("{ALL}{query}"), None);
    assert_eq!(refused("&cluster=eu&webbridge=cms1").0, 400);
    let (code, body) = refused("&cluster=asia");
    assert_eq!((code, body.as_str()), (404, "no cluster \"asia\"\n"));
    // wbguard status groups the web bridges by cluster.
    let out = super::wbguard(&["status", "--url", &format!("http://{}", guard.http)], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let (eu, us) = (text.find("cluster eu").unwrap(), text.find("cluster us").unwrap());
    let (cms2, cms3) = (text.find("cms2").unwrap(), text.find("cms3").unwrap());
    assert!(eu < cms2 && cms2 < us && us < cms3, "{text}");
    drop(guard);

    // One cluster: cms3's calls could be on any web bridge.
    let (guard, _) = observing(dir.path(), "");
    at_the_limit(&guard, calls);
    let one = decided(&guard);
    assert_eq!(webbridge(&one, "cms1")["leaked_lower"], 119, "{one}");
    assert_eq!(webbridge(&one, "cms1")["cluster"], "default", "{one}");
}

/// The guard's restarts, each as (web bridge, from, to) on the guard's clock.
fn restart_spans(guard: &Guard) -> Vec<(String, DateTime<Utc>, DateTime<Utc>)> {
    super::watch::restarts(guard)
        .iter()
        .filter_map(|r| {
            let time = |field: &str| r[field].as_str()?.parse::<DateTime<Utc>>().ok();
            Some((r["webbridge"].as_str()?.to_owned(), time("intent")?, time("finished")?))
        })
        .collect()
}

fn overlap(a: &(String, DateTime<Utc>, DateTime<Utc>), b: &(String, DateTime<Utc>, DateTime<Utc>)) -> bool {
    a.1 < b.2 && b.1 < a.2
}

/// Every web bridge needs a harmless restart at once, and each restart
/// lasts about 3 s (its page is down that long, and the restarter waits
/// for it): the two clusters restart side by side, each one web bridge at
/// a time, all four done in about two restarts' time.
#[test]
fn clusters_restart_in_parallel_and_each_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, running, config) = super::watch::simulated("udp://127.0.0.1:9", 4, 1.0, 0.0, dir.path(), |c| {
        c.scenario.peak_sessions = 0.0;
        c.restart_downtime = Duration::from_secs(3);
    });
    let mut text = std::fs::read_to_string(&config).unwrap();
    for server in &running.endpoints.servers {
        let log_host = format!("log_host = {:?}\n", server.name);
        text = text.replace(&log_host, &format!("{log_host}webbridge_url = \"http://{}/\"\n", server.http));
    }
    text.push_str(EU_AND_US);
    std::fs::write(&config, text).unwrap();
    let guard =
        Guard::start(&["--mode", "enforce", "--config", s(&config), "--state-dir", s(&dir.path().join("guard"))]);
    at_the_limit(&guard, |_| 0);
    let control = running.endpoints.control;
    let deadline = Instant::now() + Duration::from_secs(60);
    let spans = loop {
        let spans = restart_spans(&guard);
        if spans.len() == 4 {
            break spans;
        }
        assert!(Instant::now() < deadline, "not all restarted: {spans:?}\n{}", guard.get("/api/status"));
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(super::truth(control)["totals"]["restarts"], 4);
    let span = |name: &str| spans.iter().find(|s| s.0 == name).unwrap();
    // Within a cluster, one at a time.
    assert!(!overlap(span("cms1"), span("cms2")), "{spans:?}");
    assert!(!overlap(span("cms3"), span("cms4")), "{spans:?}");
    // Across clusters, side by side: each EU restart ran while a US one did.
    for eu in ["cms1", "cms2"] {
        assert!(["cms3", "cms4"].iter().any(|us| overlap(span(eu), span(us))), "{spans:?}");
    }
    for (name, from, to) in &spans {
        assert!(*to - *from >= chrono::Duration::milliseconds(2500), "{name} took {}: {spans:?}", *to - *from);
    }
    drop(guard);
    runtime.block_on(running.stop());
}
