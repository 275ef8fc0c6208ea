//! A web bridge's day as its history shows it: when it is quiet, and when
//! its sessions will reach the limit.
//!
//! The day (UTC) is cut into [`BUCKETS`] buckets of [`BUCKET_MINUTES`];
//! for each of the last [`DAYS_KEPT`] days the profile keeps, per bucket,
//! the largest number of calls a restart could have dropped there (the
//! model's bound at each sample: what the guard could prove, not a guess),
//! the mean of `active`, and how long after the last restart that was.
//! That is what the lockout rule plans with (`DOMAIN.md`, "The decision";
//! issue 14): the quietest bucket before a lockout, and a guess of that
//! lockout. Guesses choose *when*; whether calls may drop is always decided
//! on the bound the guard has at that second.
//!
//! The guess: `active = real + leaked`, real sessions follow the time of
//! day, and the leak grows with the time since the last restart. So one
//! bucket seen on two days at different times since a restart tells the
//! growth: the difference of `active` over the difference of those times
//! (real sessions at the same hour cancel out). Restarts at different
//! hours are what make it measurable, and a web bridge restarted every day
//! still gives it. The median over every such pair is the leak per day;
//! then each bucket's real sessions are what is left of `active` (the
//! busiest day's, for the lockout: a lockout is worse than an early
//! restart; the median day's, for the quietest moment), and the lockout is
//! the first bucket ahead where those plus the leak by then reach the
//! limit.
//!
//! Memory: [`DAYS_KEPT`] × [`BUCKETS`] cells of five small numbers per web
//! bridge (about 12 KB), whatever the records.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};

/// Minutes per bucket.
pub const BUCKET_MINUTES: i64 = 15;
/// Buckets per day.
pub const BUCKETS: usize = (24 * 60 / BUCKET_MINUTES) as usize;
/// Days kept (the newest).
pub const DAYS_KEPT: usize = 7;
/// Buckets that must have been seen (on any day) before the profile plans:
/// most of a day, so that "the quietest" means something.
const COVERED_TO_PLAN: usize = BUCKETS * 3 / 4;
/// Two sightings of a bucket tell the growth only this far apart in time
/// since a restart: closer, the day-to-day noise of real calls dominates.
const MIN_AGE_APART_MINUTES: f64 = 360.0;
/// Sightings made this soon after a restart are left out of the growth:
/// users who lost their call come back.
const SETTLE_MINUTES: f64 = 60.0;

/// What one bucket of one day saw.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cell {
    /// The largest bound on droppable calls at a sample.
    calls: u32,
    /// Samples folded in.
    samples: u32,
    /// Sum of `active` over them.
    active_sum: f64,
    /// Sum of the minutes since the last restart over them.
    age_sum: f64,
}

impl Cell {
    fn active(&self) -> f64 {
        self.active_sum / f64::from(self.samples)
    }

    fn age(&self) -> f64 {
        self.age_sum / f64::from(self.samples)
    }
}

#[derive(Debug, Clone)]
struct Day {
    /// Days since 1970-01-01 (UTC).
    number: i64,
    cells: [Option<Cell>; BUCKETS],
}

/// The quietest moment found before a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietMoment {
    /// The start of the bucket (now, when the bucket has begun).
    pub at: DateTime<Utc>,
    /// The calls a restart could drop there, by history: the median over
    /// the days seen of the real sessions left once the leak is taken away,
    /// or, while the leak's growth is unknown, of each day's largest bound.
    pub expected_calls: u32,
}

/// A web bridge's daily profile.
#[derive(Debug, Clone, Default)]
pub struct DailyProfile {
    days: VecDeque<Day>,
}

fn day_and_bucket(time: DateTime<Utc>) -> (i64, usize) {
    let seconds = time.timestamp();
    let day = seconds.div_euclid(86_400);
    let bucket = (seconds.rem_euclid(86_400) / (BUCKET_MINUTES * 60)) as usize;
    (day, bucket)
}

