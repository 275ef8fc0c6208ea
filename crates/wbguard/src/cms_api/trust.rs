//! Trusting a Call Bridge API's certificate, the way SSH trusts a host key.
//!
//! CMS's certificates are usually self-signed or from an internal CA, so
//! the public roots prove nothing. A server's certificate is either
//! *pinned*: the SHA-256 fingerprint of its leaf certificate is recorded in
//! the `api_certificates` file beside known_hosts (`HOST:PORT sha256:HEX`
//! lines, `#` comments), by `wbguard trust NAME` after the operator compared
//! it, or on first sight under `host_key_policy = "accept-new"`; or it is
//! *verified* against the configured `ca_file`, host name included.
//!
//! Invariants: an unknown certificate is refused (with its fingerprint and
//! the cure), a changed one is refused and said to have changed, and
//! nothing is recorded before the handshake proved that the server holds
//! the certificate's key. The password is only ever sent over a connection
//! whose certificate passed.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::{Config, HostKeyPolicy};

/// Where pinned certificates are, and whether an unknown one is recorded
/// on first sight. Built from the configuration; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTrust {
    /// The `api_certificates` file.
    pub file: PathBuf,
    /// `host_key_policy = "accept-new"`: record an unknown certificate on
    /// first sight (a changed one is still refused).
    pub accept_new: bool,
}

impl ApiTrust {
    /// The trust of `config`: its `api_certificates` file and host key policy.
    pub fn from_config(config: &Config) -> ApiTrust {
        ApiTrust { file: config.api_certificates(), accept_new: config.host_key_policy == HostKeyPolicy::AcceptNew }
    }
}

/// `sha256:` and the lower-case hex SHA-256 of a certificate's DER bytes
/// (what `openssl x509 -noout -fingerprint -sha256` shows, without colons).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    format!("sha256:{}", data_encoding::HEXLOWER.encode(digest.as_ref()))
}

/// What the trust file says about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This fingerprint is recorded for the address.
    Known,
    /// Nothing is recorded for the address.
    Unknown,
    /// Others are recorded for the address: the certificate changed.
    Changed {
        /// The recorded fingerprints, with their line numbers.
        recorded: Vec<(usize, String)>,
    },
}

/// The fingerprints recorded for `address` (`HOST:PORT`), with their lines;
/// a missing file records nothing.
pub fn recorded(file: &Path, address: &str) -> io::Result<Vec<(usize, String)>> {
    let text = match crate::files::read_bounded(file, crate::files::TEXT_FILE) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let (Some(entry), Some(print)) = (fields.next(), fields.next()) else { continue };
        if entry.starts_with('#') || !entry.eq_ignore_ascii_case(address) {
            continue;
        }
        found.push((index + 1, print.to_ascii_lowercase()));
    }
    Ok(found)
}

/// Checks `fingerprint` for `address` against the file.
pub fn check(file: &Path, address: &str, fingerprint: &str) -> io::Result<Verdict> {
    let recorded = recorded(file, address)?;
    Ok(if recorded.is_empty() {
        Verdict::Unknown
    } else if recorded.iter().any(|(_, print)| print == fingerprint) {
        Verdict::Known
    } else {
        Verdict::Changed { recorded }
    })
}

/// Appends `address fingerprint` to the file (created with mode 0600, its
/// folder too).
pub fn record(file: &Path, address: &str, fingerprint: &str) -> io::Result<()> {
    if let Some(dir) = file.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut handle = crate::files::open_append(file, 0o600)?;
    // One write of the whole line: appends by concurrent checks never
    // interleave (writeln! would write it in pieces).
    handle.write_all(format!("{address} {fingerprint}\n").as_bytes())?;
    handle.sync_all()
}

/// How a handshake judges the certificate.
#[derive(Debug)]
pub(super) enum Judge {
    /// Against the fingerprints recorded for the address.
    Pinned {
        /// Where to record a new one (accept-new) and under what address.
        file: PathBuf,
        /// `HOST:PORT`.
        address: String,
        /// The fingerprints recorded when the check began.
        recorded: Vec<String>,
        /// Record an unknown one after the handshake.
        accept_new: bool,
    },
    /// Against a CA file, host name included.
    Authority(Arc<WebPkiServerVerifier>),
    /// Any certificate: only to look at it (`wbguard trust`); nothing is
    /// sent over such a connection.
    LookOnly,
}

/// The judge of one server's handshakes, and what it saw: shared by every
/// connection to that server during one check.
#[derive(Debug)]
pub(super) struct Verifier {
    judge: Judge,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// The last leaf certificate seen.
    seen: Mutex<Option<CertificateDer<'static>>>,
    /// A first-sight fingerprint accepted under accept-new, to record once
    /// a handshake proves it.
    pending: Mutex<Option<String>>,
}

