//! The hosts a guard without a configuration tracks. Without one, any
//! source may send and every line names its own host, so each new name
//! would cost model state, history rows and a part of every status: a
//! flood of invented names would slow the real ones. At most
//! `--max-hosts` are tracked, the first ones heard; records naming any
//! other are rejected (and cost nothing more).

use std::collections::HashSet;

/// The hosts tracked so far, up to a bound.
#[derive(Debug, Default)]
pub struct OpenHosts {
    /// Host names as heard, ASCII lower case (a host is matched
    /// case-insensitively everywhere else too).
    known: HashSet<String>,
}

impl OpenHosts {
    /// Whether a record of `host` may be used: a host already tracked, or
    /// a new one while fewer than `max` are.
    pub fn admits(&mut self, host: &str, max: usize) -> bool {
        if self.known.contains(host) {
            return true;
        }
        let folded = host.to_ascii_lowercase();
        if self.known.contains(&folded) {
            return true;
        }
        if self.known.len() >= max {
            return false;
        }
        self.known.insert(folded);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_hosts_are_tracked_and_the_rest_rejected() {
        let mut hosts = OpenHosts::default();
        assert!(hosts.admits("cms1", 2) && hosts.admits("cms2", 2));
        assert!(!hosts.admits("invented", 2));
        assert!(hosts.admits("cms1", 2) && hosts.admits("CMS2", 2));
        // A bound raised on reload lets new ones in again.
        assert!(hosts.admits("cms3", 3));
    }
}
