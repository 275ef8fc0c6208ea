//! Where a secret lives, and fetching it where it is used.
//!
//! A leaf of the binary: the configuration holds only *where* a secret is
//! ([`AuthSource`] for MMP credentials, [`Location`] for a webhook URL or
//! the page's token); the command that needs one resolves it at that
//! moment, so `wbguard restart` never fails over the guard's webhook
//! variable. Secrets live only in memory, in types whose `Debug` shows
//! nothing; they never reach the configuration, the command line or any
//! log. A URL is shown only through [`redact_url`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use russh::keys::PrivateKey;
use serde::Serialize;

/// Where a server's MMP credentials come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum AuthSource {
    /// The password is in this environment variable.
    PasswordEnv {
        /// Variable name.
        variable: String,
    },
    /// The password is in this file (mode 600 or stricter).
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

/// Where a secret string (a webhook URL, a token) lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Written in the configuration itself (discouraged, but allowed).
    Inline(String),
    /// In this environment variable.
    Env(String),
    /// In this file, mode 600 or stricter.
    File(PathBuf),
}

impl Location {
    /// Where it is, in words (never the secret).
    pub fn describe(&self) -> String {
        match self {
            Location::Inline(_) => "the configuration".into(),
            Location::Env(variable) => format!("${variable}"),
            Location::File(path) => path.display().to_string(),
        }
    }

    /// The secret, fetched now.
    pub fn resolve(&self) -> anyhow::Result<String> {
        match self {
            Location::Inline(text) => Ok(text.clone()),
            Location::Env(variable) => match std::env::var(variable) {
                Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
                Ok(_) => bail!("the variable {variable} is empty"),
                Err(_) => bail!("the variable {variable} is not set"),
            },
            Location::File(path) => {
                check_private(path)?;
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                let text = text.trim();
                if text.is_empty() {
                    bail!("{} is empty", path.display());
                }
                Ok(text.to_owned())
            }
        }
    }

    /// What can be checked without reading the secret: a file's mode, a
    /// variable's presence. `None` when it would resolve.
    pub fn problem(&self) -> Option<String> {
        match self {
            Location::Inline(_) => None,
            Location::Env(variable) => match std::env::var(variable) {
                Ok(text) if !text.trim().is_empty() => None,
                Ok(_) => Some(format!("the variable {variable} is empty")),
                Err(_) => Some(format!("the variable {variable} is not set")),
            },
            Location::File(path) => check_private(path).err().map(|e| format!("{e:#}")),
        }
    }
}

/// A secret token: compared in constant time, never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token read from where the configuration says it is.
    pub fn new(token: String) -> Token {
        Token(token)
    }

    /// Whether `offered` is this token (time independent of where they differ).
    pub fn matches(&self, offered: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), offered.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// A URL as it may be shown: scheme, host and port only. User, password,
/// path and query may all carry a token (Webex and Slack put theirs in
/// the path), so none of them is shown.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "(not a URL)".into() };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let hidden = if authority.contains('@') { "***@" } else { "" };
    format!("{scheme}://{hidden}{host}/...")
}

/// A credential ready to use.
pub enum Secret {
    /// A password.
    Password(String),
    /// A decrypted private key.
    Key(Arc<PrivateKey>),
    /// The ssh-agent at `SSH_AUTH_SOCK`.
    Agent,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Password(_) => "Secret::Password(..)",
            Secret::Key(_) => "Secret::Key(..)",
            Secret::Agent => "Secret::Agent",
        })
    }
}

/// Where a source is, in words (for `config check` and error messages).
pub fn describe(source: &AuthSource) -> String {
    match source {
        AuthSource::PasswordEnv { variable } => format!("password from ${variable}"),
        AuthSource::PasswordFile { path } => format!("password from file {}", path.display()),
        AuthSource::PasswordPrompt => "password asked on the terminal".into(),
        AuthSource::KeyFile { path, passphrase_env: Some(variable) } => {
            format!("key {} (passphrase from ${variable})", path.display())
        }
        AuthSource::KeyFile { path, passphrase_env: None } => format!("key {}", path.display()),
        AuthSource::Agent => "ssh-agent".into(),
    }
}

/// Refuses a secret file that group or others may read.
pub fn check_private(path: &Path) -> anyhow::Result<()> {
    let mode = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by group or others (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

/// Fetches the secret of one source.
pub fn fetch(source: &AuthSource) -> anyhow::Result<Secret> {
    match source {
        AuthSource::PasswordEnv { variable } => match std::env::var(variable) {
            Ok(password) if !password.is_empty() => Ok(Secret::Password(password)),
            _ => bail!("${variable} is not set (export the MMP password there, or configure another source)"),
        },
        AuthSource::PasswordFile { path } => {
            check_private(path).context("password file")?;
            let text = std::fs::read_to_string(path).with_context(|| format!("password file {}", path.display()))?;
            let password = text.trim_end_matches(['\n', '\r']).to_owned();
            if password.is_empty() {
                bail!("password file {} is empty", path.display());
            }
            Ok(Secret::Password(password))
        }
        AuthSource::PasswordPrompt => Ok(Secret::Password(prompt("MMP password: ")?)),
        AuthSource::KeyFile { path, passphrase_env } => {
            let passphrase = match passphrase_env {
                Some(variable) => Some(std::env::var(variable).with_context(|| format!("${variable} is not set"))?),
                None => None,
            };
            let key = russh::keys::load_secret_key(path, passphrase.as_deref()).map_err(|e| {
                anyhow::anyhow!(
                    "cannot load key {}: {e}{}",
                    path.display(),
                    if passphrase.is_none() { " (if it has a passphrase, set key_passphrase_env)" } else { "" }
                )
            })?;
            Ok(Secret::Key(Arc::new(key)))
        }
        AuthSource::Agent => {
            if std::env::var_os("SSH_AUTH_SOCK").is_none() {
                bail!("no ssh-agent: SSH_AUTH_SOCK is not set");
            }
            Ok(Secret::Agent)
        }
    }
}

/// Reads a line from the terminal without echo (`stty -echo`).
fn prompt(question: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, Write};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to ask for the password on")?;
    let stty =
        |arg: &str| std::process::Command::new("stty").arg(arg).stdin(tty.try_clone().expect("tty clones")).status();
    let mut out = tty.try_clone()?;
    write!(out, "{question}")?;
    out.flush()?;
    let _ = stty("-echo");
    let mut line = String::new();
    let read = std::io::BufReader::new(tty.try_clone()?).read_line(&mut line);
    let _ = stty("echo");
    writeln!(out)?;
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_readable_password_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = format!("{:#}", fetch(&AuthSource::PasswordFile { path: path.clone() }).unwrap_err());
        assert!(error.contains("chmod 600") && !error.contains("s3cret"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        match fetch(&AuthSource::PasswordFile { path }).unwrap() {
            Secret::Password(p) => assert_eq!(p, "s3cret"),
            other => panic!("{other:?}"),
        }
        assert_eq!(format!("{:?}", Secret::Password("s3cret".into())), "Secret::Password(..)");
    }

    #[test]
    fn a_missing_variable_is_named() {
        let error = fetch(&AuthSource::PasswordEnv { variable: "WBGUARD_TEST_SURELY_UNSET".into() }).unwrap_err();
        assert!(error.to_string().contains("$WBGUARD_TEST_SURELY_UNSET"));
    }
}
