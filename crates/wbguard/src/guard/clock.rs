//! The guard's "now", and what it does with records dated after it.
//!
//! In production "now" is the machine's clock ([`Clock::Wall`]): data
//! cannot move it. A record dated more than the tolerance ahead of it (a
//! forged line, a server whose clock runs ahead, a year guessed wrongly for
//! a timestamp without one) is counted and kept away from the model, the
//! history and every decision; the server that sent it is named in the
//! status and announced once. Simulations faster than real time ask for
//! [`Clock::Data`]: "now" then follows the newest record, trusting every
//! sender's clock.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::api::ServerAhead;
pub use crate::config::guard_settings::Clock;

/// Servers tracked as running ahead, at most: past it, further ones are
/// only counted (forged lines may name any host).
const MOST_AHEAD: usize = 256;

/// Servers announced (logged, webhook) while this many are named at once,
/// at most: a flood of forged names must not crowd out the webhooks that
/// matter (a lockout); the status still names them all.
const MOST_ANNOUNCED: usize = 8;

/// A server is no longer named as running ahead after this long without a
/// record from the future (and is announced again if it starts again).
const FORGIVEN_AFTER: Duration = Duration::minutes(10);

/// What became of a record's time.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Usable.
    Admitted,
    /// Dated in the future: ignored.
    Future,
    /// Dated in the future, and the first from this server in a while:
    /// ignored and announced.
    NewlyAhead(ServerAhead),
}

/// The guard's clock and the servers seen running ahead of it.
#[derive(Debug)]
pub struct GuardClock {
    /// Wall or data.
    pub source: Clock,
    /// How far ahead a record may be dated.
    pub tolerance: Duration,
    /// Servers whose records came from the future, by host.
    ahead: BTreeMap<String, ServerAhead>,
}

impl GuardClock {
    /// A clock of `source` with `tolerance`.
    pub fn new(source: Clock, tolerance: Duration) -> GuardClock {
        GuardClock { source, tolerance, ahead: BTreeMap::new() }
    }

    /// "Now": the wall clock, or with the data clock the newest record
    /// (`latest`, of any cluster) when it is later.
    pub fn now(&self, latest: Option<DateTime<Utc>>) -> DateTime<Utc> {
        let wall = Utc::now();
        match self.source {
            Clock::Wall => wall,
            Clock::Data => latest.map_or(wall, |latest| latest.max(wall)),
        }
    }

    /// The latest time a record may carry at wall time `wall` (none: any,
    /// with the data clock).
    pub fn horizon(&self, wall: DateTime<Utc>) -> Option<DateTime<Utc>> {
        (self.source == Clock::Wall).then(|| wall + self.tolerance)
    }

    /// Judges a record of `host` dated `time`, received at wall time `wall`.
    pub fn judge(&mut self, host: &str, time: DateTime<Utc>, wall: DateTime<Utc>) -> Verdict {
        match self.horizon(wall) {
            Some(horizon) if time > horizon => {}
            _ => return Verdict::Admitted,
        }
        let ahead_seconds = (time - wall).num_seconds();
        if let Some(known) = self.ahead.get_mut(host) {
            known.ahead_seconds = ahead_seconds;
            known.last_seen = wall;
            known.records += 1;
            return Verdict::Future;
        }
        if self.ahead.len() >= MOST_AHEAD {
            return Verdict::Future;
        }
        let server =
            ServerAhead { host: host.to_owned(), ahead_seconds, first_seen: wall, last_seen: wall, records: 1 };
        self.ahead.insert(host.to_owned(), server.clone());
        if self.ahead.len() > MOST_ANNOUNCED {
            return Verdict::Future;
        }
        Verdict::NewlyAhead(server)
    }

    /// Forgets servers that sent nothing from the future for a while.
    pub fn forgive(&mut self, wall: DateTime<Utc>) {
        self.ahead.retain(|_, server| wall - server.last_seen < FORGIVEN_AFTER);
    }

    /// The servers running ahead, by host.
    pub fn ahead(&self) -> Vec<ServerAhead> {
        self.ahead.values().cloned().collect()
    }

