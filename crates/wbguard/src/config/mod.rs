//! The configuration file: raw TOML in, a validated [`Config`] out.
//!
//! A leaf of the binary, pure data: it reads the file it is given and
//! nothing else (no environment, no secret; paths are resolved against the
//! [`Dirs`] handed in). Two steps, as in fd and ripgrep: [`RawConfig`]
//! mirrors the file with every field optional, and [`Config::from_raw`]
//! checks it and fills in the defaults, so the rest of wbguard only ever
//! sees a complete, valid inventory. Secrets never live here: the file only
//! says *where* a password, key, webhook URL or token comes from
//! ([`crate::secret`]), and the command that needs one fetches it.
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

pub mod address;
#[cfg(test)]
mod any_input;
pub mod api;
pub mod cluster;
pub mod drain;
pub mod duration;
pub mod guard_settings;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

pub use crate::dirs::Dirs;
use crate::secret::AuthSource;
use address::split_host_port;

/// Finds the configuration: `explicit`, else the first of the search path
/// that exists.
pub fn find(explicit: Option<&Path>, dirs: &Dirs) -> anyhow::Result<PathBuf> {
    match explicit {
        Some(path) => Ok(path.to_path_buf()),
        None => dirs.config_search_path().into_iter().find(|p| p.exists()).with_context(|| {
            let tried: Vec<String> = dirs.config_search_path().iter().map(|p| p.display().to_string()).collect();
            format!("no configuration found (give --config FILE; tried {})", tried.join(", "))
        }),
    }
}

/// Finds and loads the configuration: `explicit`, else the search path.
pub fn load(explicit: Option<&Path>, dirs: &Dirs) -> anyhow::Result<(PathBuf, Config)> {
    let path = find(explicit, dirs)?;
    let text = crate::files::read_bounded(&path, crate::files::TEXT_FILE)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let config = Config::parse(&text, &path, dirs).with_context(|| format!("in {}", path.display()))?;
    Ok((path, config))
}

/// The file as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// MMP user for every server (default `admin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `exec` (default) or `shell`: how commands reach the MMP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Channel>,
    /// `strict` (default) or `accept-new`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_key_policy: Option<HostKeyPolicy>,
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
    /// The Call Bridge API's credentials and CA, for every server with `api`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<api::RawApi>,
    /// The guard: listeners, files, history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<guard_settings::RawWatch>,
    /// When the guard restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<guard_settings::RawPolicy>,
    /// Whom the guard tells.
    #[serde(default, rename = "webhook", skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<guard_settings::RawWebhook>,
    /// The servers.
    #[serde(default, rename = "server")]
    pub servers: Vec<RawServer>,
    /// The clusters they form (none: one cluster of them all).
    #[serde(default, rename = "cluster", skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<cluster::RawCluster>,
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
    pub mode: Option<Channel>,
    /// Allow old SSH algorithms for this server only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_algorithms: Option<bool>,
    /// Credentials for this server, instead of `[auth]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<RawAuth>,
    /// Addresses its syslog comes from (default: the MMP host's addresses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syslog_from: Option<Vec<IpAddr>>,
    /// Its Call Bridge API, `https://HOST:PORT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// API credentials for this server, over `[api]`'s key by key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_auth: Option<api::RawApi>,
    /// Drain hook: the command that takes its web bridge out of the load
    /// balancer (see [`drain`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_command: Option<drain::RawCommand>,
    /// Drain hook: the command that puts it back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undrain_command: Option<drain::RawCommand>,
    /// Drain hook: HAProxy's runtime API socket (a path or `tcp://HOST:PORT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub haproxy_socket: Option<String>,
    /// Drain hook: the HAProxy backend holding the web bridges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub haproxy_backend: Option<String>,
    /// Drain hook: its server name in that backend (default: `name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub haproxy_server: Option<String>,
}

impl RawConfig {
    /// Parses TOML; errors name the line and the key
    /// (`line 5: policy.leak_at_least: invalid value ...`).
    pub fn parse(text: &str) -> anyhow::Result<RawConfig> {
        let error = |key: Option<String>, e: &toml::de::Error| {
            let line = e.span().map_or(0, |span| line_of(text, span.start));
            let key = key.map(|key| format!("{key}: ")).unwrap_or_default();
            anyhow::anyhow!("line {line}: {key}{}", e.message())
        };
        let document = toml::Deserializer::parse(text).map_err(|e| error(None, &e))?;
        serde_path_to_error::deserialize(document).map_err(|e| {
            // The path is `.` when the error is about the document itself.
            let key = e.path().to_string();
            error((key != ".").then_some(key), e.inner())
        })
    }
}

