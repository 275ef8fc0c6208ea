//! The session model of a CMS deployment, in virtual time.
//!
//! Time advances one second per [`Simulation::step`]: sessions due to end
//! end (a Web Bridge 2 session leaks with the scenario's probability: it
//! stays counted on its web bridge but its call is gone), then new ones join
//! at the scenario's rate. A joining WebRTC user reaches a web bridge by DNS
//! round robin (uniformly at random among the web bridges not drained); a
//! web bridge that is restarting, drained or at its limit refuses them.
//! Every session's call lands on the least loaded call bridge. Desktop and
//! iOS clients skip the web bridge but count in CMA. All randomness comes
//! from one seeded generator, so a run is repeatable.
//!
//! With the scenario's `pool` on, a load balancer stands in front of the
//! web bridges instead of DNS, as HAProxy's `leastconn`: each join goes to
//! the web bridge with the fewest real sessions (the connections a balancer
//! holds; leaked sessions hold none) among those that are up, not drained
//! ([`Simulation::set_drained`]) and not full, ties broken at random; a join
//! is refused only when every web bridge is down, drained or full, and is
//! then counted on the one with the fewest real sessions. A drained web
//! bridge keeps its sessions: they end as they would. Web Bridge 3
//! sessions (3.x servers) are not counted per web bridge, so a pool mixing
//! releases sends most joins to the 3.x servers.
//!
//! A session's CMA leg starts in the very second its web bridge's `c:`
//! counter moves (both in the join), and a `Stats` line stamped in that
//! second already counts it: the leg's start (whole seconds, as CDRs give
//! it) is never later than the first `Stats` line whose `c:` includes it.
//! [`Simulation::live_cma_starts`] lists the start times of every live CMA
//! leg, the set [`CallBridge::cma`] counts.
//!
//! Every live call leg has an identity ([`Leg`]): a GUID, a type (`acano`
//! for CMA clients, `sip` for room systems), the call it is in and when it
//! began. SIP legs drift towards a third of the CMA load, so a call bridge
//! can carry calls with no CMA leg; in a cluster, a call that grows gets a
//! distribution link to another call bridge (a pair of `acano` legs of
//! subType `distributionLink`, which are not people). With
//! [`Simulation::record_events`] on, every call and leg start and end is
//! kept as a [`CdrEvent`] for the CDR sender.
//!
//! Invariants: a call bridge's `webrtc + desktop` are its live `acano` legs
//! that are not distribution links, `sip` its live SIP legs, `links` its
//! distribution links; the sum of `webrtc` over call bridges equals the
//! sum of `real` over Web Bridge 2 servers plus the WebRTC legs through a
//! Web Bridge 3. The identities, calls and links draw from a second
//! generator, so the counts (and `gen-log`'s output) are the same for a
//! seed as before legs had identities.
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use chrono::{DateTime, Duration, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::Scenario;

/// Calls a leg may join on its call bridge before the model opens a new one
/// instead; keeps meetings small and the call list short.
const JOIN_EXISTING_CALL: f64 = 0.6;
/// Non-link legs a call needs before it may get a distribution link.
const LINK_AT_LEGS: u32 = 3;
/// Probability that a call reaching [`LINK_AT_LEGS`] gets a link.
const LINK_PROBABILITY: f64 = 0.5;
/// Share of room systems left connected after their meeting, for one to
/// four hours: the calls with no CMA leg in them.
const SIP_LINGER: f64 = 0.2;

/// An object id as CMS writes it: `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub u128);

impl Guid {
    /// A random (version 4 shaped) GUID from `rng`.
    pub fn random(rng: &mut impl Rng) -> Guid {
        let bits: u128 = rng.gen();
        Guid((bits & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62))
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xffff_ffff_ffff
        )
    }
}

impl std::str::FromStr for Guid {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let groups: Vec<&str> = text.split('-').collect();
        let shaped = groups.len() == 5
            && groups
                .iter()
                .zip([8, 4, 4, 4, 12])
                .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
        if !shaped {
            return Err(format!("'{text}' is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"));
        }
        u128::from_str_radix(&groups.concat(), 16).map(Guid).map_err(|e| format!("'{text}': {e}"))
    }
}

/// A call leg's `<type>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegType {
    /// Every CMA client: WebRTC through a web bridge, desktop, iOS; and
    /// distribution links.
    Acano,
    /// A SIP endpoint (a room system).
    Sip,
}

impl LegType {
    /// As CMS writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            LegType::Acano => "acano",
            LegType::Sip => "sip",
        }
    }
}

impl std::str::FromStr for LegType {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "acano" => Ok(LegType::Acano),
            "sip" => Ok(LegType::Sip),
            other => Err(format!("unknown leg type '{other}' (acano or sip)")),
        }
    }
}

/// One live call leg.
#[derive(Debug, Clone, PartialEq)]
pub struct Leg {
    /// Its id (`<callLeg id>`).
    pub id: Guid,
    /// The call bridge hosting it (server index).
    pub callbridge: usize,
    /// `acano` or `sip`.
    pub leg_type: LegType,
    /// A leg between two clustered call bridges, not a person
    /// (`<subType>distributionLink`).
    pub distribution_link: bool,
    /// A WebRTC guest login (`<guestConnection>true`).
    pub guest: bool,
    /// Through a web bridge (WebRTC, Web Bridge 2 or 3); false for desktop
    /// and iOS clients, SIP legs and links.
    pub webrtc: bool,
    /// The call it is in.
    pub call: Guid,
    /// When it started (virtual time).
    pub since: DateTime<Utc>,
    /// `<displayName>`: free text, may hold `&` or `<`.
    pub display_name: String,
    /// `<remoteParty>`.
    pub remote_party: String,
    /// Started through the control API; ends only through it (or a call
    /// bridge restart).
    pub by_hand: bool,
}

