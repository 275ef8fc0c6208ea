//! After a restart: does the web bridge answer again?
//!
//! The page is fetched until it answers 200, over TLS for `https://`. The
//! certificate is checked against the public roots; a web bridge with a
//! certificate from an internal CA (common) still counts as back, and the
//! result says its certificate was not verified: the probe sends nothing
//! secret and trusts nothing it receives, it only asks whether the page is
//! served again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The first pause between two looks at the page.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// How long a restart counts as quick: the page is asked every
/// [`FIRST_PAUSE`] until then.
const QUICK: Duration = Duration::from_secs(2);
/// The longest pause between two looks.
const LAST_PAUSE: Duration = Duration::from_secs(1);
/// One look at the page gets this long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The page answered 200 (over TLS with a trusted certificate, for https).
    PageAnswered,
    /// The page answered 200 over TLS; its certificate is not publicly
    /// trusted (why), as with an internal CA.
    PageAnsweredUntrusted(String),
    /// It did not come back in time.
    Failed(String),
    /// No `webbridge_url` configured: nothing to check.
    NotConfigured,
}

impl Verification {
    /// Whether the web bridge was seen back.
    pub fn passed(&self) -> bool {
        matches!(self, Verification::PageAnswered | Verification::PageAnsweredUntrusted(_))
    }

    /// In words, for logs and the audit file.
    pub fn describe(&self) -> String {
        match self {
            Verification::PageAnswered => "web page answers".into(),
            Verification::PageAnsweredUntrusted(why) => {
                format!("web page answers (its certificate was not verified: {why})")
            }
            Verification::Failed(why) => format!("not verified: {why}"),
            Verification::NotConfigured => "not verified: no webbridge_url configured".into(),
        }
    }
}

/// Where the page is: the configuration's reading of the URL.
type Target = crate::config::address::HttpUrl;

/// What one probe found.
enum Probe {
    /// 200, with the certificate verified (or plain HTTP).
    Up,
    /// 200 over TLS with a certificate that is not publicly trusted.
    UpUntrusted(String),
    /// It answered, not 200.
    NotYet,
}

/// Waits, up to `timeout`, for the page at `url` to answer.
pub async fn wait_until_up(url: Option<&str>, timeout: Duration) -> Verification {
    let Some(url) = url else { return Verification::NotConfigured };
    let target = match Target::parse(url) {
        Ok(target) => target,
        // The configuration checked it already; the URL is not repeated,
        // as it may hold credentials.
        Err(why) => return Verification::Failed(format!("cannot read the URL: {why}")),
    };
    let deadline = Instant::now() + timeout;
    // `webbridge restart` returns once the web bridge is restarting, so the
    // page is asked at once, then every FIRST_PAUSE while a quick restart
    // may be ending (QUICK), then after a pause that doubles up to
    // LAST_PAUSE: a quick restart is seen within 50 ms of its end, a slow
    // one is not hammered.
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    let last = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = tokio::time::timeout(PROBE_TIMEOUT.min(left), probe(&target)).await;
        let why = match attempt {
            Ok(Ok(Probe::Up)) => return Verification::PageAnswered,
            Ok(Ok(Probe::UpUntrusted(why))) => return Verification::PageAnsweredUntrusted(why),
            Ok(Ok(Probe::NotYet)) => "the page does not answer 200 yet".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("the page did not answer within {} s", PROBE_TIMEOUT.as_secs()),
        };
        if Instant::now() + pause >= deadline {
            break why;
        }
        tokio::time::sleep(pause).await;
        if started.elapsed() >= QUICK {
            pause = (pause * 2).min(LAST_PAUSE);
        }
    };
    Verification::Failed(format!("{last} after {:.0} s", timeout.as_secs_f64()))
}

