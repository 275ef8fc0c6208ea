//! Timestamps in CMS log headers, and turning them into UTC.
//!
//! CMS writes BSD timestamps (`Mar 18 14:58:48.078`, `Jul  3 15:01:22`),
//! which carry neither year nor zone, and ISO timestamps without a zone
//! (`2024-03-05T16:50:25.736`). Syslog servers in front of CMS may add
//! RFC 3339 stamps with a zone. The year of a BSD stamp is inferred from a
//! reference time (when the file was last written, or now): a stamp that
//! would lie more than a day after the reference belongs to the year before,
//! so a December line read in January lands in the right year. Local times
//! are read in the configured zone (UTC by default); a local time that falls
//! into a daylight-saving gap is moved forward by the gap, an ambiguous one
//! takes the earlier instant.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A timestamp as written, before year inference and zone resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// BSD: month, day and time of day, no year, no zone.
    NoYear {
        /// 1..=12
        month: u32,
        /// 1..=31
        day: u32,
        /// Time of day, with fractions when written.
        time: NaiveTime,
    },
    /// ISO without a zone: local time in the configured zone.
    Local(NaiveDateTime),
    /// RFC 3339 with a zone: an absolute instant.
    Absolute(DateTime<Utc>),
}

const MONTHS: [&[u8; 3]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// Parses the three tokens of a BSD stamp: `Mar`, `18`, `14:58:48.078`.
pub fn parse_bsd(month: &[u8], day: &[u8], time: &[u8]) -> Option<Stamp> {
    let month = MONTHS.iter().position(|m| m.as_slice() == month)? as u32 + 1;
    let day = parse_digits(day, 1, 2)?;
    if !(1..=31).contains(&day) {
        return None;
    }
    let time = parse_time(time)?;
    Some(Stamp::NoYear { month, day, time })
}

/// Parses an ISO 8601 / RFC 3339 stamp: `2024-03-05T16:50:25.736`, with an
/// optional `Z` or `+hh:mm` zone.
pub fn parse_iso(token: &[u8]) -> Option<Stamp> {
    if token.len() < 19 || token[4] != b'-' || token[7] != b'-' || !matches!(token[10], b'T' | b' ') {
        return None;
    }
    let year = parse_digits(&token[0..4], 4, 4)? as i32;
    let month = parse_digits(&token[5..7], 2, 2)?;
    let day = parse_digits(&token[8..10], 2, 2)?;
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    let rest = &token[11..];
    // The time runs until a zone designator, if any.
    let zone_at = rest.iter().position(|&b| matches!(b, b'Z' | b'z' | b'+' | b'-')).unwrap_or(rest.len());
    let time = parse_time(&rest[..zone_at])?;
    let local = date.and_time(time);
    let zone = &rest[zone_at..];
    if zone.is_empty() {
        return Some(Stamp::Local(local));
    }
    let offset_seconds = match zone {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = parse_digits(&[*h1, *h2], 2, 2)? as i64;
            let minutes = parse_digits(&[*m1, *m2], 2, 2)? as i64;
            let seconds = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => return None,
    };
    Some(Stamp::Absolute(local.and_utc() - Duration::seconds(offset_seconds)))
}

/// `hh:mm:ss` with an optional fraction of up to nine digits.
fn parse_time(token: &[u8]) -> Option<NaiveTime> {
    if token.len() < 8 || token[2] != b':' || token[5] != b':' {
        return None;
    }
    let hour = parse_digits(&token[0..2], 2, 2)?;
    let minute = parse_digits(&token[3..5], 2, 2)?;
    let second = parse_digits(&token[6..8], 2, 2)?;
    let nanos = match &token[8..] {
        [] => 0,
        [b'.' | b',', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            parse_digits(fraction, 1, 9)? * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)
}

/// A run of `min..=max` ASCII digits as a number; anything else is `None`.
fn parse_digits(bytes: &[u8], min: usize, max: usize) -> Option<u32> {
    if bytes.len() < min || bytes.len() > max {
        return None;
    }
    bytes.iter().try_fold(0u32, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0')))
}

/// Resolves a stamp to UTC: infers the year of BSD stamps from `reference`
/// and reads local times in `zone`.
pub fn resolve(stamp: Stamp, zone: Tz, reference: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match stamp {
        Stamp::Absolute(instant) => Some(instant),
        Stamp::Local(local) => local_to_utc(local, zone),
        Stamp::NoYear { month, day, time } => {
            let latest_plausible = reference + Duration::days(1);
            let reference_year = reference.with_timezone(&zone).year();
            // The newest year that puts the stamp no later than a day after
            // the reference; Feb 29 may need to go back a few years.
            (0..=8).find_map(|back| {
                let date = NaiveDate::from_ymd_opt(reference_year - back, month, day)?;
                let instant = local_to_utc(date.and_time(time), zone)?;
                (instant <= latest_plausible).then_some(instant)
            })
        }
    }
}

fn local_to_utc(local: NaiveDateTime, zone: Tz) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&local).earliest() {
        Some(instant) => Some(instant.with_timezone(&Utc)),
        // In a daylight-saving gap: no wall clock showed this time. Clocks
        // that skipped ahead by at most two hours put it after the gap.
        None => (1..=2).find_map(|hours| {
            zone.from_local_datetime(&(local + Duration::hours(hours)))
                .earliest()
                .map(|instant| instant.with_timezone(&Utc) - Duration::hours(hours))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn bsd_with_and_without_fraction() {
        let reference = utc("2024-06-01T00:00:00Z");
        let stamp = parse_bsd(b"Mar", b"18", b"14:58:48.078").unwrap();
        assert_eq!(resolve(stamp, Tz::UTC, reference), Some(utc("2024-03-18T14:58:48.078Z")));
        let stamp = parse_bsd(b"Jan", b"16", b"04:25:44").unwrap();
        assert_eq!(resolve(stamp, Tz::UTC, reference), Some(utc("2024-01-16T04:25:44Z")));
        let stamp = parse_bsd(b"Jul", b"3", b"15:01:22.811").unwrap();
        assert_eq!(resolve(stamp, Tz::UTC, reference), Some(utc("2023-07-03T15:01:22.811Z")));
    }

    #[test]
    fn december_line_read_in_january_is_last_year() {
        let reference = utc("2025-01-02T10:00:00Z");
        let stamp = parse_bsd(b"Dec", b"31", b"23:59:59").unwrap();
        assert_eq!(resolve(stamp, Tz::UTC, reference), Some(utc("2024-12-31T23:59:59Z")));
        let stamp = parse_bsd(b"Jan", b"2", b"09:00:00").unwrap();
        assert_eq!(resolve(stamp, Tz::UTC, reference), Some(utc("2025-01-02T09:00:00Z")));
    }

    #[test]
    fn february_29_goes_back_to_a_leap_year() {
        let reference = utc("2025-03-01T00:00:00Z");
        let stamp = parse_bsd(b"Feb", b"29", b"12:00:00").unwrap();
        assert_eq!(resolve(stamp, Tz::UTC, reference), Some(utc("2024-02-29T12:00:00Z")));
    }

    #[test]
    fn iso_local_and_absolute() {
        let reference = utc("2024-06-01T00:00:00Z");
        let stamp = parse_iso(b"2024-03-05T16:50:25.736").unwrap();
        assert_eq!(resolve(stamp, Tz::UTC, reference), Some(utc("2024-03-05T16:50:25.736Z")));
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(resolve(stamp, berlin, reference), Some(utc("2024-03-05T15:50:25.736Z")));
        let stamp = parse_iso(b"2024-03-05T16:50:25+02:00").unwrap();
        assert_eq!(resolve(stamp, berlin, reference), Some(utc("2024-03-05T14:50:25Z")));
        let stamp = parse_iso(b"2024-03-05T16:50:25.5Z").unwrap();
        assert_eq!(resolve(stamp, berlin, reference), Some(utc("2024-03-05T16:50:25.5Z")));
    }

    #[test]
    fn daylight_saving_gap_and_overlap() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let reference = utc("2024-12-01T00:00:00Z");
        // 02:30 did not exist on 31 March 2024 in Berlin: it is 03:30 CEST.
        let gap = parse_bsd(b"Mar", b"31", b"02:30:00").unwrap();
        assert_eq!(resolve(gap, berlin, reference), Some(utc("2024-03-31T00:30:00Z")));
        // 02:30 happened twice on 27 October 2024: the earlier one is CEST.
        let overlap = parse_bsd(b"Oct", b"27", b"02:30:00").unwrap();
        assert_eq!(resolve(overlap, berlin, reference), Some(utc("2024-10-27T00:30:00Z")));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_bsd(b"Foo", b"18", b"14:58:48"), None);
        assert_eq!(parse_bsd(b"Mar", b"32", b"14:58:48"), None);
        assert_eq!(parse_bsd(b"Mar", b"18", b"14:58"), None);
        assert_eq!(parse_bsd(b"Mar", b"18", b"25:00:00"), None);
        assert_eq!(parse_bsd(b"Mar", b"18", b"14:58:48.1234567890"), None);
        assert_eq!(parse_iso(b"2024-13-05T16:50:25"), None);
        assert_eq!(parse_iso(b"2024-03-05X16:50:25"), None);
        assert_eq!(parse_iso(b"2024-03-05T16:50:25+0200"), None);
    }
}
