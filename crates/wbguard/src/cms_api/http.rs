//! A small HTTP/1.1 client for the Call Bridge API: `GET` with basic auth,
//! over TLS (rustls, the certificate judged by [`super::trust`]) or, in a
//! lab, plain TCP; a connection is kept open for the next request.
//!
//! Bounds: a response head of at most [`MAX_HEAD`] bytes, a body of at
//! most [`MAX_BODY`] (by Content-Length, chunks or to the end), each
//! request (connect, handshake, send, answer) within the timeout it is
//! given. A request on a kept connection that finds it closed is sent once
//! more on a new one (GET changes nothing).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::config::api::ApiEndpoint;

/// The largest response body read: a page of legs is a few KiB.
pub const MAX_BODY: usize = 1 << 20;
/// The largest response head (status line and headers).
pub const MAX_HEAD: usize = 16 << 10;

/// What a request came to, when it did not come to a response.
#[derive(Debug)]
pub(super) enum Failure {
    /// Nothing usable came back: connection refused, reset, timed out.
    Unreachable(String),
    /// The TLS handshake refused the certificate (rustls's words).
    Certificate(String),
    /// An answer that is not HTTP as expected, or too large.
    Answer(String),
}

/// A response: its status and body.
#[derive(Debug)]
pub(super) struct Response {
    /// The status code.
    pub status: u16,
    /// The body, at most [`MAX_BODY`] bytes.
    pub body: Vec<u8>,
}

/// A connection's byte stream: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How to reach one server's API: shared by its connections.
pub(super) struct Connector {
    endpoint: ApiEndpoint,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// `Basic ...`: a secret, never shown (no `Debug`).
    authorization: String,
    /// Each request's limit.
    pub timeout: Duration,
}

impl Connector {
    /// A connector to `endpoint` as `user`; `tls` judges the certificate
    /// (required for https).
    pub(super) fn new(
        endpoint: &ApiEndpoint,
        tls: Option<Arc<rustls::ClientConfig>>,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Connector, String> {
        let tls = match (endpoint.tls, tls) {
            (false, _) => None,
            (true, Some(config)) => {
                let name = ServerName::try_from(endpoint.host.clone())
                    .map_err(|_| format!("'{}' is not a TLS server name", endpoint.host))?;
                Some((tokio_rustls::TlsConnector::from(config), name))
            }
            (true, None) => return Err("https without a TLS configuration".into()),
        };
        let credentials = data_encoding::BASE64.encode(format!("{user}:{password}").as_bytes());
        Ok(Connector { endpoint: endpoint.clone(), tls, authorization: format!("Basic {credentials}"), timeout })
    }

    /// Connects and, for https, completes the TLS handshake; sends nothing.
    pub(super) async fn handshake(&self) -> Result<(), Failure> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.connect()).await {
            Ok(stream) => {
                let mut stream = stream?;
                let _ = stream.get_mut().shutdown().await;
                Ok(())
            }
            Err(_) => Err(Failure::Unreachable(format!("no TLS handshake within {:.0} s", timeout.as_secs_f64()))),
        }
    }

    async fn connect(&self) -> Result<BufReader<Box<dyn Stream>>, Failure> {
        let address = (self.endpoint.host.as_str(), self.endpoint.port);
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| Failure::Unreachable(format!("cannot connect to {}: {e}", self.endpoint.address())))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => match connector.connect(name.clone(), tcp).await {
                Ok(tls) => Box::new(tls),
                Err(error) => {
                    let certificate = error
                        .get_ref()
                        .and_then(|e| e.downcast_ref::<rustls::Error>())
                        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
                    return Err(if certificate {
                        Failure::Certificate(error.to_string())
                    } else {
                        Failure::Unreachable(format!("TLS handshake with {}: {error}", self.endpoint.address()))
                    });
                }
            },
        };
        Ok(BufReader::new(stream))
    }
}

/// One connection, opened on first use and kept while the server keeps it.
pub(super) struct Connection {
    connector: Arc<Connector>,
    stream: Option<BufReader<Box<dyn Stream>>>,
}

impl Connection {
    /// A connection through `connector` (nothing is opened yet).
    pub(super) fn new(connector: Arc<Connector>) -> Connection {
        Connection { connector, stream: None }
    }

