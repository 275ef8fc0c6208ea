//! The live deployment: the session model advanced in (scaled) real time,
//! what each server logs, and the truth.
//!
//! One `World` sits behind a mutex shared by every server's SSH and HTTP
//! tasks, the clock and the control API. Every operation on it is short and
//! synchronous, so the lock is never held across an await.
//!
//! Once live ([`World::go_live`]), every call and leg event of the model
//! becomes a CDR record of its call bridge, numbered by that call bridge's
//! `correlatorIndex` within its current `session`, and queued for the CDR
//! receivers ([`CdrOut`]). A call bridge restart starts a new session.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::cdr::record::Record;
use super::cdr::CdrOut;
use crate::cadence::{Cadence, Due};
use crate::scenario::{Release, Scenario};
use crate::session::{Guid, Leg, LegType, Simulation};
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
    /// Per call bridge: its id (the API's `/callBridges` object id), fixed
    /// for a seed and a server name.
    callbridge_ids: Vec<Guid>,
    /// Per call bridge: its CDR `session`, new at every (re)start.
    cdr_sessions: Vec<Arc<str>>,
    /// Per call bridge: the next `correlatorIndex` in its session.
    correlators: Vec<u64>,
    /// Where records go.
    cdr: CdrOut,
    /// Sessions joined by hand through a web bridge page (`POST
    /// /join/session`): their CMA leg and the web bridge they hold a
    /// session on.
    joined: std::collections::BTreeMap<Guid, usize>,
}

/// Why a join through a web bridge page was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// The web bridge is restarting.
    Restarting,
    /// It is at its session limit.
    Full,
}

