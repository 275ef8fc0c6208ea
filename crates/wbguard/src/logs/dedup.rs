//! Duplicate records: the same line read twice, from rotated files that
//! overlap (`syslog.1` and `syslog` sharing lines) or a file named twice.
//!
//! Records reach the model merged by time, so a duplicate arrives close to
//! its twin: among the records of the same instant. A window of the hashes
//! of the latest [`WINDOW`] records recognises it in bounded memory. Two
//! records are the same when time, host and content are; CMS never logs one
//! web bridge's `Stats` twice in one instant with the same counters, and if
//! it did, counting it once would change nothing.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use wbguard_core::log::Record;

/// Records remembered: far more than ever share one instant in a real log.
pub const WINDOW: usize = 4096;

/// The hashes of the latest records, oldest first.
#[derive(Debug, Default)]
pub struct Dedup {
    order: VecDeque<u64>,
    seen: HashSet<u64>,
}

impl Dedup {
    /// True when `record` was seen among the latest [`WINDOW`] records;
    /// otherwise remembers it.
    pub fn is_duplicate(&mut self, record: &Record) -> bool {
        // SipHash with fixed keys: 64 bits make a false match between two
        // of a few thousand records practically impossible.
        let mut hasher = DefaultHasher::new();
        record.hash(&mut hasher);
        let key = hasher.finish();
        if !self.seen.insert(key) {
            return true;
        }
        self.order.push_back(key);
        if self.order.len() > WINDOW {
            let oldest = self.order.pop_front().expect("longer than the window");
            self.seen.remove(&oldest);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};
    use wbguard_core::log::{RecordBody, WebBridgeStats};

    fn stats(second: i64, host: &str, active: u32) -> Record {
        Record {
            time: Utc.with_ymd_and_hms(2024, 3, 4, 0, 0, 0).unwrap() + Duration::seconds(second),
            host: host.to_owned(),
            body: RecordBody::WebBridgeStats(WebBridgeStats { active, connections: 1, disconnections: 1 }),
        }
    }

    #[test]
    fn twins_are_found_and_the_window_stays_bounded() {
        let mut dedup = Dedup::default();
        assert!(!dedup.is_duplicate(&stats(0, "cms1", 5)));
        assert!(dedup.is_duplicate(&stats(0, "cms1", 5)));
        // Another host, count or time is another record.
        assert!(!dedup.is_duplicate(&stats(0, "cms2", 5)));
        assert!(!dedup.is_duplicate(&stats(0, "cms1", 6)));
        assert!(!dedup.is_duplicate(&stats(1, "cms1", 5)));
        for i in 0..3 * WINDOW as u32 {
            assert!(!dedup.is_duplicate(&stats(2, "cms1", 100 + i)));
        }
        assert_eq!((dedup.order.len(), dedup.seen.len()), (WINDOW, WINDOW));
    }
}
