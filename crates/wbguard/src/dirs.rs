//! Where wbguard's files live by convention: the one place that reads
//! `WBGUARD_CONFIG`, `XDG_CONFIG_HOME`, `XDG_STATE_HOME` and `HOME` (on
//! Windows: `APPDATA`, `LOCALAPPDATA`, `USERPROFILE` and `ProgramData`),
//! so that the configuration stays pure data (its paths are resolved
//! against a [`Dirs`] handed in, and tests hand in their own).
//!
//! On Windows the configuration is `%APPDATA%\wbguard\config.toml` (the
//! roaming profile: settings follow the user) and then
//! `%ProgramData%\wbguard\config.toml` (the machine's, as `/etc` is); the
//! state (known_hosts, the restart log, the lock) is under
//! `%LOCALAPPDATA%\wbguard` (this machine's own, never roamed: a lock or
//! a log belongs to the machine that wrote it). Both profile folders are
//! readable only by their user, SYSTEM and Administrators by default.

use std::path::{Path, PathBuf};

/// The conventional places, read once from the environment.
#[derive(Debug, Clone, Default)]
pub struct Dirs {
    /// `$WBGUARD_CONFIG`: the configuration file, when set.
    pub config_override: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME` (Windows: `%APPDATA%`).
    pub config_home: Option<PathBuf>,
    /// `$XDG_STATE_HOME` (Windows: `%LOCALAPPDATA%`).
    pub state_home: Option<PathBuf>,
    /// `$HOME` (Windows: `%USERPROFILE%`): what `~` means.
    pub home: Option<PathBuf>,
    /// Windows: `%ProgramData%`, the machine's settings (Unix has `/etc`).
    pub system: Option<PathBuf>,
}

/// An environment variable as a path; an empty one counts as unset.
fn var(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

impl Dirs {
    /// Reads the variables (an empty one counts as unset).
    #[cfg(not(windows))]
    pub fn from_env() -> Dirs {
        Dirs {
            config_override: var("WBGUARD_CONFIG"),
            config_home: var("XDG_CONFIG_HOME"),
            state_home: var("XDG_STATE_HOME"),
            home: var("HOME"),
            system: None,
        }
    }

    /// Reads the variables (an empty one counts as unset).
    #[cfg(windows)]
    pub fn from_env() -> Dirs {
        Dirs {
            config_override: var("WBGUARD_CONFIG"),
            config_home: var("APPDATA"),
            state_home: var("LOCALAPPDATA"),
            home: var("USERPROFILE"),
            system: var("ProgramData"),
        }
    }

    /// Where the configuration is looked for, in order, when not named.
    pub fn config_search_path(&self) -> Vec<PathBuf> {
        if let Some(path) = &self.config_override {
            return vec![path.clone()];
        }
        if cfg!(windows) {
            // Without %APPDATA% (a service account's odd environment)
            // only the machine's file is looked for.
            return [&self.config_home, &self.system]
                .into_iter()
                .flatten()
                .map(|base| base.join("wbguard").join("config.toml"))
                .collect();
        }
        let mut paths = Vec::new();
        if let Some(base) = &self.config_home {
            paths.push(base.join("wbguard/config.toml"));
        } else if let Some(home) = &self.home {
            paths.push(home.join(".config/wbguard/config.toml"));
        }
        paths.push(PathBuf::from("/etc/wbguard/config.toml"));
        paths
    }

    /// The user's state directory for wbguard (`~/.local/state/wbguard`;
    /// Windows: `%LOCALAPPDATA%\wbguard`).
    pub fn state_dir(&self) -> PathBuf {
        if cfg!(windows) {
            return match (&self.state_home, &self.system) {
                (Some(base), _) => base.join("wbguard"),
                (None, Some(system)) => system.join("wbguard"),
                (None, None) => PathBuf::from(r"C:\ProgramData\wbguard"),
            };
        }
        match (&self.state_home, &self.home) {
            (Some(base), _) => base.join("wbguard"),
            (None, Some(home)) => home.join(".local/state/wbguard"),
            (None, None) => PathBuf::from("/var/lib/wbguard"),
        }
    }

    /// `~/...` expanded; relative paths taken from `base` (the
    /// configuration file's folder).
    pub fn resolve(&self, path: &Path, base: &Path) -> PathBuf {
        if let (Ok(rest), Some(home)) = (path.strip_prefix("~"), &self.home) {
            return home.join(rest);
        }
        if path.is_relative() {
            base.join(path)
        } else {
            path.to_path_buf()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn unix_places_are_as_before() {
        let dirs = Dirs { home: Some("/home/u".into()), ..Dirs::default() };
        assert_eq!(
            dirs.config_search_path(),
            [PathBuf::from("/home/u/.config/wbguard/config.toml"), PathBuf::from("/etc/wbguard/config.toml")]
        );
        assert_eq!(dirs.state_dir(), PathBuf::from("/home/u/.local/state/wbguard"));
        assert_eq!(Dirs::default().state_dir(), PathBuf::from("/var/lib/wbguard"));
    }
}