    /// Splits a journal (last restart per web bridge) into what may be used
    /// and what is dated in the future at wall time `wall` (with the wall
    /// clock: a restart from the future would hold its web bridge for as
    /// long as `min_interval` after that date).
    pub fn split_journal(
        &self,
        journal: BTreeMap<String, DateTime<Utc>>,
        wall: DateTime<Utc>,
    ) -> (BTreeMap<String, DateTime<Utc>>, BTreeMap<String, DateTime<Utc>>) {
        match self.horizon(wall) {
            None => (journal, BTreeMap::new()),
            Some(horizon) => journal.into_iter().partition(|(_, time)| *time <= horizon),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn the_wall_clock_ignores_records_beyond_the_tolerance_and_announces_each_server_once() {
        let wall = at("2026-12-01T12:00:00Z");
        let mut clock = GuardClock::new(Clock::Wall, Duration::minutes(2));
        assert_eq!(clock.judge("cms1", wall + Duration::minutes(2), wall), Verdict::Admitted);
        assert_eq!(clock.judge("cms1", wall - Duration::days(3), wall), Verdict::Admitted);
        let Verdict::NewlyAhead(first) = clock.judge("cms1", at("2099-12-31T23:50:00Z"), wall) else {
            panic!("not announced")
        };
        assert_eq!((first.host.as_str(), first.records), ("cms1", 1));
        assert!(first.ahead_seconds > 2_000_000_000);
        assert_eq!(clock.judge("cms1", wall + Duration::minutes(5), wall), Verdict::Future);
        assert_eq!(clock.ahead()[0].ahead_seconds, 300);
        assert_eq!(clock.ahead()[0].records, 2);
        // Quiet for a while: forgiven, and announced again if it recurs.
        clock.forgive(wall + Duration::minutes(9));
        assert_eq!(clock.ahead().len(), 1);
        clock.forgive(wall + Duration::minutes(10));
        assert!(clock.ahead().is_empty());
        let later = wall + Duration::hours(1);
        assert!(matches!(clock.judge("cms1", later + Duration::hours(1), later), Verdict::NewlyAhead(_)));
    }

    #[test]
    fn forged_host_names_cannot_grow_the_list_past_its_bound() {
        let wall = at("2026-12-01T12:00:00Z");
        let mut clock = GuardClock::new(Clock::Wall, Duration::minutes(2));
        let mut announced = 0;
        for i in 0..MOST_AHEAD + 100 {
            match clock.judge(&format!("forged{i}"), wall + Duration::days(1), wall) {
                Verdict::Admitted => panic!("admitted"),
                Verdict::NewlyAhead(_) => announced += 1,
                Verdict::Future => {}
            }
        }
        assert_eq!(clock.ahead().len(), MOST_AHEAD);
        assert_eq!(announced, MOST_ANNOUNCED);
    }

    #[test]
    fn the_data_clock_admits_everything_and_follows_the_newest_record() {
        let wall = at("2026-12-01T12:00:00Z");
        let mut clock = GuardClock::new(Clock::Data, Duration::minutes(2));
        assert_eq!(clock.judge("cms1", at("2099-12-31T23:50:00Z"), wall), Verdict::Admitted);
        let journal = BTreeMap::from([("cms1".to_owned(), at("2099-12-31T23:50:00Z"))]);
        assert_eq!(clock.split_journal(journal, wall).0.len(), 1);
    }

    #[test]
    fn journal_entries_from_the_future_are_set_apart() {
        let wall = at("2026-12-01T12:00:00Z");
        let clock = GuardClock::new(Clock::Wall, Duration::minutes(2));
        let journal = BTreeMap::from([
            ("cms1".to_owned(), at("2099-12-31T23:50:00Z")),
            ("cms2".to_owned(), at("2026-12-01T11:00:00Z")),
        ]);
        let (usable, future) = clock.split_journal(journal, wall);
        assert_eq!(usable.keys().collect::<Vec<_>>(), ["cms2"]);
        assert_eq!(future.keys().collect::<Vec<_>>(), ["cms1"]);
    }
}
