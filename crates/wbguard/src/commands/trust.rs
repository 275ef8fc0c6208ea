//! `wbguard trust NAME...`: look at each server's SSH host key, show its
//! fingerprint, and record it in known_hosts once the operator confirms
//! (or `--yes`); the same for its Call Bridge API certificate when it has
//! `api` (recorded in `api_certificates`; with a `ca_file`, only checked
//! against it). The only way, besides the explicit `accept-new` policy,
//! that a key or certificate becomes trusted. Each is handled on its own:
//! a server whose host key is trusted may still have its API certificate
//! recorded, and the other way round.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use crate::cli::TrustArgs;
use crate::cms_api::{self, trust as api_trust, ApiTrust};
use crate::config::{self, Config, Dirs, Server};
use crate::exit::Outcome;
use crate::mmp::{self, known_hosts};

/// Runs `wbguard trust`.
pub fn run(config_path: Option<&Path>, args: &TrustArgs) -> anyhow::Result<Outcome> {
    let (_, config) = config::load(config_path, &Dirs::from_env())?;
    let servers = config.select(&args.names)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut outcome = Outcome::Success;
    for server in servers {
        outcome = outcome.max(host_key(&runtime, server, &config, args)?);
        if server.api.is_some() {
            outcome = outcome.max(api_certificate(&runtime, server, &config, args)?);
        }
    }
    Ok(outcome)
}

/// The server's SSH host key: shown, and recorded once confirmed.
fn host_key(
    runtime: &tokio::runtime::Runtime,
    server: &Server,
    config: &Config,
    args: &TrustArgs,
) -> anyhow::Result<Outcome> {
    let key = match runtime.block_on(mmp::probe_host_key(server, config)) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("wbguard: {}: {e}", server.name);
            return Ok(Outcome::Failures);
        }
    };
    let fingerprint = known_hosts::fingerprint(&key);
    let entry = known_hosts::host_entry(&server.host, server.port);
    match known_hosts::check(&config.known_hosts, &server.host, server.port, &key)? {
        known_hosts::Verdict::Known => {
            println!("{}: {entry} is already trusted ({} {fingerprint})", server.name, key.algorithm());
            return Ok(Outcome::Success);
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
            return Ok(Outcome::Refused);
        }
        known_hosts::Verdict::Revoked => {
            println!("{}: the key {fingerprint} is marked @revoked; not recorded", server.name);
            return Ok(Outcome::Refused);
        }
        known_hosts::Verdict::Unknown => {}
    }
    println!("{}: {entry} shows a {} key, fingerprint {fingerprint}", server.name, key.algorithm());
    if !args.yes && !confirm("  Compare it with the server's (`ssh-keygen -l -f` on its key). Trust it? [y/N] ")? {
        println!("  not recorded");
        return Ok(Outcome::Refused);
    }
    known_hosts::record(&config.known_hosts, &server.host, server.port, &key)
        .map_err(|e| anyhow::anyhow!("cannot record the host key in {}: {e}", config.known_hosts.display()))?;
    println!("  recorded in {}", config.known_hosts.display());
    Ok(Outcome::Success)
}

/// The server's Call Bridge API certificate: shown, and pinned once
/// confirmed; with a `ca_file`, checked against it and not pinned.
fn api_certificate(
    runtime: &tokio::runtime::Runtime,
    server: &Server,
    config: &Config,
    args: &TrustArgs,
) -> anyhow::Result<Outcome> {
    let Some(api) = &server.api else { return Ok(Outcome::Success) };
    let name = &server.name;
    if !api.endpoint.tls {
        println!("{name}: the API {} is plain http://: no certificate to trust (a lab only)", api.endpoint);
        return Ok(Outcome::Success);
    }
    let certificate = match runtime.block_on(cms_api::fetch_certificate(name, api, cms_api::REQUEST_TIMEOUT)) {
        Ok(certificate) => certificate,
        Err(e) => {
            eprintln!("wbguard: {e}");
            return Ok(Outcome::Failures);
        }
    };
    let fingerprint = &certificate.fingerprint;
    let about = certificate.description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
    let trust = ApiTrust::from_config(config);
    if let Some(ca) = &api.ca_file {
        return Ok(match runtime.block_on(cms_api::verify_certificate(name, api, &trust, cms_api::REQUEST_TIMEOUT)) {
            Ok(()) => {
                println!(
                    "{name}: the API certificate {fingerprint}{about} verifies against {}; nothing to record",
                    ca.display()
                );
                Outcome::Success
            }
            Err(e) => {
                println!(
                    "{name}: the API certificate {fingerprint}{about} does NOT verify against {}: {e}",
                    ca.display()
                );
                Outcome::Refused
            }
        });
    }
    let address = api.endpoint.address();
    match api_trust::check(&trust.file, &address, fingerprint)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", trust.file.display()))?
    {
        api_trust::Verdict::Known => {
            println!("{name}: the API certificate at {address} is already trusted ({fingerprint})");
            return Ok(Outcome::Success);
        }
        api_trust::Verdict::Changed { recorded } => {
            let old: Vec<String> = recorded.iter().map(|(line, f)| format!("{f} (line {line})")).collect();
            println!(
                "{name}: WARNING: the API at {address} now shows {fingerprint}{about}, but {} records {}.",
                trust.file.display(),
                old.join(", ")
            );
            println!("  Not recorded: remove the old line(s) yourself once you know why the certificate changed.");
            return Ok(Outcome::Refused);
        }
        api_trust::Verdict::Unknown => {}
    }
    println!("{name}: the API at {address} shows the certificate {fingerprint}{about}");
    let question = "  Compare it with the server's (`openssl x509 -noout -fingerprint -sha256` shows the same hex, \
                    in capitals with colons). Trust it? [y/N] ";
    if !args.yes && !confirm(question)? {
        println!("  not recorded");
        return Ok(Outcome::Refused);
    }
    api_trust::record(&trust.file, &address, fingerprint)
        .map_err(|e| anyhow::anyhow!("cannot record the API certificate in {}: {e}", trust.file.display()))?;
    println!("  recorded in {}", trust.file.display());
    Ok(Outcome::Success)
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