impl Verifier {
    /// A verifier that judges with `judge`.
    pub(super) fn new(judge: Judge) -> Arc<Verifier> {
        Arc::new(Verifier {
            judge,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            seen: Mutex::new(None),
            pending: Mutex::new(None),
        })
    }

    /// The judge for `settings`' server: its CA file, else its pins.
    pub(super) fn for_server(address: &str, ca_file: Option<&Path>, trust: &ApiTrust) -> Result<Arc<Verifier>, String> {
        let judge = match ca_file {
            Some(path) => Judge::Authority(authority(path)?),
            None => Judge::Pinned {
                file: trust.file.clone(),
                address: address.to_owned(),
                recorded: recorded(&trust.file, address)
                    .map_err(|e| format!("cannot read {}: {e}", trust.file.display()))?
                    .into_iter()
                    .map(|(_, print)| print)
                    .collect(),
                accept_new: trust.accept_new,
            },
        };
        Ok(Verifier::new(judge))
    }

    /// The client configuration that uses this verifier.
    pub(super) fn client_config(self: &Arc<Self>) -> Arc<rustls::ClientConfig> {
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth();
        Arc::new(config)
    }

    /// The leaf certificate of the last handshake, if one got that far.
    pub(super) fn seen(&self) -> Option<CertificateDer<'static>> {
        self.seen.lock().expect("never poisoned").clone()
    }

    /// Why the last handshake's certificate was refused, in words that
    /// name the fingerprint and the cure; `name` is the server's.
    pub(super) fn refusal(&self, name: &str, error: &str) -> super::ApiError {
        let Some(der) = self.seen() else {
            return super::ApiError::Unreachable { server: name.to_owned(), why: format!("TLS: {error}") };
        };
        let seen = fingerprint(&der);
        match &self.judge {
            Judge::Pinned { recorded, file, address, .. } if recorded.is_empty() => {
                super::ApiError::UnknownCertificate {
                    server: name.to_owned(),
                    address: address.clone(),
                    fingerprint: seen,
                    file: file.clone(),
                }
            }
            Judge::Pinned { recorded, file, address, .. } => super::ApiError::ChangedCertificate {
                server: name.to_owned(),
                address: address.clone(),
                fingerprint: seen,
                recorded: recorded.join(", "),
                file: file.clone(),
            },
            Judge::Authority(_) | Judge::LookOnly => super::ApiError::CertificateRejected {
                server: name.to_owned(),
                fingerprint: seen,
                why: error.to_owned(),
            },
        }
    }

    /// After a handshake that passed: records a first-sight certificate
    /// (accept-new). Returns the fingerprint recorded, if any.
    pub(super) fn confirm(&self) -> io::Result<Option<String>> {
        let Some(print) = self.pending.lock().expect("never poisoned").take() else { return Ok(None) };
        if let Judge::Pinned { file, address, .. } = &self.judge {
            // Another check may have recorded it meanwhile: look and record
            // as one step within this process.
            static RECORDING: Mutex<()> = Mutex::new(());
            let _one_at_a_time = RECORDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if check(file, address, &print)? == Verdict::Unknown {
                record(file, address, &print)?;
                return Ok(Some(print));
            }
        }
        Ok(None)
    }
}

