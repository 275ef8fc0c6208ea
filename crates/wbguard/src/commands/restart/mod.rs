//! `wbguard restart`: the workaround done right.
//!
//! The flow: load the inventory, pick the servers (`--only`), print the plan
//! (`--dry-run` stops there), check safety where session data exists, take
//! the lock so two runs never overlap, then restart each web bridge, one at
//! a time (`--rolling`, the default: each must come back before the next) or
//! several at once (`--parallel N`). With `api` configured, the Call Bridge
//! API is asked just before each restart ([`api_gate`]). Every attempt is
//! logged in Cisco's format and audited; the exit code says how it went
//! (see [`crate::exit`]).

mod api_gate;
mod progress;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use tokio::sync::Semaphore;

use crate::cli::RestartArgs;
use crate::config::{self, Config, Dirs, Server};
use crate::exit::Outcome;
use crate::restarter::audit::RestartLog;
use crate::restarter::verify::Verification;
use crate::restarter::{self, restart_one, Attempt, Requester};
use crate::{logs, secret};
use api_gate::{ApiGate, Verdict};
use progress::Progress;

/// Live sessions data older than this cannot vouch for safety.
const FRESH: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// Runs `wbguard restart`.
pub fn run(config_path: Option<&Path>, args: &RestartArgs) -> anyhow::Result<Outcome> {
    let (path, config) = config::load(config_path, &Dirs::from_env())?;
    let only: Vec<String> =
        args.only.iter().flat_map(|s| s.split(',')).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
    let servers: Vec<Server> = config.select(&only)?.into_iter().cloned().collect();
    let parallel = usize::from(args.parallel.unwrap_or(1));

    println!(
        "wbguard restart: {} web bridge(s) from {}, {}",
        servers.len(),
        path.display(),
        if parallel > 1 { format!("{parallel} at a time") } else { "one at a time (rolling)".into() }
    );
    for (i, server) in servers.iter().enumerate() {
        let auth: Vec<String> = server.auth.iter().map(secret::describe).collect();
        println!(
            "  {}. {} at {}:{} as {} ({:?}, {}), then {}",
            i + 1,
            server.name,
            server.host,
            server.port,
            server.user,
            server.channel,
            auth.join(" or "),
            server
                .webbridge_url
                .as_deref()
                .map_or("no page check".into(), |u| format!("wait for {}", secret::redact_userinfo(u)))
        );
    }
    let gate = ApiGate::new(&config, args.wait_idle, args.force);
    for line in gate.iter().flat_map(ApiGate::describe) {
        println!("{line}");
    }
    if args.dry_run {
        let mut unusable = credential_problems(&servers);
        for (server, problem) in gate.iter().flat_map(ApiGate::problems) {
            unusable |= problem.is_error();
            let level = if problem.is_error() { "error" } else { "warning" };
            eprintln!("{level}: {server}: the API password: {problem}");
        }
        println!("dry run: nothing was touched");
        return Ok(if unusable { Outcome::InputErrors } else { Outcome::Success });
    }

    let unsafe_servers = safety(args, &config, &servers, gate.is_some())?;
    let _lock = restarter::lock(&config.state_dir)?;
    let mut log = RestartLog::open(&config.state_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let run = Run { args, config: &config, gate: gate.as_ref(), parallel };
    let (results, held) = runtime.block_on(restart_all(&run, &servers, &unsafe_servers, &mut log))?;

    println!("summary:");
    let mut outcome = Outcome::Success;
    for (server, result) in servers.iter().zip(&results) {
        let line = match result {
            Some(Attempt::Restarted { verification }) => {
                if !verification.passed() && *verification != Verification::NotConfigured {
                    outcome = outcome.max(Outcome::Failures);
                }
                format!("restarted, {}", verification.describe())
            }
            Some(Attempt::Skipped(why)) => format!("skipped: {why}"),
            Some(Attempt::Refused(why)) => {
                outcome = outcome.max(Outcome::Refused);
                format!("REFUSED: {why}")
            }
            Some(Attempt::Failed(why)) => {
                outcome = outcome.max(Outcome::Failures);
                format!("FAILED: {why}")
            }
            None => {
                outcome = outcome.max(Outcome::Failures);
                "not attempted (stopped after a failure; --keep-going goes on)".into()
            }
        };
        println!("  {}: {line}", server.name);
    }
    // Not restarting a web bridge that was asked for, for safety, is a refusal.
    if held {
        println!("(--wait-idle DURATION waits for live calls to end; --force restarts anyway)");
    }
    if !unsafe_servers.is_empty() || held {
        outcome = outcome.max(Outcome::Refused);
    }
    Ok(outcome)
}

/// Reports what a dry run can see of the servers' credentials without
/// reading them: a source that cannot work (a password file others may
/// read) is an error, one missing here (a variable cron sets) a warning.
/// Whether there was an error.
fn credential_problems(servers: &[Server]) -> bool {
    let mut unusable = false;
    for server in servers {
        for source in &server.auth {
            let Some(problem) = source.problem() else { continue };
            unusable |= problem.is_error();
            let level = if problem.is_error() { "error" } else { "warning" };
            eprintln!("{level}: {}: {}: {problem}", server.name, secret::describe(source));
        }
    }
    unusable
}

/// Which servers may not be restarted now, and whether that is a refusal
/// (with `--require-safe` and no data) rather than a skip.
fn safety(args: &RestartArgs, config: &Config, servers: &[Server], api: bool) -> anyhow::Result<Vec<(String, bool)>> {
    let mut blocked = Vec::new();
    if args.stats.is_empty() {
        if args.force {
            return Ok(blocked);
        }
        if api {
            println!("safety: the Call Bridge API is asked for live calls before each restart");
            return Ok(blocked);
        }
        println!("safety: no session data (--stats LOG...), so wbguard cannot check for live calls");
        if args.require_safe {
            for server in servers {
                println!("  {}: refused (--require-safe)", server.name);
                blocked.push((server.name.clone(), true));
            }
        }
        return Ok(blocked);
    }
    // Read as the guard reads them: the configured zone and limit.
    let reading = logs::Reading { zone: config.guard.log_timezone, limit: config.guard.limit };
    let (model, errors) = logs::model_from_files(&args.stats, &reading);
    for error in errors {
        eprintln!("wbguard: {error}");
    }
    let now = Utc::now();
    for server in servers {
        let fresh = model
            .webbridge(&server.log_host)
            .and_then(|state| state.last().copied())
            .filter(|last| now - last.time <= FRESH);
        let verdict = match (fresh, model.estimate(&server.log_host, now)) {
            (Some(_), Some(estimate)) if estimate.droppable_upper == 0 => {
                println!("  {}: safe, every one of its {} sessions is a known leak", server.name, estimate.active);
                None
            }
            (Some(_), Some(estimate)) => Some((
                format!(
                    "up to {} live call(s) could be dropped ({} sessions, {}-{} leaked)",
                    estimate.droppable_upper, estimate.active, estimate.leaked_lower, estimate.leaked_upper
                ),
                false,
            )),
            _ => Some(("no fresh session data for its log host".to_string(), args.require_safe)),
        };
        if let Some((why, refused)) = verdict {
            if args.force {
                println!("  {}: {why}; restarting anyway (--force)", server.name);
            } else {
                println!(
                    "  {}: {why}; {}",
                    server.name,
                    if refused { "refused (--require-safe)" } else { "skipped (--force restarts it anyway)" }
                );
                blocked.push((server.name.clone(), refused));
            }
        }
    }
    Ok(blocked)
}

/// What every restart of a run shares.
struct Run<'a> {
    args: &'a RestartArgs,
    config: &'a Config,
    gate: Option<&'a ApiGate>,
    parallel: usize,
}

