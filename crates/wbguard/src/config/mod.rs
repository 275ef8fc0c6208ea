//! The configuration file: raw TOML in, a validated [`Config`] out.
//!
//! Two steps, as in fd and ripgrep: [`RawConfig`] mirrors the file with
//! every field optional, and [`Config::from_raw`] checks it and fills in the
//! defaults, so the rest of wbguard only ever sees a complete, valid
//! inventory. Secrets never live here: the file only says *where* a password
//! or key comes from.
//!
//! ```toml
//! [auth]
//! password_env = "WBGUARD_MMP_PASSWORD"   # the default
//!
//! [[server]]
//! name = "cms1"
//! mmp = "10.0.0.11"             # host[:port], port 22 by default
//! log_host = "cms01"            # the host name in its log lines (default: name)
//! webbridge_url = "https://join.example.com/"
//! mode = "shell"                # or "exec" (default)
//! legacy_algorithms = true      # only for old appliances
//! ```

pub mod watch;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Where the configuration is looked for, in order, when not named.
pub fn search_path() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(path) = std::env::var_os("WBGUARD_CONFIG") {
        paths.push(PathBuf::from(path));
        return paths;
    }
    if let Some(base) = std::env::var_os("XDG_CONFIG_HOME") {
        paths.push(PathBuf::from(base).join("wbguard/config.toml"));
    } else if let Some(home) = std::env::var_os("HOME") {
        paths.push(PathBuf::from(home).join(".config/wbguard/config.toml"));
    }
    paths.push(PathBuf::from("/etc/wbguard/config.toml"));
    paths
}

/// Finds and loads the configuration: `explicit`, else the search path.
pub fn load(explicit: Option<&Path>) -> anyhow::Result<(PathBuf, Config)> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => search_path().into_iter().find(|p| p.exists()).with_context(|| {
            let tried: Vec<String> = search_path().iter().map(|p| p.display().to_string()).collect();
            format!("no configuration found (give --config FILE; tried {})", tried.join(", "))
        })?,
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let raw = RawConfig::parse(&text).with_context(|| format!("in {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let config = Config::from_raw(raw, base).with_context(|| format!("in {}", path.display()))?;
    Ok((path, config))
}

/// The file as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// MMP user for every server (default `admin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `exec` (default) or `shell`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `strict` (default) or `accept-new`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_key_policy: Option<String>,
    /// The known_hosts file (default: wbguard's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<PathBuf>,
    /// Directory of the restart log, audit file and lock (default: the
    /// user's state directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Timeouts in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RawTimeouts>,
    /// Where credentials come from, for every server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<RawAuth>,
    /// The guard: listeners, files, history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<watch::RawWatch>,
    /// When the guard restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<watch::RawPolicy>,
    /// Whom the guard tells.
    #[serde(default, rename = "webhook", skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<watch::RawWebhook>,
    /// The servers.
    #[serde(default, rename = "server")]
    pub servers: Vec<RawServer>,
}

/// `[timeouts]`, in seconds.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP connect and SSH handshake (default 10).
    pub connect: Option<f64>,
    /// Authentication (default 15).
    pub auth: Option<f64>,
    /// One command (default 60).
    pub command: Option<f64>,
    /// Waiting for the web page after a restart (default 120).
    pub verify: Option<f64>,
}

/// `[auth]`: where a password or key comes from, never the secret itself.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Environment variable holding the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// File holding the password (mode 600 or stricter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Ask for the password on the terminal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_prompt: Option<bool>,
    /// A private key file (OpenSSH format).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the key's passphrase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_passphrase_env: Option<String>,
    /// Use the ssh-agent at `SSH_AUTH_SOCK`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<bool>,
}

/// One `[[server]]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Name used on the command line and in reports.
    pub name: String,
    /// MMP address, `host[:port]`.
    pub mmp: String,
    /// Host name its log lines carry (default: `name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_host: Option<String>,
    /// The web bridge's page, checked after a restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webbridge_url: Option<String>,
    /// MMP user for this server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `exec` or `shell` for this server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Allow old SSH algorithms for this server only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_algorithms: Option<bool>,
    /// Credentials for this server, instead of `[auth]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<RawAuth>,
    /// Addresses its syslog comes from (default: the MMP host's addresses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syslog_from: Option<Vec<IpAddr>>,
}

