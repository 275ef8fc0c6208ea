//! File descriptors: the guard raises its soft limit to the hard one when
//! it starts, and shares what it has between the bounds of its listeners,
//! keeping [`RESERVED`] for what must never be starved by connections: a
//! restart's SSH connection, the webhooks (a lockout must be told), the
//! history's SQLite files, followed files, a reload's reads.
//!
//! Every connection holds its place, and a place is only given when the
//! descriptors for it are there: connections alone can then never run the
//! guard out of descriptors (EMFILE), whatever arrives. When the limit is
//! too low for the bounds, the bounds are lowered (and the log says so)
//! rather than failing later.

/// Descriptors kept out of every connection bound.
pub const RESERVED: usize = 64;

/// The file limit as the guard found and left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit now.
    pub soft: u64,
    /// The soft limit found at start.
    pub was: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft file limit as far as the hard one allows (an unlimited
/// hard limit: to 2^20, Linux's usual ceiling). `None` where it cannot be
/// read.
#[cfg(unix)]
pub fn raise() -> Option<Limit> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    let (was, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let wanted = if hard == RLIM_INFINITY { 1 << 20 } else { hard };
    let soft = if wanted > was && setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_ok() { wanted } else { was };
    Some(Limit { soft, was, hard })
}

/// Elsewhere the limit is not known: the bounds stay as they are.
#[cfg(not(unix))]
pub fn raise() -> Option<Limit> {
    None
}

/// Descriptors open now (Linux; elsewhere a guess of a few dozen).
pub fn open_now() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(32, |entries| entries.count())
}

/// How many connections each gate may hold: `wanted` (each gate's bound)
/// as far as `free` descriptors allow with [`RESERVED`] kept (half of them,
/// at most, when descriptors are very short). Each connection of a gate
/// may need one more while it is being accepted or evicted, so a gate of
/// `n` places is counted `n + 1`. Every gate keeps at least one place.
pub fn share(free: usize, wanted: &[usize]) -> Vec<usize> {
    let needed: usize = wanted.iter().map(|n| n + 1).sum();
    let reserve = RESERVED.min(free / 2);
    let room = free - reserve;
    if room >= needed {
        return wanted.to_vec();
    }
    // Short: each gate gets its part of the room, in proportion to its bound.
    wanted.iter().map(|&n| ((room * (n + 1) / needed.max(1)).saturating_sub(1)).clamp(1, n.max(1))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_fit_under_the_limit_with_room_kept() {
        // The unit's LimitNOFILE, or a usual 1,024, hold the full bounds.
        assert_eq!(share(8192 - 40, &[256, 256, 256]), [256, 256, 256]);
        assert_eq!(share(1024 - 30, &[256, 256, 256]), [256, 256, 256]);
        // 512 left: what the gates may use, with their extra one each and
        // the reserve, fits.
        let shared = share(512, &[256, 256, 256]);
        let used: usize = shared.iter().map(|n| n + 1).sum();
        assert!(used + RESERVED <= 512, "{shared:?}");
        assert!(shared.iter().all(|&n| n >= 140), "{shared:?}");
        // Almost nothing left: one place each, and half kept.
        let shared = share(40, &[256, 256]);
        assert!(shared.iter().map(|n| n + 1).sum::<usize>() <= 20, "{shared:?}");
        assert_eq!(share(0, &[256, 256]), [1, 1]);
    }

    #[cfg(unix)]
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let limit = raise().expect("a unix process has a file limit");
        assert!(limit.soft >= limit.was && limit.soft <= limit.hard, "{limit:?}");
        assert!(open_now() >= 3);
    }
}