/// The API's word on one restart (go ahead when no API is configured),
/// then the restart; and whether the API held it.
async fn checked_restart(
    server: &Server,
    config: &Config,
    include_webbridge3: bool,
    gate: Option<&ApiGate>,
    report: &(dyn Fn(&str) + Sync),
) -> (Attempt, bool) {
    match gate {
        None => {}
        Some(gate) => match gate.ask(report).await {
            Verdict::Go => {}
            Verdict::Forced(why) => report(&format!("{why}; restarting anyway (--force)")),
            Verdict::Hold(why) => return (Attempt::Skipped(why), true),
        },
    }
    (restart_one(server, config, include_webbridge3, report).await, false)
}

/// Every restart of the run; and whether the API held any.
async fn restart_all(
    run: &Run<'_>,
    servers: &[Server],
    blocked: &[(String, bool)],
    log: &mut RestartLog,
) -> anyhow::Result<(Vec<Option<Attempt>>, bool)> {
    let (args, config) = (run.args, run.config);
    let mut results: Vec<Option<Attempt>> = vec![None; servers.len()];
    let mut held = false;
    let progress = Arc::new(Progress::new(servers.iter().map(|s| s.name.clone()).collect()));
    let requester = Requester {
        operator: std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into()),
        reason: args.reason.clone().unwrap_or_else(|| "manual".into()),
    };
    let semaphore = Arc::new(Semaphore::new(run.parallel));
    let gate = run.gate.map(|gate| Arc::new(gate.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, server) in servers.iter().enumerate() {
        if let Some((_, refused)) = blocked.iter().find(|(name, _)| *name == server.name) {
            let attempt = if *refused {
                Attempt::Refused("not safe to check".into())
            } else {
                Attempt::Skipped("may carry live calls".into())
            };
            progress.set(index, &attempt.describe(Duration::ZERO));
            results[index] = Some(attempt);
            continue;
        }
        if run.parallel == 1 {
            let started = Instant::now();
            let (result, api_held) =
                checked_restart(server, config, args.include_webbridge3, run.gate, &|what| progress.set(index, what))
                    .await;
            held |= api_held;
            progress.set(index, &result.describe(started.elapsed()));
            restarter::record(log, server, &result, started.elapsed(), &requester)?;
            let stop = matches!(result, Attempt::Failed(_) | Attempt::Refused(_))
                || matches!(&result, Attempt::Restarted { verification } if matches!(verification, Verification::Failed(_)));
            results[index] = Some(result);
            if stop && !args.keep_going {
                break;
            }
            continue;
        }
        let permit = semaphore.clone();
        let server = server.clone();
        let config = config.clone();
        let include = args.include_webbridge3;
        let progress = progress.clone();
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = permit.acquire_owned().await.expect("never closed");
            let started = Instant::now();
            let (result, api_held) =
                checked_restart(&server, &config, include, gate.as_deref(), &|what| progress.set(index, what)).await;
            progress.set(index, &result.describe(started.elapsed()));
            (index, result, started.elapsed(), api_held)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (index, result, took, api_held) = done.context("a restart task failed")?;
        held |= api_held;
        restarter::record(log, &servers[index], &result, took, &requester)?;
        results[index] = Some(result);
    }
    Ok((results, held))
}
