//! After a restart: does the web bridge answer again?
//!
//! `http://` pages are fetched until they answer 200. For `https://` pages
//! wbguard does not speak TLS yet, so it waits until the port accepts
//! connections again, and says so in the result.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How the check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The page answered 200.
    PageAnswered,
    /// The HTTPS port accepts connections again (TLS not checked).
    PortAnswered,
    /// It did not come back in time.
    Failed(String),
    /// No `webbridge_url` configured: nothing to check.
    NotConfigured,
}

impl Verification {
    /// Whether the web bridge was seen back.
    pub fn passed(&self) -> bool {
        matches!(self, Verification::PageAnswered | Verification::PortAnswered)
    }

    /// In words, for logs and the audit file.
    pub fn describe(&self) -> String {
        match self {
            Verification::PageAnswered => "web page answers".into(),
            Verification::PortAnswered => "https port answers (TLS not checked)".into(),
            Verification::Failed(why) => format!("not verified: {why}"),
            Verification::NotConfigured => "not verified: no webbridge_url configured".into(),
        }
    }
}

struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse(url: &str) -> Option<Target> {
    let (tls, rest) = match url.split_once("://")? {
        ("http", rest) => (false, rest),
        ("https", rest) => (true, rest),
        _ => return None,
    };
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let (host, port) = crate::config::split_host_port(authority).ok()?;
    let port = if authority.contains(':') && !authority.ends_with(']') {
        port
    } else if tls {
        443
    } else {
        80
    };
    Some(Target { tls, host, port, path })
}

/// Waits, up to `timeout`, for the page at `url` to answer.
pub async fn wait_until_up(url: Option<&str>, timeout: Duration) -> Verification {
    let Some(url) = url else { return Verification::NotConfigured };
    let Some(target) = parse(url) else { return Verification::Failed(format!("cannot read the URL {url}")) };
    let deadline = Instant::now() + timeout;
    // A restart takes a moment to take the page down: do not mistake the
    // old process for the new one.
    tokio::time::sleep(Duration::from_millis(500).min(timeout)).await;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        let attempt = tokio::time::timeout(Duration::from_secs(5), probe(&target)).await;
        match attempt {
            Ok(Ok(true)) => return if target.tls { Verification::PortAnswered } else { Verification::PageAnswered },
            Ok(Ok(false)) => last = "the page does not answer 200 yet".into(),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "the page did not answer within 5 s".into(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Verification::Failed(format!("{last} after {:.0} s", timeout.as_secs_f64()))
}

async fn probe(target: &Target) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
    if target.tls {
        return Ok(true);
    }
    let request = format!("GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: wbguard\r\n\r\n", target.path, target.host);
    stream.write_all(request.as_bytes()).await?;
    let mut head = vec![0u8; 64];
    let n = stream.read(&mut head).await?;
    let status = String::from_utf8_lossy(&head[..n]);
    Ok(status.starts_with("HTTP/1.") && status.split_whitespace().nth(1) == Some("200"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse("http://127.0.0.1:8081/").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port, t.path.as_str()), (false, "127.0.0.1", 8081, "/"));
        let t = parse("https://join.example.com/webrtc").unwrap();
        assert_eq!((t.tls, t.port, t.path.as_str()), (true, 443, "/webrtc"));
        assert!(parse("ftp://x").is_none());
    }
}
