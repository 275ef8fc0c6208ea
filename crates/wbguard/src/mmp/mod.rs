//! SSH to the MMP: host keys, authentication, exec or shell, timeouts.
//!
//! [`connect`] opens a session to one server: TCP and handshake within the
//! connect timeout (retried with backoff, as nothing has run yet), the host
//! key checked against known_hosts before any credential is sent, then each
//! configured credential tried in turn within the auth timeout. [`Session::run`]
//! runs one command, by `exec` or in an interactive shell, within the command
//! timeout; it is never re-sent: a command that may have run is reported,
//! not repeated.

pub mod known_hosts;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey};
use russh::ChannelMsg;

use crate::config::{Channel, Config, HostKeyPolicy, Server};
use crate::secret::{self, Secret};
use known_hosts::Verdict;

/// Why talking to an MMP failed. Host key problems are their own kinds:
/// they are refusals for safety, not failures.
#[derive(Debug, thiserror::Error)]
pub enum MmpError {
    /// TCP or the SSH handshake failed (nothing was sent).
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// `host:port`.
        address: String,
        /// Why.
        reason: String,
    },
    /// The host key is not in known_hosts.
    #[error("unknown host key for {name} ({fingerprint}); if that is its key, trust it with: wbguard trust {name}")]
    UnknownHostKey {
        /// Server name.
        name: String,
        /// The key it showed.
        fingerprint: String,
    },
    /// The host key differs from the recorded one.
    #[error("HOST KEY CHANGED for {name}: it showed {fingerprint}, known_hosts line(s) {lines} record {recorded}; someone may be intercepting the connection. Refusing. If the server was reinstalled, remove the old entry from {file} and trust it again")]
    ChangedHostKey {
        /// Server name.
        name: String,
        /// The key it showed.
        fingerprint: String,
        /// The recorded fingerprints.
        recorded: String,
        /// Their line numbers.
        lines: String,
        /// The known_hosts file.
        file: String,
    },
    /// The host key is marked revoked.
    #[error("the host key of {name} ({fingerprint}) is marked @revoked in known_hosts; refusing")]
    RevokedHostKey {
        /// Server name.
        name: String,
        /// The key it showed.
        fingerprint: String,
    },
    /// No credential was accepted.
    #[error("authentication as {user} failed on {name} ({tried})")]
    Auth {
        /// Server name.
        name: String,
        /// MMP user.
        user: String,
        /// What was tried (never the secret).
        tried: String,
    },
    /// A credential could not be fetched.
    #[error("{0}")]
    Credentials(String),
    /// A stage took too long.
    #[error("{stage} timed out after {seconds:.0} s on {name}")]
    Timeout {
        /// Server name.
        name: String,
        /// `connect`, `authentication` or `command`.
        stage: &'static str,
        /// The timeout.
        seconds: f64,
    },
    /// The session broke after the command may have been sent.
    #[error("session to {name} failed: {reason}")]
    Session {
        /// Server name.
        name: String,
        /// Why.
        reason: String,
    },
}

impl MmpError {
    /// Whether this is a refusal over host keys (exit code 3).
    pub fn is_host_key_refusal(&self) -> bool {
        matches!(
            self,
            MmpError::UnknownHostKey { .. } | MmpError::ChangedHostKey { .. } | MmpError::RevokedHostKey { .. }
        )
    }
}

/// What a command printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Standard output and error, as text.
    pub text: String,
    /// Exit status, when the MMP sent one (exec mode).
    pub status: Option<u32>,
}

impl CommandOutput {
    /// The first line that says the command failed: `FAILURE...`, an error
    /// line, or a non-zero exit status.
    pub fn failure(&self) -> Option<String> {
        let bad = self.text.lines().map(str::trim).find(|line| {
            let lower = line.to_ascii_lowercase();
            line.starts_with("FAILURE")
                || lower.starts_with("error")
                || lower.contains("unknown command")
                || lower.contains("not found")
        });
        match (bad, self.status) {
            (Some(line), _) => Some(line.to_owned()),
            (None, Some(status)) if status != 0 => Some(format!("exit status {status}")),
            _ => None,
        }
    }
}

/// Checks the server's key against known_hosts before anything is sent.
struct HostKeyCheck {
    name: String,
    host: String,
    port: u16,
    known_hosts: PathBuf,
    policy: HostKeyPolicy,
    /// Why the key was refused, for the error the caller sees.
    refusal: Arc<Mutex<Option<MmpError>>>,
    /// The key seen (for `wbguard trust`).
    seen: Arc<Mutex<Option<PublicKey>>>,
    /// Only look: record the key and refuse (used by `trust`).
    probe_only: bool,
}

