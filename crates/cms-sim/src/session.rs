//! The session model of a CMS deployment, in virtual time.
//!
//! Time advances one second per [`Simulation::step`]: sessions due to end
//! end (a Web Bridge 2 session leaks with the scenario's probability: it
//! stays counted on its web bridge but its call is gone), then new ones join
//! at the scenario's rate. A joining WebRTC user reaches a web bridge by DNS
//! round robin (uniformly at random); a web bridge that is restarting or at
//! its limit refuses them. Every session's call lands on the least loaded
//! call bridge. Desktop and iOS clients skip the web bridge but count in
//! CMA. All randomness comes from one seeded generator, so a run is
//! repeatable.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use chrono::{DateTime, Duration, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::Scenario;

/// One web bridge's true state.
#[derive(Debug, Clone, Default)]
pub struct WebBridge {
    /// Whether the server runs Web Bridge 2 (release up to 2.9).
    pub leaks: bool,
    /// Sessions with a live call.
    pub real: u32,
    /// Leaked sessions: ended, never released.
    pub leaked: u32,
    /// `c:` counter: sessions created since the last restart.
    pub connections: u64,
    /// `d:` counter: sessions released since the last restart.
    pub disconnections: u64,
    /// While restarting, until this time.
    pub down_until: Option<DateTime<Utc>>,
    /// Joins refused (at the limit or down), in all.
    pub refused: u64,
    /// Restarts, in all.
    pub restarts: u64,
    /// Real sessions dropped by restarts, in all.
    pub dropped: u64,
}

impl WebBridge {
    /// What its `Stats` line says: sessions, leaked ones included.
    pub fn active(&self) -> u32 {
        self.real + self.leaked
    }
}

/// One call bridge's true state.
#[derive(Debug, Clone, Default)]
pub struct CallBridge {
    /// CMA sessions through a web bridge (WebRTC).
    pub webrtc: u32,
    /// CMA desktop and iOS sessions.
    pub desktop: u32,
    /// Largest CMA count since the last report.
    pub cma_peak: u32,
    /// SIP call legs (noise in the CMA arithmetic, but logged).
    pub sip: u32,
    /// Largest call leg count since the last report.
    pub legs_peak: u32,
}

impl CallBridge {
    /// CMA sessions on this call bridge.
    pub fn cma(&self) -> u32 {
        self.webrtc + self.desktop
    }

    /// Call legs on this call bridge.
    pub fn call_legs(&self) -> u32 {
        self.cma() + self.sip
    }

    fn note_peaks(&mut self) {
        self.cma_peak = self.cma_peak.max(self.cma());
        self.legs_peak = self.legs_peak.max(self.call_legs());
    }
}

/// A call bridge report: `current/peak` since the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBridgeReport {
    /// CMA now.
    pub cma: u32,
    /// CMA peak since the previous report.
    pub cma_peak: u32,
    /// Call legs now.
    pub call_legs: u32,
    /// Call legs peak since the previous report.
    pub legs_peak: u32,
}

/// What a web bridge restart did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartOutcome {
    /// Live calls dropped.
    pub dropped_real: u32,
    /// Leaked sessions freed.
    pub freed_leaked: u32,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    webbridge: Option<usize>,
    callbridge: usize,
    desktop: bool,
}

/// A running simulation.
#[derive(Debug, Clone)]
pub struct Simulation {
    scenario: Scenario,
    rng: ChaCha8Rng,
    now: DateTime<Utc>,
    next_id: u64,
    sessions: HashMap<u64, Session>,
    /// `(end time in seconds, session id)`; ids of dropped sessions stay
    /// here until due and are then skipped.
    ends: BinaryHeap<Reverse<(i64, u64)>>,
    /// Multiplies the scenario's load (a live control).
    load_factor: f64,
    /// Per server.
    pub webbridges: Vec<WebBridge>,
    /// Per server.
    pub callbridges: Vec<CallBridge>,
    /// Joins accepted, in all.
    pub joins: u64,
}

impl Simulation {
    /// A deployment with no sessions at `start`.
    pub fn new(scenario: Scenario, seed: u64, start: DateTime<Utc>) -> Self {
        let webbridges = scenario
            .servers
            .iter()
            .map(|s| WebBridge { leaks: s.release.has_webbridge2(), ..WebBridge::default() })
            .collect();
        let callbridges = vec![CallBridge::default(); scenario.servers.len()];
        Simulation {
            scenario,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: start,
            next_id: 0,
            sessions: HashMap::new(),
            ends: BinaryHeap::new(),
            load_factor: 1.0,
            webbridges,
            callbridges,
            joins: 0,
        }
    }

