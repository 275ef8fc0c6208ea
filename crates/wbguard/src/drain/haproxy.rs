//! HAProxy's runtime API, as a drain hook: `set server BACKEND/SERVER
//! state drain` (or `ready`), then `show servers state BACKEND` to see that
//! the state took.
//!
//! The runtime API is HAProxy's `stats socket` (a unix socket, or TCP),
//! which must be at `level admin` for `set server`. Each command is one
//! connection in HAProxy's non-interactive mode: the command line is sent,
//! the answer read to the end (HAProxy closes). `set server` answers an
//! empty line on success and a sentence otherwise ("No such server.",
//! "Permission denied"), which is reported as it is. In `show servers
//! state`, `srv_admin_state` is a set of flags: 0x01 is maintenance forced
//! through the API, 0x08 drain forced through the API (HAProxy's
//! `SRV_ADMF_FMAINT` and `SRV_ADMF_FDRAIN`).
//!
//! Bounds: each exchange (connect, send, answer) gets [`TIMEOUT`]; an
//! answer longer than [`ANSWER_LIMIT`] is an error.

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::drain::HaproxySocket;
use crate::text::printable;

/// How long one exchange with the runtime API may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The longest answer read: `show servers state` of one backend is about
/// 200 bytes a server.
pub const ANSWER_LIMIT: u64 = 1 << 20;
/// `srv_admin_state`: maintenance forced through the API.
const FORCED_MAINTENANCE: u32 = 0x01;
/// `srv_admin_state`: drain forced through the API.
const FORCED_DRAIN: u32 = 0x08;

/// The state a hook asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No new sessions; those open go on.
    Drain,
    /// Back in the rotation.
    Ready,
}

impl State {
    /// The word `set server ... state` takes.
    fn word(self) -> &'static str {
        match self {
            State::Drain => "drain",
            State::Ready => "ready",
        }
    }

    /// Whether `admin` (`srv_admin_state`) shows this state.
    fn shown_by(self, admin: u32) -> bool {
        match self {
            State::Drain => admin & FORCED_DRAIN != 0,
            State::Ready => admin & (FORCED_DRAIN | FORCED_MAINTENANCE) == 0,
        }
    }
}

async fn talk(mut stream: impl AsyncRead + AsyncWrite + Unpin, command: &str) -> std::io::Result<Vec<u8>> {
    stream.write_all(format!("{command}\n").as_bytes()).await?;
    stream.flush().await?;
    let mut answer = Vec::new();
    (&mut stream).take(ANSWER_LIMIT + 1).read_to_end(&mut answer).await?;
    Ok(answer)
}

/// Sends one command and reads the whole answer.
pub async fn exchange(socket: &HaproxySocket, command: &str) -> anyhow::Result<String> {
    let exchange = async {
        match socket {
            #[cfg(unix)]
            HaproxySocket::Unix(path) => talk(tokio::net::UnixStream::connect(path).await?, command).await,
            // Only the guard drains, and the Windows build has no guard.
            #[cfg(not(unix))]
            HaproxySocket::Unix(_) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "a unix socket cannot be reached on this system; use tcp://HOST:PORT",
            )),
            HaproxySocket::Tcp(host, port) => {
                talk(tokio::net::TcpStream::connect((host.as_str(), *port)).await?, command).await
            }
        }
    };
    let answer = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| {
            anyhow::anyhow!("HAProxy's runtime API at {socket} did not answer `{command}` within {TIMEOUT:?}")
        })?
        .with_context(|| format!("HAProxy's runtime API at {socket}, `{command}`"))?;
    anyhow::ensure!(
        answer.len() as u64 <= ANSWER_LIMIT,
        "HAProxy's runtime API at {socket} answered `{command}` with more than {ANSWER_LIMIT} bytes"
    );
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// `srv_admin_state` of `server` in `backend`, read off the answer to
/// `show servers state BACKEND` (its columns found by the header's names).
pub fn admin_state(answer: &str, backend: &str, server: &str) -> Result<u32, String> {
    let mut columns: Option<Vec<&str>> = None;
    for line in answer.lines() {
        if let Some(header) = line.strip_prefix('#') {
            columns = Some(header.split_whitespace().collect());
            continue;
        }
        let Some(columns) = &columns else { continue };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| columns.iter().position(|c| *c == name).and_then(|i| fields.get(i).copied());
        if field("be_name") == Some(backend) && field("srv_name") == Some(server) {
            return field("srv_admin_state")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("no srv_admin_state for {backend}/{server} in: {}", first_line(line)));
        }
    }
    match columns {
        Some(_) => Err(format!("no server {backend}/{server} in `show servers state {backend}`")),
        None => Err(format!("`show servers state {backend}` answered: {}", first_line(answer))),
    }
}

