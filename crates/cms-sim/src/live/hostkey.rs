//! Each simulated server's SSH host key, kept in the state directory so it
//! stays the same across runs (clients that pinned it keep trusting it),
//! and replaced on request to test how clients react to a changed key.
//! Ed25519 normally; RSA for the legacy profile, whose clients know no
//! better. Also the client's side: a key pair for the MMP user, as
//! `ssh-keygen` writes it, so that tests need no OpenSSH to make one.

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

/// A new Ed25519 key pair without passphrase, as `ssh-keygen -t ed25519
/// -N '' -C COMMENT -f PATH` writes it: the private key at `path` (mode
/// 0600) and the public one at `path.pub`, both in OpenSSH's formats.
pub fn client_key_pair(path: &Path, comment: &str) -> anyhow::Result<()> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let private = key.to_openssh(LineEnding::LF).context("encoding the key")?;
    super::write_replacing(path, private.as_bytes(), 0o600)?;
    let public = key.public_key().to_openssh().context("encoding the public key")?;
    let mut public_path = path.as_os_str().to_owned();
    public_path.push(".pub");
    super::write_replacing(Path::new(&public_path), format!("{public} {comment}\n").as_bytes(), 0o644)?;
    Ok(())
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
