//! A server's drain hook: how its web bridge is taken out of its load
//! balancer before a restart, and put back after (issue 14).
//!
//! Pure data, like the rest of the configuration: this reads and checks
//! the `[[server]]` keys, [`crate::drain`] runs the hook. Two kinds, at
//! most one per server:
//!
//! ```toml
//! [[server]]
//! name = "cms1"
//! mmp = "10.0.0.11"
//! # HAProxy's runtime API (its `stats socket ... level admin`):
//! haproxy_socket = "/run/haproxy/admin.sock"   # or "tcp://127.0.0.1:9999"
//! haproxy_backend = "webbridges"
//! haproxy_server = "cms1"                      # default: the server's name
//!
//! # ...or a command of your own, for another load balancer; the server's
//! # name is added as the last argument; no shell runs it:
//! # drain_command = ["/usr/local/bin/lb", "disable"]
//! # undrain_command = ["/usr/local/bin/lb", "enable"]
//! ```
//!
//! Invariants: a command has a program and both halves; an HAProxy hook has
//! a socket and a backend; names are words HAProxy accepts (no space, no
//! `/`, no control character), so that nothing read from the file can
//! change the command sent to HAProxy.

use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::Dirs;

/// A command line as written: one string split at whitespace, or an array
/// of arguments (for arguments with spaces).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawCommand {
    /// `"/usr/local/bin/lb disable"`.
    Line(String),
    /// `["/usr/local/bin/lb", "disable"]`.
    Words(Vec<String>),
}

/// The drain keys of one `[[server]]`, as written.
#[derive(Debug, Default, Clone)]
pub struct RawDrain<'a> {
    /// `drain_command`.
    pub drain_command: Option<&'a RawCommand>,
    /// `undrain_command`.
    pub undrain_command: Option<&'a RawCommand>,
    /// `haproxy_socket`.
    pub haproxy_socket: Option<&'a str>,
    /// `haproxy_backend`.
    pub haproxy_backend: Option<&'a str>,
    /// `haproxy_server`.
    pub haproxy_server: Option<&'a str>,
}

/// Where HAProxy's runtime API listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HaproxySocket {
    /// A unix socket (`stats socket /run/haproxy/admin.sock level admin`).
    Unix(PathBuf),
    /// A TCP address (`stats socket ipv4@127.0.0.1:9999 level admin`):
    /// host and port.
    Tcp(String, u16),
}

impl std::fmt::Display for HaproxySocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HaproxySocket::Unix(path) => write!(f, "{}", path.display()),
            HaproxySocket::Tcp(host, port) if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            HaproxySocket::Tcp(host, port) => write!(f, "tcp://{host}:{port}"),
        }
    }
}

/// How a server's web bridge is drained and made ready again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DrainHook {
    /// Commands of the operator's; each gets the server's name as its last
    /// argument.
    Command {
        /// Takes the web bridge out (program first).
        drain: Vec<String>,
        /// Puts it back.
        undrain: Vec<String>,
    },
    /// HAProxy's runtime API: `set server BACKEND/SERVER state drain`, then
    /// `ready`, each verified with `show servers state BACKEND`.
    Haproxy {
        /// The runtime API's socket.
        socket: HaproxySocket,
        /// The backend the web bridges are servers of.
        backend: String,
        /// This web bridge's server name in it.
        server: String,
    },
}

impl DrainHook {
    /// In words, for `wbguard config check` and the status (no secret: a
    /// command's arguments are shown as written, like `ps` shows them).
    pub fn describe(&self) -> String {
        match self {
            DrainHook::Command { drain, undrain } => {
                format!("command `{}` / `{}` (+ the server's name)", drain.join(" "), undrain.join(" "))
            }
            DrainHook::Haproxy { socket, backend, server } => {
                format!("HAProxy runtime API at {socket}, server {backend}/{server}")
            }
        }
    }
}

/// The longest HAProxy name accepted (HAProxy's own limit is far beyond
/// any real one; this keeps a command line short).
const LONGEST_NAME: usize = 256;