/// What happened to calls and legs, for the CDR sender.
#[derive(Debug, Clone, PartialEq)]
pub enum CdrEventKind {
    /// A call began (its first leg joined).
    CallStart {
        /// The call.
        call: Guid,
        /// Its name (a space's name).
        name: String,
    },
    /// A call ended (its last leg left).
    CallEnd {
        /// The call.
        call: Guid,
        /// Legs that were in it, in all.
        legs_completed: u32,
        /// Most legs at once.
        legs_max_active: u32,
        /// How long it lasted.
        duration_seconds: i64,
    },
    /// A leg began.
    LegStart(Leg),
    /// A leg connected to its call (the `callLegUpdate` after the start).
    LegConnected {
        /// The leg.
        leg: Guid,
        /// Its call.
        call: Guid,
    },
    /// A leg ended.
    LegEnd {
        /// The leg.
        leg: Guid,
        /// `remoteTeardown`, or `timeout` for a WebRTC leg dropped by a web
        /// bridge restart.
        reason: &'static str,
        /// How long it lasted.
        duration_seconds: i64,
    },
}

/// One [`CdrEventKind`] on one call bridge at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct CdrEvent {
    /// Virtual time.
    pub time: DateTime<Utc>,
    /// The call bridge (server index) that records it.
    pub callbridge: usize,
    /// What happened.
    pub kind: CdrEventKind,
}

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
    /// Drained at the load balancer (or out of the DNS answer): takes no
    /// new joins, keeps the sessions it has.
    pub drained: bool,
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
    /// CMA desktop and iOS sessions (and legs started by hand).
    pub desktop: u32,
    /// Largest CMA count since the last report.
    pub cma_peak: u32,
    /// SIP call legs (noise in the CMA arithmetic, but logged).
    pub sip: u32,
    /// Distribution links to other call bridges (`acano` legs, no person).
    pub links: u32,
    /// Largest call leg count since the last report.
    pub legs_peak: u32,
    /// Legs ended since the call bridge started (`callLegsCompleted`).
    pub legs_completed: u64,
    /// Most legs at once since the call bridge started (`callLegsMaxActive`).
    pub legs_max_active: u32,
    /// When the call bridge (re)started, virtual time.
    pub started: Option<DateTime<Utc>>,
    /// Restarts of the call bridge (crashes), in all.
    pub restarts: u64,
}

impl CallBridge {
    /// CMA sessions on this call bridge.
    pub fn cma(&self) -> u32 {
        self.webrtc + self.desktop
    }

    /// Call legs on this call bridge.
    pub fn call_legs(&self) -> u32 {
        self.cma() + self.sip + self.links
    }

