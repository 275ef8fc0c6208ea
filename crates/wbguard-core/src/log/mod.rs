//! The CMS log grammar: raw lines in, typed records out.
//!
//! CMS writes "almost syslog" (see `DOMAIN.md`, "Log line format"). This
//! module finds the few lines that matter in a sea of noise and turns them
//! into [`Record`]s:
//!
//! - [`header`] splits a line into its envelope (time, host, program, message),
//!   tolerating every header shape CMS and the syslog servers in front of it
//!   produce;
//! - [`message`] parses the three messages wbguard cares about: Web Bridge 2
//!   `Stats`, Call Bridge `STATS:` and the MMP `cli:` audit;
//! - [`scan`] walks whole blocks of log text, finds candidate lines with one
//!   multi-pattern search and counts lines, records and malformed lines.
//!
//! Invariant: no input makes this module panic, and a malformed line is
//! counted by reason, never silently lost.

pub mod header;
pub mod message;
pub mod record;
pub mod scan;
pub mod timestamp;

pub use record::{AuditCommand, CallBridgeStats, Pair, Record, RecordBody, WebBridgeStats};
pub use scan::{LineCounts, Malformed, ParseContext, Scanner};
