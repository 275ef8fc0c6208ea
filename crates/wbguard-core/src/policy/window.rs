//! Maintenance windows: a 5-field cron expression for when a window opens,
//! how long it stays open, and the IANA time zone the expression is read
//! in, so that "Saturday 02:00" stays 02:00 local across daylight saving.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// A recurring maintenance window.
#[derive(Debug, Clone)]
pub struct Window {
    /// The cron expression as given (`0 2 * * 6`).
    pub pattern: String,
    cron: Cron,
    /// How long the window stays open.
    pub duration: Duration,
    /// The zone the expression is read in.
    pub zone: Tz,
    /// Real calls a restart may drop inside this window (`None`: any).
    pub max_dropped_calls: Option<u32>,
}

/// Why a window could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The cron expression does not parse.
    #[error("bad cron expression '{pattern}': {reason} (use five fields: minute hour day month weekday, e.g. \"0 2 * * 6\")")]
    Cron {
        /// As given.
        pattern: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The zone is not an IANA name.
    #[error("unknown time zone '{0}' (use an IANA name such as Europe/Berlin)")]
    Zone(String),
    /// The duration is zero, negative or longer than a week.
    #[error("a window must last between 1 minute and 7 days")]
    Duration,
}

impl Window {
    /// A window opening at `pattern` in `zone`, open for `duration`.
    pub fn new(
        pattern: &str,
        duration: Duration,
        zone: &str,
        max_dropped_calls: Option<u32>,
    ) -> Result<Window, WindowError> {
        if pattern.split_whitespace().count() != 5 {
            return Err(WindowError::Cron { pattern: pattern.into(), reason: "it needs exactly five fields".into() });
        }
        let cron = Cron::from_str(pattern)
            .map_err(|e| WindowError::Cron { pattern: pattern.into(), reason: e.to_string() })?;
        let zone: Tz = zone.parse().map_err(|_| WindowError::Zone(zone.into()))?;
        if duration < Duration::minutes(1) || duration > Duration::days(7) {
            return Err(WindowError::Duration);
        }
        Ok(Window { pattern: pattern.into(), cron, duration, zone, max_dropped_calls })
    }

    /// When the window that contains `now` opened, if one does.
    pub fn open_since(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.zone);
        let opened = self.cron.find_previous_occurrence(&local, true).ok()?.with_timezone(&Utc);
        (now < opened + self.duration).then_some(opened)
    }

    /// Whether `now` is inside the window.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        self.open_since(now).is_some()
    }

    /// When the window next opens after `now`.
    pub fn next_opening(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.zone);
        self.cron.find_next_occurrence(&local, false).ok().map(|t| t.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn saturday_night_in_berlin() {
        let window = Window::new("0 2 * * 6", Duration::hours(2), "Europe/Berlin", None).unwrap();
        // Saturday 2 March 2024, 02:00 CET = 01:00 UTC.
        assert!(!window.contains(utc("2024-03-02T00:59:00Z")));
        assert!(window.contains(utc("2024-03-02T01:00:00Z")));
        assert!(window.contains(utc("2024-03-02T02:59:00Z")));
        assert!(!window.contains(utc("2024-03-02T03:00:00Z")));
        assert_eq!(window.open_since(utc("2024-03-02T02:00:00Z")), Some(utc("2024-03-02T01:00:00Z")));
        assert_eq!(window.next_opening(utc("2024-03-02T03:00:00Z")), Some(utc("2024-03-09T01:00:00Z")));
        // In summer it is still 02:00 local: 00:00 UTC.
        assert!(window.contains(utc("2024-07-06T00:30:00Z")));
    }

    #[test]
    fn daylight_saving_nights_do_not_break_it() {
        // 02:30 does not exist on 31 March 2024 in Berlin, and happens twice
        // on 27 October. The window must still open once and close.
        let window = Window::new("30 2 * * *", Duration::hours(1), "Europe/Berlin", None).unwrap();
        let spring = window.next_opening(utc("2024-03-30T23:00:00Z")).unwrap();
        assert!(spring > utc("2024-03-30T23:00:00Z") && spring < utc("2024-04-01T02:00:00Z"), "{spring}");
        let autumn = window.next_opening(utc("2024-10-26T23:00:00Z")).unwrap();
        assert!(autumn < utc("2024-10-27T03:00:00Z"), "{autumn}");
        assert!(window.contains(autumn + Duration::minutes(30)));
        assert!(!window.contains(autumn + Duration::hours(3)));
    }

    #[test]
    fn bad_windows() {
        assert!(matches!(Window::new("0 2 * *", Duration::hours(1), "UTC", None), Err(WindowError::Cron { .. })));
        assert!(matches!(Window::new("0 25 * * *", Duration::hours(1), "UTC", None), Err(WindowError::Cron { .. })));
        assert_eq!(
            Window::new("0 2 * * 6", Duration::hours(1), "Mars/Base", None).unwrap_err(),
            WindowError::Zone("Mars/Base".into())
        );
        assert_eq!(Window::new("0 2 * * 6", Duration::zero(), "UTC", None).unwrap_err(), WindowError::Duration);
    }
}
