//! Host keys in OpenSSH's `known_hosts` format.
//!
//! wbguard must tell an *unknown* host (first contact: refuse, show the
//! fingerprint and how to trust it) from a *changed* key (someone may be
//! in the middle: refuse loudly, show both). Plain, `[host]:port` and
//! hashed (`|1|salt|hash`) entries are understood, comma lists and `*`/`?`
//! patterns too; `@cert-authority` lines are ignored and a key marked
//! `@revoked` is refused.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use data_encoding::BASE64;
use russh::keys::{HashAlg, PublicKey};

/// What known_hosts says about a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The key is recorded for this host.
    Known,
    /// Nothing is recorded for this host.
    Unknown,
    /// Other keys are recorded for this host: the key has changed.
    Changed {
        /// The recorded keys' fingerprints, with their line numbers.
        recorded: Vec<(usize, String)>,
    },
    /// The key is marked `@revoked`.
    Revoked,
}

/// The SHA256 fingerprint, as `ssh-keygen -l` shows it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The name known_hosts uses: `host` on port 22, `[host]:port` otherwise.
pub fn host_entry(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Checks `key` for `host:port` against the file at `path` (a missing file
/// knows nothing).
pub fn check(path: &Path, host: &str, port: u16, key: &PublicKey) -> io::Result<Verdict> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Verdict::Unknown),
        Err(e) => return Err(e),
    };
    let name = host_entry(host, port);
    let mut recorded = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (marker, hosts) = match fields.next() {
            Some(marker) if marker.starts_with('@') => (Some(marker), fields.next()),
            first => (None, first),
        };
        let (Some(hosts), Some(algorithm), Some(data)) = (hosts, fields.next(), fields.next()) else { continue };
        if marker == Some("@cert-authority") || !hosts_match(hosts, &name) {
            continue;
        }
        let Ok(entry) = PublicKey::from_openssh(&format!("{algorithm} {data}")) else { continue };
        let same = entry.key_data() == key.key_data();
        match (marker, same) {
            (Some("@revoked"), true) => return Ok(Verdict::Revoked),
            (Some(_), _) => {}
            (None, true) => return Ok(Verdict::Known),
            (None, false) => recorded.push((index + 1, fingerprint(&entry))),
        }
    }
    Ok(if recorded.is_empty() { Verdict::Unknown } else { Verdict::Changed { recorded } })
}

/// Appends `host:port key` to the file (created with mode 0600).
pub fn record(path: &Path, host: &str, port: u16, key: &PublicKey) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let key_text = key.to_openssh().map_err(|e| io::Error::other(e.to_string()))?;
    let mut file = crate::files::open_append(path, 0o600)?;
    writeln!(file, "{} {}", host_entry(host, port), key_text.trim())?;
    file.sync_all()
}

fn hosts_match(hosts: &str, name: &str) -> bool {
    if let Some(hashed) = hosts.strip_prefix("|1|") {
        return hashed_match(hashed, name);
    }
    let mut matched = false;
    for pattern in hosts.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob(negated, name) {
                return false;
            }
        } else if glob(pattern, name) {
            matched = true;
        }
    }
    matched
}

fn hashed_match(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else { return false };
    let (Ok(salt), Ok(hash)) = (BASE64.decode(salt.as_bytes()), BASE64.decode(hash.as_bytes())) else { return false };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
    ring::hmac::verify(&key, name.as_bytes(), &hash).is_ok()
}

/// `*` and `?` patterns, case-insensitive as OpenSSH's host matching is.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).unwrap()
    }

    #[test]
    fn unknown_known_changed_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        assert_eq!(check(&path, "cms1", 22, &key(A)).unwrap(), Verdict::Unknown);
        record(&path, "cms1", 22, &key(A)).unwrap();
        record(&path, "10.0.0.2", 2222, &key(B)).unwrap();
        assert_eq!(check(&path, "cms1", 22, &key(A)).unwrap(), Verdict::Known);
        assert_eq!(check(&path, "10.0.0.2", 2222, &key(B)).unwrap(), Verdict::Known);
        assert_eq!(check(&path, "10.0.0.2", 22, &key(B)).unwrap(), Verdict::Unknown);
        match check(&path, "cms1", 22, &key(B)).unwrap() {
            Verdict::Changed { recorded } => assert_eq!(recorded, vec![(1, fingerprint(&key(A)))]),
            other => panic!("{other:?}"),
        }
        fs::write(&path, format!("@revoked * {B}\n")).unwrap();
        assert_eq!(check(&path, "anything", 22, &key(B)).unwrap(), Verdict::Revoked);
        use std::os::unix::fs::PermissionsExt;
        record(&dir.path().join("new"), "h", 22, &key(A)).unwrap();
        assert_eq!(fs::metadata(dir.path().join("new")).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn patterns_and_hashed_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        // `ssh-keygen -H` of "cms9" with this salt.
        let salt = [7u8; 20];
        let hmac = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt), b"cms9");
        let hashed = format!("|1|{}|{}", BASE64.encode(&salt), BASE64.encode(hmac.as_ref()));
        fs::write(&path, format!("# comment\n{hashed} {A}\ncms*.example.com,!cms3.example.com {B}\n")).unwrap();
        assert_eq!(check(&path, "cms9", 22, &key(A)).unwrap(), Verdict::Known);
        assert_eq!(check(&path, "CMS1.example.com", 22, &key(B)).unwrap(), Verdict::Known);
        assert_eq!(check(&path, "cms3.example.com", 22, &key(B)).unwrap(), Verdict::Unknown);
        assert!(matches!(check(&path, "cms9", 22, &key(B)).unwrap(), Verdict::Changed { .. }));
    }
}
