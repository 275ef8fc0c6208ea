//! A web bridge's day as its history shows it: when it is quiet, and how
//! fast its sessions grow from one day to the next.
//!
//! The day (UTC) is cut into [`BUCKETS`] buckets of [`BUCKET_MINUTES`];
//! for each of the last [`DAYS_KEPT`] days the profile keeps, per bucket,
//! the largest number of calls a restart could have dropped there (the
//! model's bound at each sample: what the guard could prove, not what the
//! simulator knows) and the smallest and largest `active`. That is what
//! the lockout rule plans with (`DOMAIN.md`, "The decision"; issue 14):
//! the quietest bucket before a lockout, and a guess of that lockout.
//! Guesses choose *when*; whether calls may drop is always decided on the
//! bound the guard has at that second.
//!
//! Memory: [`DAYS_KEPT`] × [`BUCKETS`] cells of three small numbers per web
//! bridge (about 7 KB), whatever the records.

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

/// What one bucket of one day saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cell {
    /// The largest bound on droppable calls at a sample.
    calls: u32,
    /// The smallest `active` at a sample.
    active_min: u32,
    /// The largest `active` at a sample.
    active_max: u32,
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
    /// The calls a restart could drop there, as history bounds them (the
    /// mean over the days seen of each day's largest bound in that bucket).
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

impl DailyProfile {
    /// Folds in one sample: `active` sessions, of which at most `calls`
    /// could have been dropped by a restart then. A sample older than the
    /// days kept is ignored.
    pub fn observe(&mut self, time: DateTime<Utc>, active: u32, calls: u32) {
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
        let cell = &mut self.days[index].cells[bucket];
        *cell = Some(match *cell {
            None => Cell { calls, active_min: active, active_max: active },
            Some(c) => Cell {
                calls: c.calls.max(calls),
                active_min: c.active_min.min(active),
                active_max: c.active_max.max(active),
            },
        });
    }