    /// `GET path`, within the connector's timeout.
    pub(super) async fn get(&mut self, path: &str) -> Result<Response, Failure> {
        let timeout = self.connector.timeout;
        match tokio::time::timeout(timeout, self.get_once_or_twice(path)).await {
            Ok(result) => result,
            Err(_) => {
                self.stream = None;
                Err(Failure::Unreachable(format!("no answer within {:.0} s", timeout.as_secs_f64())))
            }
        }
    }

    async fn get_once_or_twice(&mut self, path: &str) -> Result<Response, Failure> {
        let reused = self.stream.is_some();
        match self.exchange(path).await {
            // A kept connection the server closed meanwhile: once more, new.
            Err(Exchange::Closed(_)) if reused => self.exchange(path).await.map_err(Exchange::into_failure),
            other => other.map_err(Exchange::into_failure),
        }
    }

    async fn exchange(&mut self, path: &str) -> Result<Response, Exchange> {
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => self.connector.connect().await.map_err(Exchange::Failed)?,
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nAccept: application/xml, text/xml\r\nUser-Agent: wbguard\r\n\r\n",
            self.connector.endpoint.authority(),
            self.connector.authorization
        );
        let io = |e: std::io::Error| Exchange::Closed(e.to_string());
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        let (response, keep) = read_response(&mut stream).await?;
        if keep {
            self.stream = Some(stream);
        }
        Ok(response)
    }
}

/// How one exchange failed.
enum Exchange {
    /// The connection was closed before any answer came.
    Closed(String),
    /// Anything else.
    Failed(Failure),
}

impl Exchange {
    fn into_failure(self) -> Failure {
        match self {
            Exchange::Closed(why) => Failure::Unreachable(format!("the connection closed before an answer: {why}")),
            Exchange::Failed(failure) => failure,
        }
    }
}

/// One line ending in LF, at most `limit` bytes; `None` at the end of the
/// stream before any byte.
async fn read_line(stream: &mut (impl AsyncBufRead + Unpin), limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let available = stream.fill_buf().await?;
        if available.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the answer ends inside a line"))
            };
        }
        let (take, done) = match memchr::memchr(b'\n', available) {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        if line.len() + take > limit {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a line of the answer is too long"));
        }
        line.extend_from_slice(&available[..take]);
        stream.consume(take);
        if done {
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

/// Reads one response; whether the connection may carry another.
async fn read_response(stream: &mut (impl AsyncBufRead + Unpin)) -> Result<(Response, bool), Exchange> {
    let answer = |why: String| Exchange::Failed(Failure::Answer(why));
    let broken = |e: std::io::Error| Exchange::Failed(Failure::Unreachable(format!("reading the answer: {e}")));
    // Interim 1xx answers are skipped; a few at most.
    for _ in 0..4 {
        let status_line = match read_line(stream, MAX_HEAD).await {
            Ok(Some(line)) => line,
            Ok(None) => return Err(Exchange::Closed("end of stream".into())),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Exchange::Closed(e.to_string())),
            Err(e) => return Err(broken(e)),
        };
        let status_line = String::from_utf8_lossy(&status_line).into_owned();
        let mut words = status_line.split_whitespace();
        let (Some(version), Some(code)) = (words.next(), words.next()) else {
            return Err(answer("not an HTTP answer".into()));
        };
        let status: u16 = match (version.starts_with("HTTP/1."), code.parse()) {
            (true, Ok(status)) if (100..600).contains(&status) => status,
            _ => return Err(answer(format!("not an HTTP answer: '{}'", status_line.escape_debug()))),
        };
        let mut head = status_line.len();
        let (mut length, mut chunked, mut close) = (None, false, version == "HTTP/1.0");
        loop {
            let line = read_line(stream, MAX_HEAD)
                .await
                .map_err(broken)?
                .ok_or_else(|| answer("the head ends early".into()))?;
            head += line.len() + 2;
            if head > MAX_HEAD {
                return Err(answer(format!("a head longer than {} KiB", MAX_HEAD >> 10)));
            }
            if line.is_empty() {
                break;
            }
            let line = String::from_utf8_lossy(&line);
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    let n: usize = value.parse().map_err(|_| answer("a bad Content-Length".into()))?;
                    if length.is_some_and(|m| m != n) {
                        return Err(answer("two different Content-Lengths".into()));
                    }
                    length = Some(n);
                }
                "transfer-encoding" => chunked = value.to_ascii_lowercase().split(',').any(|c| c.trim() == "chunked"),
                "connection" => close |= value.to_ascii_lowercase().split(',').any(|c| c.trim() == "close"),
                _ => {}
            }
        }
        if (100..200).contains(&status) {
            continue;
        }
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            read_chunked(stream).await?
        } else if let Some(length) = length {
            if length > MAX_BODY {
                return Err(answer(format!("a body of {length} bytes, more than {} KiB", MAX_BODY >> 10)));
            }
            let mut body = vec![0; length];
            stream.read_exact(&mut body).await.map_err(broken)?;
            body
        } else {
            // To the end of the stream: the connection ends with it.
            close = true;
            let mut body = Vec::new();
            stream.take(MAX_BODY as u64 + 1).read_to_end(&mut body).await.map_err(broken)?;
            if body.len() > MAX_BODY {
                return Err(answer(format!("a body of more than {} KiB", MAX_BODY >> 10)));
            }
            body
        };
        return Ok((Response { status, body }, !close));
    }
    Err(answer("too many interim (1xx) answers".into()))
}

