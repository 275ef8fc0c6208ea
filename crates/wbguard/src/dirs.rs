//! Where wbguard's files live by convention: the one place that reads
//! `WBGUARD_CONFIG`, `XDG_CONFIG_HOME`, `XDG_STATE_HOME` and `HOME`, so that
//! the configuration stays pure data (its paths are resolved against a
//! [`Dirs`] handed in, and tests hand in their own).

use std::path::{Path, PathBuf};

/// The conventional places, read once from the environment.
#[derive(Debug, Clone, Default)]
pub struct Dirs {
    /// `$WBGUARD_CONFIG`: the configuration file, when set.
    pub config_override: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`.
    pub config_home: Option<PathBuf>,
    /// `$XDG_STATE_HOME`.
    pub state_home: Option<PathBuf>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
}

impl Dirs {
    /// Reads the variables (an empty one counts as unset).
    pub fn from_env() -> Dirs {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Dirs {
            config_override: var("WBGUARD_CONFIG"),
            config_home: var("XDG_CONFIG_HOME"),
            state_home: var("XDG_STATE_HOME"),
            home: var("HOME"),
        }
    }

    /// Where the configuration is looked for, in order, when not named.
    pub fn config_search_path(&self) -> Vec<PathBuf> {
        if let Some(path) = &self.config_override {
            return vec![path.clone()];
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

    /// The user's state directory for wbguard (`~/.local/state/wbguard`).
    pub fn state_dir(&self) -> PathBuf {
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