impl RawConfig {
    /// Parses TOML; errors name the line and the field.
    pub fn parse(text: &str) -> anyhow::Result<RawConfig> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            anyhow::anyhow!("line {line}: {}", e.message())
        })
    }
}

/// How a command reaches the MMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One SSH `exec` request per command (as Cisco's script does).
    Exec,
    /// An interactive shell: send the command, read to the prompt, `exit`.
    Shell,
}

/// What to do with a host key that is not in known_hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Refuse it (the default): the operator trusts it with `wbguard trust`.
    Strict,
    /// Record it on first sight; a *changed* key is still refused.
    AcceptNew,
}

/// Where a server's credentials come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum AuthSource {
    /// The password is in this environment variable.
    PasswordEnv {
        /// Variable name.
        variable: String,
    },
    /// The password is in this file.
    PasswordFile {
        /// Path.
        path: PathBuf,
    },
    /// The password is asked for on the terminal.
    PasswordPrompt,
    /// A private key file, its passphrase (if any) from this variable.
    KeyFile {
        /// Path.
        path: PathBuf,
        /// Variable holding the passphrase.
        passphrase_env: Option<String>,
    },
    /// The ssh-agent.
    Agent,
}

/// Timeouts, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timeouts {
    /// TCP connect and SSH handshake.
    pub connect: Duration,
    /// Authentication.
    pub auth: Duration,
    /// One command.
    pub command: Duration,
    /// Waiting for the web page to answer after a restart.
    pub verify: Duration,
}

/// One server, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Server {
    /// Its name.
    pub name: String,
    /// MMP host (name or address).
    pub host: String,
    /// MMP port.
    pub port: u16,
    /// Host name its log lines carry.
    pub log_host: String,
    /// Web bridge page to check after a restart.
    pub webbridge_url: Option<String>,
    /// MMP user.
    pub user: String,
    /// Exec or shell.
    pub mode: Mode,
    /// Old SSH algorithms allowed.
    pub legacy_algorithms: bool,
    /// Where its credentials come from, tried in order.
    pub auth: Vec<AuthSource>,
    /// Addresses its syslog may come from (empty: the MMP host's).
    pub syslog_from: Vec<IpAddr>,
}

impl Server {
    /// `host:port` as Cisco's log names it (the address, without a default port).
    pub fn address(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The whole configuration, valid.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The servers, in file order.
    pub servers: Vec<Server>,
    /// Unknown host keys: refused or recorded.
    pub host_key_policy: HostKeyPolicy,
    /// The known_hosts file.
    pub known_hosts: PathBuf,
    /// Restart log, audit file and lock live here.
    pub state_dir: PathBuf,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// The guard's settings.
    #[serde(skip)]
    pub watch: watch::WatchSettings,
}

/// The user's state directory for wbguard (`~/.local/state/wbguard`).
pub fn default_state_dir() -> PathBuf {
    match std::env::var_os("XDG_STATE_HOME") {
        Some(base) => PathBuf::from(base).join("wbguard"),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".local/state/wbguard"),
            None => PathBuf::from("/var/lib/wbguard"),
        },
    }
}

/// `~/...` expanded; relative paths taken from the config file's folder.
pub(crate) fn resolve_path(path: &Path, base: &Path) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    if path.is_relative() {
        base.join(path)
    } else {
        path.to_path_buf()
    }
}

