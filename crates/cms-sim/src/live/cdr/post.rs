//! The CDR sender's HTTP client: one `POST` per connection over TCP or TLS,
//! with a deadline, reading only the status line (and headers, bounded).
//!
//! A Call Bridge needs nothing more: it posts a batch and looks at the
//! status. Keeping the client this small keeps every limit in sight: the
//! whole exchange has one deadline, a response head is read up to
//! [`MAX_HEAD`] bytes, and the body is never read.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most bytes of a response head read before giving up on it.
const MAX_HEAD: usize = 16 * 1024;

/// Where a call bridge posts: `http://HOST[:PORT][/PATH][?QUERY]` or
/// `https://...`. The path and query are sent as written, but for
/// `{server}`, which becomes the posting server's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    /// Over TLS.
    pub tls: bool,
    /// Host name or IP address (without brackets).
    pub host: String,
    /// Port (80 or 443 when not written).
    pub port: u16,
    /// Path and query, from `/`.
    pub path: String,
}

impl std::str::FromStr for Receiver {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("bad CDR receiver '{text}': {why} (http://HOST:PORT/PATH or https://...)");
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let tls = match scheme {
            "http" => false,
            "https" => true,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            // Never echo it: it would hold a password.
            return Err("bad CDR receiver: credentials in the URL are not supported".into());
        }
        let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
            let (host, after) = inner.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| bad("the port must be 1..65535"))?,
            None if tls => 443,
            None => 80,
        };
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad("spaces or control characters in the path"));
        }
        let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        Ok(Receiver { tls, host: host.to_owned(), port, path })
    }
}

impl std::fmt::Display for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// Posts `body` to `receiver` within `deadline`; the response's status.
/// TLS uses `tls` (required for `https`). Errors say what failed, never
/// with the body.
pub async fn post(
    receiver: &Receiver,
    body: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    deadline: Duration,
) -> Result<u16, String> {
    match tokio::time::timeout(deadline, exchange(receiver, body, tls)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} s", deadline.as_secs_f64())),
    }
}

async fn exchange(receiver: &Receiver, body: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<u16, String> {
    let tcp = TcpStream::connect((receiver.host.as_str(), receiver.port)).await.map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if receiver.tls {
        let config = tls.ok_or("https without a TLS configuration")?;
        let name = ServerName::try_from(receiver.host.clone()).map_err(|e| format!("server name: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        request(stream, receiver, body).await
    } else {
        request(tcp, receiver, body).await
    }
}

async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    receiver: &Receiver,
    body: &str,
) -> Result<u16, String> {
    let host = if receiver.host.contains(':') { format!("[{}]", receiver.host) } else { receiver.host.clone() };
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}:{}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        receiver.path,
        receiver.port,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    stream.write_all(body.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    stream.flush().await.map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = response.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&response[..end]);
            let mut words = line.split_whitespace();
            return match (words.next(), words.next().and_then(|s| s.parse::<u16>().ok())) {
                (Some(version), Some(status)) if version.starts_with("HTTP/") => Ok(status),
                _ => Err(format!("not an HTTP response: {:.80}", line.trim_end())),
            };
        }
        if response.len() > MAX_HEAD {
            return Err("response head too long".into());
        }
        let read = stream.read(&mut chunk).await.map_err(|e| format!("receive: {e}"))?;
        if read == 0 {
            return Err("connection closed before an answer".into());
        }
        response.extend_from_slice(&chunk[..read]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receivers_parse() {
        let r: Receiver = "http://127.0.0.1:8080/cdr?site=a".parse().unwrap();
        assert_eq!((r.tls, r.host.as_str(), r.port, r.path.as_str()), (false, "127.0.0.1", 8080, "/cdr?site=a"));
        let r: Receiver = "https://cdr.example.com".parse().unwrap();
        assert_eq!((r.port, r.path.as_str()), (443, "/"));
        let r: Receiver = "https://[::1]:9/x".parse().unwrap();
        assert_eq!(r.to_string(), "https://[::1]:9/x");
        assert!("ftp://h".parse::<Receiver>().unwrap_err().contains("scheme"));
        assert!("http://h:0/".parse::<Receiver>().unwrap_err().contains("port"));
        let secret = "http://u:hunter2@h/".parse::<Receiver>().unwrap_err();
        assert!(!secret.contains("hunter2"), "{secret}");
    }
}
