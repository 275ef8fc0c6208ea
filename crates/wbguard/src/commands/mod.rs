//! The commands, one module each. A command imports services and leaves,
//! never another command (a test in `tests/cli/layers.rs` checks it).

pub mod analyze;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod restart;
pub mod status;
pub mod trust;
pub mod watch;
