//! `wbguard config check` and `wbguard config import-cisco-script`.
//!
//! `check` reads what the commands will read and checks what they will
//! check when they use it, without fetching any secret. What will fail
//! whenever it is used (a password file others may read, a state
//! directory that is a file) is an error, exit 2; what is missing here and
//! may be there where it is used (a variable cron sets) is a warning.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};

use crate::cli::ConfigCommand;
use crate::config::{self, Config, Dirs};
use crate::exit::Outcome;
use crate::secret::{self, Problem};

/// Runs a `wbguard config` command.
pub fn run(config_path: Option<&Path>, command: &ConfigCommand) -> anyhow::Result<Outcome> {
    match command {
        ConfigCommand::Check => check(config_path),
        ConfigCommand::ImportCiscoScript { script } => {
            let text = crate::files::read_bounded(script, crate::files::TEXT_FILE)
                .with_context(|| format!("cannot read {}", script.display()))?;
            print!("{}", import_cisco_script(&text, script)?);
            Ok(Outcome::Success)
        }
    }
}

/// Something `check` found that the file itself cannot show.
struct Finding {
    /// Where in the configuration (`server[0] (cms1)`, `watch.tls_key`).
    key: String,
    /// What is wrong; an error or a warning.
    problem: Problem,
    /// Who will notice, in words.
    consequence: &'static str,
}

fn check(path: Option<&Path>) -> anyhow::Result<Outcome> {
    let (path, config) = config::load(path, &Dirs::from_env())?;
    println!("{}: {} server(s)", path.display(), config.servers.len());
    println!("host keys: {:?} policy, known_hosts {}", config.host_key_policy, config.known_hosts.display());
    println!("restart log, audit and lock in {}", config.state_dir.display());
    let t = config.timeouts;
    println!(
        "timeouts: connect {:.0} s, auth {:.0} s, command {:.0} s, verify {:.0} s",
        t.connect.as_secs_f64(),
        t.auth.as_secs_f64(),
        t.command.as_secs_f64(),
        t.verify.as_secs_f64()
    );
    for server in &config.servers {
        let auth: Vec<String> = server.auth.iter().map(secret::describe).collect();
        println!(
            "  {}: mmp {}:{} as {} by {:?}{}; logs as {}; credentials: {}; page: {}",
            server.name,
            server.host,
            server.port,
            server.user,
            server.channel,
            if server.legacy_algorithms { ", legacy algorithms allowed" } else { "" },
            server.log_host,
            auth.join(", then "),
            server.webbridge_url.as_deref().map_or("none".into(), secret::redact_userinfo)
        );
        if let Some(api) = &server.api {
            println!("    Call Bridge API: {}", api.describe());
        }
        if let Some(hook) = &server.drain {
            println!("    drain hook: {}", hook.describe());
        }
    }
    if config.servers.iter().any(|s| s.api.is_some()) {
        println!("API certificates pinned in {}", config.api_certificates().display());
    }
    println!("guard (wbguard watch): {}", serde_json::to_string_pretty(&config.guard.describe())?);
    let findings = findings(&config);
    for finding in &findings {
        let level = if finding.problem.is_error() { "error" } else { "warning" };
        eprintln!("{level}: {}: {} ({})", finding.key, finding.problem, finding.consequence);
    }
    let errors = findings.iter().filter(|f| f.problem.is_error()).count();
    if errors > 0 {
        eprintln!("wbguard: {}: {errors} error(s)", path.display());
        return Ok(Outcome::InputErrors);
    }
    println!("valid{}", if findings.is_empty() { "" } else { ", with warnings" });
    Ok(Outcome::Success)
}

