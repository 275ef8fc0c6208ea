//! Where a secret lives, and fetching it where it is used.
//!
//! A leaf of the binary: the configuration holds only *where* a secret is
//! ([`AuthSource`] for MMP credentials, [`Location`] for a webhook URL or
//! the page's token); the command that needs one resolves it at that
//! moment, so `wbguard restart` never fails over the guard's webhook
//! variable. Secrets live only in memory, in types whose `Debug` shows
//! nothing; they never reach the configuration, the command line or any
//! log. A URL is shown only through [`redact_url`] (a webhook's, whose
//! path is a token) or [`redact_userinfo`] (a web page's).
//!
//! [`AuthSource::problem`] and [`Location::problem`] check a source
//! without reading its secret, for `wbguard config check`, a dry run and a
//! guard about to act: a [`Problem::Unusable`] source fails whenever it is
//! used, a [`Problem::Absent`] one may be there by then.
//!
//! A secret file must be readable by its owner alone. On Unix that is its
//! mode (600 or stricter). On Windows, which has no modes, it is the
//! file's ACL (the [`os`] module, the one place that differs): every
//! account granted any access must be the file's owner, the user running
//! wbguard, SYSTEM or Administrators (Windows' root, as OpenSSH for
//! Windows allows for a private key); and the file must not be a link.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use russh::keys::PrivateKey;
use serde::Serialize;

use crate::files::{read_bounded, SECRET_FILE};

/// Where a server's MMP credentials come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum AuthSource {
    /// The password is in this environment variable.
    PasswordEnv {
        /// Variable name.
        variable: String,
    },
    /// The password is in this file (readable only by its owner: mode 600
    /// or stricter; on Windows, by its ACL).
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
    /// The ssh-agent (on Windows, OpenSSH's agent service: a named pipe).
    Agent,
}

/// Where a secret string (a webhook URL, a token) lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Written in the configuration itself (discouraged, but allowed).
    Inline(String),
    /// In this environment variable.
    Env(String),
    /// In this file, readable only by its owner (as a password file).
    File(PathBuf),
}

/// What a check finds about where a secret lives, without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// It is there but cannot be used, whenever it is used: a file
    /// readable by group or others, or one that is not a file. An error.
    Unusable(String),
    /// It is not there now (a variable not set, a file not made yet), and
    /// may well be where it is used (cron, a service manager, a deploy
    /// step): a warning.
    Absent(String),
}

impl Problem {
    /// Whether it fails whenever it is used (an error, not a warning).
    pub fn is_error(&self) -> bool {
        matches!(self, Problem::Unusable(_))
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Unusable(why) | Problem::Absent(why) => f.write_str(why),
        }
    }
}

/// A variable that is not set or empty; `what` it holds, in words, if
/// the message needs it.
fn variable_problem(variable: &str, what: Option<&str>) -> Option<Problem> {
    let holding = what.map(|what| format!(" ({what})")).unwrap_or_default();
    match std::env::var_os(variable) {
        Some(value) if !value.to_string_lossy().trim().is_empty() => None,
        Some(_) => Some(Problem::Absent(format!("the variable {variable}{holding} is empty"))),
        None => Some(Problem::Absent(format!("the variable {variable}{holding} is not set"))),
    }
}

/// A secret file that is missing, not a regular file, or readable by
/// group or others (on Windows: by another account, per its ACL).
pub fn file_problem(path: &Path) -> Option<Problem> {
    match std::fs::metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Some(Problem::Absent(format!("{} does not exist", path.display())))
        }
        Err(error) => Some(Problem::Unusable(format!("{}: {error}", path.display()))),
        Ok(meta) if !meta.is_file() => Some(Problem::Unusable(format!("{} is not a regular file", path.display()))),
        Ok(_) => check_private(path).err().map(|e| Problem::Unusable(format!("{e:#}"))),
    }
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
                let text =
                    read_bounded(path, SECRET_FILE).with_context(|| format!("cannot read {}", path.display()))?;
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
    pub fn problem(&self) -> Option<Problem> {
        match self {
            Location::Inline(_) => None,
            Location::Env(variable) => variable_problem(variable, None),
            Location::File(path) => file_problem(path),
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

/// A URL as it may be shown when its path is not a secret (a web bridge's
/// page): scheme, host, port and path; a user and password are replaced
/// by `***@` and a query by `?...`, as either may carry credentials.
pub fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "(not a URL)".into() };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (hidden, host) = match authority.rsplit_once('@') {
        Some((_, host)) => ("***@", host),
        None => ("", authority),
    };
    let tail = tail.split('#').next().unwrap_or("");
    let shown = match tail.split_once('?') {
        Some((path, _)) => format!("{path}?..."),
        None => tail.to_owned(),
    };
    format!("{scheme}://{hidden}{host}{shown}")
}