/// An HAProxy backend or server name: a word HAProxy would accept, which
/// cannot split or end the command it is put into.
fn check_name(name: &str, key: &str) -> anyhow::Result<()> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if name.is_empty() || name.len() > LONGEST_NAME || !name.chars().all(fine) {
        bail!(
            "{key}: '{}' is not an HAProxy name (letters, digits, '-', '_', '.' and ':', at most {LONGEST_NAME})",
            name.escape_debug()
        );
    }
    Ok(())
}

/// The socket as written: a path, or `tcp://HOST:PORT`.
fn socket(text: &str, key: &str, base: &Path, dirs: &Dirs) -> anyhow::Result<HaproxySocket> {
    if text.is_empty() || text.chars().any(char::is_control) {
        bail!("{key}: '{}' is neither a unix socket's path nor tcp://HOST:PORT", text.escape_debug());
    }
    if let Some(address) = text.strip_prefix("tcp://") {
        let (host, port) = super::address::split_host_port(address).map_err(|e| anyhow::anyhow!("{key}: {e:#}"))?;
        if !address.contains(':') || port == 0 {
            bail!("{key}: '{text}' needs a port (tcp://HOST:PORT)");
        }
        return Ok(HaproxySocket::Tcp(host, port));
    }
    if text.contains("://") {
        bail!("{key}: '{}': only a path or tcp://HOST:PORT", text.escape_debug());
    }
    Ok(HaproxySocket::Unix(dirs.resolve(Path::new(text), base)))
}

/// A command's words: a program and its arguments, none empty.
fn words(raw: &RawCommand, key: &str) -> anyhow::Result<Vec<String>> {
    let words: Vec<String> = match raw {
        RawCommand::Line(line) => line.split_whitespace().map(str::to_owned).collect(),
        RawCommand::Words(words) => words.clone(),
    };
    if words.is_empty() || words[0].is_empty() {
        bail!("{key}: no program to run");
    }
    if words.iter().any(|w| w.contains('\0')) {
        bail!("{key}: an argument holds a NUL character");
    }
    Ok(words)
}