    /// The scenario simulated.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The current virtual time.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// Scales the load (1.0 = the scenario's).
    pub fn set_load_factor(&mut self, factor: f64) {
        self.load_factor = factor.max(0.0);
    }

    /// Changes the leak probability per ended Web Bridge 2 session.
    pub fn set_leak_probability(&mut self, probability: f64) {
        self.scenario.leak_probability = probability.clamp(0.0, 1.0);
    }

    /// Advances one second: sessions end, then new ones join.
    pub fn step(&mut self) {
        self.now += Duration::seconds(1);
        let now_s = self.now.timestamp();
        while let Some(&Reverse((end, id))) = self.ends.peek() {
            if end > now_s {
                break;
            }
            self.ends.pop();
            if let Some(session) = self.sessions.remove(&id) {
                self.end(session);
            }
        }
        for webbridge in &mut self.webbridges {
            if webbridge.down_until.is_some_and(|until| until <= self.now) {
                webbridge.down_until = None;
            }
        }
        let rate = self.scenario.join_rate(self.now) * self.load_factor;
        for _ in 0..poisson(&mut self.rng, rate) {
            self.join();
        }
        // SIP legs drift towards a third of the CMA load.
        let sip_target = (self.scenario.target_sessions(self.now) * self.load_factor * 0.3) as u32;
        let n = self.callbridges.len().max(1) as u32;
        for callbridge in &mut self.callbridges {
            if self.rng.gen_bool(0.01) {
                let target = sip_target / n;
                callbridge.sip =
                    if callbridge.sip < target { callbridge.sip + 1 } else { callbridge.sip.saturating_sub(1) };
            }
            callbridge.note_peaks();
        }
    }

    fn join(&mut self) {
        let desktop = self.rng.gen_bool(self.scenario.desktop_share.clamp(0.0, 1.0));
        let webbridge = if desktop {
            None
        } else {
            let index = self.rng.gen_range(0..self.webbridges.len());
            let limit = self.scenario.limit;
            let wb = &mut self.webbridges[index];
            if wb.down_until.is_some() || (wb.leaks && wb.active() >= limit) {
                wb.refused += 1;
                return;
            }
            // A 3.x server's Web Bridge 3 carries the session and never leaks.
            wb.leaks.then_some(index)
        };
        let callbridge = self.least_loaded_callbridge();
        if let Some(index) = webbridge {
            let wb = &mut self.webbridges[index];
            wb.real += 1;
            wb.connections += 1;
        }
        let cb = &mut self.callbridges[callbridge];
        if desktop {
            cb.desktop += 1;
        } else {
            cb.webrtc += 1;
        }
        cb.note_peaks();
        let mean = self.scenario.mean_session.num_seconds() as f64;
        let length = (-mean * (1.0 - self.rng.gen::<f64>()).ln()).clamp(60.0, 6.0 * 3600.0) as i64;
        let id = self.next_id;
        self.next_id += 1;
        self.sessions.insert(id, Session { webbridge, callbridge, desktop });
        self.ends.push(Reverse((self.now.timestamp() + length, id)));
        self.joins += 1;
    }

    fn least_loaded_callbridge(&mut self) -> usize {
        let least = self.callbridges.iter().map(CallBridge::cma).min().unwrap_or(0);
        let candidates: Vec<usize> =
            (0..self.callbridges.len()).filter(|&i| self.callbridges[i].cma() == least).collect();
        candidates[self.rng.gen_range(0..candidates.len())]
    }

    fn end(&mut self, session: Session) {
        let cb = &mut self.callbridges[session.callbridge];
        if session.desktop {
            cb.desktop -= 1;
        } else {
            cb.webrtc -= 1;
        }
        if let Some(index) = session.webbridge {
            let leak = self.rng.gen_bool(self.scenario.leak_probability.clamp(0.0, 1.0));
            let wb = &mut self.webbridges[index];
            wb.real -= 1;
            if leak {
                wb.leaked += 1;
            } else {
                wb.disconnections += 1;
            }
        }
    }