/// What the commands will find when they use the configuration, checked
/// now without reading a secret: the credentials' files and variables,
/// the state directory, the guard's TLS files, webhooks and token.
fn findings(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (i, server) in config.servers.iter().enumerate() {
        for (n, source) in server.auth.iter().enumerate() {
            if let Some(problem) = source.problem() {
                // A login tries the sources in order and stops at the
                // first it cannot use: the first is always needed.
                let consequence = match (problem.is_error(), n) {
                    (true, _) => "wbguard restart and an enforcing guard cannot log in with it",
                    (false, 0) => "wbguard restart and an enforcing guard need it where they run",
                    (false, _) => {
                        "wbguard restart and an enforcing guard need it where they run if the sources before it are refused"
                    }
                };
                let key = format!("server[{i}] ({}): {}", server.name, secret::describe(source));
                findings.push(Finding { key, problem, consequence });
            }
        }
    }
    for (i, server) in config.servers.iter().enumerate() {
        let Some(api) = &server.api else { continue };
        let key = format!("server[{i}] ({}).api", server.name);
        if !api.endpoint.tls {
            let problem = Problem::Absent(format!(
                "{} is plain http://: the API password crosses the network unprotected",
                api.endpoint
            ));
            findings.push(Finding { key: key.clone(), problem, consequence: "use https:// outside a lab" });
        }
        if let Some(problem) = api.password.problem() {
            let consequence = "wbguard restart and an enforcing guard cannot ask the Call Bridge API without it";
            findings.push(Finding {
                key: format!("{key}: the API password from {}", api.password.describe()),
                problem,
                consequence,
            });
        }
        if let Some(why) = api.ca_file.as_deref().and_then(crate::cms_api::trust::ca_file_problem) {
            let consequence = "every check of this server's API fails";
            findings.push(Finding { key: format!("{key}: ca_file"), problem: Problem::Unusable(why), consequence });
        }
    }
    let not_a = |path: &Path, kind: &str| Problem::Unusable(format!("{} exists and is not a {kind}", path.display()));
    if config.state_dir.exists() && !config.state_dir.is_dir() {
        findings.push(Finding {
            key: "state_dir".into(),
            problem: not_a(&config.state_dir, "directory"),
            consequence: "restart's log and lock and the guard's history live there",
        });
    }
    if config.known_hosts.exists() && !config.known_hosts.is_file() {
        findings.push(Finding {
            key: "known_hosts".into(),
            problem: not_a(&config.known_hosts, "file"),
            consequence: "restart and trust read the host keys from it",
        });
    }
    if let Some((certificate, key)) = &config.guard.tls {
        let certificate_problem = match std::fs::metadata(certificate) {
            Err(_) => Some(Problem::Absent(format!("{} does not exist", certificate.display()))),
            Ok(meta) if !meta.is_file() => Some(not_a(certificate, "file")),
            Ok(_) => None,
        };
        for (name, problem) in
            [("watch.tls_certificate", certificate_problem), ("watch.tls_key", secret::file_problem(key))]
        {
            if let Some(problem) = problem {
                findings.push(Finding { key: name.into(), problem, consequence: "wbguard watch will refuse to start" });
            }
        }
    }
    let guard_secrets = config
        .guard
        .webhooks
        .iter()
        .enumerate()
        .map(|(i, webhook)| (format!("webhook[{i}]"), &webhook.url))
        .chain(config.guard.restart_token.iter().map(|token| ("watch.restart_token_env".to_owned(), token)));
    for (key, location) in guard_secrets {
        if let Some(problem) = location.problem() {
            let consequence = "wbguard watch will refuse to start; restart and trust do not need it";
            findings.push(Finding { key, problem, consequence });
        }
    }
    findings
}

/// Cisco's script as a wbguard configuration, without its password.
pub fn import_cisco_script(script: &str, source: &Path) -> anyhow::Result<String> {
    let start = script.find("webbridges").context("no `webbridges = {...}` in the script")?;
    let open = start + script[start..].find('{').context("no `{` after `webbridges`")?;
    let close = open + script[open..].find('}').context("no `}` closing `webbridges`")?;
    let mut entries = Vec::new();
    for item in script[open + 1..close].split(',') {
        let Some((key, value)) = item.split_once(':') else { continue };
        let key = key.trim().trim_matches(['"', '\'']).to_owned();
        let address = value.trim().trim_matches(['"', '\'']).to_owned();
        if !address.is_empty() {
            entries.push((key, address));
        }
    }
    if entries.is_empty() {
        bail!("`webbridges` lists no servers");
    }
    let user = script
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once('=')?;
            (name.trim() == "mmp_username")
                .then(|| value.split('#').next().unwrap_or("").trim().trim_matches(['"', '\'']).to_owned())
        })
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "admin".into());
    let unique = entries.iter().all(|(_, a)| entries.iter().filter(|(_, b)| a == b).count() == 1);
    let mut out = String::new();
    let _ = writeln!(out, "# Imported from {} by `wbguard config import-cisco-script`.", source.display());
    let _ = writeln!(out, "# The password was not imported: export it as WBGUARD_MMP_PASSWORD,");
    let _ = writeln!(out, "# or point [auth] at a file (mode 600), a key or the ssh-agent.");
    let _ = writeln!(out, "# Then trust each host key: wbguard trust --config THIS-FILE NAME...");
    let _ = writeln!(out, "user = {:?}\n\n[auth]\npassword_env = \"WBGUARD_MMP_PASSWORD\"", user);
    for (key, address) in &entries {
        let name = if unique { address.clone() } else { format!("wb{key}") };
        let _ = writeln!(out, "\n[[server]]\nname = {name:?}\nmmp = {address:?}");
        let _ = writeln!(out, "# log_host = \"...\"        # the host name in its log lines, if not {name:?}");
        let _ = writeln!(out, "# webbridge_url = \"https://...\"  # its web page, checked after a restart");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ciscos_example_becomes_a_config_without_the_password() {
        let script = "webbridges={1:\"10.0.0.1\",2:\"10.0.0.2\", 3: '10.0.0.3'}\n\n\
                      mmp_username = \"ops\" # MMP username\nmmp_password = \"hunter2\" # MMP password\n";
        let config = import_cisco_script(script, Path::new("restart.py")).unwrap();
        assert!(!config.contains("hunter2"));
        let raw = config::RawConfig::parse(&config).unwrap();
        let parsed = config::Config::from_raw(raw, Path::new("."), &Dirs::default()).unwrap();
        let names: Vec<&str> = parsed.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert!(parsed.servers.iter().all(|s| s.user == "ops" && s.port == 22));
        // Cisco's own example lists one address four times: names by key.
        let config = import_cisco_script("webbridges={1:\"127.0.0.1\",2:\"127.0.0.1\"}\n", Path::new("x")).unwrap();
        assert!(config.contains("name = \"wb1\"") && config.contains("name = \"wb2\""));
        assert!(import_cisco_script("print('hi')", Path::new("x")).is_err());
    }
}