/// A credential ready to use.
pub enum Secret {
    /// A password.
    Password(String),
    /// A decrypted private key.
    Key(Arc<PrivateKey>),
    /// The ssh-agent at `SSH_AUTH_SOCK` (on Windows, [`agent_pipe`]).
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

impl AuthSource {
    /// What can be checked without reading the secret (nor asking for it):
    /// the files' presence and modes, the variables' presence. `None` when
    /// nothing is wrong that a check can see.
    pub fn problem(&self) -> Option<Problem> {
        match self {
            AuthSource::PasswordEnv { variable } => variable_problem(variable, Some("the MMP password")),
            AuthSource::PasswordFile { path } => file_problem(path),
            AuthSource::PasswordPrompt => None,
            AuthSource::KeyFile { path, passphrase_env } => file_problem(path).or_else(|| {
                passphrase_env.as_deref().and_then(|variable| variable_problem(variable, Some("the key's passphrase")))
            }),
            AuthSource::Agent => os::agent_problem(),
        }
    }

    /// Whether it can work without anybody at a terminal (the guard, cron).
    pub fn unattended(&self) -> bool {
        !matches!(self, AuthSource::PasswordPrompt)
    }
}

/// Refuses a secret file that group or others may read (on Windows:
/// that its ACL lets another account read, or a link).
pub fn check_private(path: &Path) -> anyhow::Result<()> {
    os::check_private(path)
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
            let text = read_bounded(path, SECRET_FILE).with_context(|| format!("password file {}", path.display()))?;
            let password = text.trim_end_matches(['\n', '\r']).to_owned();
            if password.is_empty() {
                bail!("password file {} is empty", path.display());
            }
            Ok(Secret::Password(password))
        }
        AuthSource::PasswordPrompt => Ok(Secret::Password(os::prompt("MMP password: ")?)),
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
            os::agent_reachable()?;
            Ok(Secret::Agent)
        }
    }
}

/// The named pipe of the ssh-agent on Windows: `SSH_AUTH_SOCK` if set,
/// else Windows' own OpenSSH agent service.
#[cfg(windows)]
pub fn agent_pipe() -> std::ffi::OsString {
    std::env::var_os("SSH_AUTH_SOCK").filter(|v| !v.is_empty()).unwrap_or_else(|| r"\\.\pipe\openssh-ssh-agent".into())
}

/// Unix: file modes, the agent's socket, the terminal.
#[cfg(unix)]
mod os {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use anyhow::{bail, Context};

    use super::{variable_problem, Problem};

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

    /// The agent is reached through `SSH_AUTH_SOCK`.
    pub fn agent_problem() -> Option<Problem> {
        variable_problem("SSH_AUTH_SOCK", Some("the ssh-agent's socket"))
    }

    /// Whether there is an agent to try: `SSH_AUTH_SOCK` says where.
    pub fn agent_reachable() -> anyhow::Result<()> {
        if std::env::var_os("SSH_AUTH_SOCK").is_none() {
            bail!("no ssh-agent: SSH_AUTH_SOCK is not set");
        }
        Ok(())
    }

    /// Reads a line from the terminal without echo (`stty -echo`).
    pub fn prompt(question: &str) -> anyhow::Result<String> {
        use std::io::{BufRead, Write};
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .context("no terminal to ask for the password on")?;
        let stty = |arg: &str| {
            std::process::Command::new("stty").arg(arg).stdin(tty.try_clone().expect("tty clones")).status()
        };
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
}

/// Windows: the file's ACL (read by PowerShell's `Get-Acl`, as the crate
/// forbids unsafe code and so calls no Win32 function itself), the
/// agent's named pipe, the console.
#[cfg(windows)]
mod os {
    use std::path::Path;

    use anyhow::{bail, Context};

    use super::{acl, Problem};