    fn note_peaks(&mut self) {
        self.cma_peak = self.cma_peak.max(self.cma());
        self.legs_peak = self.legs_peak.max(self.call_legs());
        self.legs_max_active = self.legs_max_active.max(self.call_legs());
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
    leg: Guid,
}

/// A live call on one call bridge.
#[derive(Debug, Clone)]
struct Call {
    callbridge: usize,
    /// Live legs that are not distribution links.
    legs: u32,
    completed: u32,
    max_active: u32,
    started: DateTime<Utc>,
    /// Only the far end of a distribution link lives here.
    link_only: bool,
    /// This call's distribution link, if any.
    link: Option<Link>,
}

/// A distribution link: a leg in the call here, and its partner leg in a
/// link-only call on another call bridge.
#[derive(Debug, Clone, Copy)]
struct Link {
    here: Guid,
    there: Guid,
    there_call: Guid,
    there_callbridge: usize,
}

/// A running simulation.
#[derive(Debug, Clone)]
pub struct Simulation {
    scenario: Scenario,
    rng: ChaCha8Rng,
    /// Identities, calls and links: apart from `rng` so that the counts
    /// stay what they were for a seed.
    legs_rng: ChaCha8Rng,
    now: DateTime<Utc>,
    next_id: u64,
    sessions: HashMap<u64, Session>,
    /// `(end time in seconds, session id)`; ids of dropped sessions stay
    /// here until due and are then skipped.
    ends: BinaryHeap<Reverse<(i64, u64)>>,
    /// Every live leg, by id (ordered, so listings are repeatable).
    legs: BTreeMap<Guid, Leg>,
    /// The start times of the live CMA legs (`acano`, not distribution
    /// links), oldest first: the same set the call bridges' `cma()` counts,
    /// kept beside `legs` (every insert and removal of such a leg goes
    /// through both), so its size is bounded as the live legs are. A plain
    /// sorted vector, so that a controller can be handed it every virtual
    /// second for nothing; legs start at `now`, so inserts land at the end.
    cma_starts: Vec<DateTime<Utc>>,
    /// The leg of each entry of `cma_starts`, at the same position.
    cma_start_legs: Vec<Guid>,
    /// The session behind each session-backed leg.
    leg_sessions: HashMap<Guid, u64>,
    /// Every live call.
    calls: BTreeMap<Guid, Call>,
    /// Per call bridge: its SIP legs that the drift may end.
    sip_legs: Vec<Vec<Guid>>,
    /// `(end time in seconds, leg)` of room systems left connected; ended
    /// legs are skipped when due.
    sip_ends: BinaryHeap<Reverse<(i64, Guid)>>,
    /// Kept for the CDR sender while `record_events` is on.
    events: Vec<CdrEvent>,
    record_events: bool,
    /// Multiplies the scenario's load (a live control).
    load_factor: f64,
    /// Per server.
    pub webbridges: Vec<WebBridge>,
    /// Per server.
    pub callbridges: Vec<CallBridge>,
    /// Joins accepted, in all.
    pub joins: u64,
}

/// Display names, some with characters XML must escape.
const NAMES: [&str; 8] =
    ["Anna Berg", "Jonas Weiß", "R&D lab", "Mia <guest>", "Li Wei", "O'Brien, Pat", "Sam \"Ops\" Lee", "Board room"];

impl Simulation {
    /// A deployment with no sessions at `start`.
    pub fn new(scenario: Scenario, seed: u64, start: DateTime<Utc>) -> Self {
        let webbridges = scenario
            .servers
            .iter()
            .map(|s| WebBridge { leaks: s.release.has_webbridge2(), ..WebBridge::default() })
            .collect();
        let callbridges = vec![CallBridge { started: Some(start), ..CallBridge::default() }; scenario.servers.len()];
        let sip_legs = vec![Vec::new(); scenario.servers.len()];
        Simulation {
            scenario,
            rng: ChaCha8Rng::seed_from_u64(seed),
            legs_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x1e95_1e95_1e95_1e95),
            now: start,
            next_id: 0,
            sessions: HashMap::new(),
            ends: BinaryHeap::new(),
            legs: BTreeMap::new(),
            cma_starts: Vec::new(),
            cma_start_legs: Vec::new(),
            leg_sessions: HashMap::new(),
            calls: BTreeMap::new(),
            sip_legs,
            sip_ends: BinaryHeap::new(),
            events: Vec::new(),
            record_events: false,
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

    /// Keeps every call and leg start and end for [`Self::take_events`]
    /// from now on (off by default: `gen-log` has no use for them).
    pub fn record_events(&mut self, on: bool) {
        self.record_events = on;
        if !on {
            self.events.clear();
        }
    }

    /// The events since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<CdrEvent> {
        std::mem::take(&mut self.events)
    }

    /// Every live leg, ordered by id.
    pub fn legs(&self) -> impl Iterator<Item = &Leg> {
        self.legs.values()
    }

    /// One live leg.
    pub fn leg(&self, id: Guid) -> Option<&Leg> {
        self.legs.get(&id)
    }

    /// The start times of the deployment's live CMA legs (WebRTC through
    /// any web bridge, desktop and iOS clients, legs started by hand as
    /// `acano`; not distribution links), oldest first: as many as the
    /// call bridges' [`CallBridge::cma`] add up to.
    pub fn live_cma_starts(&self) -> &[DateTime<Utc>] {
        &self.cma_starts
    }

    /// Drains web bridge `index` at the load balancer (or takes it out of
    /// the DNS answer), or makes it ready again: while drained it takes no
    /// new joins and keeps the sessions it has, which end as they would.
    pub fn set_drained(&mut self, index: usize, drained: bool) -> Result<(), String> {
        let count = self.webbridges.len();
        let wb = self.webbridges.get_mut(index).ok_or_else(|| format!("no web bridge {index} (there are {count})"))?;
        wb.drained = drained;
        Ok(())
    }

    /// Keeps a new live leg, and its start time when it is a CMA leg.
    fn keep_leg(&mut self, leg: Leg) {
        if leg.leg_type == LegType::Acano && !leg.distribution_link {
            let at = self.cma_starts.partition_point(|&t| t <= leg.since);
            self.cma_starts.insert(at, leg.since);
            self.cma_start_legs.insert(at, leg.id);
        }
        self.legs.insert(leg.id, leg);
    }

    /// Forgets a live leg (and its start time); counts are the caller's.
    fn forget_leg(&mut self, id: Guid) -> Option<Leg> {
        let leg = self.legs.remove(&id)?;
        let from = self.cma_starts.partition_point(|&t| t < leg.since);
        let to = self.cma_starts.partition_point(|&t| t <= leg.since);
        if let Some(at) = (from..to).find(|&i| self.cma_start_legs[i] == id) {
            self.cma_starts.remove(at);
            self.cma_start_legs.remove(at);
        }
        self.leg_sessions.remove(&id);
        Some(leg)
    }

