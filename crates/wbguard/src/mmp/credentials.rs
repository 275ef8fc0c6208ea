//! Fetching a server's credentials from where the configuration says they
//! are: an environment variable, a file only its owner can read, the
//! terminal, a private key (passphrase from a variable), or the ssh-agent.
//!
//! Secrets live only in memory, in [`Secret`], whose `Debug` shows nothing;
//! they never reach the configuration, the command line or any log.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::{bail, Context};
use russh::keys::PrivateKey;

use crate::config::AuthSource;

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
pub fn check_private(path: &std::path::Path) -> anyhow::Result<()> {
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