impl HostKeyCheck {
    fn new(
        server: &Server,
        config: &Config,
        refusal: Arc<Mutex<Option<MmpError>>>,
        seen: Arc<Mutex<Option<PublicKey>>>,
        probe_only: bool,
    ) -> HostKeyCheck {
        HostKeyCheck {
            name: server.name.clone(),
            host: server.host.clone(),
            port: server.port,
            known_hosts: config.known_hosts.clone(),
            policy: config.host_key_policy,
            refusal,
            seen,
            probe_only,
        }
    }
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *self.refusal.lock().expect("not poisoned") = Some(MmpError::Connect {
                address: self.host.clone(),
                reason: "host certificates are not supported".into(),
            });
            return Ok(false);
        };
        *self.seen.lock().expect("not poisoned") = Some(key.clone());
        if self.probe_only {
            return Ok(false);
        }
        let fingerprint = known_hosts::fingerprint(key);
        let verdict = known_hosts::check(&self.known_hosts, &self.host, self.port, key);
        let refusal = match verdict {
            Ok(Verdict::Known) => return Ok(true),
            Ok(Verdict::Unknown) if self.policy == HostKeyPolicy::AcceptNew => {
                return match known_hosts::record(&self.known_hosts, &self.host, self.port, key) {
                    Ok(()) => Ok(true),
                    Err(e) => {
                        let reason = format!("cannot record the host key in {}: {e}", self.known_hosts.display());
                        *self.refusal.lock().expect("not poisoned") =
                            Some(MmpError::Connect { address: self.host.clone(), reason });
                        Ok(false)
                    }
                };
            }
            Ok(Verdict::Unknown) => MmpError::UnknownHostKey { name: self.name.clone(), fingerprint },
            Ok(Verdict::Changed { recorded }) => MmpError::ChangedHostKey {
                name: self.name.clone(),
                fingerprint,
                recorded: recorded.iter().map(|(_, f)| f.as_str()).collect::<Vec<_>>().join(", "),
                lines: recorded.iter().map(|(l, _)| l.to_string()).collect::<Vec<_>>().join(", "),
                file: self.known_hosts.display().to_string(),
            },
            Ok(Verdict::Revoked) => MmpError::RevokedHostKey { name: self.name.clone(), fingerprint },
            Err(e) => MmpError::Connect {
                address: self.host.clone(),
                reason: format!("cannot read {}: {e}", self.known_hosts.display()),
            },
        };
        *self.refusal.lock().expect("not poisoned") = Some(refusal);
        Ok(false)
    }
}

/// An authenticated session to one MMP.
pub struct Session {
    handle: client::Handle<HostKeyCheck>,
    name: String,
    channel: Channel,
    command_timeout: Duration,
}

/// The SSH client settings for a server: modern algorithms, or the legacy
/// ones too when the server opts in.
fn client_config(server: &Server) -> Arc<client::Config> {
    let mut preferred = russh::Preferred::default();
    if server.legacy_algorithms {
        use russh::keys::Algorithm;
        let mut kex = preferred.kex.to_vec();
        kex.push(russh::kex::DH_G14_SHA1);
        let mut key = preferred.key.to_vec();
        key.push(Algorithm::Rsa { hash: None });
        let mut cipher = preferred.cipher.to_vec();
        cipher.push(russh::cipher::AES_128_CBC);
        let mut mac = preferred.mac.to_vec();
        mac.push(russh::mac::HMAC_SHA1);
        preferred = russh::Preferred {
            kex: Cow::Owned(kex),
            key: Cow::Owned(key),
            cipher: Cow::Owned(cipher),
            mac: Cow::Owned(mac),
            ..preferred
        };
    }
    Arc::new(client::Config {
        preferred,
        inactivity_timeout: Some(Duration::from_secs(300)),
        // Small requests, small answers: with Nagle's algorithm each one
        // would wait for the peer's delayed ACK (about 40 ms).
        nodelay: true,
        ..Default::default()
    })
}