    fn emit(&mut self, callbridge: usize, kind: CdrEventKind) {
        if self.record_events {
            self.events.push(CdrEvent { time: self.now, callbridge, kind });
        }
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
        while let Some(&Reverse((end, id))) = self.sip_ends.peek() {
            if end > now_s {
                break;
            }
            self.sip_ends.pop();
            self.end_leg_record(id, "remoteTeardown");
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
        for index in 0..self.callbridges.len() {
            if self.rng.gen_bool(0.01) {
                let target = sip_target / n;
                let auto = self.sip_legs[index].len() as u32;
                if auto < target {
                    self.start_sip_leg(index, false);
                } else if auto > 0 {
                    let pick = self.legs_rng.gen_range(0..self.sip_legs[index].len());
                    let id = self.sip_legs[index].swap_remove(pick);
                    self.end_leg_record(id, "remoteTeardown");
                }
            }
            self.callbridges[index].note_peaks();
        }
    }

    fn join(&mut self) {
        let desktop = self.rng.gen_bool(self.scenario.desktop_share.clamp(0.0, 1.0));
        let webbridge = if desktop {
            None
        } else {
            let placed = if self.scenario.pool { self.place_by_balancer() } else { self.place_by_dns() };
            let Some(index) = placed else { return };
            // A 3.x server's Web Bridge 3 carries the session and never leaks.
            self.webbridges[index].leaks.then_some(index)
        };
        let callbridge = self.least_loaded_callbridge();
        if let Some(index) = webbridge {
            let wb = &mut self.webbridges[index];
            wb.real += 1;
            wb.connections += 1;
        }
        let mean = self.scenario.mean_session.num_seconds() as f64;
        let length = (-mean * (1.0 - self.rng.gen::<f64>()).ln()).clamp(60.0, 6.0 * 3600.0) as i64;
        let id = self.next_id;
        self.next_id += 1;
        let leg = self.start_cma_leg(callbridge, desktop, false, id);
        self.sessions.insert(id, Session { webbridge, callbridge, desktop, leg });
        self.ends.push(Reverse((self.now.timestamp() + length, id)));
        self.joins += 1;
    }

    /// Whether web bridge `index` takes a new session now.
    fn available(&self, index: usize) -> bool {
        let wb = &self.webbridges[index];
        wb.down_until.is_none() && !wb.drained && !(wb.leaks && wb.active() >= self.scenario.limit)
    }

    /// DNS round robin: a web bridge at random among those not drained (a
    /// drained one is out of the DNS answer); `None`, counted as refused
    /// there, when the one reached cannot take the session. With nothing
    /// drained this draws exactly what it always drew, so a seed's runs
    /// stay what they were.
    fn place_by_dns(&mut self) -> Option<usize> {
        let count = self.webbridges.len();
        let open: Vec<usize> = (0..count).filter(|&i| !self.webbridges[i].drained).collect();
        let index = if open.len() == count || open.is_empty() {
            self.rng.gen_range(0..count)
        } else {
            open[self.rng.gen_range(0..open.len())]
        };
        if self.available(index) {
            Some(index)
        } else {
            self.webbridges[index].refused += 1;
            None
        }
    }

    /// The load balancer (HAProxy's `leastconn`): the fewest real sessions
    /// among the web bridges that can take one, ties at random; `None` when
    /// none can, counted as refused on the one with the fewest real
    /// sessions (where `leastconn` would have sent it).
    fn place_by_balancer(&mut self) -> Option<usize> {
        let count = self.webbridges.len();
        let least = (0..count).filter(|&i| self.available(i)).map(|i| self.webbridges[i].real).min();
        let Some(least) = least else {
            let fewest = (0..count).min_by_key(|&i| self.webbridges[i].real).unwrap_or(0);
            self.webbridges[fewest].refused += 1;
            return None;
        };
        let ties: Vec<usize> = (0..count).filter(|&i| self.available(i) && self.webbridges[i].real == least).collect();
        Some(ties[self.rng.gen_range(0..ties.len())])
    }

    /// Counts and records a new `acano` leg of session `session` (a person).
    fn start_cma_leg(&mut self, callbridge: usize, desktop: bool, by_hand: bool, session: u64) -> Guid {
        let cb = &mut self.callbridges[callbridge];
        if desktop {
            cb.desktop += 1;
        } else {
            cb.webrtc += 1;
        }
        cb.note_peaks();
        let guest = !desktop && self.legs_rng.gen_bool(0.5);
        let name = NAMES[self.legs_rng.gen_range(0..NAMES.len())];
        let number = self.legs_rng.gen_range(100..1000);
        let (display_name, remote_party) = if guest {
            (format!("{name} (guest)"), format!("guest{number}@meet.example.com"))
        } else {
            (name.to_owned(), format!("user{number}@example.com"))
        };
        let id = self.add_leg(callbridge, LegType::Acano, !desktop, guest, display_name, remote_party, by_hand);
        self.leg_sessions.insert(id, session);
        id
    }

    /// Counts and records a new SIP leg (a room system).
    fn start_sip_leg(&mut self, callbridge: usize, by_hand: bool) -> Guid {
        self.callbridges[callbridge].sip += 1;
        self.callbridges[callbridge].note_peaks();
        let number = self.legs_rng.gen_range(1..100);
        let id = self.add_leg(
            callbridge,
            LegType::Sip,
            false,
            false,
            format!("Room {number}"),
            format!("room{number}@video.example.com"),
            by_hand,
        );
        if by_hand {
            // Ends only by hand.
        } else if self.legs_rng.gen_bool(SIP_LINGER) {
            let linger = self.legs_rng.gen_range(3_600..4 * 3_600);
            self.sip_ends.push(Reverse((self.now.timestamp() + linger, id)));
        } else {
            self.sip_legs[callbridge].push(id);
        }
        id
    }

    /// Puts a new person's leg into a call on `callbridge` (an existing
    /// one, or a new one), and links the call to another call bridge once
    /// it grows, in a cluster.
    #[allow(clippy::too_many_arguments)]
    fn add_leg(
        &mut self,
        callbridge: usize,
        leg_type: LegType,
        webrtc: bool,
        guest: bool,
        display_name: String,
        remote_party: String,
        by_hand: bool,
    ) -> Guid {
        let id = Guid::random(&mut self.legs_rng);
        let live: Vec<Guid> =
            self.calls.iter().filter(|(_, c)| c.callbridge == callbridge && !c.link_only).map(|(&id, _)| id).collect();
        let call = if !live.is_empty() && self.legs_rng.gen_bool(JOIN_EXISTING_CALL) {
            live[self.legs_rng.gen_range(0..live.len())]
        } else {
            self.open_call(callbridge, false)
        };
        let leg = Leg {
            id,
            callbridge,
            leg_type,
            distribution_link: false,
            guest,
            webrtc,
            call,
            since: self.now,
            display_name,
            remote_party,
            by_hand,
        };
        self.keep_leg(leg.clone());
        self.emit(callbridge, CdrEventKind::LegStart(leg));
        self.emit(callbridge, CdrEventKind::LegConnected { leg: id, call });
        let entry = self.calls.get_mut(&call).expect("just chosen");
        entry.legs += 1;
        entry.max_active = entry.max_active.max(entry.legs);
        let wants_link = entry.legs == LINK_AT_LEGS && entry.link.is_none() && self.callbridges.len() > 1;
        if wants_link && self.legs_rng.gen_bool(LINK_PROBABILITY) {
            self.link(call, callbridge);
        }
        id
    }

    fn open_call(&mut self, callbridge: usize, link_only: bool) -> Guid {
        let call = Guid::random(&mut self.legs_rng);
        let space = self.legs_rng.gen_range(1..50);
        self.calls.insert(
            call,
            Call { callbridge, legs: 0, completed: 0, max_active: 0, started: self.now, link_only, link: None },
        );
        self.emit(callbridge, CdrEventKind::CallStart { call, name: format!("Team space {space}") });
        call
    }

    /// A distribution link from `call` on `callbridge` to another call
    /// bridge: one leg on each side, none of them a person.
    fn link(&mut self, call: Guid, callbridge: usize) {
        let mut other = self.legs_rng.gen_range(0..self.callbridges.len() - 1);
        if other >= callbridge {
            other += 1;
        }
        let there_call = self.open_call(other, true);
        let names = (self.scenario.servers[callbridge].name.clone(), self.scenario.servers[other].name.clone());
        let make = |sim: &mut Simulation, on: usize, in_call: Guid, peer: &str| {
            let id = Guid::random(&mut sim.legs_rng);
            let leg = Leg {
                id,
                callbridge: on,
                leg_type: LegType::Acano,
                distribution_link: true,
                guest: false,
                webrtc: false,
                call: in_call,
                since: sim.now,
                display_name: format!("Distribution link to {peer}"),
                remote_party: peer.to_owned(),
                by_hand: false,
            };
            sim.keep_leg(leg.clone());
            sim.callbridges[on].links += 1;
            sim.callbridges[on].note_peaks();
            sim.emit(on, CdrEventKind::LegStart(leg));
            sim.emit(on, CdrEventKind::LegConnected { leg: id, call: in_call });
            id
        };
        let here = make(self, callbridge, call, &names.1);
        let there = make(self, other, there_call, &names.0);
        self.calls.get_mut(&there_call).expect("just opened").max_active = 1;
        self.calls.get_mut(&call).expect("live").link = Some(Link { here, there, there_call, there_callbridge: other });
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
        self.end_leg_record(session.leg, "remoteTeardown");
    }

    /// Forgets leg `id` (its count is already taken off, except for SIP
    /// legs and links, which this takes off), records its end, and ends its
    /// call when it was the last person in it.
    fn end_leg_record(&mut self, id: Guid, reason: &'static str) {
        let Some(leg) = self.forget_leg(id) else { return };
        let cb = &mut self.callbridges[leg.callbridge];
        cb.legs_completed += 1;
        match (leg.leg_type, leg.distribution_link) {
            (LegType::Sip, _) => cb.sip -= 1,
            (LegType::Acano, true) => cb.links -= 1,
            (LegType::Acano, false) => {}
        }
        let duration_seconds = (self.now - leg.since).num_seconds();
        self.emit(leg.callbridge, CdrEventKind::LegEnd { leg: id, reason, duration_seconds });
        if leg.distribution_link {
            return;
        }
        let Some(call) = self.calls.get_mut(&leg.call) else { return };
        call.legs -= 1;
        call.completed += 1;
        if call.legs == 0 {
            self.end_call(leg.call);
        }
    }

    /// Ends a call and, with it, its distribution link on both sides.
    fn end_call(&mut self, id: Guid) {
        let Some(call) = self.calls.remove(&id) else { return };
        let mut completed = call.completed;
        if let Some(link) = call.link {
            self.end_leg_record(link.here, "remoteTeardown");
            completed += 1;
            self.end_leg_record(link.there, "remoteTeardown");
            if let Some(there) = self.calls.remove(&link.there_call) {
                self.emit(
                    link.there_callbridge,
                    CdrEventKind::CallEnd {
                        call: link.there_call,
                        legs_completed: 1,
                        legs_max_active: 1,
                        duration_seconds: (self.now - there.started).num_seconds(),
                    },
                );
            }
        }
        let duration_seconds = (self.now - call.started).num_seconds();
        self.emit(
            call.callbridge,
            CdrEventKind::CallEnd {
                call: id,
                legs_completed: completed,
                legs_max_active: call.max_active + u32::from(call.link.is_some()),
                duration_seconds,
            },
        );
    }

    /// `webbridge restart` on server `index`: every session on it goes, real
    /// and leaked, the counters reset, and it is down for a few seconds.
    /// The calls of the real ones end (`timeout`).
    pub fn restart_webbridge(&mut self, index: usize) -> RestartOutcome {
        let mut dropped: Vec<u64> =
            self.sessions.iter().filter(|(_, s)| s.webbridge == Some(index)).map(|(&id, _)| id).collect();
        // Sessions live in a HashMap: sort so the legs end in a repeatable order.
        dropped.sort_unstable();
        for id in &dropped {
            let session = self.sessions.remove(id).expect("listed above");
            let cb = &mut self.callbridges[session.callbridge];
            cb.webrtc -= 1;
            self.end_leg_record(session.leg, "timeout");
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

    /// Starts a leg by hand on call bridge `index`: an `acano` leg counts
    /// as a desktop client (CMA, no web bridge), a `sip` leg as a room
    /// system. It lasts until [`Self::end_leg`] or a call bridge restart.
    pub fn start_leg(&mut self, index: usize, leg_type: LegType) -> Guid {
        match leg_type {
            LegType::Acano => {
                let id = self.next_id;
                self.next_id += 1;
                let leg = self.start_cma_leg(index, true, true, id);
                self.sessions.insert(id, Session { webbridge: None, callbridge: index, desktop: true, leg });
                leg
            }
            LegType::Sip => self.start_sip_leg(index, true),
        }
    }

    /// Ends live leg `id` as its user hanging up would (`remoteTeardown`).
    /// Distribution links end with their call, not alone.
    pub fn end_leg(&mut self, id: Guid) -> Result<(), String> {
        let Some(leg) = self.legs.get(&id) else { return Err(format!("no live call leg {id}")) };
        if leg.distribution_link {
            return Err(format!("call leg {id} is a distribution link; it ends with its call"));
        }
        if let Some(session) = self.leg_sessions.get(&id).and_then(|s| self.sessions.remove(s)) {
            // Its scheduled end, if any, finds nothing and is skipped.
            self.end(session);
        } else {
            for legs in &mut self.sip_legs {
                legs.retain(|&l| l != id);
            }
            self.end_leg_record(id, "remoteTeardown");
        }
        Ok(())
    }

    /// `callbridge restart` (or a crash) of call bridge `index`: its calls
    /// and legs vanish without records, as they would with the process;
    /// the people on it lose their call (their web bridge sessions end
    /// without a leak); the far ends of its distribution links on other
    /// call bridges end with records there.
    pub fn restart_callbridge(&mut self, index: usize) {
        let mut gone: Vec<u64> =
            self.sessions.iter().filter(|(_, s)| s.callbridge == index).map(|(&id, _)| id).collect();
        gone.sort_unstable();
        for id in gone {
            let session = self.sessions.remove(&id).expect("listed above");
            if let Some(w) = session.webbridge {
                let wb = &mut self.webbridges[w];
                wb.real -= 1;
                wb.disconnections += 1;
            }
        }
        // Links whose far end is here, and links from here to elsewhere.
        let calls: Vec<Guid> = self.calls.keys().copied().collect();
        for id in calls {
            let Some(call) = self.calls.get(&id) else { continue };
            let (on, link) = (call.callbridge, call.link);
            match link {
                Some(link) if on != index && link.there_callbridge == index => {
                    self.calls.get_mut(&id).expect("live").link = None;
                    self.end_leg_record(link.here, "remoteTeardown");
                    self.forget_leg(link.there);
                    self.calls.remove(&link.there_call);
                }
                Some(link) if on == index => {
                    self.end_leg_record(link.there, "remoteTeardown");
                    if let Some(there) = self.calls.remove(&link.there_call) {
                        self.emit(
                            link.there_callbridge,
                            CdrEventKind::CallEnd {
                                call: link.there_call,
                                legs_completed: 1,
                                legs_max_active: 1,
                                duration_seconds: (self.now - there.started).num_seconds(),
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        self.calls.retain(|_, c| c.callbridge != index);
        let gone: Vec<Guid> = self.legs.values().filter(|l| l.callbridge == index).map(|l| l.id).collect();
        for id in gone {
            self.forget_leg(id);
        }
        self.sip_legs[index].clear();
        let restarts = self.callbridges[index].restarts + 1;
        self.callbridges[index] = CallBridge { started: Some(self.now), restarts, ..CallBridge::default() };
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

    /// The counts agree with the legs, call bridge by call bridge.
    fn assert_counts_match_legs(sim: &Simulation) {
        for (i, cb) in sim.callbridges.iter().enumerate() {
            let on: Vec<&Leg> = sim.legs().filter(|l| l.callbridge == i).collect();
            let people = on.iter().filter(|l| l.leg_type == LegType::Acano && !l.distribution_link).count();
            let webrtc = on.iter().filter(|l| l.webrtc).count();
            let sip = on.iter().filter(|l| l.leg_type == LegType::Sip).count();
            let links = on.iter().filter(|l| l.distribution_link).count();
            assert_eq!((cb.cma() as usize, cb.webrtc as usize), (people, webrtc), "call bridge {i}");
            assert_eq!((cb.sip as usize, cb.links as usize), (sip, links), "call bridge {i}");
        }
    }

    #[test]
    fn legs_have_identities_and_agree_with_the_counts() {
        let start = Utc.with_ymd_and_hms(2024, 3, 4, 12, 0, 0).unwrap();
        let mut sim = Simulation::new(Scenario::with_servers(3), 5, start);
        sim.record_events(true);
        let (mut started, mut ended, mut links, mut sip_only_seen) = (0usize, 0usize, 0usize, false);
        for second in 0..86_400 {
            sim.step();
            for event in sim.take_events() {
                match event.kind {
                    CdrEventKind::LegStart(leg) => {
                        started += 1;
                        links += usize::from(leg.distribution_link);
                        assert_eq!(leg.id.to_string().parse::<Guid>().unwrap(), leg.id);
                    }
                    CdrEventKind::LegEnd { .. } => ended += 1,
                    _ => {}
                }
            }
            if second % 600 == 0 {
                assert_counts_match_legs(&sim);
            }
            sip_only_seen |= sim.callbridges.iter().any(|c| c.cma() == 0 && c.sip > 0);
        }
        assert_counts_match_legs(&sim);
        assert_eq!(started, ended + sim.legs().count());
        assert!(links > 0, "a cluster links its bigger calls");
        assert!(sip_only_seen, "calls, but no CMA call");
        let id = sim.legs().next().unwrap().id.to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }

    #[test]
    fn legs_do_not_change_the_counts_of_a_seed() {
        // The same counts with and without events recorded, and an id
        // sequence that is the same for a seed.
        let start = Utc.with_ymd_and_hms(2024, 3, 4, 6, 0, 0).unwrap();
        let mut a = Simulation::new(Scenario::with_servers(2), 9, start);
        let mut b = Simulation::new(Scenario::with_servers(2), 9, start);
        a.record_events(true);
        for _ in 0..20_000 {
            a.step();
            b.step();
        }
        let counts = |s: &Simulation| s.callbridges.iter().map(|c| (c.webrtc, c.desktop, c.sip)).collect::<Vec<_>>();
        assert_eq!(counts(&a), counts(&b));
        assert_eq!(a.legs().map(|l| l.id).collect::<Vec<_>>(), b.legs().map(|l| l.id).collect::<Vec<_>>());
    }

    #[test]
    fn hand_legs_restarts_and_ends() {
        let start = Utc.with_ymd_and_hms(2024, 3, 4, 9, 0, 0).unwrap();
        let mut sim = Simulation::new(Scenario::with_servers(2), 3, start);
        for _ in 0..3_600 {
            sim.step();
        }
        sim.record_events(true);
        let stats_before: Vec<u32> = sim.webbridges.iter().map(WebBridge::active).collect();
        let cma_before = sim.callbridges[1].cma();
        let leg = sim.start_leg(1, LegType::Acano);
        assert_eq!(sim.callbridges[1].cma(), cma_before + 1);
        assert_eq!(sim.webbridges.iter().map(WebBridge::active).collect::<Vec<_>>(), stats_before);
        assert!(sim.leg(leg).unwrap().by_hand);
        let events = sim.take_events();
        assert!(events.iter().any(|e| matches!(&e.kind, CdrEventKind::LegStart(l) if l.id == leg)));
        sim.end_leg(leg).unwrap();
        assert!(sim.leg(leg).is_none());
        assert!(sim.take_events().iter().any(|e| matches!(e.kind, CdrEventKind::LegEnd { leg: l, .. } if l == leg)));
        assert!(sim.end_leg(leg).unwrap_err().contains("no live call leg"));

        // A web bridge restart ends the WebRTC legs it drops, with records.
        let through: usize = sim.legs().filter(|l| l.webrtc).count();
        let real = sim.webbridges[0].real as usize;
        sim.restart_webbridge(0);
        let timeouts = sim
            .take_events()
            .iter()
            .filter(|e| matches!(e.kind, CdrEventKind::LegEnd { reason: "timeout", .. }))
            .count();
        assert_eq!(timeouts, real);
        assert_eq!(sim.legs().filter(|l| l.webrtc).count(), through - real);
        assert_counts_match_legs(&sim);

        // A call bridge restart: its legs vanish without records there.
        sim.start_leg(0, LegType::Sip);
        sim.take_events();
        sim.restart_callbridge(0);
        assert_eq!(sim.legs().filter(|l| l.callbridge == 0).count(), 0);
        assert!(sim.take_events().iter().all(|e| e.callbridge != 0));
        assert_eq!(sim.callbridges[0].call_legs(), 0);
        assert_counts_match_legs(&sim);
        let webrtc: u32 = sim.callbridges.iter().map(|c| c.webrtc).sum();
        assert_eq!(webrtc, sim.webbridges.iter().map(|w| w.real).sum::<u32>());
        for _ in 0..3_600 {
            sim.step();
        }
        assert_counts_match_legs(&sim);
    }

    /// Every web bridge's `available`, as the balancer sees it.
    fn all_unavailable(sim: &Simulation) -> bool {
        (0..sim.webbridges.len()).all(|i| !sim.available(i))
    }

    #[test]
    fn the_pool_places_no_join_on_a_drained_web_bridge_and_refuses_only_when_none_can_take_it() {
        let start = Utc.with_ymd_and_hms(2024, 3, 4, 9, 0, 0).unwrap();
        let mut scenario = Scenario::with_servers(4);
        scenario.pool = true;
        let mut sim = Simulation::new(scenario, 11, start);
        for _ in 0..3_600 {
            sim.step();
        }
        // Least real sessions first: the pool keeps them within a few.
        let real: Vec<u32> = sim.webbridges.iter().map(|w| w.real).collect();
        assert!(real.iter().max().unwrap() - real.iter().min().unwrap() <= 3, "{real:?}");
        assert!(real.iter().all(|&r| r > 10), "{real:?}");
        sim.set_drained(1, true).unwrap();
        assert!(sim.set_drained(4, true).unwrap_err().contains("no web bridge 4"));
        let (connections, joins) = (sim.webbridges[1].connections, sim.joins);
        let mut emptied = None;
        for second in 0..8 * 3_600 {
            sim.step();
            assert_eq!(sim.webbridges[1].connections, connections, "a join landed on the drained web bridge");
            if emptied.is_none() && sim.webbridges[1].real == 0 {
                emptied = Some(second);
            }
        }
        assert!(sim.joins > joins + 500, "the others took the joins");
        // Sessions last at most six hours: the drained one is empty by then.
        let emptied = emptied.expect("its real sessions fell to 0");
        assert!(emptied <= 6 * 3_600, "{emptied}");
        assert_eq!(sim.webbridges.iter().map(|w| w.refused).sum::<u64>(), 0, "the others had room");
        // Ready again: it takes joins again, and the fewest first.
        sim.set_drained(1, false).unwrap();
        for _ in 0..600 {
            sim.step();
        }
        assert!(sim.webbridges[1].connections > connections);
        assert!(sim.webbridges[1].real > 0);
    }

    #[test]
    fn the_pool_refuses_only_when_every_web_bridge_is_down_drained_or_full() {
        let start = Utc.with_ymd_and_hms(2024, 3, 4, 8, 0, 0).unwrap();
        let mut scenario = Scenario::with_servers(3);
        scenario.pool = true;
        scenario.leak_probability = 1.0;
        scenario.mean_session = Duration::minutes(2);
        scenario.peak_sessions = 60.0;
        let mut sim = Simulation::new(scenario, 5, start);
        sim.set_drained(2, true).unwrap();
        let mut refused = 0;
        let mut refusals_seen = 0;
        for second in 0..4 * 3_600 {
            if second == 3 * 3_600 {
                // A restart makes room: joins go there, none are refused meanwhile.
                sim.restart_webbridge(0);
            }
            sim.step();
            let now_refused: u64 = sim.webbridges.iter().map(|w| w.refused).sum();
            if now_refused > refused {
                refusals_seen += 1;
                // Sessions end before joins in a step, so what refused a
                // join still holds at its end.
                assert!(all_unavailable(&sim), "refused at {} with room left", sim.now());
            }
            refused = now_refused;
        }
        assert!(refusals_seen > 0, "both undrained web bridges filled with leaks");
        assert_eq!(sim.webbridges[2].active(), 0, "drained all along");
        assert_eq!((sim.webbridges[0].active(), sim.webbridges[1].active()), (149, 149));
        // Round robin by DNS refuses as soon as the one it reaches is full.
        let mut scenario = Scenario::with_servers(2);
        scenario.leak_probability = 1.0;
        scenario.mean_session = Duration::minutes(2);
        scenario.peak_sessions = 40.0;
        let mut dns = Simulation::new(scenario, 5, start);
        dns.set_drained(1, true).unwrap();
        for _ in 0..4 * 3_600 {
            dns.step();
        }
        assert_eq!(dns.webbridges[1].active(), 0, "out of the DNS answer");
        assert_eq!(dns.webbridges[0].active(), 149);
        assert!(dns.webbridges[0].refused > 0);
    }

    #[test]
    fn live_cma_starts_are_the_legs_cma_counts_and_c_moves_with_them() {
        let start = Utc.with_ymd_and_hms(2024, 3, 4, 7, 0, 0).unwrap();
        let mut sim = Simulation::new(Scenario::with_servers(3), 8, start);
        sim.record_events(true);
        let mut by_hand = Vec::new();
        for second in 0..12 * 3_600 {
            let connections: u64 = sim.webbridges.iter().map(|w| w.connections).sum();
            sim.step();
            match second {
                3_600 => by_hand.push(sim.start_leg(0, LegType::Acano)),
                7_200 => sim.restart_callbridge(1),
                9_000 => {
                    sim.restart_webbridge(2);
                }
                10_000 => sim.end_leg(by_hand[0]).unwrap(),
                _ => {}
            }
            let cma: u32 = sim.callbridges.iter().map(CallBridge::cma).sum();
            let starts = sim.live_cma_starts();
            assert_eq!(starts.len(), cma as usize, "at {}", sim.now());
            assert!(starts.windows(2).all(|w| w[0] <= w[1]), "oldest first");
            // Each WebRTC leg that began this second moved one web bridge's
            // c: in the same second (every server here runs Web Bridge 2).
            let now = sim.now();
            let webrtc_started = sim
                .take_events()
                .iter()
                .filter(|e| matches!(&e.kind, CdrEventKind::LegStart(l) if l.webrtc && !l.by_hand && l.since == now))
                .count() as u64;
            let moved: u64 = sim.webbridges.iter().map(|w| w.connections).sum::<u64>();
            if second != 9_000 {
                assert_eq!(moved - connections, webrtc_started, "at {now}");
            }
        }
        let mut expected: Vec<DateTime<Utc>> =
            sim.legs().filter(|l| l.leg_type == LegType::Acano && !l.distribution_link).map(|l| l.since).collect();
        expected.sort();
        assert_eq!(sim.live_cma_starts(), expected);
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
