//! Each simulated server's Call Bridge API certificate: self-signed, made
//! at first start and kept in the state directory (`<state>/<server>/
//! api.crt` and `api.key`, the key mode 0600), so its fingerprint stays the
//! same across runs (a client that pinned it keeps trusting it), and
//! replaced on request (`--rotate-api-cert`) to test how clients react to
//! a changed certificate. Names: `localhost`, `127.0.0.1`, the server's
//! name and its own loopback address `127.0.1.N`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A loaded certificate and key.
#[derive(Debug)]
pub struct ApiCert {
    /// The certificate (DER).
    pub certificate: CertificateDer<'static>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the certificate's DER, lowercase hex without separators
    /// (`openssl x509 -fingerprint -sha256` prints the same digits in
    /// upper case with colons).
    pub sha256: String,
    /// Where the certificate (PEM) is.
    pub certificate_path: PathBuf,
}

/// Loads server `name`'s API certificate from `dir`, or makes it when it is
/// missing or `rotate` is asked. `index` gives its own loopback address.
pub fn load_or_create(dir: &Path, name: &str, index: usize, rotate: bool) -> anyhow::Result<ApiCert> {
    let certificate_path = dir.join("api.crt");
    let key_path = dir.join("api.key");
    if rotate || !certificate_path.exists() || !key_path.exists() {
        create(dir, name, index, &certificate_path, &key_path)?;
    }
    let mode = fs::metadata(&key_path)?.permissions().mode();
    anyhow::ensure!(
        mode & 0o077 == 0,
        "{} is readable by others (mode {:o}); chmod 600 it",
        key_path.display(),
        mode & 0o777
    );
    let certificate = CertificateDer::from_pem_file(&certificate_path)
        .with_context(|| format!("{}: not a PEM certificate", certificate_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("{}: not a PEM private key", key_path.display()))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &certificate);
    let sha256 = data_encoding::HEXLOWER.encode(digest.as_ref());
    Ok(ApiCert { certificate, key, sha256, certificate_path })
}

fn create(dir: &Path, name: &str, index: usize, certificate_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), name.to_owned()];
    if let Ok(last) = u8::try_from(index + 1) {
        names.push(format!("127.0.1.{last}"));
    }
    let mut params = rcgen::CertificateParams::new(names).context("certificate names")?;
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "cms-sim");
    let key = rcgen::KeyPair::generate().context("making the API key")?;
    let certificate = params.self_signed(&key).context("signing the API certificate")?;
    // The certificate goes first, and comes last: killed in between, the
    // next start finds no certificate and makes both again, never a key
    // beside a certificate of another.
    match fs::remove_file(certificate_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", certificate_path.display()))
        }
        _ => {}
    }
    super::write_replacing(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    super::write_replacing(certificate_path, certificate.pem().as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_across_runs_and_rotated_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), "cms1", 0, false).unwrap();
        let again = load_or_create(dir.path(), "cms1", 0, false).unwrap();
        assert_eq!(first.sha256, again.sha256);
        assert_eq!(first.sha256.len(), 64);
        let rotated = load_or_create(dir.path(), "cms1", 0, true).unwrap();
        assert_ne!(first.sha256, rotated.sha256);
        let mode = fs::metadata(dir.path().join("api.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