    /// Prints the owner, the user running it, and each access rule of the
    /// file named by `WBGUARD_SECRET_FILE` (never on the command line, so
    /// no quoting can go wrong), every account as a SID; [`acl::parse`]
    /// reads it.
    const GET_ACL: &str = concat!(
        "$ErrorActionPreference = 'Stop'; ",
        // UTF-8 without a byte order mark; a process without a console
        // cannot set it, and then gets its code page (names only).
        "try { [Console]::OutputEncoding = New-Object Text.UTF8Encoding $false } catch {}; ",
        "$sid = [Security.Principal.SecurityIdentifier]; ",
        "$acl = Get-Acl -LiteralPath $env:WBGUARD_SECRET_FILE; ",
        "'owner ' + $acl.GetOwner($sid).Value; ",
        "'user ' + [Security.Principal.WindowsIdentity]::GetCurrent().User.Value; ",
        "foreach ($rule in $acl.GetAccessRules($true, $true, $sid)) { ",
        "$name = ''; ",
        "try { $name = $rule.IdentityReference.Translate([Security.Principal.NTAccount]).Value } catch {}; ",
        "'rule ' + $rule.AccessControlType + ' ' + [int]$rule.PropagationFlags + ' ' + ",
        "$rule.IdentityReference.Value + ' ' + $name }",
    );

    /// Refuses a secret file that is a link, or whose ACL lets an account
    /// other than its owner, the user, SYSTEM or Administrators read it.
    pub fn check_private(path: &Path) -> anyhow::Result<()> {
        let meta = std::fs::symlink_metadata(path).with_context(|| format!("{}", path.display()))?;
        if meta.file_type().is_symlink() {
            bail!("{} is a symbolic link or junction; name the file itself", path.display());
        }
        let root = std::env::var_os("SystemRoot").unwrap_or_else(|| r"C:\Windows".into());
        let powershell = Path::new(&root).join(r"System32\WindowsPowerShell\v1.0\powershell.exe");
        let output = std::process::Command::new(&powershell)
            .args(["-NoProfile", "-NonInteractive", "-Command", GET_ACL])
            .env("WBGUARD_SECRET_FILE", path)
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("cannot check who may read {}: {}", path.display(), powershell.display()))?;
        if !output.status.success() {
            bail!(
                "cannot check who may read {} (Get-Acl: {})",
                path.display(),
                crate::text::printable(String::from_utf8_lossy(&output.stderr).trim())
            );
        }
        let acl = acl::parse(&String::from_utf8_lossy(&output.stdout))
            .with_context(|| format!("cannot check who may read {}", path.display()))?;
        let others = acl.others();
        if !others.is_empty() {
            bail!(
                "{} may be read by {} besides its owner; run: icacls \"{}\" /inheritance:r /grant:r \"%USERNAME%:F\"",
                path.display(),
                crate::text::printable(&others.join(", ")),
                path.display()
            );
        }
        Ok(())
    }

    /// The agent is a named pipe, there by default: nothing to check
    /// without connecting to it.
    pub fn agent_problem() -> Option<Problem> {
        None
    }

    /// The pipe is tried when the agent is used (see `agent_problem`).
    pub fn agent_reachable() -> anyhow::Result<()> {
        Ok(())
    }

    /// Reads a line from the console without echo.
    pub fn prompt(question: &str) -> anyhow::Result<String> {
        rpassword::prompt_password(question).context("no console to ask for the password on")
    }
}

/// Who a Windows file's ACL lets in, as `Get-Acl` prints it (see
/// `os::GET_ACL`). Plain text handling, so it is tested on every system.
#[cfg(any(windows, test))]
mod acl {
    use anyhow::bail;

    /// SYSTEM (`S-1-5-18`) and Administrators (`S-1-5-32-544`): Windows'
    /// root, who can take any file anyway.
    const ALWAYS: [&str; 2] = ["S-1-5-18", "S-1-5-32-544"];
    /// `PropagationFlags.InheritOnly`: a rule for what the folder's
    /// children inherit, not for the file itself.
    const INHERIT_ONLY: u32 = 2;

    /// The owner, the user running wbguard, and the accounts granted access.
    #[derive(Debug, Default)]
    pub struct Acl {
        owner: String,
        user: String,
        /// SID and name (empty if it cannot be named) of each account an
        /// `Allow` rule that applies to the file grants anything to.
        allowed: Vec<(String, String)>,
    }