/// The first line of an answer, trimmed, escaped and cut short, to quote.
fn first_line(answer: &str) -> String {
    let line = answer.trim().lines().next().unwrap_or("(nothing)");
    printable(line).chars().take(200).collect()
}

/// Sets `backend/server` to `state` and checks that it took: in words,
/// what HAProxy now shows.
pub async fn set_state(socket: &HaproxySocket, backend: &str, server: &str, state: State) -> anyhow::Result<String> {
    let command = format!("set server {backend}/{server} state {}", state.word());
    let answer = exchange(socket, &command).await?;
    if !answer.trim().is_empty() {
        anyhow::bail!("HAProxy at {socket} refused `{command}`: {}", first_line(&answer));
    }
    let shown = exchange(socket, &format!("show servers state {backend}")).await?;
    let admin = admin_state(&shown, backend, server).map_err(|why| anyhow::anyhow!("HAProxy at {socket}: {why}"))?;
    if !state.shown_by(admin) {
        anyhow::bail!(
            "HAProxy at {socket} accepted `{command}` but shows {backend}/{server} with srv_admin_state {admin}"
        );
    }
    Ok(format!("HAProxy: {backend}/{server} set to {} (srv_admin_state {admin})", state.word()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOWN: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight\n\
                         3 webbridges 1 cms1 127.0.0.1 2 8 1\n3 webbridges 2 cms2 127.0.0.1 2 0 1\n\n";

    #[test]
    fn the_admin_state_is_found_by_the_headers_names() {
        assert_eq!(admin_state(SHOWN, "webbridges", "cms1"), Ok(8));
        assert_eq!(admin_state(SHOWN, "webbridges", "cms2"), Ok(0));
        assert!(admin_state(SHOWN, "webbridges", "cms3").unwrap_err().contains("no server webbridges/cms3"));
        assert!(admin_state("Can't find backend.\n\n", "wb", "cms1").unwrap_err().contains("Can't find backend."));
        assert!(admin_state("# be_name srv_name srv_admin_state\nwb cms1\n", "wb", "cms1").is_err());
        assert!(State::Drain.shown_by(8) && State::Drain.shown_by(9) && !State::Drain.shown_by(0));
        assert!(State::Ready.shown_by(0) && State::Ready.shown_by(0x20) && !State::Ready.shown_by(1));
    }

    /// A stand-in runtime API on a unix socket that answers each command
    /// from a script, and records what it was sent.
    async fn api(
        answers: Vec<&'static str>,
    ) -> (tempfile::TempDir, HaproxySocket, tokio::task::JoinHandle<Vec<String>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let heard = tokio::spawn(async move {
            let mut heard = Vec::new();
            for answer in answers {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut line = Vec::new();
                let mut byte = [0u8];
                while stream.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
                    line.push(byte[0]);
                }
                heard.push(String::from_utf8(line).unwrap());
                stream.write_all(answer.as_bytes()).await.unwrap();
            }
            heard
        });
        (dir, HaproxySocket::Unix(path), heard)
    }

    #[tokio::test]
    async fn a_refusal_or_a_state_that_did_not_take_is_an_error() {
        let (_dir, socket, heard) = api(vec!["\n", SHOWN]).await;
        let done = set_state(&socket, "webbridges", "cms1", State::Drain).await.unwrap();
        assert_eq!(done, "HAProxy: webbridges/cms1 set to drain (srv_admin_state 8)");
        assert_eq!(heard.await.unwrap(), ["set server webbridges/cms1 state drain", "show servers state webbridges"]);

        let (_dir, socket, _) = api(vec!["Permission denied\n\n"]).await;
        let refused = set_state(&socket, "webbridges", "cms1", State::Drain).await.unwrap_err().to_string();
        assert!(refused.ends_with("refused `set server webbridges/cms1 state drain`: Permission denied"), "{refused}");

        let (_dir, socket, _) = api(vec!["\n", SHOWN]).await;
        let untaken = set_state(&socket, "webbridges", "cms1", State::Ready).await.unwrap_err().to_string();
        assert!(untaken.contains("shows webbridges/cms1 with srv_admin_state 8"), "{untaken}");

        let gone = HaproxySocket::Unix("/nonexistent/admin.sock".into());
        let error = format!("{:#}", set_state(&gone, "wb", "cms1", State::Ready).await.unwrap_err());
        assert!(error.contains("/nonexistent/admin.sock"), "{error}");
    }
}
