//! Live progress of a restart run.
//!
//! On a terminal every server has a line that changes in place as its
//! restart goes (waiting, connecting, restarting, verifying, the result);
//! otherwise each step is a plain line of its own, for logs and cron mail.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// Where progress goes.
pub struct Progress {
    names: Vec<String>,
    /// `Some` on a terminal: the current line of each server.
    lines: Option<Mutex<Vec<String>>>,
}

impl Progress {
    /// Progress for `names`, live when standard output is a terminal.
    pub fn new(names: Vec<String>) -> Progress {
        let live = std::io::stdout().is_terminal() && std::env::var_os("TERM").is_some_and(|t| t != "dumb");
        Self::with_mode(names, live)
    }

    /// Progress in the given mode (tests choose).
    pub fn with_mode(names: Vec<String>, live: bool) -> Progress {
        let lines = live.then(|| {
            let lines: Vec<String> = names.iter().map(|_| "waiting".to_owned()).collect();
            let mut out = std::io::stdout().lock();
            for (name, line) in names.iter().zip(&lines) {
                let _ = writeln!(out, "{name}: {line}");
            }
            let _ = out.flush();
            Mutex::new(lines)
        });
        Progress { names, lines }
    }

    /// Server `index` is now doing `what`.
    pub fn set(&self, index: usize, what: &str) {
        let Some(lines) = &self.lines else {
            println!("{}: {what}", self.names[index]);
            return;
        };
        let mut lines = lines.lock().expect("progress lock is never poisoned");
        lines[index] = what.to_owned();
        // Redraw the block in place: up to its first line, then each line
        // cleared and written again.
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\x1b[{}A", lines.len());
        for (name, line) in self.names.iter().zip(lines.iter()) {
            let _ = writeln!(out, "\r\x1b[2K{name}: {line}");
        }
        let _ = out.flush();
    }
}
