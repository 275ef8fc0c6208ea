//! Faults injected into simulated servers, so that clients can be tested
//! against the ways real servers fail.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How a server's MMP misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// It behaves.
    #[default]
    None,
    /// Its SSH port is closed: connections are refused.
    Refuse,
    /// It accepts connections and never answers.
    Blackhole,
    /// It authenticates, then never answers a request.
    HangAfterAuth,
    /// Every command takes this long.
    Slow(Duration),
}

/// A fault as the control API names it.
#[derive(Debug, Clone, Deserialize)]
pub struct FaultRequest {
    /// Server name.
    pub server: String,
    /// `none`, `refuse`, `blackhole`, `hang-after-auth` or `slow`.
    pub fault: Option<String>,
    /// Seconds per command for `slow`.
    pub seconds: Option<f64>,
    /// Lock the user out after this many wrong passwords (0: never).
    pub lockout_after: Option<u32>,
    /// For how long, in seconds (default 300).
    pub lockout_seconds: Option<u64>,
}

impl FaultRequest {
    /// The fault asked for, if any.
    pub fn fault(&self) -> Result<Option<Fault>, String> {
        let Some(name) = self.fault.as_deref() else { return Ok(None) };
        Ok(Some(match name {
            "none" => Fault::None,
            "refuse" => Fault::Refuse,
            "blackhole" => Fault::Blackhole,
            "hang-after-auth" => Fault::HangAfterAuth,
            "slow" => Fault::Slow(Duration::from_secs_f64(self.seconds.unwrap_or(5.0).clamp(0.0, 3600.0))),
            other => {
                return Err(format!("unknown fault '{other}' (none, refuse, blackhole, hang-after-auth, slow)"));
            }
        }))
    }
}

#[derive(Debug, Default, Clone)]
struct ServerFaults {
    fault: Fault,
    lockout_after: u32,
    lockout_for: Duration,
    failures: u32,
    locked_until: Option<Instant>,
}

/// The faults of every server.
#[derive(Debug)]
pub struct Faults {
    servers: Mutex<Vec<ServerFaults>>,
}

impl Faults {
    /// No faults on `n` servers.
    pub fn new(n: usize) -> Self {
        Faults { servers: Mutex::new(vec![ServerFaults::default(); n]) }
    }

    fn with<T>(&self, server: usize, f: impl FnOnce(&mut ServerFaults) -> T) -> T {
        f(&mut self.servers.lock().expect("the faults lock is never poisoned")[server])
    }

    /// The fault in force on `server`.
    pub fn get(&self, server: usize) -> Fault {
        self.with(server, |s| s.fault)
    }

    /// Sets the fault of `server`.
    pub fn set(&self, server: usize, fault: Fault) {
        self.with(server, |s| s.fault = fault);
    }

    /// Locks the user out of `server` after `attempts` wrong passwords in a
    /// row, for `duration` (0 attempts: never).
    pub fn set_lockout(&self, server: usize, attempts: u32, duration: Duration) {
        self.with(server, |s| {
            s.lockout_after = attempts;
            s.lockout_for = duration;
            s.failures = 0;
            s.locked_until = None;
        });
    }

    /// Whether logins to `server` are refused now.
    pub fn locked_out(&self, server: usize, now: Instant) -> bool {
        self.with(server, |s| s.locked_until.is_some_and(|until| now < until))
    }

    /// Counts a wrong password.
    pub fn login_failed(&self, server: usize, now: Instant) {
        self.with(server, |s| {
            s.failures += 1;
            if s.lockout_after > 0 && s.failures >= s.lockout_after {
                s.locked_until = Some(now + s.lockout_for);
                s.failures = 0;
            }
        });
    }

    /// A good login resets the count.
    pub fn login_succeeded(&self, server: usize) {
        self.with(server, |s| s.failures = 0);
    }
}
