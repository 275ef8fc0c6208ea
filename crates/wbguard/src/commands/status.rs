//! `wbguard status`: asks a running guard what it knows (`/api/status`,
//! read through the same types the guard serialises) and prints a table.

use anyhow::Context;

use crate::cli::StatusArgs;
use crate::exit::Outcome;
use crate::guard::api::{ClusterView, Snapshot, Status, WebBridgeView};
use crate::text::printable;

/// Runs `wbguard status`.
pub fn run(args: &StatusArgs) -> anyhow::Result<Outcome> {
    let url = args.url.trim_end_matches('/');
    if !url.starts_with("http://") {
        anyhow::bail!("--url must start with http://");
    }
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(std::time::Duration::from_secs(10))).build().into();
    let mut response =
        agent.get(&format!("{url}/api/status")).call().with_context(|| format!("no guard answers at {url}"))?;
    let status: Status = response.body_mut().read_json().context("not a wbguard status")?;
    print!("{}", table(url, &status));
    Ok(Outcome::Success)
}

/// The status as a table, one web bridge per row.
fn table(url: &str, status: &Status) -> String {
    use std::fmt::Write as _;
    let snapshot = &status.snapshot;
    let mode = serde_json::to_value(snapshot.mode).ok().and_then(|v| v.as_str().map(str::to_owned));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "guard at {url}: {} mode, as of {} ({} clock)",
        mode.as_deref().unwrap_or("?"),
        snapshot.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        snapshot.clock.name()
    );
    for server in &snapshot.servers_ahead {
        let _ = writeln!(
            out,
            "clock: {} sends records dated {} s ahead of the guard's clock ({} ignored since {})",
            printable(&server.host),
            server.ahead_seconds,
            server.records,
            server.first_seen.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
    for entry in &snapshot.journal_ahead {
        let _ = writeln!(
            out,
            "journal: the restart of {} dated {} is in the future: not used",
            printable(&entry.webbridge),
            entry.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
    let ago = |time: chrono::DateTime<chrono::Utc>| {
        let seconds = (snapshot.now - time).num_seconds().max(0);
        if seconds < 120 {
            format!("{seconds} s ago")
        } else {
            format!("{} min ago", seconds / 60)
        }
    };
    match &snapshot.live_calls {
        // Several clusters: each cluster's line says its own.
        _ if snapshot.clusters.len() > 1 => {}
        Some(live) => {
            let _ = writeln!(out, "live calls: {} CMA ({}, {})", live.cma, live.source.name(), ago(live.as_of));
        }
        None => {
            let _ = writeln!(out, "live calls: unknown (no CDRs or API answer): the logs bound what can drop");
        }
    }
    for callbridge in &snapshot.cdr {
        let _ = writeln!(
            out,
            "CDR {}: {}, last post {}",
            printable(&callbridge.callbridge),
            match (&callbridge.unknown_reason, callbridge.known) {
                (_, true) => format!("{} CMA call(s) live", callbridge.cma_calls),
                (Some(why), false) => format!("unknown ({})", printable(why)),
                (None, false) => "unknown".to_owned(),
            },
            callbridge.last_post.map_or("never".to_owned(), ago)
        );
    }
    if let Some(check) = &snapshot.api_check {
        let _ = writeln!(
            out,
            "last API check ({}, {}): {}",
            printable(&check.webbridge),
            ago(check.time),
            printable(&check.text)
        );
    }
    let _ = writeln!(
        out,
        "{:<16} {:>6} {:>9} {:>9} {:<6}  {:<17}  DECISION",
        "WEB BRIDGE", "ACTIVE", "LEAKED", "DROPPABLE", "FROM", "LOCKOUT"
    );
    // Several clusters: each under a line of its own, in the guard's order.
    let groups: Vec<(Option<&ClusterView>, Vec<&WebBridgeView>)> = if snapshot.clusters.len() > 1 {
        snapshot
            .clusters
            .iter()
            .map(|c| (Some(c), snapshot.webbridges.iter().filter(|w| w.cluster == c.name).collect()))
            .collect()
    } else {
        vec![(None, snapshot.webbridges.iter().collect())]
    };
    for (cluster, webbridges) in groups {
        if let Some(c) = cluster {
            let mode = serde_json::to_value(c.mode).ok().and_then(|v| v.as_str().map(str::to_owned));
            let live = c.live_calls.map_or("unknown".to_owned(), |l| format!("{} ({})", l.cma, l.source.name()));
            let _ = writeln!(
                out,
                "cluster {}: {} mode, {} web bridge(s), {} sessions, {}-{} leaked, live CMA calls {}{}",
                printable(&c.name),
                mode.as_deref().unwrap_or("?"),
                webbridges.len(),
                c.estimate.active_total,
                c.estimate.leaked_lower,
                c.estimate.leaked_upper,
                live,
                if c.busy { ", restarting" } else { "" }
            );
        }
        for wb in webbridges {
            out.push_str(&row(snapshot, wb));
        }
    }
    let counts: Vec<String> = status.syslog_messages.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(out, "syslog messages: {}", counts.join(", "));
    out
}

/// One web bridge's row.
fn row(snapshot: &Snapshot, wb: &WebBridgeView) -> String {
    let decision = snapshot.decisions.iter().find(|d| d.webbridge == wb.webbridge).map_or("-", |d| &d.reason);
    let estimate = &wb.estimate;
    format!(
        "{:<16} {:>6} {:>9} {:>9} {:<6}  {:<17}  {}\n",
        printable(&wb.webbridge),
        estimate.active,
        format!("{}-{}", estimate.leaked_lower, estimate.leaked_upper),
        estimate.droppable_upper,
        estimate.calls_source.name(),
        estimate.lockout_forecast.map_or("-".to_owned(), |t| t.format("%Y-%m-%dT%H:%M").to_string()),
        printable(decision)
    )
}
