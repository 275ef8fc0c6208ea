//! Each simulated server's SSH host key, kept in the state directory so it
//! stays the same across runs (clients that pinned it keep trusting it),
//! and replaced on request to test how clients react to a changed key.
//! Ed25519 normally; RSA for the legacy profile, whose clients know no
//! better.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use rand::RngCore;
use russh::keys::ssh_key::private::{Ed25519Keypair, RsaKeypair};
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;

/// Which host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `ssh_host_ed25519_key`.
    Ed25519,
    /// `ssh_host_rsa_key`, 2048 bits, for the legacy profile.
    Rsa,
}

/// Loads the host key of `kind` from `dir`, or creates it (mode 0600) when
/// it is missing or `rotate` is asked.
pub fn load_or_create(dir: &Path, kind: KeyKind, rotate: bool) -> anyhow::Result<PrivateKey> {
    let path = dir.join(match kind {
        KeyKind::Ed25519 => "ssh_host_ed25519_key",
        KeyKind::Rsa => "ssh_host_rsa_key",
    });
    if !rotate && path.exists() {
        let mode = fs::metadata(&path)?.permissions().mode();
        anyhow::ensure!(
            mode & 0o077 == 0,
            "{} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        );
        return PrivateKey::read_openssh_file(&path).with_context(|| format!("reading host key {}", path.display()));
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = match kind {
        KeyKind::Ed25519 => {
            let mut seed = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut seed);
            PrivateKey::from(Ed25519Keypair::from_seed(&seed))
        }
        KeyKind::Rsa => {
            let keypair = RsaKeypair::random(&mut rand_keys::rng(), 2048).context("making an RSA host key")?;
            PrivateKey::from(keypair)
        }
    };
    let text = key.to_openssh(LineEnding::LF).context("encoding the host key")?;
    super::write_replacing(&path, text.as_bytes(), 0o600)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_across_runs_and_rotated_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), KeyKind::Ed25519, false).unwrap();
        let again = load_or_create(dir.path(), KeyKind::Ed25519, false).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        let rotated = load_or_create(dir.path(), KeyKind::Ed25519, true).unwrap();
        assert_ne!(first.public_key(), rotated.public_key());
        let mode = fs::metadata(dir.path().join("ssh_host_ed25519_key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
