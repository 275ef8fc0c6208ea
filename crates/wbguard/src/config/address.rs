//! Addresses in the configuration and on the command line: an MMP's
//! `host[:port]`, a syslog listener's `udp://`/`tcp://`/`tls://ADDR:PORT`,
//! a web page's or a webhook's `http(s)://` URL.
//!
//! Small hand-written readers rather than a URL crate: wbguard needs the
//! scheme, host, port and path of plain http(s) URLs, and each error must
//! say what is wrong without repeating a URL that may hold a secret.

use std::net::SocketAddr;

use anyhow::{bail, Context};

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `udp://ADDR:PORT`
    Udp(SocketAddr),
    /// `tcp://ADDR:PORT`
    Tcp(SocketAddr),
    /// `tls://ADDR:PORT` (RFC 5425; certificate and key from the configuration)
    Tls(SocketAddr),
}

impl Listen {
    /// The address it listens on, whatever the transport.
    pub fn address(&self) -> SocketAddr {
        match self {
            Listen::Udp(address) | Listen::Tcp(address) | Listen::Tls(address) => *address,
        }
    }
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("bad syslog listener '{text}': {why} (udp://ADDR:PORT, tcp://ADDR:PORT or tls://ADDR:PORT)")
        };
        let (scheme, address) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let address: SocketAddr = address.parse().map_err(|_| bad("the address must be IP:PORT"))?;
        match scheme {
            "udp" => Ok(Listen::Udp(address)),
            "tcp" => Ok(Listen::Tcp(address)),
            "tls" => Ok(Listen::Tls(address)),
            _ => Err(bad("unknown scheme")),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Udp(address) => write!(f, "udp://{address}"),
            Listen::Tcp(address) => write!(f, "tcp://{address}"),
            Listen::Tls(address) => write!(f, "tls://{address}"),
        }
    }
}

/// Where a CDR listener listens: `http://ADDR:PORT` or `https://ADDR:PORT`
/// (certificate and key from the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdrListen {
    /// `https`: over TLS.
    pub tls: bool,
    /// The address it listens on.
    pub address: SocketAddr,
}

impl std::str::FromStr for CdrListen {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("bad CDR listener '{text}': {why} (http://ADDR:PORT or https://ADDR:PORT)");
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let tls = match scheme {
            "http" => false,
            "https" => true,
            _ => return Err(bad("unknown scheme")),
        };
        // The Call Bridges post to /cdr; a path here would suggest another.
        let address = rest.strip_suffix('/').unwrap_or(rest);
        let address: SocketAddr = address.parse().map_err(|_| bad("the address must be IP:PORT, without a path"))?;
        Ok(CdrListen { tls, address })
    }
}

impl std::fmt::Display for CdrListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.address)
    }
}

/// `host`, `host:port`, `[v6]:port`; the port is 1 to 65535, 22 when not
/// written.
pub fn split_host_port(text: &str) -> anyhow::Result<(String, u16)> {
    let text = text.trim();
    if text.is_empty() {
        bail!("empty address");
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').with_context(|| format!("unclosed [ in '{text}'"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            bail!("'{host}' in '{text}' is not an IPv6 address");
        }
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => bail!("unexpected '{after}' in '{text}'"),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            // More than one colon: an IPv6 address without a port.
            _ => (text, None),
        }
    };
    if host.is_empty() {
        bail!("no host in '{text}'");
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("the host in '{}' has a space or a control character", text.escape_debug());
    }
    let port = match port {
        None => 22,
        Some(port) => parse_port(port).map_err(|why| anyhow::anyhow!("bad port in '{text}': {why}"))?,
    };
    Ok((host.to_owned(), port))
}

/// A port as written: digits only, 1 to 65535 (nothing listens on 0).
fn parse_port(text: &str) -> Result<u16, &'static str> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a port is a number from 1 to 65535");
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err("a port is a number from 1 to 65535"),
        Ok(port) => Ok(port),
    }
}

/// An `http://` or `https://` URL, read as far as wbguard needs it: to
/// fetch a web bridge's page or post to a webhook, and to show it without
/// what may be secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https`: over TLS.
    pub tls: bool,
    /// The host: a name, an IPv4 address, or an IPv6 address (without its
    /// brackets).
    pub host: String,
    /// The port: as written, else 443 for https and 80 for http.
    pub port: u16,
    /// Path and query, from the `/` on (`/` when the URL has none); the
    /// fragment is dropped, as a browser never sends it.
    pub path: String,
}

