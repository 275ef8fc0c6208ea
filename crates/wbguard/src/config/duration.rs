//! Durations as operators write them: `90s`, `10m`, `1h30m`, `2d`.
//!
//! Checked at the edge: a number too large for any clock is an error that
//! names the value, never an overflow. Callers add the range that makes
//! sense for their key and name the key.

use std::time::Duration;

/// The longest duration written anywhere (about 100 years): far beyond any
/// sensible setting, far below what the clocks can hold.
const LONGEST_SECONDS: u64 = 100 * 366 * 86_400;

/// `90s`, `10m`, `1h`, `2d`, or a combination such as `1h30m`; more than
/// zero and at most about a hundred years.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("'{text}' is not a duration (write e.g. 90s, 10m, 1h30m, 2d)");
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in text.trim().chars() {
        if let Some(digit) = c.to_digit(10) {
            let n = number.unwrap_or(0).checked_mul(10).and_then(|n| n.checked_add(u64::from(digit)));
            number = Some(n.ok_or_else(|| format!("'{text}' is too long a duration"))?);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n = number.take().ok_or_else(bad)?;
        total = n
            .checked_mul(unit)
            .and_then(|seconds| total.checked_add(seconds))
            .ok_or_else(|| format!("'{text}' is too long a duration"))?;
    }
    if number.is_some() || total == 0 {
        return Err(bad());
    }
    if total > LONGEST_SECONDS {
        return Err(format!("'{text}' is too long a duration (at most about 100 years)"));
    }
    Ok(Duration::from_secs(total))
}

/// [`parse_within`], as the core's clock type (always representable: the
/// longest duration [`parse`] accepts is far below chrono's limit).
pub fn parse_chrono_within(text: &str, min: Duration, max: Duration) -> Result<chrono::Duration, String> {
    let duration = parse_within(text, min, max)?;
    chrono::Duration::from_std(duration).map_err(|_| format!("'{text}' is too long a duration"))
}

/// [`parse`], then within `min..=max` (both inclusive); errors say the range.
pub fn parse_within(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let duration = parse(text)?;
    if duration < min || duration > max {
        return Err(format!("'{text}' is not between {} and {}", show(min), show(max)));
    }
    Ok(duration)
}

/// A duration the way it is written: `90s`, `1h30m`, `7d`.
pub fn show(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    if seconds == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse(" 2d "), Ok(Duration::from_secs(172_800)));
        for bad in ["", "10", "h", "1x", "0m", "-1h", "1.5h", "1h 30m"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(show(Duration::from_secs(5400)), "1h30m");
        assert_eq!(show(Duration::from_secs(7 * 86_400)), "7d");
    }

    #[test]
    fn huge_numbers_are_errors_not_overflows() {
        for huge in ["9999999999999999s", "99999999999999h", "99999999999999d", "99999999999999999999999999s"] {
            let error = parse(huge).unwrap_err();
            assert!(error.contains("too long"), "{huge}: {error}");
            assert!(parse_chrono_within(huge, Duration::ZERO, Duration::MAX).is_err());
        }
        assert!(parse_within("2h", Duration::from_secs(60), Duration::from_secs(3600)).unwrap_err().contains("1h"));
        let longest = parse(&format!("{LONGEST_SECONDS}s")).unwrap();
        assert_eq!(
            parse_chrono_within(&format!("{LONGEST_SECONDS}s"), Duration::ZERO, Duration::MAX).unwrap().to_std(),
            Ok(longest)
        );
    }
}