/// The hook of server `index` (named `name`), if it has one; errors name
/// the key (`server[2].haproxy_backend: ...`).
pub fn hook(
    raw: &RawDrain<'_>,
    index: usize,
    name: &str,
    base: &Path,
    dirs: &Dirs,
) -> anyhow::Result<Option<DrainHook>> {
    let key = |k: &str| format!("server[{index}].{k}");
    let command = raw.drain_command.is_some() || raw.undrain_command.is_some();
    let haproxy = raw.haproxy_socket.is_some() || raw.haproxy_backend.is_some() || raw.haproxy_server.is_some();
    if command && haproxy {
        bail!(
            "{}: a server has one drain hook: drain_command/undrain_command or haproxy_socket/haproxy_backend, not both",
            key("drain_command")
        );
    }
    if command {
        let (Some(drain), Some(undrain)) = (raw.drain_command, raw.undrain_command) else {
            let missing = if raw.drain_command.is_none() { "drain_command" } else { "undrain_command" };
            bail!(
                "{}: missing; a drained web bridge must be made ready again, so both halves are needed",
                key(missing)
            );
        };
        return Ok(Some(DrainHook::Command {
            drain: words(drain, &key("drain_command"))?,
            undrain: words(undrain, &key("undrain_command"))?,
        }));
    }
    if !haproxy {
        return Ok(None);
    }
    let Some(socket_text) = raw.haproxy_socket else {
        bail!("{}: missing: the runtime API's socket (a path, or tcp://HOST:PORT)", key("haproxy_socket"));
    };
    let Some(backend) = raw.haproxy_backend else {
        bail!("{}: missing: the backend that holds the web bridges", key("haproxy_backend"));
    };
    check_name(backend, &key("haproxy_backend"))?;
    let server = raw.haproxy_server.unwrap_or(name);
    check_name(server, &key("haproxy_server"))?;
    Ok(Some(DrainHook::Haproxy {
        socket: socket(socket_text, &key("haproxy_socket"), base, dirs)?,
        backend: backend.to_owned(),
        server: server.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(keys: &str) -> anyhow::Result<Option<DrainHook>> {
        let text = format!("[[server]]\nname = \"cms1\"\nmmp = \"h\"\n{keys}");
        let config = super::super::Config::parse(&text, Path::new("/etc/wbguard/c.toml"), &Dirs::default())?;
        Ok(config.servers[0].drain.clone())
    }

    #[test]
    fn both_kinds_are_read_with_their_defaults() {
        assert_eq!(parse("").unwrap(), None);
        let hook = parse("haproxy_socket = \"admin.sock\"\nhaproxy_backend = \"wb\"\n").unwrap().unwrap();
        assert_eq!(
            hook,
            DrainHook::Haproxy {
                socket: HaproxySocket::Unix("/etc/wbguard/admin.sock".into()),
                backend: "wb".into(),
                server: "cms1".into()
            }
        );
        assert!(hook.describe().contains("/etc/wbguard/admin.sock, server wb/cms1"), "{}", hook.describe());
        let hook =
            parse("haproxy_socket = \"tcp://127.0.0.1:9999\"\nhaproxy_backend = \"wb\"\nhaproxy_server = \"web-1\"\n")
                .unwrap()
                .unwrap();
        assert!(matches!(hook, DrainHook::Haproxy { socket: HaproxySocket::Tcp(ref h, 9999), ref server, .. }
            if h == "127.0.0.1" && server == "web-1"));
        let hook =
            parse("drain_command = \"/bin/lb off\"\nundrain_command = [\"/bin/lb\", \"on now\"]\n").unwrap().unwrap();
        assert_eq!(
            hook,
            DrainHook::Command {
                drain: vec!["/bin/lb".into(), "off".into()],
                undrain: vec!["/bin/lb".into(), "on now".into()]
            }
        );
    }

    #[test]
    fn bad_hooks_name_the_key() {
        for (keys, expected) in [
            ("drain_command = \"/bin/x\"\n", "server[0].undrain_command: missing"),
            ("undrain_command = \"/bin/x\"\n", "server[0].drain_command: missing"),
            ("drain_command = \"\"\nundrain_command = \"/bin/x\"\n", "server[0].drain_command: no program"),
            ("drain_command = []\nundrain_command = \"/bin/x\"\n", "server[0].drain_command: no program"),
            ("drain_command = \"/bin/x\"\nundrain_command = \"/bin/y\"\nhaproxy_socket = \"s\"\n", "not both"),
            ("haproxy_socket = \"s\"\n", "server[0].haproxy_backend: missing"),
            ("haproxy_backend = \"wb\"\n", "server[0].haproxy_socket: missing"),
            ("haproxy_socket = \"s\"\nhaproxy_backend = \"w b\"\n", "server[0].haproxy_backend"),
            (
                "haproxy_socket = \"s\"\nhaproxy_backend = \"wb\"\nhaproxy_server = \"a/b\"\n",
                "server[0].haproxy_server",
            ),
            ("haproxy_socket = \"s\"\nhaproxy_backend = \"wb\\nshutdown\"\n", "server[0].haproxy_backend"),
            ("haproxy_socket = \"tcp://127.0.0.1\"\nhaproxy_backend = \"wb\"\n", "server[0].haproxy_socket"),
            ("haproxy_socket = \"http://h:1\"\nhaproxy_backend = \"wb\"\n", "server[0].haproxy_socket"),
            ("haproxy_socket = \"\"\nhaproxy_backend = \"wb\"\n", "server[0].haproxy_socket"),
            ("drain_command = 5\nundrain_command = \"/bin/x\"\n", "server[0].drain_command"),
        ] {
            let error = format!("{:#}", parse(keys).unwrap_err());
            assert!(error.contains(expected), "{expected} not in: {error}\n{keys}");
        }
    }
}
