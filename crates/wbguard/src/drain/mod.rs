//! Drain hooks: a web bridge taken out of its load balancer before a
//! restart, and made ready again after (issue 14).
//!
//! A service of the binary, in the "act" stage of the flow: the guard's
//! enforcer ([`crate::guard`]) calls [`run`] with [`Direction::Drain`] when the policy
//! says `drain`, and with [`Direction::Undrain`] once the restart is over (or the drain is given
//! up); `wbguard` never calls them on its own. The hook is the server's
//! `[[server]]` configuration ([`crate::config::drain`]): HAProxy's runtime
//! API ([`haproxy`]) or an operator's command ([`command`]).
//!
//! Invariants: every call is bounded in time ([`COMMAND_TIMEOUT`],
//! [`haproxy::TIMEOUT`]) and in what it reads (a few KiB of output); a hook
//! that did not confirm the state it was asked for is an error that says
//! why, so the guard never believes a web bridge drained (or ready) on a
//! guess; nothing here retries: the enforcer decides what a failure means.

pub mod command;
pub mod haproxy;

use std::time::Duration;

use crate::config::drain::DrainHook;
use crate::config::Server;

/// How long a drain or undrain command may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Which way a hook moves a web bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Out of the load balancer: no new sessions.
    Drain,
    /// Back in: ready for new sessions.
    Undrain,
}

/// Runs `server`'s hook in `direction`: what the load balancer confirmed
/// (in words), or why it failed. A server without a hook is an error.
pub async fn run(server: &Server, direction: Direction) -> anyhow::Result<String> {
    match &server.drain {
        None => anyhow::bail!("server {} has no drain hook", server.name),
        Some(DrainHook::Command { drain, undrain }) => {
            let words = match direction {
                Direction::Drain => drain,
                Direction::Undrain => undrain,
            };
            command::run(words, &server.name, COMMAND_TIMEOUT).await
        }
        Some(DrainHook::Haproxy { socket, backend, server: name }) => {
            let state = match direction {
                Direction::Drain => haproxy::State::Drain,
                Direction::Undrain => haproxy::State::Ready,
            };
            haproxy::set_state(socket, backend, name, state).await
        }
    }
}