/// A chunked body, at most [`MAX_BODY`] bytes in all; trailers are read and
/// dropped.
async fn read_chunked(stream: &mut (impl AsyncBufRead + Unpin)) -> Result<Vec<u8>, Exchange> {
    let answer = |why: &str| Exchange::Failed(Failure::Answer(why.to_owned()));
    let broken = |e: std::io::Error| Exchange::Failed(Failure::Unreachable(format!("reading the answer: {e}")));
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, 1024).await.map_err(broken)?.ok_or_else(|| answer("the chunks end early"))?;
        let line = String::from_utf8_lossy(&line);
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| answer("a bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            let mut head = 0;
            while let Some(trailer) = read_line(stream, MAX_HEAD).await.map_err(broken)? {
                head += trailer.len() + 2;
                if trailer.is_empty() {
                    break;
                }
                if head > MAX_HEAD {
                    return Err(answer("too many trailers"));
                }
            }
            return Ok(body);
        }
        if body.len().saturating_add(size) > MAX_BODY {
            return Err(Exchange::Failed(Failure::Answer(format!("a body of more than {} KiB", MAX_BODY >> 10))));
        }
        let start = body.len();
        body.resize(start + size, 0);
        stream.read_exact(&mut body[start..]).await.map_err(broken)?;
        let end = read_line(stream, 2).await.map_err(broken)?;
        if end.is_none_or(|end| !end.is_empty()) {
            return Err(answer("a chunk without its CRLF"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> Result<(Response, bool), String> {
        let mut stream = BufReader::new(bytes);
        read_response(&mut stream).await.map_err(|e| match e.into_failure() {
            Failure::Unreachable(why) | Failure::Answer(why) | Failure::Certificate(why) => why,
        })
    }

    #[tokio::test]
    async fn content_length_chunked_and_to_the_end() {
        let (r, keep) = read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloNEXT").await.unwrap();
        assert_eq!((r.status, r.body.as_slice(), keep), (200, &b"hello"[..], true));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n";
        let (r, keep) = read(chunked).await.unwrap();
        assert_eq!((r.body.as_slice(), keep), (&b"hello world"[..], true));
        let (r, keep) = read(b"HTTP/1.0 404 Not Found\r\n\r\nnone here").await.unwrap();
        assert_eq!((r.status, r.body.as_slice(), keep), (404, &b"none here"[..], false));
        let (r, keep) =
            read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 401 No\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
        assert_eq!((r.status, keep), (401, false));
    }

    #[tokio::test]
    async fn bounds_and_garbage() {
        let huge = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert!(read(huge.as_bytes()).await.unwrap_err().contains("KiB"));
        let mut chunks = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..=(MAX_BODY / 4096) {
            chunks.extend_from_slice(b"1000\r\n");
            chunks.extend_from_slice(&[b'a'; 4096]);
            chunks.extend_from_slice(b"\r\n");
        }
        assert!(read(&chunks).await.unwrap_err().contains("KiB"));
        let long_head = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(read(long_head.as_bytes()).await.is_err());
        let to_end = [b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), vec![b'a'; MAX_BODY + 1]].concat();
        assert!(read(&to_end).await.unwrap_err().contains("KiB"));
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n"[..],
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\n",
            b"",
        ] {
            assert!(read(bad).await.is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
