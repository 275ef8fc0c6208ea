//! The exit policy, in one place.
//!
//! - 0: everything asked for was done;
//! - 1: the command ran, but some of its work failed (later: a restart);
//! - 2: usage, configuration or input error (a file could not be read):
//!   whatever could be done was still done and reported;
//! - 3: refused for safety or host keys (used by `restart` and `watch`).

/// How a command ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// All done.
    Success,
    /// Done, but some input could not be read: exit 2.
    InputErrors,
}

/// Maps a command's result to the process exit code, printing the error.
pub fn code(result: anyhow::Result<Outcome>) -> i32 {
    match result {
        Ok(Outcome::Success) => 0,
        Ok(Outcome::InputErrors) => 2,
        Err(error) => {
            eprintln!("wbguard: error: {error:#}");
            2
        }
    }
}