async fn probe(target: &Target) -> std::io::Result<Probe> {
    let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
    if !target.tls {
        return Ok(if get(stream, target).await? { Probe::Up } else { Probe::NotYet });
    }
    let name = ServerName::try_from(target.host.clone())
        .map_err(|_| std::io::Error::other(format!("'{}' is not a TLS server name", target.host)))?;
    let trusted = tokio_rustls::TlsConnector::from(client_config(None));
    match trusted.connect(name.clone(), stream).await {
        Ok(tls) => Ok(if get(tls, target).await? { Probe::Up } else { Probe::NotYet }),
        Err(error) if is_certificate_error(&error) => {
            // Served, but not by a publicly trusted certificate: ask again
            // without judging it, and say so.
            let why = error.to_string();
            let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
            let unjudged = tokio_rustls::TlsConnector::from(client_config(Some(AnyCertificate::new())));
            let tls = unjudged.connect(name, stream).await?;
            Ok(if get(tls, target).await? { Probe::UpUntrusted(why) } else { Probe::NotYet })
        }
        Err(error) => Err(error),
    }
}

/// `GET path`: whether it answers 200.
async fn get(mut stream: impl AsyncRead + AsyncWrite + Unpin, target: &Target) -> std::io::Result<bool> {
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: wbguard\r\nConnection: close\r\n\r\n",
        target.path,
        target.authority()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 64];
    let mut n = 0;
    // The status line may come in pieces (TLS records).
    while n < 12 {
        let read = stream.read(&mut head[n..]).await?;
        if read == 0 {
            break;
        }
        n += read;
    }
    let status = String::from_utf8_lossy(&head[..n]);
    Ok(status.starts_with("HTTP/1.") && status.split_whitespace().nth(1) == Some("200"))
}

fn is_certificate_error(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_) | rustls::Error::UnsupportedNameType))
}

fn client_config(verifier: Option<Arc<AnyCertificate>>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let config = match verifier {
        None => {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Some(verifier) => builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth(),
    };
    Arc::new(config)
}

/// Accepts any certificate (the handshake's signatures are still checked):
/// only for asking whether a page is served, never for sending anything.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl AnyCertificate {
    fn new() -> Arc<AnyCertificate> {
        Arc::new(AnyCertificate(Arc::new(rustls::crypto::ring::default_provider())))
    }
}

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("http://127.0.0.1:8081/").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port, t.path.as_str()), (false, "127.0.0.1", 8081, "/"));
        let t = Target::parse("https://join.example.com/webrtc").unwrap();
        assert_eq!((t.tls, t.port, t.path.as_str()), (true, 443, "/webrtc"));
        assert!(Target::parse("ftp://x").is_err());
    }

    #[tokio::test]
    async fn an_unreadable_url_is_not_repeated() {
        let verification = wait_until_up(Some("https://admin:s3cret/@h/"), Duration::from_millis(10)).await;
        assert!(matches!(&verification, Verification::Failed(why) if !why.contains("s3cret")), "{verification:?}");
    }

    /// `openssl s_server -www` with a self-signed certificate: the page is
    /// back, and its certificate is said not to be verified.
    #[tokio::test]
    #[ignore = "needs openssl: cargo xtask ci runs it"]
    async fn an_https_page_with_an_internal_certificate_counts_as_back() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (apt-get install openssl)");
        assert!(made.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = std::process::Command::new("openssl")
            .args(["s_server", "-www", "-accept", &port.to_string(), "-cert"])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl (apt-get install openssl)");
        let verification = wait_until_up(Some(&format!("https://127.0.0.1:{port}/")), Duration::from_secs(10)).await;
        // Nothing listens here: not back.
        let closed = wait_until_up(Some("https://127.0.0.1:1/"), Duration::from_secs(1)).await;
        let _ = server.kill();
        let _ = server.wait();
        match &verification {
            Verification::PageAnsweredUntrusted(why) => assert!(why.contains("certificate"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(verification.passed() && verification.describe().contains("not verified"));
        assert!(matches!(closed, Verification::Failed(_)), "{closed:?}");
    }
}
