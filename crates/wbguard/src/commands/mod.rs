//! The commands, one module each. A command imports services and leaves,
//! never another command (a test in `tests/cli/layers.rs` checks it).
//!
//! `watch` and `demo` are Unix-only: they run the guard, which waits on
//! Unix signals (SIGHUP rereads its configuration) and follows log files
//! by inode; the demo also runs the simulator (see `main`).

pub mod analyze;
pub mod config;
#[cfg(all(unix, feature = "demo"))]
pub mod demo;
pub mod restart;
pub mod status;
pub mod trust;
#[cfg(unix)]
pub mod watch;
