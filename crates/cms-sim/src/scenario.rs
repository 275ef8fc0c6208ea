//! What is simulated: the servers and the load.

use chrono::{Datelike, Duration, NaiveTime, Timelike, Weekday};

/// The 24-hour profile's quietest level unless a scenario sets `night`:
/// 70% of the peak, as before the key existed, so old results stay put.
pub const DEFAULT_NIGHT: f64 = 0.7;

/// Which CMS release a server runs: up to 2.9 it has Web Bridge 2, which
/// leaks; 3.x has only Web Bridge 3, which does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// 2.8: Web Bridge 2 only.
    V2_8,
    /// 2.9: Web Bridge 2 (and 3).
    V2_9,
    /// 3.x: Web Bridge 3 only, no leak.
    V3,
}

impl Release {
    /// Whether this release runs the leaking Web Bridge 2.
    pub fn has_webbridge2(self) -> bool {
        !matches!(self, Release::V3)
    }

    /// The version string `version` prints.
    pub fn version(self) -> &'static str {
        match self {
            Release::V2_8 => "2.8.5",
            Release::V2_9 => "2.9.7",
            Release::V3 => "3.8.1",
        }
    }
}

impl std::str::FromStr for Release {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "2.8" => Ok(Release::V2_8),
            "2.9" => Ok(Release::V2_9),
            "3" | "3.x" => Ok(Release::V3),
            other => Err(format!("unknown release '{other}' (use 2.8, 2.9 or 3.x)")),
        }
    }
}

/// How the load follows the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// An office: nothing at night, a busy working day, quiet weekends
    /// ([`daily_curve`] and `weekend_factor`).
    #[default]
    Office,
    /// A 24-hour deployment (a hospital, a support centre, a company across
    /// time zones): never below `night` of the peak (70% by default), day
    /// and night, weekends included ([`all_day_curve`]); `weekend_factor`
    /// does not apply. With the default load that is a join every 15 to 20
    /// seconds; scale `peak_sessions` for more.
    AllDay,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "office" => Ok(Profile::Office),
            "24h" => Ok(Profile::AllDay),
            other => Err(format!("unknown profile '{other}' (use office or 24h)")),
        }
    }
}

/// One CMS server: each runs a web bridge and a call bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Host name, as in its log lines (`cms1`).
    pub name: String,
    /// Its release.
    pub release: Release,
    /// Its address in syslog relay headers.
    pub address: String,
}

/// The deployment and its load.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The servers (one cluster).
    pub servers: Vec<Server>,
    /// Concurrent sessions in the whole cluster at the busiest hour of a
    /// weekday. Default 160 (40 per web bridge with four).
    pub peak_sessions: f64,
    /// Mean length of a session. Default 45 minutes.
    pub mean_session: Duration,
    /// Share of sessions from the CMA desktop or iOS clients, which use no
    /// web bridge but count in CMA. Default 0.1.
    pub desktop_share: f64,
    /// Probability that a Web Bridge 2 session leaks when it ends. Default 0.02.
    pub leak_probability: f64,
    /// Sessions at which a web bridge refuses new ones. Default 149.
    pub limit: u32,
    /// Load on Saturdays and Sundays relative to weekdays. Default 0.15.
    pub weekend_factor: f64,
    /// How often each web bridge logs `Stats`. Default 60 s (undocumented
    /// for real CMS).
    pub stats_interval: Duration,
    /// How often each call bridge logs `STATS:`. 5 minutes, as CMS does.
    pub callbridge_interval: Duration,
    /// How long a web bridge is down while it restarts. Default 8 s.
    pub restart_downtime: Duration,
    /// How the load follows the clock. Default [`Profile::Office`].
    pub profile: Profile,
    /// The 24-hour profile's quietest level, a share of `peak_sessions`
    /// (0 to 1). Default 0.7; issue 14 measured nights at 0.4. The office
    /// profile ignores it.
    pub night: f64,
    /// Joins reach the web bridges through a load balancer
    /// ([`crate::session`]'s pool: least real sessions first, skipping web
    /// bridges that are down, drained or full) instead of DNS round robin.
    /// Default false.
    pub pool: bool,
}

impl Scenario {
    /// `n` servers `cms1`..`cmsN` on release 2.9, default load.
    pub fn with_servers(n: usize) -> Self {
        Scenario {
            servers: (1..=n)
                .map(|i| Server {
                    name: format!("cms{i}"),
                    release: Release::V2_9,
                    address: format!("10.0.0.{}", 10 + i),
                })
                .collect(),
            peak_sessions: 40.0 * n as f64,
            mean_session: Duration::minutes(45),
            desktop_share: 0.1,
            leak_probability: 0.02,
            limit: 149,
            weekend_factor: 0.15,
            stats_interval: Duration::seconds(60),
            callbridge_interval: Duration::minutes(5),
            restart_downtime: Duration::seconds(8),
            profile: Profile::Office,
            night: DEFAULT_NIGHT,
            pool: false,
        }
    }

