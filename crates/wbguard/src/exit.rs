//! The exit policy, in one place.
//!
//! - 0: everything asked for was done (restarts: restarted and verified);
//! - 1: the command ran, but some of its work failed (a restart failed);
//! - 2: usage, configuration or input error (a file could not be read):
//!   whatever could be done was still done and reported;
//! - 3: refused for safety or over host keys.

/// How a command ended when it did not fail outright. Ordered by
/// severity, so that the worst outcome of several wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// All done.
    Success,
    /// Some of the work failed: exit 1.
    Failures,
    /// Some input could not be read: exit 2.
    InputErrors,
    /// Refused for safety or host keys: exit 3.
    Refused,
}

/// Maps a command's result to the process exit code, printing the error.
pub fn code(result: anyhow::Result<Outcome>) -> i32 {
    match result {
        Ok(Outcome::Success) => 0,
        Ok(Outcome::Failures) => 1,
        Ok(Outcome::InputErrors) => 2,
        Ok(Outcome::Refused) => 3,
        Err(error) => {
            eprintln!("wbguard: error: {error:#}");
            2
        }
    }
}