async fn handshake(server: &Server, config: &Config) -> Result<client::Handle<HostKeyCheck>, MmpError> {
    let address = format!("{}:{}", server.host, server.port);
    let refusal = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new(None));
    let mut delay = Duration::from_millis(250);
    let attempts = 3;
    for attempt in 1..=attempts {
        let check = HostKeyCheck::new(server, config, refusal.clone(), seen.clone(), false);
        let outcome = tokio::time::timeout(
            config.timeouts.connect,
            client::connect(client_config(server), (server.host.as_str(), server.port), check),
        )
        .await;
        if let Some(refused) = refusal.lock().expect("not poisoned").take() {
            return Err(refused);
        }
        match outcome {
            Ok(Ok(handle)) => return Ok(handle),
            // Nothing was sent yet: trying again is safe.
            Ok(Err(_)) | Err(_) if attempt < attempts => {}
            Ok(Err(e)) => return Err(MmpError::Connect { address, reason: describe_ssh_error(&e) }),
            Err(_) => {
                return Err(MmpError::Timeout {
                    name: server.name.clone(),
                    stage: "connect",
                    seconds: config.timeouts.connect.as_secs_f64(),
                })
            }
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    unreachable!("the last attempt returns")
}

fn describe_ssh_error(error: &russh::Error) -> String {
    match error {
        russh::Error::IO(e) => match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            _ => e.to_string(),
        },
        russh::Error::NoCommonAlgo { kind, ours, theirs } => format!(
            "no common {kind:?} algorithm (we offer {}; it offers {}): if it is an old appliance, set legacy_algorithms = true for it",
            ours.join(","),
            theirs.join(",")
        ),
        other => other.to_string(),
    }
}

/// The host key a server shows, without logging in (for `wbguard trust`):
/// the handshake stops as soon as the key is seen.
pub async fn probe_host_key(server: &Server, config: &Config) -> Result<PublicKey, MmpError> {
    let seen = Arc::new(Mutex::new(None));
    let check = HostKeyCheck::new(server, config, Arc::new(Mutex::new(None)), seen.clone(), true);
    let address = format!("{}:{}", server.host, server.port);
    let outcome =
        tokio::time::timeout(config.timeouts.connect, client::connect(client_config(server), address.as_str(), check))
            .await;
    let key = seen.lock().expect("not poisoned").clone();
    key.ok_or_else(|| {
        let reason = match outcome {
            Ok(Err(e)) => describe_ssh_error(&e),
            Err(_) => "timed out".into(),
            Ok(Ok(_)) => "no host key seen".into(),
        };
        MmpError::Connect { address, reason }
    })
}

/// Connects and authenticates.
pub async fn connect(server: &Server, config: &Config) -> Result<Session, MmpError> {
    let mut handle = handshake(server, config).await?;
    let mut tried = Vec::new();
    let authenticated = tokio::time::timeout(config.timeouts.auth, async {
        for source in &server.auth {
            tried.push(secret::describe(source));
            let secret = secret::fetch(source).map_err(|e| MmpError::Credentials(format!("{}: {e:#}", server.name)))?;
            let ok = match secret {
                Secret::Password(password) => {
                    handle.authenticate_password(server.user.clone(), password).await.map(|r| r.success())
                }
                Secret::Key(key) => {
                    // Only RSA keys need to agree on a signature hash.
                    let hash = if key.algorithm().is_rsa() {
                        handle.best_supported_rsa_hash().await.ok().flatten().flatten()
                    } else {
                        None
                    };
                    let key = PrivateKeyWithHashAlg::new(key, hash);
                    handle.authenticate_publickey(server.user.clone(), key).await.map(|r| r.success())
                }
                Secret::Agent => authenticate_with_agent(&mut handle, &server.user).await,
            };
            match ok {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => return Err(MmpError::Session { name: server.name.clone(), reason: e.to_string() }),
            }
        }
        Ok(false)
    })
    .await
    .map_err(|_| MmpError::Timeout {
        name: server.name.clone(),
        stage: "authentication",
        seconds: config.timeouts.auth.as_secs_f64(),
    })??;
    if !authenticated {
        return Err(MmpError::Auth {
            name: server.name.clone(),
            user: server.user.clone(),
            tried: tried.join(", then "),
        });
    }
    Ok(Session { handle, name: server.name.clone(), channel: server.channel, command_timeout: config.timeouts.command })
}

/// The ssh-agent at `SSH_AUTH_SOCK`, a unix socket.
#[cfg(unix)]
async fn connect_agent() -> Option<russh::keys::agent::client::AgentClient<tokio::net::UnixStream>> {
    russh::keys::agent::client::AgentClient::connect_env().await.ok()
}

/// On Windows the agent is a named pipe: Windows' own OpenSSH agent
/// service, or the one `SSH_AUTH_SOCK` names ([`crate::secret::agent_pipe`]).
#[cfg(windows)]
async fn connect_agent(
) -> Option<russh::keys::agent::client::AgentClient<tokio::net::windows::named_pipe::NamedPipeClient>> {
    russh::keys::agent::client::AgentClient::connect_named_pipe(crate::secret::agent_pipe()).await.ok()
}