/// The line (from 1) of byte `offset`, counted in bytes so that an offset
/// inside a character cannot panic.
fn line_of(text: &str, offset: usize) -> usize {
    let before = &text.as_bytes()[..offset.min(text.len())];
    before.iter().filter(|&&b| b == b'\n').count() + 1
}

/// How a command reaches the MMP (the file's `mode` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// One SSH `exec` request per command (as Cisco's script does).
    Exec,
    /// An interactive shell: send the command, read to the prompt, `exit`.
    Shell,
}

/// What to do with a host key that is not in known_hosts (there is no
/// policy that accepts any key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Refuse it (the default): the operator trusts it with `wbguard trust`.
    Strict,
    /// Record it on first sight; a *changed* key is still refused.
    AcceptNew,
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

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            auth: Duration::from_secs(15),
            command: Duration::from_secs(60),
            verify: Duration::from_secs(120),
        }
    }
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
    /// Host name its log lines carry, in lower case (as records have it).
    pub log_host: String,
    /// Web bridge page to check after a restart.
    pub webbridge_url: Option<String>,
    /// MMP user.
    pub user: String,
    /// Exec or shell.
    pub channel: Channel,
    /// Old SSH algorithms allowed.
    pub legacy_algorithms: bool,
    /// Where its credentials come from, tried in order.
    pub auth: Vec<AuthSource>,
    /// Addresses its syslog may come from (empty: the MMP host's).
    pub syslog_from: Vec<IpAddr>,
    /// Its Call Bridge API (none: not asked).
    #[serde(skip)]
    pub api: Option<api::ApiSettings>,
    /// How its web bridge is drained through its load balancer before a
    /// restart (none: it is not; see [`drain`]).
    pub drain: Option<drain::DrainHook>,
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
    /// The known_hosts file; the pinned API certificates live beside it
    /// (`api_certificates`, see [`Config::api_certificates`]).
    pub known_hosts: PathBuf,
    /// Restart log, audit file and lock live here.
    pub state_dir: PathBuf,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// The guard's settings.
    #[serde(skip)]
    pub guard: guard_settings::GuardSettings,
}

/// The longest any timeout may be: a day.
const LONGEST_TIMEOUT: f64 = 86_400.0;

