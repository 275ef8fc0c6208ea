//! When each server logs what: the `Stats` and `STATS:` timers, and noise.
//!
//! Each server's timers run at their own phase (real servers do not tick
//! together), and noise lines are spread so that about one line in
//! `lines_per_record` is a record. Shared by `gen-log` and the live
//! simulator, so both log alike.

use rand::Rng;

use crate::scenario::Scenario;

/// A line due in one second of virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Server `i`'s web bridge `Stats`.
    WebBridgeStats(usize),
    /// Server `i`'s call bridge `STATS:`.
    CallBridgeStats(usize),
    /// A line of ordinary CMS noise.
    Noise,
}

/// The timers of every server.
#[derive(Debug, Clone)]
pub struct Cadence {
    stats_every: i64,
    callbridge_every: i64,
    /// Per server: `(second within the interval, millisecond)`.
    stats_phase: Vec<(i64, u16)>,
    callbridge_phase: Vec<(i64, u16)>,
    /// Whether server `i` runs Web Bridge 2 (and so logs `Stats`).
    webbridge2: Vec<bool>,
    noise_per_second: f64,
    noise_carry: f64,
}

impl Cadence {
    /// Timers for `scenario`'s servers, phases drawn from `rng`.
    pub fn new(scenario: &Scenario, lines_per_record: u32, rng: &mut impl Rng) -> Self {
        let stats_every = scenario.stats_interval.num_seconds().max(1);
        let callbridge_every = scenario.callbridge_interval.num_seconds().max(1);
        let servers = &scenario.servers;
        let stats_phase = servers.iter().map(|_| (rng.gen_range(0..stats_every), rng.gen_range(0..1000u16))).collect();
        let callbridge_phase =
            servers.iter().map(|_| (rng.gen_range(0..callbridge_every), rng.gen_range(0..1000u16))).collect();
        let webbridge2: Vec<bool> = servers.iter().map(|s| s.release.has_webbridge2()).collect();
        let records_per_second = webbridge2.iter().filter(|&&w| w).count() as f64 / stats_every as f64
            + servers.len() as f64 / callbridge_every as f64;
        Cadence {
            stats_every,
            callbridge_every,
            stats_phase,
            callbridge_phase,
            webbridge2,
            noise_per_second: records_per_second * f64::from(lines_per_record.max(1) - 1),
            noise_carry: 0.0,
        }
    }

    /// Appends the lines due in second `elapsed` (since the start), each
    /// with its millisecond within the second, in no particular order.
    pub fn due(&mut self, elapsed: i64, rng: &mut impl Rng, out: &mut Vec<(u16, Due)>) {
        for (i, &leaks) in self.webbridge2.iter().enumerate() {
            if leaks && elapsed % self.stats_every == self.stats_phase[i].0 {
                out.push((self.stats_phase[i].1, Due::WebBridgeStats(i)));
            }
            if elapsed % self.callbridge_every == self.callbridge_phase[i].0 {
                out.push((self.callbridge_phase[i].1, Due::CallBridgeStats(i)));
            }
        }
        self.noise_carry += self.noise_per_second;
        let noise = self.noise_carry.floor();
        self.noise_carry -= noise;
        for _ in 0..noise as u32 {
            out.push((rng.gen_range(0..1000), Due::Noise));
        }
    }
}
