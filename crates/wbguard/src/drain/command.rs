//! A drain hook that is a command of the operator's: run without a shell,
//! with the server's name as its last argument, bounded in time and in
//! the output kept.
//!
//! Exit status 0 is success; anything else (a non-zero status, a signal,
//! a program that cannot start, the timeout) is a failure whose message
//! names the command and ends with the last of its output. Stdin is empty;
//! stdout and stderr are read to their end (so that a chatty command never
//! blocks on a full pipe) but only the first [`OUTPUT_KEPT`] bytes of each
//! are kept.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::text::printable;

/// Bytes of each of stdout and stderr kept for the message.
pub const OUTPUT_KEPT: usize = 4096;
/// Once the command exited, how long its output may still take to end (a
/// program it started in the background may hold the pipes open).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// Characters of output quoted in a message.
const QUOTED: usize = 300;

/// Reads `from` to its end, keeping the first [`OUTPUT_KEPT`] bytes in `into`.
async fn collect(mut from: impl AsyncRead + Unpin, into: Arc<Mutex<Vec<u8>>>) {
    let mut buffer = [0u8; 4096];
    while let Ok(n) = from.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        let mut kept = into.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let room = OUTPUT_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&buffer[..n.min(room)]);
    }
}

/// The output worth quoting: stderr if the command wrote any, else stdout;
/// trimmed, escaped and cut to [`QUOTED`] characters.
fn quote(stdout: &[u8], stderr: &[u8]) -> String {
    let chosen = if String::from_utf8_lossy(stderr).trim().is_empty() { stdout } else { stderr };
    let text = String::from_utf8_lossy(chosen);
    let text = printable(text.trim());
    let mut quoted: String = text.chars().take(QUOTED).collect();
    if text.chars().count() > QUOTED {
        quoted.push('…');
    }
    quoted
}

/// A command's process group, killed whole when this is dropped while it
/// holds the leader's id: on a timeout, and when the guard stops in the
/// middle of a command (`kill_on_drop` alone kills only the leader). It is
/// cleared once the leader is reaped, after which the id may be reused.
struct GroupKill(Option<i32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(leader) = self.0.take() {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(leader), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Runs `words` (program first) with `name` as the last argument, for at
/// most `timeout`: its output on success.
pub async fn run(words: &[String], name: &str, timeout: Duration) -> anyhow::Result<String> {
    let (program, arguments) = words.split_first().context("no program to run")?;
    // Only the program's name and the server's: the other arguments may
    // hold a token, and this text reaches logs, the status and webhooks.
    let base =
        std::path::Path::new(program).file_name().map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned());
    let shown = format!("`{} … {name}`", printable(&base));
    let mut command = tokio::process::Command::new(program);
    command.args(arguments).arg(name).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Its own process group, so that a timeout kills what it started too
    // (a shell script's `curl`, say), not only the script.
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command.kill_on_drop(true).spawn().with_context(|| format!("{shown} could not start"))?;
    let mut group = GroupKill(child.id().and_then(|pid| i32::try_from(pid).ok()));
    let (stdout, stderr) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let mut readers = tokio::task::JoinSet::new();
    if let Some(pipe) = child.stdout.take() {
        readers.spawn(collect(pipe, stdout.clone()));
    }
    if let Some(pipe) = child.stderr.take() {
        readers.spawn(collect(pipe, stderr.clone()));
    }
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => {
            // Reaped: its group id may be reused from now on.
            group.0 = None;
            status.with_context(|| format!("{shown}: waiting for it failed"))?
        }
        Err(_) => {
            drop(group);
            let _ = child.kill().await;
            readers.abort_all();
            anyhow::bail!("{shown} did not finish within {timeout:?} and was killed");
        }
    };
    let _ = tokio::time::timeout(OUTPUT_GRACE, async { while readers.join_next().await.is_some() {} }).await;
    readers.abort_all();
    let take = |kept: &Arc<Mutex<Vec<u8>>>| kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let output = quote(&take(&stdout), &take(&stderr));
    let said = if output.is_empty() { String::new() } else { format!(": {output}") };
    if status.success() {
        Ok(format!("{shown} succeeded{said}"))
    } else {
        let how = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_owned(),
        };
        anyhow::bail!("{shown} {how}{said}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into(), "hook".into()]
    }

    #[tokio::test]
    async fn success_failure_and_the_name_as_last_argument() {
        let ok = run(&sh("echo \"draining $1\""), "cms1", Duration::from_secs(5)).await.unwrap();
        // Only the program's name is shown: other arguments may hold a token.
        assert_eq!(ok, "`sh … cms1` succeeded: draining cms1");
        let failed = run(&sh("echo out; echo 'no such server' >&2; exit 3"), "cms1", Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(failed.ends_with("exited with status 3: no such server"), "{failed}");
        let missing = run(&["/nonexistent/lb".to_owned()], "cms1", Duration::from_secs(5)).await.unwrap_err();
        assert!(format!("{missing:#}").contains("`lb … cms1` could not start"), "{missing:#}");
    }

    #[tokio::test]
    async fn output_is_bounded_escaped_and_a_slow_command_is_killed() {
        // Far more output than is kept: read to the end, quoted in part.
        let chatty =
            run(&sh("head -c 1000000 /dev/zero | tr '\\0' x; printf '\\033[2J' >&2"), "cms1", Duration::from_secs(10))
                .await
                .unwrap();
        assert!(chatty.ends_with(r"\u{1b}[2J"), "{chatty}");
        let long = run(&sh("head -c 100000 /dev/zero | tr '\\0' y"), "cms1", Duration::from_secs(10)).await.unwrap();
        assert!(long.ends_with('…') && long.len() < 1000, "{long}");
        let started = std::time::Instant::now();
        let slow = run(&sh("sleep 30"), "cms1", Duration::from_millis(300)).await.unwrap_err().to_string();
        assert!(slow.contains("did not finish within 300ms and was killed"), "{slow}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// What a command started is killed with it when it runs over its time.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_slow_command_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > '{}'; wait", pid_file.display());
        run(&sh(&script), "cms1", Duration::from_secs(2)).await.unwrap_err();
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        // Gone, or a zombie waiting for whoever adopted it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => break,
                Ok(stat) if stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')) => break,
                Ok(stat) => assert!(std::time::Instant::now() < deadline, "still running: {stat}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