async fn authenticate_with_agent(handle: &mut client::Handle<HostKeyCheck>, user: &str) -> Result<bool, russh::Error> {
    let Some(mut agent) = connect_agent().await else { return Ok(false) };
    let identities = agent.request_identities().await.unwrap_or_default();
    for identity in identities {
        let key = identity.public_key().into_owned();
        let hash = if key.algorithm().is_rsa() {
            handle.best_supported_rsa_hash().await.ok().flatten().flatten()
        } else {
            None
        };
        if let Ok(result) = handle.authenticate_publickey_with(user, key, hash, &mut agent).await {
            if result.success() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

impl Session {
    /// Runs one command, by exec or in a shell as configured.
    pub async fn run(&mut self, command: &str) -> Result<CommandOutput, MmpError> {
        let timeout = self.command_timeout;
        let name = self.name.clone();
        let work = async {
            match self.channel {
                Channel::Exec => self.exec(command).await,
                Channel::Shell => self.shell(command).await,
            }
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| MmpError::Timeout {
            name,
            stage: "command",
            seconds: timeout.as_secs_f64(),
        })?
    }

    fn broken(&self, e: impl std::fmt::Display) -> MmpError {
        MmpError::Session { name: self.name.clone(), reason: e.to_string() }
    }

    async fn exec(&mut self, command: &str) -> Result<CommandOutput, MmpError> {
        let mut channel = self.handle.channel_open_session().await.map_err(|e| self.broken(e))?;
        channel.exec(true, command).await.map_err(|e| self.broken(e))?;
        let mut text = Vec::new();
        let mut status = None;
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Data { data } => text.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => text.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        Ok(CommandOutput { text: String::from_utf8_lossy(&text).into_owned(), status })
    }

    /// Shell mode: wait for the prompt, send the command, read to the next
    /// prompt, then `exit`.
    async fn shell(&mut self, command: &str) -> Result<CommandOutput, MmpError> {
        let mut channel = self.handle.channel_open_session().await.map_err(|e| self.broken(e))?;
        channel.request_pty(true, "vt100", 200, 50, 0, 0, &[]).await.map_err(|e| self.broken(e))?;
        channel.request_shell(true).await.map_err(|e| self.broken(e))?;
        let mut screen = Vec::new();
        let prompt = read_to_prompt(&mut channel, &mut screen).await.ok_or_else(|| self.broken("no prompt"))?;
        channel.data_bytes(format!("{command}\n").into_bytes()).await.map_err(|e| self.broken(e))?;
        screen.clear();
        read_to_prompt(&mut channel, &mut screen)
            .await
            .ok_or_else(|| self.broken("the session ended before the prompt came back"))?;
        let _ = channel.data_bytes(b"exit\n".to_vec()).await;
        let text = String::from_utf8_lossy(&screen).replace("\r\n", "\n");
        // Drop the echoed command line and the closing prompt.
        let body = text.strip_suffix(prompt.as_str()).unwrap_or(&text);
        let body = body.split_once('\n').map_or("", |(_, rest)| rest);
        Ok(CommandOutput { text: body.to_owned(), status: None })
    }

    /// Closes the session politely.
    pub async fn close(self) {
        let _ = self.handle.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    }
}

/// Reads until the text ends with a prompt (`NAME> `); returns the prompt.
async fn read_to_prompt(channel: &mut russh::Channel<client::Msg>, screen: &mut Vec<u8>) -> Option<String> {
    while let Some(message) = channel.wait().await {
        match message {
            ChannelMsg::Data { data } => screen.extend_from_slice(&data),
            ChannelMsg::Eof | ChannelMsg::Close => return None,
            _ => continue,
        }
        let text = String::from_utf8_lossy(screen);
        if let Some(start) = text.strip_suffix("> ").map(|t| t.rfind(['\n', '\r']).map_or(0, |i| i + 1)) {
            let prompt = &text[start..];
            if !prompt[..prompt.len() - 2].contains(' ') && prompt.len() > 2 {
                return Some(prompt.to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_output() {
        let out = |text: &str, status| CommandOutput { text: text.into(), status };
        assert_eq!(out("", Some(0)).failure(), None);
        assert_eq!(out("", None).failure(), None);
        assert_eq!(out("FAILURE: no\n", Some(0)).failure().as_deref(), Some("FAILURE: no"));
        assert_eq!(out("Error: busy\n", None).failure().as_deref(), Some("Error: busy"));
        assert_eq!(out("", Some(1)).failure().as_deref(), Some("exit status 1"));
    }
}