    /// `webbridge restart` on server `index`: every session on it goes, real
    /// and leaked, the counters reset, and it is down for a few seconds.
    pub fn restart_webbridge(&mut self, index: usize) -> RestartOutcome {
        let dropped: Vec<u64> =
            self.sessions.iter().filter(|(_, s)| s.webbridge == Some(index)).map(|(&id, _)| id).collect();
        for id in &dropped {
            let session = self.sessions.remove(id).expect("listed above");
            let cb = &mut self.callbridges[session.callbridge];
            cb.webrtc -= 1;
        }
        let wb = &mut self.webbridges[index];
        let outcome = RestartOutcome { dropped_real: wb.real, freed_leaked: wb.leaked };
        debug_assert_eq!(wb.real as usize, dropped.len());
        wb.real = 0;
        wb.leaked = 0;
        wb.connections = 0;
        wb.disconnections = 0;
        wb.restarts += 1;
        wb.dropped += u64::from(outcome.dropped_real);
        wb.down_until = Some(self.now + self.scenario.restart_downtime);
        outcome
    }

    /// A call bridge's STATS figures; starts a new peak interval.
    pub fn callbridge_report(&mut self, index: usize) -> CallBridgeReport {
        let cb = &mut self.callbridges[index];
        let report = CallBridgeReport {
            cma: cb.cma(),
            cma_peak: cb.cma_peak,
            call_legs: cb.call_legs(),
            legs_peak: cb.legs_peak,
        };
        cb.cma_peak = cb.cma();
        cb.legs_peak = cb.call_legs();
        report
    }
}

/// A Poisson-distributed count with mean `lambda` (Knuth; the rates here
/// are well below one per second).
fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    let threshold = (-lambda).exp();
    let mut product = rng.gen::<f64>();
    let mut count = 0;
    while product > threshold && count < 10_000 {
        product *= rng.gen::<f64>();
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn run(days: i64, seed: u64) -> Simulation {
        let start = Utc.with_ymd_and_hms(2024, 3, 4, 0, 0, 0).unwrap();
        let mut sim = Simulation::new(Scenario::with_servers(4), seed, start);
        for _ in 0..days * 86_400 {
            sim.step();
        }
        sim
    }

    #[test]
    fn sessions_leak_and_counts_stay_consistent() {
        let sim = run(2, 7);
        let webrtc: u32 = sim.callbridges.iter().map(|c| c.webrtc).sum();
        let real: u32 = sim.webbridges.iter().map(|w| w.real).sum();
        assert_eq!(webrtc, real, "every real web bridge session has its call");
        let leaked: u32 = sim.webbridges.iter().map(|w| w.leaked).sum();
        // ~480 sessions per web bridge a weekday, 2% leak: about 40 in two days.
        assert!((15..=80).contains(&leaked), "{leaked}");
        assert!(sim.joins > 2_000);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let a = run(1, 3);
        let b = run(1, 3);
        let c = run(1, 4);
        let state = |s: &Simulation| s.webbridges.iter().map(|w| (w.real, w.leaked, w.connections)).collect::<Vec<_>>();
        assert_eq!(state(&a), state(&b));
        assert_ne!(state(&a), state(&c));
    }

    #[test]
    fn restart_frees_everything_and_refuses_while_down() {
        let mut sim = run(1, 1);
        let before = sim.webbridges[0].clone();
        let outcome = sim.restart_webbridge(0);
        assert_eq!((outcome.dropped_real, outcome.freed_leaked), (before.real, before.leaked));
        assert_eq!(sim.webbridges[0].active(), 0);
        let webrtc: u32 = sim.callbridges.iter().map(|c| c.webrtc).sum();
        assert_eq!(webrtc, sim.webbridges.iter().map(|w| w.real).sum::<u32>());
        assert!(sim.webbridges[0].down_until.is_some());
    }

    #[test]
    fn the_limit_refuses_joins() {
        let start = Utc.with_ymd_and_hms(2024, 3, 4, 0, 0, 0).unwrap();
        let mut scenario = Scenario::with_servers(1);
        scenario.leak_probability = 1.0;
        scenario.mean_session = Duration::minutes(2);
        let mut sim = Simulation::new(scenario, 1, start);
        for _ in 0..86_400 {
            sim.step();
        }
        assert_eq!(sim.webbridges[0].active(), 149);
        assert!(sim.webbridges[0].refused > 0);
    }
}
