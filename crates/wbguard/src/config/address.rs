//! Addresses in the configuration and on the command line: an MMP's
//! `host[:port]`, a syslog listener's `udp://`/`tcp://`/`tls://ADDR:PORT`.

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

/// `host`, `host:port`, `[v6]:port`.
pub fn split_host_port(text: &str) -> anyhow::Result<(String, u16)> {
    let text = text.trim();
    if text.is_empty() {
        bail!("empty address");
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').context("unclosed [")?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().with_context(|| format!("bad port in '{text}'"))?,
            None if after.is_empty() => 22,
            None => bail!("unexpected '{after}' in '{text}'"),
        };
        return Ok((host.to_owned(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port: u16 = port.parse().with_context(|| format!("bad port in '{text}'"))?;
            if port == 0 {
                bail!("port 0 in '{text}'");
            }
            Ok((host.to_owned(), port))
        }
        _ => Ok((text.to_owned(), 22)),
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
}