    /// Reads `owner SID`, `user SID` and `rule TYPE FLAGS SID NAME` lines.
    pub fn parse(text: &str) -> anyhow::Result<Acl> {
        let mut acl = Acl::default();
        let text = text.trim_start_matches('\u{feff}');
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut words = line.splitn(5, ' ');
            match (words.next(), words.next()) {
                (Some("owner"), Some(sid)) => acl.owner = sid.to_owned(),
                (Some("user"), Some(sid)) => acl.user = sid.to_owned(),
                (Some("rule"), Some(kind)) => {
                    let (Some(flags), Some(sid)) = (words.next(), words.next()) else { bail!("unexpected: {line}") };
                    let Ok(flags) = flags.parse::<u32>() else { bail!("unexpected: {line}") };
                    if kind == "Allow" && flags & INHERIT_ONLY == 0 {
                        acl.allowed.push((sid.to_owned(), words.next().unwrap_or("").trim().to_owned()));
                    }
                }
                _ => bail!("unexpected: {line}"),
            }
        }
        if !acl.owner.starts_with("S-") || !acl.user.starts_with("S-") {
            bail!("Get-Acl named no owner or user");
        }
        Ok(acl)
    }

    impl Acl {
        /// The accounts besides the owner, the user, SYSTEM and
        /// Administrators that may read the file: by name, else by SID.
        pub fn others(&self) -> Vec<String> {
            let mut others: Vec<String> = self
                .allowed
                .iter()
                .filter(|(sid, _)| *sid != self.owner && *sid != self.user && !ALWAYS.contains(&sid.as_str()))
                .map(|(sid, name)| if name.is_empty() { sid.clone() } else { name.clone() })
                .collect();
            others.dedup();
            others
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

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
    fn problems_are_seen_without_reading_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let file = AuthSource::PasswordFile { path: path.clone() };
        assert!(matches!(file.problem(), Some(Problem::Absent(_))));
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let problem = file.problem().unwrap();
        assert!(problem.is_error() && problem.to_string().contains("chmod 600"), "{problem}");
        assert!(!problem.to_string().contains("s3cret"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(file.problem(), None);
        assert_eq!(Location::File(path).problem(), None);
        let folder = AuthSource::KeyFile { path: dir.path().to_path_buf(), passphrase_env: None };
        assert!(folder.problem().unwrap().is_error());
        let variable = AuthSource::PasswordEnv { variable: "WBGUARD_TEST_SURELY_UNSET".into() };
        let problem = variable.problem().unwrap();
        assert!(!problem.is_error() && problem.to_string().contains("WBGUARD_TEST_SURELY_UNSET"), "{problem}");
        assert!(Location::Env("WBGUARD_TEST_SURELY_UNSET".into()).problem().is_some_and(|p| !p.is_error()));
        assert_eq!(Location::Inline("https://h/".into()).problem(), None);
        assert!(!AuthSource::PasswordPrompt.unattended() && variable.unattended());
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(redact_userinfo("https://join.example.com/"), "https://join.example.com/");
        assert_eq!(
            redact_userinfo("https://admin:s3cret@join.example.com:8443/x?token=t0k#f"),
            "https://***@join.example.com:8443/x?..."
        );
        assert_eq!(redact_userinfo("http://a@b@h"), "http://***@h");
        assert_eq!(redact_userinfo("join.example.com"), "(not a URL)");
        assert_eq!(redact_url("https://u:p@hooks.example.com/T0/B0/tok"), "https://***@hooks.example.com/...");
    }

    #[test]
    fn a_missing_variable_is_named() {
        let error = fetch(&AuthSource::PasswordEnv { variable: "WBGUARD_TEST_SURELY_UNSET".into() }).unwrap_err();
        assert!(error.to_string().contains("$WBGUARD_TEST_SURELY_UNSET"));
    }

    #[test]
    fn a_windows_acl_lets_in_only_the_owner_the_user_system_and_administrators() {
        let me = "S-1-5-21-1-2-3-1001";
        let private = format!(
            "owner {me}\nuser {me}\nrule Allow 0 S-1-5-18 NT AUTHORITY\\SYSTEM\n\
             rule Allow 0 S-1-5-32-544 BUILTIN\\Administrators\nrule Allow 0 {me} HOST\\me\n\
             rule Deny 0 S-1-1-0 Everyone\nrule Allow 2 S-1-5-32-545 BUILTIN\\Users\n"
        );
        assert!(acl::parse(&private).unwrap().others().is_empty());
        // An elevated administrator's file is owned by Administrators.
        let elevated = format!("owner S-1-5-32-544\nuser {me}\nrule Allow 0 {me} HOST\\me\n");
        assert!(acl::parse(&elevated).unwrap().others().is_empty());
        let shared = format!(
            "owner {me}\nuser {me}\nrule Allow 0 S-1-5-32-545 BUILTIN\\Users\n\
             rule Allow 0 S-1-5-11 NT AUTHORITY\\Authenticated Users\nrule Allow 0 S-1-5-21-9-9-9-1002 \n"
        );
        assert_eq!(
            acl::parse(&shared).unwrap().others(),
            ["BUILTIN\\Users", "NT AUTHORITY\\Authenticated Users", "S-1-5-21-9-9-9-1002"]
        );
        assert!(acl::parse("user S-1-5-18\n").is_err());
        assert!(acl::parse(&format!("owner {me}\nuser {me}\nsomething else\n")).is_err());
    }
}
