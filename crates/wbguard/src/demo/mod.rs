//! `wbguard demo`: the whole story on one machine, nothing configured.
//!
//! A simulated four-server deployment (as in Cisco's script) runs in this
//! process at high speed, its web bridges leaking; a real guard, in enforce
//! mode with a Saturday-night maintenance window, receives its syslog over
//! TCP, restarts its web bridges over SSH when that is harmless, and serves
//! the status page. The terminal shows a live summary; at the end comes the
//! comparison of three strategies over a simulated month ([`compare`]).
//!
//! Everything goes through the real parts: the simulator's MMP over SSH
//! (its host keys recorded on first use, `accept-new`, in a throwaway
//! known_hosts: a changed key would still be refused), syslog over loopback
//! TCP, the configuration parser, the SQLite history.

pub mod compare;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use cms_sim::live::{self, Credentials, LiveConfig};
use cms_sim::scenario::Scenario;

use crate::cli::{DemoArgs, WatchArgs};
use crate::config::watch::WatchSettings;
use crate::exit::Outcome;

/// The demo's seed: the same story every time.
const SEED: u64 = 7;
/// Days in the comparison.
const COMPARISON_DAYS: i64 = 30;
/// Where the compared month begins (a Monday): fixed, so that the table is
/// the same on every run, whatever the date.
const COMPARISON_START: &str = "2024-03-04T00:00:00Z";
/// The demo's policy and window, as an operator would write them.
const POLICY: &str = r#"
[policy]
mode = "enforce"
leak_at_least = 100
max_dropped_calls = 0
min_interval = "1h"

# Lockout forecasts are held to the next window; this demo allows no
# dropped call even inside it (an operator may allow some there).
[[policy.window]]
cron = "0 2 * * 6"      # Saturday 02:00, when Cisco's script would run
duration = "2h"
timezone = "UTC"
max_dropped_calls = 0
"#;

/// The simulated deployment: four servers whose web bridges leak about 80
/// sessions a day each, enough to lock users out within two days.
pub fn scenario() -> Scenario {
    let mut scenario = Scenario::with_servers(4);
    scenario.leak_probability = 0.12;
    scenario
}

/// The demo's guard settings (the policy above, defaults otherwise).
pub fn settings() -> WatchSettings {
    let raw = crate::config::RawConfig::parse(POLICY).expect("the demo's policy parses");
    WatchSettings::from_raw(None, raw.policy.as_ref(), &[], Path::new(".")).expect("the demo's policy is valid")
}

/// A free TCP port on loopback (the simulator must know the guard's syslog
/// port before the guard knows the simulator's SSH ports).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The next 06:00 UTC: a working day begins, and the simulated clock is
/// never behind the guard's (it does not decide on old data).
fn next_morning(now: DateTime<Utc>) -> DateTime<Utc> {
    let morning = now.date_naive().and_hms_opt(6, 0, 0).expect("a valid time").and_utc();
    if morning >= now {
        morning
    } else {
        morning + chrono::Duration::days(1)
    }
}

