//! `wbguard watch`: the guard as a command. Reads the configuration,
//! applies the command line, runs the guard ([`crate::guard`]) until
//! SIGTERM or SIGINT, and rereads the configuration on SIGHUP (a broken
//! file is refused and the running one kept).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::WatchArgs;
use crate::config::guard_settings::GuardSettings;
use crate::config::{self, Dirs};
use crate::exit::Outcome;
use crate::guard::{self, Endpoints, Setup};

/// The configuration (if any) and the guard's settings, flags applied.
fn setup(config_path: Option<&Path>, args: &WatchArgs, dirs: &Dirs) -> anyhow::Result<Setup> {
    let config = config_path.map(|path| config::load(Some(path), dirs).map(|(_, c)| c)).transpose()?;
    let mut settings = config.as_ref().map_or_else(GuardSettings::default, |c| c.guard.clone());
    if let Some(mode) = args.mode {
        // Over the file's [policy] and every cluster's own.
        settings.policy.mode = mode;
        for cluster in &mut settings.clusters {
            cluster.policy.mode = mode;
        }
    }
    if !args.listen_syslog.is_empty() {
        settings.listen_syslog = args.listen_syslog.clone();
    }
    if !args.listen_cdr.is_empty() {
        settings.listen_cdr = args.listen_cdr.clone();
    }
    if let Some(http) = args.listen_http {
        settings.listen_http = http;
    }
    settings.follow.extend(args.follow.iter().cloned());
    if let Some(max_hosts) = args.max_hosts {
        settings.max_hosts = max_hosts as usize;
    }
    settings.clock = args.clock;
    for path in &settings.follow {
        // A file not there yet is waited for; a directory never becomes a log.
        if path.is_dir() {
            anyhow::bail!(
                "cannot follow {}: it is a directory; name the log file the syslog server writes in it",
                path.display()
            );
        }
    }
    let state_dir = match (&args.state_dir, &config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(config)) => config.state_dir.clone(),
        (None, None) => dirs.state_dir(),
    };
    Ok(Setup { config, settings, state_dir })
}

/// Runs `wbguard watch`.
pub fn run(config_path: Option<&Path>, args: &WatchArgs) -> anyhow::Result<Outcome> {
    let dirs = Dirs::from_env();
    let prepared = guard::prepare(setup(config_path, args, &dirs)?)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let config_path: Option<PathBuf> = config_path.map(Path::to_path_buf);
    let args = args.clone();
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate()).context("SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT")?;
        let mut hangup = signal(SignalKind::hangup()).context("SIGHUP")?;
        let stop = async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        };
        let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                // One pending reload is enough: more SIGHUPs meanwhile fold into it.
                let _ = reload_tx.try_send(());
            }
        });
        let reload: guard::Reload = std::sync::Arc::new(move || setup(config_path.as_deref(), &args, &dirs));
        // Scripts wait for this line: where the guard listens.
        let announce = |endpoints: &Endpoints| println!("{}", serde_json::to_string(endpoints).unwrap_or_default());
        guard::serve(prepared, Some((reload, reloads)), stop, announce).await
    })?;
    Ok(Outcome::Success)
}
