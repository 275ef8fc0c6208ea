//! The live deployment: the session model advanced in (scaled) real time,
//! what each server logs, and the truth.
//!
//! One `World` sits behind a mutex shared by every server's SSH and HTTP
//! tasks, the clock and the control API. Every operation on it is short and
//! synchronous, so the lock is never held across an await.

use std::collections::VecDeque;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::cadence::{Cadence, Due};
use crate::scenario::{Release, Scenario};
use crate::session::Simulation;
use crate::syslog::{self, HeaderShape, LOCAL0_INFO, USER_INFO};

/// Local log lines each server keeps for the MMP's `syslog` command.
const RECENT_LINES: usize = 200;

/// One restart, as the truth API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct RestartRecord {
    /// Virtual time of the restart.
    pub time: DateTime<Utc>,
    /// MMP user who ran it.
    pub by: String,
    /// Where they came from.
    pub source: String,
    /// Live calls it dropped.
    pub dropped_real: u32,
    /// Leaked sessions it freed.
    pub freed_leaked: u32,
}

/// What one simulated server knows besides the session model.
#[derive(Debug, Clone)]
pub struct ServerState {
    /// Host name.
    pub name: String,
    /// CMS release.
    pub release: Release,
    /// Its recent local log lines (the MMP's view: no `<PRI>`).
    recent: VecDeque<String>,
    /// Web bridge restarts, in order.
    pub restarts: Vec<RestartRecord>,
    /// Until when (real time) the web bridge is down after a restart.
    down_until: Option<Instant>,
}

/// The output of an MMP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Text, lines ending with `\n`.
    pub text: String,
    /// Exit status for SSH exec: 0, or 1 for an error.
    pub status: u32,
}

/// The live deployment.
pub struct World {
    sim: Simulation,
    cadence: Cadence,
    rng: ChaCha8Rng,
    start: DateTime<Utc>,
    elapsed: i64,
    servers: Vec<ServerState>,
    /// How long (real time) a restarting web bridge stays down.
    restart_downtime: StdDuration,
    message: Vec<u8>,
    /// Virtual time stands still (a demo or a test looking at a fixed state).
    paused: bool,
}