    /// The calls history bounds in `bucket`: the mean, rounded up, over the
    /// days that saw it, of each day's largest bound.
    fn expected(&self, bucket: usize) -> Option<u32> {
        let seen: Vec<u32> = self.days.iter().filter_map(|d| d.cells[bucket].map(|c| c.calls)).collect();
        let days = u32::try_from(seen.len()).ok().filter(|&n| n > 0)?;
        Some(seen.iter().sum::<u32>().div_ceil(days))
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
    pub fn quietest_before(&self, now: DateTime<Utc>, deadline: DateTime<Utc>) -> Option<QuietMoment> {
        if !self.can_plan() {
            return None;
        }
        let mut best: Option<QuietMoment> = None;
        for (at, bucket) in Self::ahead(now, deadline) {
            let Some(expected_calls) = self.expected(bucket) else { continue };
            if best.is_none_or(|b| expected_calls < b.expected_calls) {
                best = Some(QuietMoment { at, expected_calls });
            }
        }
        best
    }

    /// The first bucket from now, within `horizon`, where history expects
    /// at most `allowed` calls: a moment the guard expects to be harmless.
    pub fn next_harmless(&self, now: DateTime<Utc>, allowed: u32, horizon: Duration) -> Option<DateTime<Utc>> {
        if !self.can_plan() {
            return None;
        }
        Self::ahead(now, now + horizon).find(|&(_, b)| self.expected(b).is_some_and(|e| e <= allowed)).map(|(at, _)| at)
    }

    /// A guess of when `active` reaches `limit`, from the samples since
    /// `since` (the last restart) only: the day's peak so far plus the
    /// growth of the sessions from one day to the next, taken in the
    /// bucket that was quietest on both days (real sessions at the same
    /// hour cancel out, the leak remains). `None` without two days since
    /// `since`, or without growth.
    pub fn lockout_guess(&self, now: DateTime<Utc>, since: DateTime<Utc>, limit: u32) -> Option<DateTime<Utc>> {
        // Buckets that began an hour after the restart: the first minutes
        // after one are not a day like the others.
        let settled = since + Duration::hours(1);
        let usable = |day: &Day, bucket: usize| {
            let start = bucket_start(day.number, bucket);
            day.cells[bucket].filter(|_| start >= settled && start + Duration::minutes(BUCKET_MINUTES) <= now)
        };
        let peak = self
            .days
            .iter()
            .flat_map(|d| (0..BUCKETS).filter_map(move |b| usable(d, b).filter(|_| bucket_start(d.number, b) >= now - Duration::days(1))))
            .map(|c| c.active_max)
            .max()?;
        let (today, _) = day_and_bucket(now);
        // The latest full day pair: yesterday against the day before, or
        // today's buckets so far against yesterday's.
        let day = |n: i64| self.days.iter().find(|d| d.number == n);
        let mut growth: Option<i64> = None;
        for (later, earlier) in [(today, today - 1), (today - 1, today - 2)] {
            let (Some(later), Some(earlier)) = (day(later), day(earlier)) else { continue };
            let quietest = (0..BUCKETS)
                .filter_map(|b| Some((usable(later, b)?, usable(earlier, b)?)))
                .min_by_key(|(l, e)| l.active_min.max(e.active_min));
            if let Some((l, e)) = quietest {
                growth = Some(i64::from(l.active_min) - i64::from(e.active_min));
                break;
            }
        }
        let growth = growth.filter(|&g| g > 0)?;
        let headroom = i64::from(limit) - i64::from(peak);
        if headroom <= 0 {
            return Some(now);
        }
        let seconds = headroom as f64 / growth as f64 * 86_400.0;
        (seconds < 1e9).then(|| now + Duration::seconds(seconds as i64))
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

    fn fed(days: i64, leak_per_day: f64) -> DailyProfile {
        let mut profile = DailyProfile::default();
        for minute in 0..days * 1440 {
            let time = at(0, 0, minute);
            let real = day_load((minute % 1440) as f64 / 60.0);
            let leak = (minute as f64 / 1440.0 * leak_per_day) as u32;
            profile.observe(time, real + leak, real);
        }
        profile
    }

    #[test]
    fn the_quietest_bucket_is_found_and_nothing_is_planned_on_a_partial_day() {
        let mut partial = DailyProfile::default();
        for minute in 0..600 {
            partial.observe(at(0, 0, minute), 10, 10);
        }
        assert!(!partial.can_plan());
        assert_eq!(partial.quietest_before(at(0, 10, 0), at(1, 10, 0)), None);

        let profile = fed(2, 0.0);
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
    fn a_lockout_is_guessed_from_the_growth_between_days_not_from_the_load() {
        // 30 leaked a day; the peak of day 2 is 100 + 60 + ...: lockout
        // within the day (149 - 160 < 0) or just after.
        let profile = fed(3, 30.0);
        let now = at(2, 23, 59);
        let guess = profile.lockout_guess(now, at(0, 0, 0), 149).unwrap();
        assert!(guess <= now + Duration::hours(12), "{guess}");
        // Without a leak, no lockout is guessed, however busy the day.
        let profile = fed(3, 0.0);
        assert_eq!(profile.lockout_guess(at(2, 23, 59), at(0, 0, 0), 149), None);
        // Samples from before the last restart do not count.
        let profile = fed(3, 30.0);
        assert_eq!(profile.lockout_guess(at(2, 23, 59), at(2, 3, 0), 149), None);
    }

    #[test]
    fn old_days_give_way_and_memory_stays_bounded() {
        let profile = fed(DAYS_KEPT as i64 + 3, 0.0);
        assert_eq!(profile.days.len(), DAYS_KEPT);
        let mut late = profile.clone();
        late.observe(at(0, 1, 0), 500, 500); // older than every day kept
        assert_eq!(late.days.len(), DAYS_KEPT);
        assert_eq!(late.expected(4), profile.expected(4));
    }
}