    /// Concurrent sessions the cluster would carry at `time` in steady state.
    pub fn target_sessions(&self, time: chrono::DateTime<chrono::Utc>) -> f64 {
        if self.profile == Profile::AllDay {
            return self.peak_sessions * all_day_curve(time.time(), self.night);
        }
        let day = if matches!(time.weekday(), Weekday::Sat | Weekday::Sun) { self.weekend_factor } else { 1.0 };
        self.peak_sessions * day * daily_curve(time.time())
    }

    /// Joins per second at `time` (Little's law: sessions / mean length).
    pub fn join_rate(&self, time: chrono::DateTime<chrono::Utc>) -> f64 {
        self.target_sessions(time) / self.mean_session.num_seconds().max(1) as f64
    }
}

/// Share of the day's peak load at a time of day: nothing from 01:00 to
/// 05:00, a morning ramp, a busy day with a lunch dip, a quiet evening.
pub fn daily_curve(time: NaiveTime) -> f64 {
    let hour = f64::from(time.hour()) + f64::from(time.minute()) / 60.0;
    let points = [
        (0.0, 0.04),
        (1.0, 0.0),
        (5.0, 0.0),
        (6.5, 0.1),
        (8.0, 0.7),
        (10.0, 1.0),
        (12.0, 0.8),
        (13.0, 0.75),
        (14.5, 1.0),
        (16.5, 0.8),
        (18.0, 0.35),
        (20.0, 0.15),
        (22.0, 0.08),
        (24.0, 0.04),
    ];
    let upper = points.iter().position(|&(h, _)| h > hour).unwrap_or(points.len() - 1).max(1);
    let (h0, v0) = points[upper - 1];
    let (h1, v1) = points[upper];
    v0 + (v1 - v0) * ((hour - h0) / (h1 - h0)).clamp(0.0, 1.0)
}

/// Share of the peak load of a 24-hour deployment at a time of day:
/// `night` (a share of the peak, clamped to 0..=1) at the quietest hours
/// (01:00 to 05:00), the office curve's shape on top, 1 at the busiest.
pub fn all_day_curve(time: NaiveTime, night: f64) -> f64 {
    let night = night.clamp(0.0, 1.0);
    night + (1.0 - night) * daily_curve(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_24h_profile_is_busy_at_night_and_on_sundays() {
        let mut scenario = Scenario::with_servers(2);
        scenario.profile = "24h".parse().unwrap();
        let sunday_night = chrono::DateTime::parse_from_rfc3339("2024-03-10T03:00:00Z").unwrap().to_utc();
        assert!((scenario.target_sessions(sunday_night) - 0.7 * scenario.peak_sessions).abs() < 1e-9);
        scenario.profile = Profile::Office;
        assert_eq!(scenario.target_sessions(sunday_night), 0.0);
        assert!("night".parse::<Profile>().unwrap_err().contains("24h"));
    }

    #[test]
    fn nights_at_40_percent_of_the_peak() {
        // Issue 14's 24-hour load: four servers, about 110 real sessions
        // per web bridge at peak, nights at 40% of it.
        let mut scenario = Scenario::with_servers(4);
        scenario.profile = Profile::AllDay;
        scenario.peak_sessions = 440.0;
        scenario.night = 0.4;
        let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc();
        assert!((scenario.target_sessions(at("2024-03-06T03:00:00Z")) - 176.0).abs() < 1e-9);
        assert!((scenario.target_sessions(at("2024-03-10T03:30:00Z")) - 176.0).abs() < 1e-9, "Sundays too");
        assert!((scenario.target_sessions(at("2024-03-06T10:00:00Z")) - 440.0).abs() < 1e-9);
        let evening = scenario.target_sessions(at("2024-03-06T19:00:00Z"));
        assert!(evening > 176.0 && evening < 440.0, "{evening}");
        // The default keeps the old 70%.
        assert_eq!(all_day_curve(NaiveTime::from_hms_opt(3, 0, 0).unwrap(), DEFAULT_NIGHT), 0.7);
    }

    #[test]
    fn the_curve_is_quiet_at_night_and_full_mid_morning() {
        assert_eq!(daily_curve(NaiveTime::from_hms_opt(3, 0, 0).unwrap()), 0.0);
        assert_eq!(daily_curve(NaiveTime::from_hms_opt(10, 0, 0).unwrap()), 1.0);
        let evening = daily_curve(NaiveTime::from_hms_opt(19, 0, 0).unwrap());
        assert!(evening > 0.1 && evening < 0.35);
        assert!(daily_curve(NaiveTime::from_hms_opt(23, 59, 59).unwrap()) > 0.0);
    }
}