impl World {
    /// A deployment at `start` with no sessions.
    pub fn new(
        scenario: Scenario,
        seed: u64,
        start: DateTime<Utc>,
        lines_per_record: u32,
        restart_downtime: StdDuration,
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00c0_ffee);
        let cadence = Cadence::new(&scenario, lines_per_record, &mut rng);
        let servers = scenario
            .servers
            .iter()
            .map(|s| ServerState {
                name: s.name.clone(),
                release: s.release,
                recent: VecDeque::new(),
                restarts: Vec::new(),
                down_until: None,
            })
            .collect();
        World {
            sim: Simulation::new(scenario, seed, start),
            cadence,
            rng,
            start,
            elapsed: 0,
            servers,
            restart_downtime,
            message: Vec::new(),
            paused: false,
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> DateTime<Utc> {
        self.sim.now()
    }

    /// The servers.
    pub fn servers(&self) -> &[ServerState] {
        &self.servers
    }

    /// Server index by name.
    pub fn server(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }

    /// Advances virtual time to `target`, a second at a time; every line
    /// logged on the way is appended to `wire` (with `<PRI>`, no newline).
    /// Without `wire` nothing is logged (a silent warm-up).
    pub fn advance_to(&mut self, target: DateTime<Utc>, mut wire: Option<&mut Vec<Vec<u8>>>) {
        let mut due = Vec::new();
        while self.sim.now() + Duration::seconds(1) <= target {
            self.sim.step();
            self.elapsed += 1;
            due.clear();
            self.cadence.due(self.elapsed, &mut self.rng, &mut due);
            let Some(wire) = wire.as_deref_mut() else {
                // Keep the call bridges' peak intervals as if reported.
                for &(_, what) in &due {
                    if let Due::CallBridgeStats(i) = what {
                        self.sim.callbridge_report(i);
                    }
                }
                continue;
            };
            due.sort_by_key(|(ms, _)| *ms);
            let now = self.sim.now();
            for &(ms, what) in &due {
                let time = now + Duration::milliseconds(i64::from(ms));
                let line = self.format(time, what);
                self.log(line, wire);
            }
        }
    }

    fn format(&mut self, time: DateTime<Utc>, what: Due) -> (usize, Vec<u8>) {
        let mut line = Vec::with_capacity(200);
        match what {
            Due::WebBridgeStats(i) => {
                let wb = &self.sim.webbridges[i];
                let (active, c, d) = (wb.active(), wb.connections, wb.disconnections);
                syslog::header(&mut line, HeaderShape::Wire, time, USER_INFO, &self.servers[i].name, "", "webbridge");
                syslog::webbridge_stats(&mut line, active, c, d);
                (i, line)
            }
            Due::CallBridgeStats(i) => {
                let sip = self.sim.callbridges[i].sip;
                let report = self.sim.callbridge_report(i);
                syslog::header(&mut line, HeaderShape::Wire, time, USER_INFO, &self.servers[i].name, "", "host:server");
                let legs_per_second = u32::from(report.call_legs > 0);
                syslog::callbridge_stats(&mut line, &report, sip, legs_per_second);
                (i, line)
            }
            Due::Noise => {
                let i = rand::Rng::gen_range(&mut self.rng, 0..self.servers.len());
                let (priority, program) = syslog::noise(&mut self.message, &mut self.rng);
                syslog::header(&mut line, HeaderShape::Wire, time, priority, &self.servers[i].name, "", program);
                line.extend_from_slice(&self.message);
                (i, line)
            }
        }
    }

    /// Keeps the line in the server's recent lines and queues it for syslog.
    fn log(&mut self, (server, line): (usize, Vec<u8>), wire: &mut Vec<Vec<u8>>) {
        let local = line.iter().position(|&b| b == b'>').map_or(&line[..], |gt| &line[gt + 1..]);
        let recent = &mut self.servers[server].recent;
        if recent.len() == RECENT_LINES {
            recent.pop_front();
        }
        recent.push_back(String::from_utf8_lossy(local).into_owned());
        wire.push(line);
    }

    /// Whether server `i`'s web bridge answers (it is not restarting).
    pub fn webbridge_up(&self, i: usize) -> bool {
        self.servers[i].down_until.is_none_or(|until| Instant::now() >= until)
    }

    /// Whether server `i`'s web bridge refuses joins because it is full.
    pub fn webbridge_full(&self, i: usize) -> bool {
        let wb = &self.sim.webbridges[i];
        wb.leaks && wb.active() >= self.sim.scenario().limit
    }

    /// Stops or restarts virtual time (the MMPs and pages keep answering).
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Whether virtual time stands still.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Scales the load (1.0 = the scenario's).
    pub fn set_load_factor(&mut self, factor: f64) {
        self.sim.set_load_factor(factor);
    }

    /// Changes the leak probability.
    pub fn set_leak_probability(&mut self, probability: f64) {
        self.sim.set_leak_probability(probability);
    }

    /// Runs an MMP command on server `i` for `user` from `source`; writes
    /// the `cli:` audit line.
    pub fn command(
        &mut self,
        i: usize,
        user: &str,
        source: &str,
        command: &str,
        wire: &mut Vec<Vec<u8>>,
    ) -> CommandOutput {
        let words: Vec<&str> = command.split_whitespace().collect();
        let now = self.sim.now();
        let mut line = Vec::new();
        syslog::header(&mut line, HeaderShape::Wire, now, LOCAL0_INFO, &self.servers[i].name, "", "cli");
        syslog::audit(&mut line, user, source, command.trim(), true);
        self.log((i, line), wire);
        super::commands::run(self, i, &words, user, source)
    }

    /// `webbridge restart` on server `i`.
    pub(super) fn restart_webbridge(&mut self, i: usize, user: &str, source: &str) {
        let outcome = self.sim.restart_webbridge(i);
        let server = &mut self.servers[i];
        server.down_until = Some(Instant::now() + self.restart_downtime);
        server.restarts.push(RestartRecord {
            time: self.sim.now(),
            by: user.to_owned(),
            source: source.to_owned(),
            dropped_real: outcome.dropped_real,
            freed_leaked: outcome.freed_leaked,
        });
    }

    /// The recent local log lines of server `i`.
    pub(super) fn recent(&self, i: usize) -> impl Iterator<Item = &str> {
        self.servers[i].recent.iter().map(String::as_str)
    }

    /// Everything the simulator knows, for the truth API.
    pub fn truth(&self) -> serde_json::Value {
        let servers: Vec<serde_json::Value> = self
            .servers
            .iter()
            .enumerate()
            .map(|(i, server)| {
                let wb = &self.sim.webbridges[i];
                let cb = &self.sim.callbridges[i];
                serde_json::json!({
                    "name": server.name,
                    "release": server.release.version(),
                    "webbridge": {
                        "leaks": wb.leaks,
                        "running": self.webbridge_up(i),
                        "active": wb.active(),
                        "real": wb.real,
                        "leaked": wb.leaked,
                        "connections": wb.connections,
                        "disconnections": wb.disconnections,
                        "refused_joins": wb.refused,
                        "restarts": server.restarts,
                    },
                    "callbridge": {"cma": cb.cma(), "cma_webrtc": cb.webrtc, "cma_desktop": cb.desktop, "call_legs": cb.call_legs()},
                })
            })
            .collect();
        let restarts: usize = self.servers.iter().map(|s| s.restarts.len()).sum();
        let dropped: u64 = self.sim.webbridges.iter().map(|w| w.dropped).sum();
        let refused: u64 = self.sim.webbridges.iter().map(|w| w.refused).sum();
        serde_json::json!({
            "time": self.sim.now(),
            "start": self.start,
            "paused": self.paused,
            "servers": servers,
            "totals": {"joins": self.sim.joins, "refused_joins": refused, "dropped_calls": dropped, "restarts": restarts},
        })
    }
}