/// Runs `wbguard demo`.
pub fn run(args: &DemoArgs) -> anyhow::Result<Outcome> {
    crate::watch::init_logging();
    let duration = args
        .duration
        .as_deref()
        .map(crate::config::watch::parse_duration)
        .transpose()
        .context("--duration")?
        .map(|d| d.to_std().expect("positive"));
    let listen_http = args.listen_http.clone().unwrap_or_else(|| "127.0.0.1:9149".into());
    let dir = tempfile::Builder::new().prefix("wbguard-demo-").tempdir().context("a temporary directory")?;
    let policy = settings().policy;
    let start = next_morning(Utc::now());
    let month = DateTime::parse_from_rfc3339(COMPARISON_START).expect("a valid time").with_timezone(&Utc);
    let comparison = std::thread::spawn(move || compare::compare(&scenario(), SEED, month, COMPARISON_DAYS, &policy));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let totals = runtime.block_on(live_demo(dir.path(), &listen_http, args.speed, start, duration))?;
    let outcomes = comparison.join().map_err(|_| anyhow::anyhow!("the comparison failed"))?;
    println!();
    println!(
        "This demo, live: {} simulated hours, {} restarts, {} refused joins, {} calls dropped.",
        totals.hours, totals.restarts, totals.refused_joins, totals.dropped_calls
    );
    println!();
    print!("{}", compare::table(&outcomes, COMPARISON_DAYS));
    if let Some(path) = &args.summary_json {
        let summary = serde_json::json!({ "strategies": outcomes });
        std::fs::write(path, serde_json::to_string_pretty(&summary)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Outcome::Success)
}

/// What the live part ended with.
struct Totals {
    hours: i64,
    restarts: u64,
    refused_joins: u64,
    dropped_calls: u64,
}

async fn live_demo(
    dir: &Path,
    listen_http: &str,
    speed: f64,
    start: DateTime<Utc>,
    duration: Option<Duration>,
) -> anyhow::Result<Totals> {
    let syslog_port = free_port()?;
    let key = live::hostkey::load_or_create(&dir.join("key"), live::hostkey::KeyKind::Ed25519, false)?;
    let config = LiveConfig {
        scenario: scenario(),
        seed: SEED,
        speed,
        start,
        ssh_port: 0,
        http_port: 0,
        control_port: 0,
        syslog: vec![format!("tcp://127.0.0.1:{syslog_port}").parse().map_err(|e: String| anyhow::anyhow!(e))?],
        state_dir: dir.join("sim"),
        rotate_host_key: false,
        credentials: Credentials {
            user: "admin".into(),
            // Nobody logs in with it: the guard uses its key.
            password: data_encoding::HEXLOWER.encode(&rand::random::<[u8; 16]>()),
            authorized_keys: vec![key.public_key().clone()],
        },
        lines_per_record: 5,
        restart_downtime: Duration::from_millis(200),
        warm_up: Duration::ZERO,
        legacy_ssh: Vec::new(),
        address_per_server: false,
    };
    let running = live::start(config).await.context("starting the simulated deployment")?;
    let control = running.endpoints.control;

    // The guard's configuration, as an operator would write it.
    let mut text = format!(
        "host_key_policy = \"accept-new\"\nknown_hosts = {:?}\nstate_dir = {:?}\n[auth]\nkey_file = {:?}\n\
         [watch]\nlisten_syslog = [\"tcp://127.0.0.1:{syslog_port}\"]\nlisten_http = {listen_http:?}\n{POLICY}",
        dir.join("known_hosts"),
        dir.join("guard"),
        dir.join("key/ssh_host_ed25519_key"),
    );
    for server in &running.endpoints.servers {
        text.push_str(&format!(
            "\n[[server]]\nname = {:?}\nmmp = \"{}\"\nwebbridge_url = \"http://{}/\"\n",
            server.name, server.ssh, server.http
        ));
    }
    let config_path = dir.join("wbguard.toml");
    std::fs::write(&config_path, text)?;
    let prepared = crate::watch::prepare(&WatchArgs { config: Some(config_path), ..WatchArgs::default() })?;
    let (stop_guard, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, endpoints) = tokio::sync::oneshot::channel();
    let guard = tokio::spawn(crate::watch::serve(
        prepared,
        false,
        async move {
            let _ = stopped.await;
        },
        move |endpoints| {
            let _ = ready.send(endpoints.clone());
        },
    ));
    let endpoints = match endpoints.await {
        Ok(endpoints) => endpoints,
        Err(_) => {
            running.stop().await;
            return Err(guard.await?.err().unwrap_or_else(|| anyhow::anyhow!("the guard did not start")));
        }
    };
    println!("wbguard demo: a simulated deployment of 4 CMS servers, leaking, at {speed}x real time,");
    println!("guarded by wbguard in enforce mode (maintenance window Saturday 02:00 UTC).");
    println!("Status page: http://{}/", endpoints.http);
    println!("Simulator: the truth at http://{control}/truth, controls at POST http://{control}/control");
    match duration {
        Some(d) => println!("Running for {} s (Ctrl-C ends it sooner).", d.as_secs()),
        None => println!("Ctrl-C ends it and shows the comparison."),
    }
    let began = Instant::now();
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut truth = serde_json::Value::Null;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                truth = fetch(&format!("http://{control}/truth")).await.unwrap_or(truth);
                let status = fetch(&format!("http://{}/api/status", endpoints.http)).await.unwrap_or_default();
                println!("{}", summary_line(&truth, &status));
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
        if duration.is_some_and(|d| began.elapsed() >= d) {
            break;
        }
    }
    truth = fetch(&format!("http://{control}/truth")).await.unwrap_or(truth);
    let _ = stop_guard.send(());
    let served = guard.await;
    running.stop().await;
    served??;
    let totals = &truth["totals"];
    let hours = truth["time"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| (t.with_timezone(&Utc) - start).num_hours());
    Ok(Totals {
        hours,
        restarts: totals["restarts"].as_u64().unwrap_or(0),
        refused_joins: totals["refused_joins"].as_u64().unwrap_or(0),
        dropped_calls: totals["dropped_calls"].as_u64().unwrap_or(0),
    })
}

/// A JSON document over HTTP (the simulator's truth, the guard's status).
async fn fetch(url: &str) -> anyhow::Result<serde_json::Value> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<serde_json::Value> {
        Ok(ureq::get(&url).call()?.body_mut().read_json()?)
    })
    .await?
}

/// One line of the live summary: simulated time, each web bridge as the
/// truth has it and as the guard estimates it, and the totals that matter.
fn summary_line(truth: &serde_json::Value, status: &serde_json::Value) -> String {
    let time = truth["time"].as_str().unwrap_or("").replace('T', " ");
    let mut line = format!("[{}]", time.get(..16).unwrap_or("starting"));
    for server in truth["servers"].as_array().into_iter().flatten() {
        let name = server["name"].as_str().unwrap_or("?");
        let wb = &server["webbridge"];
        let estimate = status["webbridges"]
            .as_array()
            .and_then(|all| all.iter().find(|w| w["webbridge"] == name))
            .map_or("-".to_owned(), |w| format!("{}-{}", w["leaked_lower"], w["leaked_upper"]));
        line.push_str(&format!(" {name} {}/149 leak {} (seen {estimate})", wb["active"], wb["leaked"]));
    }
    let totals = &truth["totals"];
    line.push_str(&format!(
        " | restarts {} refused {} dropped {}",
        totals["restarts"], totals["refused_joins"], totals["dropped_calls"]
    ));
    line
}