fn seconds(value: Option<f64>, default: f64, name: &str) -> anyhow::Result<Duration> {
    let value = value.unwrap_or(default);
    // `contains` is false for NaN, so NaN and the infinities are refused
    // here, before `Duration::from_secs_f64` could panic on them.
    if !(0.1..=LONGEST_TIMEOUT).contains(&value) {
        // Debug keeps 1e308 short, where Display would print 309 digits.
        bail!("timeouts.{name}: {value:?} is not between 0.1 and {LONGEST_TIMEOUT} seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

/// An MMP user name: not empty, no spaces or control characters (SSH
/// would send them as part of the name, and no MMP account has them).
fn check_user(user: &str, key: &str) -> anyhow::Result<()> {
    if user.is_empty() {
        bail!("{key}: the MMP user is empty");
    }
    if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("{key}: the MMP user '{}' has a space or a control character", user.escape_debug());
    }
    Ok(())
}

/// An environment variable's name, as a `*_env` key gives it: not empty,
/// no `=`, NUL, space or control character (no variable could have it).
fn check_variable(name: &str, key: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.chars().any(|c| c == '=' || c.is_whitespace() || c.is_control()) {
        bail!("{key}: '{}' is not an environment variable's name", name.escape_debug());
    }
    Ok(())
}

/// The sources of `raw`, in the order they are tried; `key` is where it
/// is in the file (`auth`, `server[1].auth`).
fn auth_sources(raw: &RawAuth, key: &str, base: &Path, dirs: &Dirs) -> anyhow::Result<Vec<AuthSource>> {
    for (name, variable) in [("password_env", &raw.password_env), ("key_passphrase_env", &raw.key_passphrase_env)] {
        if let Some(variable) = variable {
            check_variable(variable, &format!("{key}.{name}"))?;
        }
    }
    let mut sources = Vec::new();
    if raw.agent == Some(true) {
        sources.push(AuthSource::Agent);
    }
    if let Some(path) = &raw.key_file {
        sources.push(AuthSource::KeyFile {
            path: dirs.resolve(path, base),
            passphrase_env: raw.key_passphrase_env.clone(),
        });
    }
    if let Some(variable) = &raw.password_env {
        sources.push(AuthSource::PasswordEnv { variable: variable.clone() });
    }
    if let Some(path) = &raw.password_file {
        sources.push(AuthSource::PasswordFile { path: dirs.resolve(path, base) });
    }
    if raw.password_prompt == Some(true) {
        sources.push(AuthSource::PasswordPrompt);
    }
    if sources.is_empty() {
        sources.push(AuthSource::PasswordEnv { variable: "WBGUARD_MMP_PASSWORD".into() });
    }
    Ok(sources)
}

impl Config {
    /// Parses and checks the text of the file at `path`.
    pub fn parse(text: &str, path: &Path, dirs: &Dirs) -> anyhow::Result<Config> {
        let raw = RawConfig::parse(text)?;
        Config::from_raw(raw, path.parent().unwrap_or(Path::new(".")), dirs)
    }

    /// Checks `raw` and fills in the defaults; `base` is the folder of the
    /// file, for relative paths.
    pub fn from_raw(raw: RawConfig, base: &Path, dirs: &Dirs) -> anyhow::Result<Config> {
        if raw.servers.is_empty() {
            bail!("no [[server]] entries: list the deployment's servers");
        }
        let default_channel = raw.mode.unwrap_or(Channel::Exec);
        let default_user = raw.user.clone().unwrap_or_else(|| "admin".into());
        check_user(&default_user, "user")?;
        let default_auth = raw.auth.clone().unwrap_or_default();
        let mut servers: Vec<Server> = Vec::new();
        for (i, s) in raw.servers.iter().enumerate() {
            let key = |name: &str| format!("server[{i}].{name}");
            if s.name.is_empty() || s.name.contains([',', ' ']) || s.name.chars().any(char::is_control) {
                bail!(
                    "{}: '{}': a name must be non-empty, without spaces, commas or control characters",
                    key("name"),
                    s.name.escape_debug()
                );
            }
            if servers.iter().any(|other| other.name == s.name) {
                bail!("{}: the name '{}' is used twice", key("name"), s.name);
            }
            let (host, port) = split_host_port(&s.mmp).with_context(|| format!("{} ({})", key("mmp"), s.name))?;
            if let Some(url) = &s.webbridge_url {
                address::HttpUrl::parse(url)
                    .map_err(|why| anyhow::anyhow!("{} ({}): {why}", key("webbridge_url"), s.name))?;
            }
            // In lower case, as the parser gives every record's host.
            let log_host = s.log_host.as_ref().unwrap_or(&s.name).to_ascii_lowercase();
            if log_host.is_empty() || log_host.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("{} ({}): '{}' is not a host name", key("log_host"), s.name, log_host.escape_debug());
            }
            // Records are matched to servers by this name, whatever its case.
            if let Some(other) = servers.iter().find(|other| other.log_host.eq_ignore_ascii_case(&log_host)) {
                bail!(
                    "{} ({}): the log host '{log_host}' is also {}'s: the guard could not tell their records apart",
                    key("log_host"),
                    s.name,
                    other.name
                );
            }
            let user = s.user.clone().unwrap_or_else(|| default_user.clone());
            if s.user.is_some() {
                check_user(&user, &key("user"))?;
            }
            servers.push(Server {
                name: s.name.clone(),
                host,
                port,
                log_host,
                webbridge_url: s.webbridge_url.clone(),
                user,
                channel: s.mode.unwrap_or(default_channel),
                legacy_algorithms: s.legacy_algorithms.unwrap_or(false),
                auth: match &s.auth {
                    Some(auth) => auth_sources(auth, &key("auth"), base, dirs)?,
                    None => auth_sources(&default_auth, "auth", base, dirs)?,
                },
                syslog_from: s.syslog_from.clone().unwrap_or_default(),
                api: match (&s.api, &s.api_auth) {
                    (Some(url), own) => {
                        Some(api::settings(url, own.as_ref(), raw.api.as_ref(), &format!("server[{i}]"), base, dirs)?)
                    }
                    (None, Some(_)) => bail!("{}: api_auth without api = \"https://HOST:PORT\"", key("api_auth")),
                    (None, None) => None,
                },
                drain: drain::hook(
                    &drain::RawDrain {
                        drain_command: s.drain_command.as_ref(),
                        undrain_command: s.undrain_command.as_ref(),
                        haproxy_socket: s.haproxy_socket.as_deref(),
                        haproxy_backend: s.haproxy_backend.as_deref(),
                        haproxy_server: s.haproxy_server.as_deref(),
                    },
                    i,
                    &s.name,
                    base,
                    dirs,
                )?,
            });
        }
        let host_key_policy = raw.host_key_policy.unwrap_or(HostKeyPolicy::Strict);
        let state_dir = raw.state_dir.as_deref().map_or_else(|| dirs.state_dir(), |p| dirs.resolve(p, base));
        let known_hosts =
            raw.known_hosts.as_deref().map_or_else(|| state_dir.join("known_hosts"), |p| dirs.resolve(p, base));
        let t = raw.timeouts.clone().unwrap_or_default();
        let timeouts = Timeouts {
            connect: seconds(t.connect, 10.0, "connect")?,
            auth: seconds(t.auth, 15.0, "auth")?,
            command: seconds(t.command, 60.0, "command")?,
            verify: seconds(t.verify, 120.0, "verify")?,
        };
        let mut guard = guard_settings::GuardSettings::from_raw(
            raw.watch.as_ref(),
            raw.policy.as_ref(),
            &raw.webhooks,
            base,
            dirs,
        )?;
        guard.clusters = cluster::clusters(&raw.clusters, &servers, &raw.policy.clone().unwrap_or_default())?;
        Ok(Config { servers, host_key_policy, known_hosts, state_dir, timeouts, guard })
    }

    /// The file of pinned Call Bridge API certificates: `api_certificates`
    /// in known_hosts' folder (`HOST:PORT sha256:HEX` lines).
    pub fn api_certificates(&self) -> PathBuf {
        self.known_hosts.parent().unwrap_or(Path::new(".")).join("api_certificates")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_and_a_full_config() {
        let raw = RawConfig::parse("[[server]]\nname = \"cms1\"\nmmp = \"10.0.0.1\"\n").unwrap();
        let config = Config::from_raw(raw, Path::new("/etc/wbguard"), &Dirs::default()).unwrap();
        let server = &config.servers[0];
        assert_eq!((server.host.as_str(), server.port, server.user.as_str()), ("10.0.0.1", 22, "admin"));
        assert_eq!(server.auth, vec![AuthSource::PasswordEnv { variable: "WBGUARD_MMP_PASSWORD".into() }]);
        assert_eq!(config.host_key_policy, HostKeyPolicy::Strict);
        assert_eq!(server.channel, Channel::Exec);

        let raw = RawConfig::parse(
            "host_key_policy = \"accept-new\"\nknown_hosts = \"kh\"\nmode = \"shell\"\n[timeouts]\ncommand = 5\n\
             [auth]\nkey_file = \"id\"\n[[server]]\nname = \"a\"\nmmp = \"h:2222\"\nlog_host = \"cmsA\"\nmode = \"exec\"\n\
             legacy_algorithms = true\n[server.auth]\npassword_file = \"/run/pw\"\n[[server]]\nname = \"b\"\nmmp = \"[::1]:22\"\n",
        )
        .unwrap();
        let config = Config::from_raw(raw, Path::new("/etc/wbguard"), &Dirs::default()).unwrap();
        assert_eq!(config.known_hosts, PathBuf::from("/etc/wbguard/kh"));
        assert_eq!(config.timeouts.command, Duration::from_secs(5));
        let (a, b) = (&config.servers[0], &config.servers[1]);
        assert_eq!((a.port, a.log_host.as_str(), a.channel, a.legacy_algorithms), (2222, "cmsa", Channel::Exec, true));
        assert_eq!(a.auth, vec![AuthSource::PasswordFile { path: "/run/pw".into() }]);
        assert_eq!((b.host.as_str(), b.channel), ("::1", Channel::Shell));
        assert_eq!(b.auth, vec![AuthSource::KeyFile { path: "/etc/wbguard/id".into(), passphrase_env: None }]);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let error = |text: &str| match RawConfig::parse(text) {
            Err(e) => format!("{e:#}"),
            Ok(raw) => format!("{:#}", Config::from_raw(raw, Path::new("."), &Dirs::default()).unwrap_err()),
        };
        assert!(error("[[server]]\nname = \"a\"\nmmp = \"h\"\npassword = \"x\"\n").contains("line 4"));
        assert!(error("").contains("no [[server]]"));
        assert!(
            error("host_key_policy = \"accept-any\"\n[[server]]\nname = \"a\"\nmmp = \"h\"\n").contains("accept-any")
        );
        assert!(error("[[server]]\nname = \"a\"\nmmp = \"h:99999\"\n").contains("bad port"));
        assert!(
            error("[[server]]\nname = \"a\"\nmmp = \"h\"\n[[server]]\nname = \"a\"\nmmp = \"i\"\n").contains("twice")
        );
        assert!(error("[[server]]\nname = \"a\"\nmmp = \"h\"\nmode = \"telnet\"\n").contains("telnet"));
    }

    /// Each hostile value is refused by the key's name (and, for a type
    /// error, the line).
    #[test]
    fn errors_name_the_key() {
        let server = "[[server]]\nname = \"cms1\"\nmmp = \"10.0.0.1\"\n";
        let error = |text: &str| match Config::parse(text, Path::new("/etc/wbguard/config.toml"), &Dirs::default()) {
            Err(e) => format!("{e:#}"),
            Ok(_) => panic!("accepted: {text}"),
        };
        for (text, key) in [
            (format!("{server}[policy]\nleak_at_least = -1\n"), "line 5: policy.leak_at_least: invalid value"),
            (format!("{server}[watch]\nretention_days = -1\n"), "watch.retention_days"),
            (format!("{server}[watch]\nretention_days = 0\n"), "watch.retention_days"),
            (format!("{server}[watch]\nretention_days = 3651\n"), "watch.retention_days"),
            (format!("{server}[watch]\nfuture_tolerance = \"2d\"\n"), "watch.future_tolerance"),
            (format!("{server}[watch]\nfuture_tolerance = \"0s\"\n"), "watch.future_tolerance"),
            (format!("{server}[policy]\nlimit = 0\n"), "policy.limit"),
            (format!("{server}[policy]\nlimit = 10001\n"), "policy.limit"),
            (format!("{server}[policy]\nleak_at_least = 10001\n"), "policy.leak_at_least"),
            (format!("{server}[policy]\nmax_dropped_calls = 4000000000\n"), "policy.max_dropped_calls"),
            (format!("{server}[policy]\nmin_interval = \"9999999999999999s\"\n"), "policy.min_interval"),
            (format!("{server}[policy]\nmin_interval = \"59s\"\n"), "policy.min_interval"),
            (format!("{server}[policy]\nmin_interval = \"31d\"\n"), "policy.min_interval"),
            (format!("{server}[policy]\nstale_after = \"8d\"\n"), "policy.stale_after"),
            (format!("{server}[policy]\nmode = 5\n"), "policy.mode"),
            (
                format!("{server}[[policy.window]]\ncron = \"0 2 * * 6\"\nduration = \"99999999999999h\"\n"),
                "policy.window[0].duration",
            ),
            (format!("{server}[[policy.window]]\ncron = \"0 2 31 2 *\"\nduration = \"1h\"\n"), "policy.window[0].cron"),
            (
                format!(
                    "{server}[[policy.window]]\ncron = \"0 2 * * 6\"\nduration = \"1h\"\nmax_dropped_calls = 10001\n"
                ),
                "policy.window[0].max_dropped_calls",
            ),
            (
                format!("{server}[[policy.window]]\ncron = \"0 2 * * 6\"\nduration = \"1h\"\ntimezone = \"Mars\"\n"),
                "policy.window[0].timezone",
            ),
            (format!("{server}[[policy.window]]\ncron = 7\nduration = \"1h\"\n"), "policy.window[0].cron"),
            (format!("{server}[timeouts]\nconnect = 1e308\n"), "timeouts.connect"),
            (format!("{server}[timeouts]\nauth = nan\n"), "timeouts.auth"),
            (format!("{server}[timeouts]\ncommand = -inf\n"), "timeouts.command"),
            (format!("{server}[timeouts]\nverify = \"2m\"\n"), "timeouts.verify"),
            (format!("{server}[watch]\nlisten_http = \"127.0.0.1:0\"\n"), "watch.listen_http"),
            (format!("{server}[watch]\nlisten_http = \"127.0.0.1:99999\"\n"), "watch.listen_http"),
            (format!("{server}[watch]\nlisten_syslog = [\"udp://127.0.0.1:0\"]\n"), "watch.listen_syslog[0]"),
            (format!("{server}[watch]\nrelays = [\"10.0.0.300\"]\n"), "watch.relays"),
            (format!("{server}[watch]\nrestart_token_env = \"\"\n"), "watch.restart_token_env"),
            (format!("{server}[[webhook]]\nurl = \"https://h:99999/x\"\n"), "webhook[0].url"),
            (format!("{server}[[webhook]]\nurl_env = \"A=B\"\n"), "webhook[0].url_env"),
            (format!("{server}[[webhook]]\nurl_env = \"A\"\nurl = \"https://h/\"\n"), "webhook[0]"),
            (format!("{server}[[webhook]]\nformat = \"slack\"\n"), "webhook[0]"),
            (format!("user = \"\"\n{server}"), "user"),
            (format!("{server}user = \"ad min\"\n"), "server[0].user"),
            (format!("{server}user = \"\"\n"), "server[0].user"),
            ("[[server]]\nname = \"a\"\nmmp = \"h:99999\"\n".into(), "server[0].mmp"),
            ("[[server]]\nname = \"a\"\nmmp = \"[::1]:0\"\n".into(), "server[0].mmp"),
            (format!("{server}webbridge_url = \"http://[::1\"\n"), "server[0].webbridge_url"),
            (format!("{server}webbridge_url = \"http://h:99999/\"\n"), "server[0].webbridge_url"),
            (format!("{server}syslog_from = [\"nope\"]\n"), "server[0].syslog_from"),
            (format!("{server}[server.auth]\npassword_env = \"\"\n"), "server[0].auth.password_env"),
            (format!("[auth]\nkey_passphrase_env = \"a b\"\n{server}"), "auth.key_passphrase_env"),
            (format!("{server}api = \"https://h:445\"\n"), "server[0].api: no API user"),
            (format!("[api]\nuser = \"a b\"\n{server}api = \"https://h\"\n"), "api.user"),
            (format!("[api]\nuser = \"u\"\n{server}api = \"ftp://h\"\n"), "server[0].api"),
            (format!("[api]\nuser = \"u\"\n{server}api = \"https://h/api/v1\"\n"), "server[0].api"),
            (format!("{server}[server.api_auth]\nuser = \"u\"\n"), "server[0].api_auth"),
            (format!("[api]\nuser = \"u\"\npassword_env = \"A=B\"\n{server}api = \"https://h\"\n"), "api.password_env"),
            (format!("[api]\nuser = \"u\"\nca_file = 5\n{server}"), "api.ca_file"),
            (format!("{server}[policy]\napi_unreachable = \"ignore\"\n"), "policy.api_unreachable"),
            (
                format!("{server}[[server]]\nname = \"cms2\"\nmmp = \"10.0.0.2\"\nlog_host = \"CMS1\"\n"),
                "server[1].log_host",
            ),
        ] {
            let message = error(&text);
            assert!(message.contains(key), "{key} not in: {message}\n{text}");
        }
    }

    /// A password written into an `api` URL is refused by the key's name
    /// and never repeated, whatever else is wrong with the URL.
    #[test]
    fn an_api_url_with_a_password_is_refused_without_echoing_it() {
        for url in ["https://admin:hunter2@10.0.0.1:445", "https://admin:hunter2@h:99999/x", "http://hunter2@h"] {
            let text = format!("[api]\nuser = \"u\"\n[[server]]\nname = \"cms1\"\nmmp = \"h\"\napi = \"{url}\"\n");
            let error =
                format!("{:#}", Config::parse(&text, Path::new("/etc/wbguard/c.toml"), &Dirs::default()).unwrap_err());
            assert!(error.contains("server[0].api") && error.contains("password"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
        let text = "[api]\nuser = \"wbguard\"\n[[server]]\nname = \"cms1\"\nmmp = \"h\"\napi = \"https://h:445\"\n\
                    [[server]]\nname = \"cms2\"\nmmp = \"i\"\n";
        let config = Config::parse(text, Path::new("/etc/wbguard/c.toml"), &Dirs::default()).unwrap();
        let api = config.servers[0].api.as_ref().unwrap();
        assert_eq!((api.endpoint.address(), api.user.as_str()), ("h:445".to_owned(), "wbguard"));
        assert_eq!(config.servers[1].api, None);
        assert_eq!(config.api_certificates(), config.known_hosts.with_file_name("api_certificates"));
    }

    #[test]
    fn an_error_at_a_multibyte_character_counts_lines_without_panicking() {
        assert_eq!(line_of("é\né", 1), 1);
        assert_eq!(line_of("é\né", 3), 2);
        assert_eq!(line_of("é", 99), 1);
        assert!(format!("{:#}", RawConfig::parse("ü = ü\n").unwrap_err()).contains("line 1"));
    }
}
