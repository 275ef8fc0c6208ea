//! wbguard-core: the pure heart of wbguard.
//!
//! Everything that knows about Cisco Meeting Server's logs and about the
//! Web Bridge 2 session leak (CSCvt73723) lives here, and nothing here does
//! I/O or reads the clock: time is always an argument. That keeps the rules
//! testable without a runtime and lets tests replay months in milliseconds.
//!
//! The data flows one way: [`log`] turns raw CMS log lines into typed
//! [`log::Record`]s, and [`model`] folds records into per web bridge and per
//! cluster state from which it derives the leak bounds, rates and forecasts.

pub mod log;
pub mod model;
pub mod policy;
