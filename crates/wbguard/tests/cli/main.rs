//! End-to-end tests of the `wbguard` binary: real processes, real files,
//! real sockets, the simulator's servers and its truth. One test binary;
//! the shared harness is here, each command has its module.

mod analyze;
mod restart;
mod sshd;
mod watch;

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

/// A path as a `&str` argument.
pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}
