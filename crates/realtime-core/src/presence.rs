//! Presence rules: how long a node's lease keeps its presence entries alive, and
//! the debounce that turns a user's (or a topic's) changing connection count into
//! one "appeared" and one "gone" event, so a page reload emits nothing.
//!
//! Time is always an argument, in milliseconds since the Unix epoch.

use std::time::Duration;

/// How a node's lease works: entries a node writes live as long as its lease, and
/// the node renews the lease on a heartbeat. Built by [`LeaseRules::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRules {
    ttl_ms: u64,
}

/// A lease length that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the presence lease must last between 3s and 1 hour")]
pub struct InvalidLease;

impl LeaseRules {
    /// The shortest lease: a heartbeat a third of it long still leaves room for
    /// one slow renewal on a loaded machine.
    pub const MIN_TTL: Duration = Duration::from_secs(3);
    pub const MAX_TTL: Duration = Duration::from_secs(3600);

    pub fn new(ttl: Duration) -> Result<Self, InvalidLease> {
        if ttl < Self::MIN_TTL || ttl > Self::MAX_TTL {
            return Err(InvalidLease);
        }
        Ok(LeaseRules {
            ttl_ms: ttl.as_millis() as u64,
        })
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// How often a node renews: a third of the lease, so two renewals can fail
    /// (a Redis blip) before the node is taken for dead.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.ttl_ms / 3)
    }

    /// When a lease renewed at `now_ms` runs out.
    pub fn expires_at(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(self.ttl_ms)
    }

    /// Whether a lease that runs out at `expires_at_ms` has, at `now_ms`: its
    /// node is dead and everything it wrote is gone from presence.
    pub fn is_expired(&self, expires_at_ms: u64, now_ms: u64) -> bool {
        now_ms >= expires_at_ms
    }
}

/// Whether something (a user across the cluster, a topic's members) is there, as
/// its debounce sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    /// Nothing there, and "gone" was reported (or nothing was ever there).
    Absent,
    /// Something there, and "appeared" was reported.
    Present,
    /// The last one left at `since_ms`; "gone" is reported if nothing returns
    /// within the grace.
    Leaving { since_ms: u64 },
}

/// What a debounce step reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The first one arrived (`user.online`, `topic.occupied`).
    Appeared,
    /// The last one left and the grace passed with nobody back (`user.offline`,
    /// `topic.vacated`).
    Gone,
}

impl Occupancy {
    /// The count changed to `count` at `now_ms`. Returns the new state and the
    /// change to report, if any. A return within the grace reports nothing.
    pub fn counted(self, count: u64, now_ms: u64) -> (Occupancy, Option<Change>) {
        match (self, count) {
            (Occupancy::Absent, 0) => (Occupancy::Absent, None),
            (Occupancy::Absent, _) => (Occupancy::Present, Some(Change::Appeared)),
            (Occupancy::Present, 0) => (Occupancy::Leaving { since_ms: now_ms }, None),
            (Occupancy::Present, _) => (Occupancy::Present, None),
            (leaving @ Occupancy::Leaving { .. }, 0) => (leaving, None),
            (Occupancy::Leaving { .. }, _) => (Occupancy::Present, None),
        }
    }

    /// Time passed: at `now_ms`, a leave older than `grace` becomes "gone".
    pub fn elapsed(self, now_ms: u64, grace: Duration) -> (Occupancy, Option<Change>) {
        match self.gone_at(grace) {
            Some(at) if now_ms >= at => (Occupancy::Absent, Some(Change::Gone)),
            _ => (self, None),
        }
    }

    /// When "gone" falls due, if a leave is pending: the moment to check again.
    pub fn gone_at(self, grace: Duration) -> Option<u64> {
        match self {
            Occupancy::Leaving { since_ms } => {
                Some(since_ms.saturating_add(grace.as_millis() as u64))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);

    #[test]
    fn a_lease_runs_out_one_ttl_after_its_last_renewal() {
        let rules = LeaseRules::new(Duration::from_secs(10)).unwrap();
        assert_eq!(rules.heartbeat(), Duration::from_millis(3333));
        let expires = rules.expires_at(1_000);
        assert_eq!(expires, 11_000);
        assert!(!rules.is_expired(expires, 10_999));
        assert!(rules.is_expired(expires, 11_000));
        // Renewed on its heartbeat, twice missed, it is still alive.
        let renewed = rules.expires_at(1_000 + rules.heartbeat().as_millis() as u64);
        assert!(!rules.is_expired(renewed, 1_000 + 3 * 3_333));
        assert_eq!(rules.expires_at(u64::MAX), u64::MAX);
    }

    #[test]
    fn lease_lengths_are_bounded() {
        assert_eq!(LeaseRules::new(Duration::from_secs(2)), Err(InvalidLease));
        assert_eq!(
            LeaseRules::new(Duration::from_secs(3601)),
            Err(InvalidLease)
        );
        assert!(LeaseRules::new(Duration::from_secs(3)).is_ok());
    }

    #[test]
    fn the_first_arrival_appears_and_a_return_within_the_grace_reports_nothing() {
        let (s, c) = Occupancy::Absent.counted(1, 0);
        assert_eq!((s, c), (Occupancy::Present, Some(Change::Appeared)));
        let (s, c) = s.counted(2, 10);
        assert_eq!((s, c), (Occupancy::Present, None), "a second tab");
        let (s, c) = s.counted(0, 100);
        assert_eq!((s, c), (Occupancy::Leaving { since_ms: 100 }, None));
        assert_eq!(s.gone_at(GRACE), Some(5_100));
        let (s, c) = s.elapsed(5_099, GRACE);
        assert_eq!(c, None, "still within the grace");
        // A page reload: back before the grace ran out.
        let (s, c) = s.counted(1, 2_000);
        assert_eq!((s, c), (Occupancy::Present, None));
        assert_eq!(s.elapsed(1_000_000, GRACE), (Occupancy::Present, None));
    }

    #[test]
    fn the_last_leave_is_gone_once_the_grace_passes() {
        let (s, _) = Occupancy::Present.counted(0, 100);
        let (s, c) = s.counted(0, 3_000);
        assert_eq!(
            (s, c),
            (Occupancy::Leaving { since_ms: 100 }, None),
            "a repeated zero keeps the first leave's time"
        );
        let (s, c) = s.elapsed(5_100, GRACE);
        assert_eq!((s, c), (Occupancy::Absent, Some(Change::Gone)));
        assert_eq!(s.elapsed(10_000, GRACE), (Occupancy::Absent, None), "once");
        assert_eq!(s.gone_at(GRACE), None);
        assert_eq!(
            s.counted(1, 20_000),
            (Occupancy::Present, Some(Change::Appeared))
        );
    }

    #[test]
    fn a_zero_grace_reports_gone_at_the_next_tick() {
        let (s, _) = Occupancy::Present.counted(0, 100);
        assert_eq!(
            s.elapsed(100, Duration::ZERO),
            (Occupancy::Absent, Some(Change::Gone))
        );
    }
}