fn seconds(value: Option<f64>, default: f64, name: &str) -> anyhow::Result<Duration> {
    let value = value.unwrap_or(default);
    if !(0.1..=86_400.0).contains(&value) {
        bail!("timeouts.{name}: {value} is not between 0.1 and 86400 seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

fn mode(text: Option<&str>, what: &str) -> anyhow::Result<Option<Mode>> {
    Ok(match text {
        None => None,
        Some("exec") => Some(Mode::Exec),
        Some("shell") => Some(Mode::Shell),
        Some(other) => bail!("{what}: mode '{other}' is neither \"exec\" nor \"shell\""),
    })
}

fn auth_sources(raw: &RawAuth, base: &Path) -> Vec<AuthSource> {
    let mut sources = Vec::new();
    if raw.agent == Some(true) {
        sources.push(AuthSource::Agent);
    }
    if let Some(path) = &raw.key_file {
        sources.push(AuthSource::KeyFile {
            path: resolve_path(path, base),
            passphrase_env: raw.key_passphrase_env.clone(),
        });
    }
    if let Some(variable) = &raw.password_env {
        sources.push(AuthSource::PasswordEnv { variable: variable.clone() });
    }
    if let Some(path) = &raw.password_file {
        sources.push(AuthSource::PasswordFile { path: resolve_path(path, base) });
    }
    if raw.password_prompt == Some(true) {
        sources.push(AuthSource::PasswordPrompt);
    }
    if sources.is_empty() {
        sources.push(AuthSource::PasswordEnv { variable: "WBGUARD_MMP_PASSWORD".into() });
    }
    sources
}

impl Config {
    /// Checks `raw` and fills in the defaults; `base` is the folder of the
    /// file, for relative paths.
    pub fn from_raw(raw: RawConfig, base: &Path) -> anyhow::Result<Config> {
        if raw.servers.is_empty() {
            bail!("no [[server]] entries: list the deployment's servers");
        }
        let default_mode = mode(raw.mode.as_deref(), "mode")?.unwrap_or(Mode::Exec);
        let default_user = raw.user.clone().unwrap_or_else(|| "admin".into());
        let default_auth = raw.auth.clone().unwrap_or_default();
        let mut servers = Vec::new();
        for (i, s) in raw.servers.iter().enumerate() {
            let what = format!("server[{i}] ({})", s.name);
            if s.name.is_empty() || s.name.contains([',', ' ']) {
                bail!("{what}: a name must be non-empty, without spaces or commas");
            }
            if servers.iter().any(|other: &Server| other.name == s.name) {
                bail!("{what}: the name '{}' is used twice", s.name);
            }
            let (host, port) = split_host_port(&s.mmp).with_context(|| format!("{what}: mmp"))?;
            if let Some(url) = &s.webbridge_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    bail!("{what}: webbridge_url '{url}' must start with http:// or https://");
                }
            }
            servers.push(Server {
                name: s.name.clone(),
                host,
                port,
                log_host: s.log_host.clone().unwrap_or_else(|| s.name.clone()),
                webbridge_url: s.webbridge_url.clone(),
                user: s.user.clone().unwrap_or_else(|| default_user.clone()),
                mode: mode(s.mode.as_deref(), &what)?.unwrap_or(default_mode),
                legacy_algorithms: s.legacy_algorithms.unwrap_or(false),
                auth: auth_sources(s.auth.as_ref().unwrap_or(&default_auth), base),
                syslog_from: s.syslog_from.clone().unwrap_or_default(),
            });
        }
        let host_key_policy = match raw.host_key_policy.as_deref() {
            None | Some("strict") => HostKeyPolicy::Strict,
            Some("accept-new") => HostKeyPolicy::AcceptNew,
            Some(other) => bail!(
                "host_key_policy '{other}' is neither \"strict\" nor \"accept-new\" (there is no policy that accepts any key)"
            ),
        };
        let state_dir = raw.state_dir.as_deref().map_or_else(default_state_dir, |p| resolve_path(p, base));
        let known_hosts =
            raw.known_hosts.as_deref().map_or_else(|| state_dir.join("known_hosts"), |p| resolve_path(p, base));
        let t = raw.timeouts.clone().unwrap_or_default();
        let timeouts = Timeouts {
            connect: seconds(t.connect, 10.0, "connect")?,
            auth: seconds(t.auth, 15.0, "auth")?,
            command: seconds(t.command, 60.0, "command")?,
            verify: seconds(t.verify, 120.0, "verify")?,
        };
        let watch = watch::WatchSettings::from_raw(raw.watch.as_ref(), raw.policy.as_ref(), &raw.webhooks, base)?;
        Ok(Config { servers, host_key_policy, known_hosts, state_dir, timeouts, watch })
    }

    /// The servers named in `only` (all when empty); unknown names are an error.
    pub fn select(&self, only: &[String]) -> anyhow::Result<Vec<&Server>> {
        if only.is_empty() {
            return Ok(self.servers.iter().collect());
        }
        only.iter()
            .map(|name| {
                self.servers.iter().find(|s| &s.name == name).with_context(|| {
                    let known: Vec<&str> = self.servers.iter().map(|s| s.name.as_str()).collect();
                    format!("no server named '{name}' (known: {})", known.join(", "))
                })
            })
            .collect()
    }
}

/// `host`, `host:port`, `[v6]:port`.
pub fn split_host_port(text: &str) -> anyhow::Result<(String, u16)> {
    let text = text.trim();
    if text.is_empty() {
        bail!("empty address");
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').context("unclosed [")?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().with_context(|| format!("bad port in '{text}'"))?,
            None if after.is_empty() => 22,
            None => bail!("unexpected '{after}' in '{text}'"),
        };
        return Ok((host.to_owned(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port: u16 = port.parse().with_context(|| format!("bad port in '{text}'"))?;
            if port == 0 {
                bail!("port 0 in '{text}'");
            }
            Ok((host.to_owned(), port))
        }
        _ => Ok((text.to_owned(), 22)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_and_a_full_config() {
        let raw = RawConfig::parse("[[server]]\nname = \"cms1\"\nmmp = \"10.0.0.1\"\n").unwrap();
        let config = Config::from_raw(raw, Path::new("/etc/wbguard")).unwrap();
        let server = &config.servers[0];
        assert_eq!((server.host.as_str(), server.port, server.user.as_str()), ("10.0.0.1", 22, "admin"));
        assert_eq!(server.auth, vec![AuthSource::PasswordEnv { variable: "WBGUARD_MMP_PASSWORD".into() }]);
        assert_eq!(config.host_key_policy, HostKeyPolicy::Strict);
        assert_eq!(server.mode, Mode::Exec);

        let raw = RawConfig::parse(
            "host_key_policy = \"accept-new\"\nknown_hosts = \"kh\"\nmode = \"shell\"\n[timeouts]\ncommand = 5\n\
             [auth]\nkey_file = \"id\"\n[[server]]\nname = \"a\"\nmmp = \"h:2222\"\nlog_host = \"cmsA\"\nmode = \"exec\"\n\
             legacy_algorithms = true\n[server.auth]\npassword_file = \"/run/pw\"\n[[server]]\nname = \"b\"\nmmp = \"[::1]:22\"\n",
        )
        .unwrap();
        let config = Config::from_raw(raw, Path::new("/etc/wbguard")).unwrap();
        assert_eq!(config.known_hosts, PathBuf::from("/etc/wbguard/kh"));
        assert_eq!(config.timeouts.command, Duration::from_secs(5));
        let (a, b) = (&config.servers[0], &config.servers[1]);
        assert_eq!((a.port, a.log_host.as_str(), a.mode, a.legacy_algorithms), (2222, "cmsA", Mode::Exec, true));
        assert_eq!(a.auth, vec![AuthSource::PasswordFile { path: "/run/pw".into() }]);
        assert_eq!((b.host.as_str(), b.mode), ("::1", Mode::Shell));
        assert_eq!(b.auth, vec![AuthSource::KeyFile { path: "/etc/wbguard/id".into(), passphrase_env: None }]);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let error = |text: &str| match RawConfig::parse(text) {
            Err(e) => format!("{e:#}"),
            Ok(raw) => format!("{:#}", Config::from_raw(raw, Path::new(".")).unwrap_err()),
        };
        assert!(error("[[server]]\nname = \"a\"\nmmp = \"h\"\npassword = \"x\"\n").contains("line 4"));
        assert!(error("").contains("no [[server]]"));
        assert!(
            error("host_key_policy = \"accept-any\"\n[[server]]\nname = \"a\"\nmmp = \"h\"\n").contains("no policy")
        );
        assert!(error("[[server]]\nname = \"a\"\nmmp = \"h:99999\"\n").contains("bad port"));
        assert!(
            error("[[server]]\nname = \"a\"\nmmp = \"h\"\n[[server]]\nname = \"a\"\nmmp = \"i\"\n").contains("twice")
        );
        assert!(error("[[server]]\nname = \"a\"\nmmp = \"h\"\nmode = \"telnet\"\n").contains("telnet"));
    }
}