fn bucket_start(day: i64, bucket: usize) -> DateTime<Utc> {
    let seconds = day * 86_400 + bucket as i64 * BUCKET_MINUTES * 60;
    DateTime::from_timestamp(seconds, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn largest(values: Vec<f64>) -> Option<f64> {
    values.into_iter().reduce(f64::max)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_unstable_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

impl DailyProfile {
    /// Folds in one sample: `active` sessions, of which at most `calls`
    /// could have been dropped by a restart then, `age` after the last
    /// restart. A sample older than the days kept is ignored.
    pub fn observe(&mut self, time: DateTime<Utc>, active: u32, calls: u32, age: Duration) {
        let (number, bucket) = day_and_bucket(time);
        let index = match self.days.iter().position(|d| d.number == number) {
            Some(index) => index,
            None => {
                if self.days.front().is_some_and(|d| number < d.number) && self.days.len() == DAYS_KEPT {
                    return;
                }
                let at = self.days.iter().position(|d| d.number > number).unwrap_or(self.days.len());
                self.days.insert(at, Day { number, cells: [None; BUCKETS] });
                if self.days.len() > DAYS_KEPT {
                    self.days.pop_front();
                    at.saturating_sub(1)
                } else {
                    at
                }
            }
        };
        let age = age.num_seconds().max(0) as f64 / 60.0;
        let cell =
            self.days[index].cells[bucket].get_or_insert(Cell { calls, samples: 0, active_sum: 0.0, age_sum: 0.0 });
        cell.calls = cell.calls.max(calls);
        cell.samples = cell.samples.saturating_add(1);
        cell.active_sum += f64::from(active);
        cell.age_sum += age;
    }

    /// The calls history bounds in `bucket`: the median (the upper one of
    /// an even count) over the days that saw it of each day's largest
    /// bound, so that one unusual day does not move it.
    fn expected(&self, bucket: usize) -> Option<u32> {
        let mut seen: Vec<u32> = self.days.iter().filter_map(|d| d.cells[bucket].map(|c| c.calls)).collect();
        seen.sort_unstable();
        seen.get(seen.len() / 2).copied()
    }

    /// Whether enough of a day has been seen to plan with.
    pub fn can_plan(&self) -> bool {
        (0..BUCKETS).filter(|&b| self.days.iter().any(|d| d.cells[b].is_some())).count() >= COVERED_TO_PLAN
    }

    /// The buckets from the one holding `now` up to `until` (at most a
    /// day ahead), each with its start (`now` for the first).
    fn ahead(now: DateTime<Utc>, until: DateTime<Utc>) -> impl Iterator<Item = (DateTime<Utc>, usize)> {
        let (day, first) = day_and_bucket(now);
        let until = until.min(now + Duration::days(1));
        (0..=BUCKETS).map_while(move |step| {
            let index = first + step;
            let (day, bucket) = (day + (index / BUCKETS) as i64, index % BUCKETS);
            let start = if step == 0 { now } else { bucket_start(day, bucket) };
            (step == 0 || start < until).then_some((start, bucket))
        })
    }

    /// The quietest bucket from now until `deadline` (at most a day
    /// ahead): the fewest calls history expects; of equals, the earliest.
    /// `None` until the profile [can plan](DailyProfile::can_plan).
    ///
    /// Where the leak's growth is known, the calls are the real sessions
    /// left of `active` once the leak by then is taken away (the median
    /// over the days, an hour or more after a restart): the bound alone
    /// would favour the hours just after past restarts, when little had
    /// leaked and the users cut off were not back yet, over the hours when
    /// few people call.
    pub fn quietest_before(&self, now: DateTime<Utc>, deadline: DateTime<Utc>) -> Option<QuietMoment> {
        if !self.can_plan() {
            return None;
        }
        let growth = self.growth_per_minute().filter(|&g| g > 0.0);
        let mut best: Option<(f64, QuietMoment)> = None;
        for (at, bucket) in Self::ahead(now, deadline) {
            let Some(bound) = self.expected(bucket) else { continue };
            let calls = match growth {
                // Hours seen only just after a restart are not known yet.
                Some(growth) => match self.real(bucket, growth, median) {
                    Some(real) => real,
                    None => continue,
                },
                None => f64::from(bound),
            };
            if best.is_none_or(|(fewest, _)| calls < fewest) {
                best = Some((calls, QuietMoment { at, expected_calls: calls.ceil() as u32 }));
            }
        }
        best.map(|(_, moment)| moment)
    }

    /// The real sessions of `bucket` by history: per day seen (an hour or
    /// more after a restart), `active` less the leak by then at `growth`
    /// per minute; summed up by `pick`.
    fn real(&self, bucket: usize, growth: f64, pick: fn(Vec<f64>) -> Option<f64>) -> Option<f64> {
        // Just after a restart the users it cut off are not back yet: those
        // sightings would make the hour look quieter than it is.
        let settled = self.days.iter().filter_map(|d| d.cells[bucket]).filter(|c| c.age() >= SETTLE_MINUTES);
        pick(settled.map(|c| (c.active() - growth * c.age()).max(0.0)).collect())
    }

    /// The first bucket from now, within `horizon`, where history expects
    /// at most `allowed` calls: a moment the guard expects to be harmless.
    pub fn next_harmless(&self, now: DateTime<Utc>, allowed: u32, horizon: Duration) -> Option<DateTime<Utc>> {
        if !self.can_plan() {
            return None;
        }
        Self::ahead(now, now + horizon).find(|&(_, b)| self.expected(b).is_some_and(|e| e <= allowed)).map(|(at, _)| at)
    }

    /// The leak's growth in sessions per minute, as the pairs of sightings
    /// of one bucket at different times since a restart tell it (see the
    /// module's doc); `None` without such a pair.
    fn growth_per_minute(&self) -> Option<f64> {
        let mut rates = Vec::new();
        for bucket in 0..BUCKETS {
            let seen: Vec<Cell> =
                self.days.iter().filter_map(|d| d.cells[bucket]).filter(|c| c.age() >= SETTLE_MINUTES).collect();
            for (i, a) in seen.iter().enumerate() {
                for b in &seen[i + 1..] {
                    let apart = a.age() - b.age();
                    if apart.abs() >= MIN_AGE_APART_MINUTES {
                        rates.push((a.active() - b.active()) / apart);
                    }
                }
            }
        }
        median(rates)
    }

    /// A guess of when `active` reaches `limit` within a day of `now`, for
    /// the restart epoch that began at `since` (see the module's doc).
    /// `None` without a growth, with none, or when no bucket ahead
    /// reaches the limit.
    pub fn lockout_guess(&self, now: DateTime<Utc>, since: DateTime<Utc>, limit: u32) -> Option<DateTime<Utc>> {
        let growth = self.growth_per_minute().filter(|&g| g > 0.0)?;
        for (at, bucket) in Self::ahead(now, now + Duration::days(1)) {
            // The busiest day seen: a lockout is worse than a restart early.
            let Some(real) = self.real(bucket, growth, largest) else { continue };
            // The end of the bucket: the leak by then.
            let end = (at + Duration::minutes(BUCKET_MINUTES)).max(since);
            let leaked = growth * (end - since).num_seconds() as f64 / 60.0;
            if real + leaked >= f64::from(limit) {
                return Some(at);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(day: i64, hour: i64, minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap() + Duration::days(day) + Duration::minutes(hour * 60 + minute)
    }

    /// Real calls by hour: 40% of 100 at 04:00, 100 at 14:00; a leak of
    /// `leak_per_day`, from day 0 at 00:00.
    fn day_load(hour: f64) -> u32 {
        let phase = ((hour - 14.0) / 24.0 * std::f64::consts::TAU).cos();
        (70.0 + 30.0 * phase).round() as u32
    }

    /// `days` of samples every minute, restarted at `restarts` (minutes).
    fn fed(days: i64, leak_per_day: f64, restarts: &[i64]) -> DailyProfile {
        let mut profile = DailyProfile::default();
        for minute in 0..days * 1440 {
            let time = at(0, 0, minute);
            let since = restarts.iter().copied().filter(|&r| r <= minute).max().unwrap_or(0);
            let real = day_load((minute % 1440) as f64 / 60.0);
            let leak = ((minute - since) as f64 / 1440.0 * leak_per_day) as u32;
            profile.observe(time, real + leak, real, Duration::minutes(minute - since));
        }
        profile
    }

    #[test]
    fn the_quietest_bucket_is_found_and_nothing_is_planned_on_a_partial_day() {
        let mut partial = DailyProfile::default();
        for minute in 0..600 {
            partial.observe(at(0, 0, minute), 10, 10, Duration::minutes(minute));
        }
        assert!(!partial.can_plan());
        assert_eq!(partial.quietest_before(at(0, 10, 0), at(1, 10, 0)), None);

        let profile = fed(2, 0.0, &[]);
        let quiet = profile.quietest_before(at(2, 10, 0), at(3, 10, 0)).unwrap();
        // The trough is at 02:00, 40 calls; of equal buckets, the earliest.
        assert!((at(3, 1, 0)..=at(3, 2, 0)).contains(&quiet.at), "{}", quiet.at);
        assert_eq!(quiet.expected_calls, 40);
        // Before a deadline at 20:00 the quietest is the last bucket before it.
        let quiet = profile.quietest_before(at(2, 10, 0), at(2, 20, 0)).unwrap();
        assert_eq!(quiet.at, at(2, 19, 45));
        // Inside the quietest bucket, it is now.
        let now = at(2, 2, 7);
        assert_eq!(profile.quietest_before(now, at(2, 12, 0)).unwrap().at, now);
        assert_eq!(profile.next_harmless(now, 0, Duration::days(1)), None);
        assert_eq!(profile.next_harmless(now, 45, Duration::days(1)), Some(now));
    }

    #[test]
    fn a_lockout_is_guessed_from_the_growth_since_restarts_not_from_the_load() {
        // 40 leaked a day, restarted every day at 03:00, and once at 15:00:
        // two sightings of a bucket at different times since a restart.
        let restarts: Vec<i64> = (0..4).map(|d| d * 1440 + 180).chain([2 * 1440 + 900]).collect();
        let profile = fed(4, 40.0, &restarts);
        // Restarted at 03:00 on day 4: the leak and the late morning's 96
        // calls reach 149 at about 11:30 on day 5.
        let since = at(4, 3, 0);
        let guess = profile.lockout_guess(at(5, 3, 0), since, 149).expect("a guess");
        assert!((at(5, 10, 0)..=at(5, 13, 0)).contains(&guess), "{guess}");
        // Not within a day of the restart itself.
        assert_eq!(profile.lockout_guess(at(4, 3, 0), since, 149), None);
        // Without a leak, no lockout is guessed, however busy the day.
        let profile = fed(4, 0.0, &restarts);
        assert_eq!(profile.lockout_guess(at(5, 3, 0), since, 149), None);
        // Restarted always at the same hour, only the first hours of the
        // log (before the first restart) tell the growth, and they do.
        let daily: Vec<i64> = (0..4).map(|d| d * 1440 + 180).collect();
        let guess = fed(4, 40.0, &daily).lockout_guess(at(5, 3, 0), since, 149).expect("a guess");
        assert!((at(5, 10, 0)..=at(5, 13, 0)).contains(&guess), "{guess}");
        // A log that only ever saw each hour at one time since a restart
        // tells nothing: no guess rather than a wrong one.
        let mut blind = DailyProfile::default();
        for minute in 0..4 * 1440 {
            let real = day_load((minute % 1440) as f64 / 60.0);
            blind.observe(at(0, 0, minute), real + 20, real, Duration::minutes(600 + minute % 1440));
        }
        assert_eq!(blind.lockout_guess(at(5, 3, 0), since, 149), None);
    }

    #[test]
    fn old_days_give_way_and_memory_stays_bounded() {
        let profile = fed(DAYS_KEPT as i64 + 3, 0.0, &[]);
        assert_eq!(profile.days.len(), DAYS_KEPT);
        let mut late = profile.clone();
        late.observe(at(0, 1, 0), 500, 500, Duration::zero()); // older than every day kept
        assert_eq!(late.days.len(), DAYS_KEPT);
        assert_eq!(late.expected(4), profile.expected(4));
    }
}
