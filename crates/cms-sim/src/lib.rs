//! cms-sim: a simulated Cisco Meeting Server deployment that knows the truth.
//!
//! Nobody here has a CMS, so the simulator stands in for one wherever wbguard
//! is developed, tested, benchmarked and demonstrated. Its session model
//! ([`session`]) runs in virtual time from a [`scenario`]: joins follow a
//! daily curve, calls are load-balanced over call bridges, some Web Bridge 2
//! sessions leak when they end, the web bridge refuses joins at its limit,
//! and a restart frees everything. [`syslog`] writes what such a deployment
//! logs, in every header shape CMS and syslog relays produce, and
//! [`genlog`] drives the two to write a log file with its ground truth.

pub mod cadence;
pub mod genlog;
pub mod live;
pub mod scenario;
pub mod scenario_file;
pub mod session;
pub mod syslog;