/// What `GET /api/v1/system/status` tells of one call bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBridgeStatus {
    /// Since the call bridge (re)started, virtual time.
    pub uptime_seconds: i64,
    /// Whether the scenario is a cluster.
    pub cluster_enabled: bool,
    /// Live legs of every type.
    pub call_legs_active: u32,
    /// Most legs at once since the start.
    pub call_legs_max_active: u32,
    /// Legs ended since the start.
    pub call_legs_completed: u64,
    /// The next `correlatorIndex` (`cdrCorrelatorIndex`).
    pub cdr_correlator_index: u64,
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
        let mut ids = ChaCha8Rng::seed_from_u64(seed ^ 0x00ca_11b1);
        let callbridge_ids = scenario.servers.iter().map(|_| Guid::random(&mut ids)).collect();
        let cdr_sessions = scenario.servers.iter().map(|_| new_session()).collect();
        let correlators = vec![0; scenario.servers.len()];
        World {
            callbridge_ids,
            cdr_sessions,
            correlators,
            cdr: CdrOut::default(),
            sim: Simulation::new(scenario, seed, start),
            cadence,
            rng,
            start,
            elapsed: 0,
            servers,
            restart_downtime,
            message: Vec::new(),
            paused: false,
            joined: std::collections::BTreeMap::new(),
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> DateTime<Utc> {
        self.sim.now()
    }

    /// From now on, every call and leg event is a CDR record queued in `cdr`
    /// (the warm-up before this leaves none).
    pub fn go_live(&mut self, cdr: CdrOut) {
        // Without a receiver no event is recorded at all (a clock tick
        // would otherwise copy every leg started, for nothing).
        self.sim.record_events(cdr.active());
        self.cdr = cdr;
    }

    /// Turns the model's events into records, in order.
    fn flush_events(&mut self) {
        for event in self.sim.take_events() {
            let cb = event.callbridge;
            let record = Record::from_event(&event, self.correlators[cb]);
            self.correlators[cb] += 1;
            self.cdr.push(cb, &self.cdr_sessions[cb], record);
        }
    }

    /// Call bridge `i`'s id (`/api/v1/callBridges`, the CDR `callBridge`).
    pub fn callbridge_id(&self, i: usize) -> Guid {
        self.callbridge_ids[i]
    }

    /// Every call bridge's id, as text, in server order.
    pub fn callbridge_ids(&self) -> Vec<String> {
        self.callbridge_ids.iter().map(ToString::to_string).collect()
    }

    /// The live legs hosted by call bridge `i`, ordered by id.
    pub fn legs_on(&self, i: usize) -> impl Iterator<Item = &Leg> {
        self.sim.legs().filter(move |l| l.callbridge == i)
    }

    /// One live leg, if call bridge `i` hosts it.
    pub fn leg_on(&self, i: usize, id: Guid) -> Option<Leg> {
        self.sim.leg(id).filter(|l| l.callbridge == i).cloned()
    }

    /// Call bridge `i`'s status figures.
    pub fn callbridge_status(&self, i: usize) -> CallBridgeStatus {
        let cb = &self.sim.callbridges[i];
        CallBridgeStatus {
            uptime_seconds: cb.started.map_or(0, |s| (self.sim.now() - s).num_seconds()),
            cluster_enabled: self.servers.len() > 1,
            call_legs_active: cb.call_legs(),
            call_legs_max_active: cb.legs_max_active,
            call_legs_completed: cb.legs_completed,
            cdr_correlator_index: self.correlators[i],
        }
    }

    /// Starts a leg by hand on call bridge `i` (see
    /// [`Simulation::start_leg`]); its `callLegStart` is queued at once.
    pub fn start_leg(&mut self, i: usize, leg_type: LegType) -> Guid {
        let id = self.sim.start_leg(i, leg_type);
        self.flush_events();
        id
    }

    /// Ends a live leg; its `callLegEnd` is queued at once. A session
    /// joined by hand leaves its web bridge too (cleanly: no leak).
    pub fn end_leg(&mut self, id: Guid) -> Result<(), String> {
        self.sim.end_leg(id)?;
        self.flush_events();
        if let Some(webbridge) = self.joined.remove(&id) {
            let wb = &mut self.sim.webbridges[webbridge];
            wb.real -= 1;
            wb.disconnections += 1;
        }
        Ok(())
    }

    /// A user joins through web bridge `webbridge`'s page: a real session
    /// on it (its Stats count it, `c:` moves) and a live CMA leg on call
    /// bridge `callbridge`, until [`World::end_leg`] ends it, or a restart
    /// of the web bridge (a dropped call) or of the call bridge. Refused as
    /// a user would be while the web bridge restarts or is full.
    ///
    /// The leg is started as a by-hand CMA leg (so the session model's own
    /// sessions are untouched); the web bridge's session is kept here.
    pub fn join(&mut self, webbridge: usize, callbridge: usize) -> Result<Guid, JoinRefused> {
        if !self.webbridge_up(webbridge) {
            return Err(JoinRefused::Restarting);
        }
        if self.webbridge_full(webbridge) {
            return Err(JoinRefused::Full);
        }
        let leg = self.start_leg(callbridge, LegType::Acano);
        let wb = &mut self.sim.webbridges[webbridge];
        wb.real += 1;
        wb.connections += 1;
        self.joined.insert(leg, webbridge);
        Ok(leg)
    }

    /// Restarts call bridge `i` as a crash would: its legs vanish without
    /// records and its CDRs go on in a new session.
    pub fn restart_callbridge(&mut self, i: usize) {
        self.sim.restart_callbridge(i);
        self.flush_events();
        self.cdr_sessions[i] = new_session();
        self.correlators[i] = 0;
        // Sessions joined by hand whose leg went with it end on their web bridge.
        let gone: Vec<Guid> = self.joined.keys().filter(|&&leg| self.sim.leg(leg).is_none()).copied().collect();
        for leg in gone {
            let webbridge = self.joined.remove(&leg).expect("listed above");
            let wb = &mut self.sim.webbridges[webbridge];
            wb.real -= 1;
            wb.disconnections += 1;
        }
    }

    /// Makes every CDR sender post its last delivered batch once more.
    pub fn duplicate_cdr(&self) {
        self.cdr.duplicate_last();
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
            self.flush_events();
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
        // Sessions joined by hand on it are dropped with it: their calls end.
        let dropped_by_hand: Vec<Guid> =
            self.joined.iter().filter(|(_, &webbridge)| webbridge == i).map(|(&leg, _)| leg).collect();
        for &leg in &dropped_by_hand {
            self.joined.remove(&leg);
            let _ = self.sim.end_leg(leg);
            self.sim.webbridges[i].real -= 1;
        }
        let mut outcome = self.sim.restart_webbridge(i);
        let by_hand = u32::try_from(dropped_by_hand.len()).unwrap_or(u32::MAX);
        outcome.dropped_real += by_hand;
        self.sim.webbridges[i].dropped += u64::from(by_hand);
        self.flush_events();
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
                    "callbridge": {
                        "cma": cb.cma(), "cma_webrtc": cb.webrtc, "cma_desktop": cb.desktop, "call_legs": cb.call_legs(),
                        "cma_live": cb.cma(), "sip": cb.sip, "distribution_links": cb.links,
                        "id": self.callbridge_ids[i].to_string(), "cdr_session": &*self.cdr_sessions[i],
                        "restarts": cb.restarts,
                    },
                })
            })
            .collect();
        let restarts: usize = self.servers.iter().map(|s| s.restarts.len()).sum();
        let dropped: u64 = self.sim.webbridges.iter().map(|w| w.dropped).sum();
        let refused: u64 = self.sim.webbridges.iter().map(|w| w.refused).sum();
        let legs: Vec<serde_json::Value> = self
            .sim
            .legs()
            .map(|leg| {
                serde_json::json!({
                    "id": leg.id.to_string(),
                    "server": self.servers[leg.callbridge].name,
                    "type": leg.leg_type.as_str(),
                    "subType": leg.distribution_link.then_some("distributionLink"),
                    "webrtc": leg.webrtc,
                    "guest": leg.guest,
                    "by_hand": leg.by_hand,
                    "call": leg.call.to_string(),
                    "since": leg.since,
                })
            })
            .collect();
        serde_json::json!({
            "time": self.sim.now(),
            "start": self.start,
            "paused": self.paused,
            "servers": servers,
            "legs": legs,
            "cdr": {"receivers": self.cdr.stats()},
            "totals": {"joins": self.sim.joins, "refused_joins": refused, "dropped_calls": dropped, "restarts": restarts},
        })
    }
}

/// A fresh CDR session id: random each start (not from the seed), so a
/// receiver tells a restarted simulator from the same one.
fn new_session() -> Arc<str> {
    Guid::random(&mut rand::thread_rng()).to_string().into()
}
