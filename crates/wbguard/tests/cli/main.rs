//! End-to-end tests of the `wbguard` binary: real processes, real files,
//! real sockets, the simulator's servers and its truth. One test binary;
//! the shared harness is here, each command has its module.

mod analyze;
mod analyze_inputs;
mod cdr;
mod clock;
mod clusters;
mod cms_api;
mod config;
mod demo;
mod deploy;
mod drain;
mod files;
mod history;
mod layers;
mod live_calls;
mod lockout;
mod page;
mod restart;
mod sshd;
mod watch;
mod watch_inputs;
mod watch_limits;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs the wbguard binary with `args`, feeding `stdin` if given.
pub fn wbguard(args: &[&str], stdin: Option<&[u8]>) -> Output {
    wbguard_env(args, stdin, &[])
}

/// Runs the wbguard binary with extra environment variables.
pub fn wbguard_env(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wbguard"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wbguard starts");
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// A free TCP port on loopback (for a server the test starts next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A path as a `&str` argument.
pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// One HTTP/1.0 exchange with a test server: the status and the body.
pub fn http(address: std::net::SocketAddr, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let body = json.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned())
}

/// The simulator's truth API.
pub fn truth(control: std::net::SocketAddr) -> serde_json::Value {
    serde_json::from_str(&http(control, "GET", "/truth", None).1).unwrap()
}

/// A change through the simulator's control API; it must be accepted.
pub fn control(control: std::net::SocketAddr, json: &str) {
    let (status, body) = http(control, "POST", "/control", Some(json));
    assert_eq!(status, 200, "{body}");
}

/// A new ed25519 key pair without passphrase at `path` (mode 600) and
/// `path.pub`, as `ssh-keygen -t ed25519 -N ''` writes them: made by the
/// simulator, so that a test which only needs a key needs no OpenSSH.
pub fn keygen(path: &Path) {
    cms_sim::live::hostkey::client_key_pair(path, "wbguard-test").unwrap();
}