/// The CA file's certificates as a verifier (host name checked).
fn authority(path: &Path) -> Result<Arc<WebPkiServerVerifier>, String> {
    use rustls::pki_types::pem::PemObject;
    let text = crate::files::read_bounded(path, crate::files::TEXT_FILE)
        .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(text.as_bytes()) {
        let certificate = certificate.map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
        roots.add(certificate).map_err(|e| format!("{}: unusable certificate: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether the CA file can be used (for `wbguard config check`).
pub fn ca_file_problem(path: &Path) -> Option<String> {
    authority(path).err()
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().expect("never poisoned") = Some(end_entity.clone().into_owned());
        match &self.judge {
            Judge::Authority(verifier) => {
                verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            Judge::LookOnly => Ok(ServerCertVerified::assertion()),
            Judge::Pinned { recorded, accept_new, .. } => {
                let print = fingerprint(end_entity.as_ref());
                if recorded.contains(&print) {
                    Ok(ServerCertVerified::assertion())
                } else if recorded.is_empty() && *accept_new {
                    *self.pending.lock().expect("never poisoned") = Some(print);
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A certificate's subject common name and validity, read from its DER
/// (`CN=cms1.example.com, valid 2024-03-05 to 2026-03-05`); `None` when it
/// is not the X.509 shape expected. For the operator's eyes only: trust is
/// decided by the fingerprint.
pub fn describe(der: &[u8]) -> Option<String> {
    let (certificate, _) = der_item(der, 0x30)?;
    let (mut tbs, _) = der_item(certificate, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_item(tbs, 0xa0)?.1;
    }
    let (_, rest) = der_item(tbs, 0x02)?; // serial
    let (_, rest) = der_item(rest, 0x30)?; // signature algorithm
    let (_, rest) = der_item(rest, 0x30)?; // issuer
    let (validity, rest) = der_item(rest, 0x30)?;
    let (subject, _) = der_item(rest, 0x30)?;
    let (not_before, after) = der_time(validity)?;
    let (not_after, _) = der_time(after)?;
    let name = common_name(subject).map_or_else(|| "no CN".to_owned(), |cn| format!("CN={cn}"));
    Some(format!("{name}, valid {not_before} to {not_after}"))
}

/// One DER item of tag `tag` at the start of `bytes`: its content and what
/// follows it.
fn der_item(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = bytes.split_first()?;
    if first != tag {
        return None;
    }
    let (&length, rest) = rest.split_first()?;
    let (length, rest) = if length < 0x80 {
        (usize::from(length), rest)
    } else {
        let octets = usize::from(length & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let length = rest[..octets].iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
        (length, &rest[octets..])
    };
    (rest.len() >= length).then(|| rest.split_at(length))
}

/// A UTCTime or GeneralizedTime as `YYYY-MM-DD`, and what follows it.
fn der_time(bytes: &[u8]) -> Option<(String, &[u8])> {
    let (tag, digits) = match bytes.first()? {
        0x17 => (0x17, 2),
        0x18 => (0x18, 4),
        _ => return None,
    };
    let (content, rest) = der_item(bytes, tag)?;
    let text = std::str::from_utf8(content).ok()?;
    if text.len() < digits + 4 || !text[..digits + 4].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year = match digits {
        2 => {
            let yy: u32 = text[..2].parse().ok()?;
            if yy >= 50 {
                1900 + yy
            } else {
                2000 + yy
            }
        }
        _ => text[..4].parse().ok()?,
    };
    Some((format!("{year}-{}-{}", &text[digits..digits + 2], &text[digits + 2..digits + 4]), rest))
}

/// The first common name (OID 2.5.4.3) in a Name.
fn common_name(mut name: &[u8]) -> Option<String> {
    while !name.is_empty() {
        let (set, rest) = der_item(name, 0x31)?;
        name = rest;
        let (pair, _) = der_item(set, 0x30)?;
        let (oid, value) = der_item(pair, 0x06)?;
        if oid == [0x55, 0x04, 0x03] {
            let tag = *value.first()?;
            let (text, _) = der_item(value, tag)?;
            let text = String::from_utf8_lossy(text);
            return Some(text.chars().filter(|c| !c.is_control()).collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:0a0b";
    const B: &str = "sha256:0c0d";

    #[test]
    fn unknown_known_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state/api_certificates");
        assert_eq!(check(&file, "cms1:445", A).unwrap(), Verdict::Unknown);
        record(&file, "cms1:445", A).unwrap();
        record(&file, "[::1]:443", B).unwrap();
        assert_eq!(check(&file, "cms1:445", A).unwrap(), Verdict::Known);
        assert_eq!(check(&file, "CMS1:445", A).unwrap(), Verdict::Known);
        assert_eq!(check(&file, "[::1]:443", B).unwrap(), Verdict::Known);
        assert_eq!(check(&file, "cms1:443", A).unwrap(), Verdict::Unknown);
        assert_eq!(check(&file, "cms1:445", B).unwrap(), Verdict::Changed { recorded: vec![(1, A.into())] });
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        fs::write(&file, format!("# cms1:445 {B}\n\ncms1:445\ncms1:445 {}\n", A.to_uppercase())).unwrap();
        assert_eq!(check(&file, "cms1:445", A).unwrap(), Verdict::Known);
    }

    #[test]
    fn fingerprints_are_sha256_hex() {
        assert_eq!(fingerprint(b"abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    #[ignore = "needs openssl: cargo xtask ci runs it"]
    fn a_certificate_is_described_without_panicking_on_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "30", "-subj", "/O=Example/CN=cms1.example.com", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (apt-get install openssl)");
        assert!(made.success());
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_file(&cert).unwrap();
        let text = describe(der.as_ref()).unwrap();
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        assert!(text.starts_with("CN=cms1.example.com, valid ") && text.contains(&today), "{text}");
        for cut in 0..der.len() {
            let _ = describe(&der[..cut]);
        }
        assert_eq!(describe(b"\x30\x84\xff\xff\xff\xff"), None);
        assert!(ca_file_problem(&cert).is_none());
        assert!(ca_file_problem(&key).unwrap().contains("no PEM certificate"));
        assert!(ca_file_problem(&dir.path().join("none")).unwrap().contains("cannot read"));
    }
}