impl HttpUrl {
    /// Reads `text`. The errors never repeat the URL or any part of it: a
    /// URL may carry a password or a token, and a typo can move one into
    /// any part.
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("a URL has no spaces or control characters".into());
        }
        let (scheme, rest) = text.split_once("://").ok_or("the URL must start with https:// or http://")?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return Err("the URL must start with https:// or http://".into()),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        // `user:password@` is allowed (and never shown); the host follows
        // the last `@`.
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, host_port)| host_port);
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or("the URL's IPv6 address lacks its closing ]")?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err("the URL's host in [ ] is not an IPv6 address".into());
            }
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err("the URL has something between its ] and its port".into()),
            }
        } else {
            match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() {
            return Err("the URL names no host".into());
        }
        let name_like = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':');
        if !host.chars().all(name_like) {
            return Err("the URL's host has a character no host name has (an IPv6 address needs [ ])".into());
        }
        let port = match port {
            Some(port) => parse_port(port).map_err(|why| format!("bad port in the URL: {why}"))?,
            None if tls => 443,
            None => 80,
        };
        let tail = tail.split('#').next().unwrap_or("");
        let path = if tail.starts_with('/') { tail.to_owned() } else { format!("/{tail}") };
        Ok(HttpUrl { tls, host: host.to_owned(), port, path })
    }

    /// `host[:port]` as an HTTP `Host` header gives it: an IPv6 address in
    /// brackets, the port only when it is not the scheme's default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_parse() {
        assert_eq!("udp://127.0.0.1:514".parse(), Ok(Listen::Udp("127.0.0.1:514".parse().unwrap())));
        assert_eq!("tcp://[::1]:601".parse(), Ok(Listen::Tcp("[::1]:601".parse().unwrap())));
        assert_eq!("tls://127.0.0.1:6514".parse(), Ok(Listen::Tls("127.0.0.1:6514".parse().unwrap())));
        assert_eq!("tls://127.0.0.1:6514".parse::<Listen>().unwrap().to_string(), "tls://127.0.0.1:6514");
        assert!("udp://localhost:514".parse::<Listen>().is_err());
    }

    #[test]
    fn host_and_port() {
        assert_eq!(split_host_port("cms1").unwrap(), ("cms1".into(), 22));
        assert_eq!(split_host_port("10.0.0.1:2222").unwrap(), ("10.0.0.1".into(), 2222));
        assert_eq!(split_host_port("[::1]:22").unwrap(), ("::1".into(), 22));
        assert_eq!(split_host_port("[fe80::1]").unwrap(), ("fe80::1".into(), 22));
        assert_eq!(split_host_port("::1").unwrap(), ("::1".into(), 22));
        for bad in
            ["", "h:99999", "h:0", "[::1]:0", "h:", "h:-1", "h:+22", "[::1", "[nope]:22", ":22", "a b:22", "[::1]x"]
        {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_urls() {
        let url = HttpUrl::parse("https://join.example.com/").unwrap();
        assert_eq!((url.tls, url.host.as_str(), url.port, url.path.as_str()), (true, "join.example.com", 443, "/"));
        let url = HttpUrl::parse("http://user:pw@[::1]:8080/a/b?c=d#e").unwrap();
        assert_eq!((url.tls, url.host.as_str(), url.port, url.path.as_str()), (false, "::1", 8080, "/a/b?c=d"));
        assert_eq!(url.authority(), "[::1]:8080");
        let url = HttpUrl::parse("HTTP://h?x=1").unwrap();
        assert_eq!((url.port, url.path.as_str(), url.authority().as_str()), (80, "/?x=1", "h"));
        for bad in [
            "",
            "join.example.com",
            "ftp://h/",
            "http://",
            "http:///x",
            "http://[::1",
            "http://[::1]x/",
            "http://[zz]/",
            "http://h:99999/",
            "http://h:0/",
            "http://h:/",
            "http://h:8a/",
            "http://::1/",
            "http://h h/",
            "http://h\n/",
            "http://h%41/",
            "http://user:pw@/",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
        // A password that a typo moved into the port is not repeated.
        let error = HttpUrl::parse("https://admin:s3cret/x@host/").unwrap_err();
        assert!(!error.contains("s3cret") && !error.contains("admin"), "{error}");
    }
}
