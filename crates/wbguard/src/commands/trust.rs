//! `wbguard trust NAME...`: look at each server's SSH host key, show its
//! fingerprint, and record it in known_hosts once the operator confirms
//! (or `--yes`). The only way, besides the explicit `accept-new` policy,
//! that a key becomes trusted.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use crate::cli::TrustArgs;
use crate::config::{self, Dirs};
use crate::exit::Outcome;
use crate::mmp::{self, known_hosts};

/// Runs `wbguard trust`.
pub fn run(config_path: Option<&Path>, args: &TrustArgs) -> anyhow::Result<Outcome> {
    let (_, config) = config::load(config_path, &Dirs::from_env())?;
    let servers = config.select(&args.names)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut outcome = Outcome::Success;
    for server in servers {
        let key = match runtime.block_on(mmp::probe_host_key(server, &config)) {
            Ok(key) => key,
            Err(e) => {
                eprintln!("wbguard: {}: {e}", server.name);
                outcome = outcome.max(Outcome::Failures);
                continue;
            }
        };
        let fingerprint = known_hosts::fingerprint(&key);
        let entry = known_hosts::host_entry(&server.host, server.port);
        match known_hosts::check(&config.known_hosts, &server.host, server.port, &key)? {
            known_hosts::Verdict::Known => {
                println!("{}: {entry} is already trusted ({} {fingerprint})", server.name, key.algorithm());
                continue;
            }
            known_hosts::Verdict::Changed { recorded } => {
                let old: Vec<String> = recorded.iter().map(|(line, f)| format!("{f} (line {line})")).collect();
                println!(
                    "{}: WARNING: {entry} now shows {fingerprint}, but {} records {}.",
                    server.name,
                    config.known_hosts.display(),
                    old.join(", ")
                );
                println!("  Not recorded: remove the old line(s) yourself once you know why the key changed.");
                outcome = outcome.max(Outcome::Refused);
                continue;
            }
            known_hosts::Verdict::Revoked => {
                println!("{}: the key {fingerprint} is marked @revoked; not recorded", server.name);
                outcome = outcome.max(Outcome::Refused);
                continue;
            }
            known_hosts::Verdict::Unknown => {}
        }
        println!("{}: {entry} shows a {} key, fingerprint {fingerprint}", server.name, key.algorithm());
        if !args.yes && !confirm("  Compare it with the server's (`ssh-keygen -l -f` on its key). Trust it? [y/N] ")? {
            println!("  not recorded");
            outcome = outcome.max(Outcome::Refused);
            continue;
        }
        known_hosts::record(&config.known_hosts, &server.host, server.port, &key)
            .map_err(|e| anyhow::anyhow!("cannot record the host key in {}: {e}", config.known_hosts.display()))?;
        println!("  recorded in {}", config.known_hosts.display());
    }
    Ok(outcome)
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        anyhow::bail!("not a terminal to ask on: check the fingerprint, then run again with --yes");
    }
    print!("{question}");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}
