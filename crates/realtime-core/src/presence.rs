//! Presence rules: how long a node's lease keeps its presence entries alive, and
//! the debounce that turns a user's (or a topic's) changing connection count into
//! one "appeared" and one "gone" event, so a page reload emits nothing.
//!
//! Time is always an argument, in milliseconds since the Unix epoch.

use std::time::Duration;

/// How a node's lease works, from the bound an operator sets
/// (`presence_node_timeout`): a node killed without cleaning up must be gone from
/// every presence answer within that bound. Built by [`LeaseRules::new`].
///
/// The node renews its lease every [`heartbeat`](Self::heartbeat) (a fifth of the
/// bound); the lease runs [`lease`](Self::lease) (three heartbeats) past each
/// renewal, so two renewals can fail (a Redis blip) before the node is taken for
/// dead; every node looks for expired leases once per heartbeat. A dead node is
/// therefore found at most `lease + heartbeat` (four fifths of the bound) after
/// its last renewal, leaving a fifth for the cleanup itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRules {
    bound_ms: u64,
}

/// A bound that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the presence node timeout must be between 3s and 1 hour")]
pub struct InvalidLease;

impl LeaseRules {
    /// The shortest bound: a heartbeat of 600 ms still leaves room for a slow
    /// renewal on a loaded machine.
    pub const MIN_BOUND: Duration = Duration::from_secs(3);
    pub const MAX_BOUND: Duration = Duration::from_secs(3600);

    pub fn new(bound: Duration) -> Result<Self, InvalidLease> {
        if bound < Self::MIN_BOUND || bound > Self::MAX_BOUND {
            return Err(InvalidLease);
        }
        Ok(LeaseRules {
            bound_ms: bound.as_millis() as u64,
        })
    }

    /// The bound: how long a dead node may stay in presence answers.
    pub fn bound(&self) -> Duration {
        Duration::from_millis(self.bound_ms)
    }

    /// How often a node renews its lease and looks for expired ones.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.bound_ms / 5)
    }

    /// How long a lease lasts after a renewal: three heartbeats.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.bound_ms / 5 * 3)
    }

    /// When a lease renewed at `now_ms` runs out.
    pub fn expires_at(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(self.bound_ms / 5 * 3)
    }

    /// Whether a lease that runs out at `expires_at_ms` has, at `now_ms`: its
    /// node is dead and everything it wrote is to be removed.
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

/// What a webhook event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum EventKind {
    /// A user's first connection anywhere in the cluster appeared.
    #[serde(rename = "user.online")]
    UserOnline,
    /// A user's last connection is gone and stayed gone for the grace.
    #[serde(rename = "user.offline")]
    UserOffline,
    /// A presence topic got its first member.
    #[serde(rename = "topic.occupied")]
    TopicOccupied,
    /// A presence topic's last member left and none came back within the grace.
    #[serde(rename = "topic.vacated")]
    TopicVacated,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::UserOnline,
        EventKind::UserOffline,
        EventKind::TopicOccupied,
        EventKind::TopicVacated,
    ];

    /// The event's `type`, e.g. `"user.online"` (also its metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::UserOnline => "user.online",
            EventKind::UserOffline => "user.offline",
            EventKind::TopicOccupied => "topic.occupied",
            EventKind::TopicVacated => "topic.vacated",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the event is about a user (`user_id`) rather than a topic (`topic`).
    pub fn is_user(self) -> bool {
        matches!(self, EventKind::UserOnline | EventKind::UserOffline)
    }
}

/// One webhook event, exactly as it is POSTed:
/// `{"id":"…","type":"user.online","timestamp":"2026-12-01T10:00:00.000Z","user_id":"42"}`
/// (topic events carry `topic` instead of `user_id`). `id` is unique per event and
/// stays the same across retries, so a receiver can drop repeats.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PresenceEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When the change happened (for `*.offline`/`*.vacated`: when the last one
    /// left), RFC 3339 UTC with milliseconds.
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

impl PresenceEvent {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);

    #[test]
    fn a_dead_node_is_found_within_four_fifths_of_the_bound() {
        let rules = LeaseRules::new(Duration::from_secs(10)).unwrap();
        assert_eq!(rules.heartbeat(), Duration::from_secs(2));
        assert_eq!(rules.lease(), Duration::from_secs(6));
        let expires = rules.expires_at(1_000);
        assert_eq!(expires, 7_000);
        assert!(!rules.is_expired(expires, 6_999));
        assert!(rules.is_expired(expires, 7_000));
        // Renewed on its heartbeat, twice missed, it is still alive.
        let renewed = rules.expires_at(1_000 + 2_000);
        assert!(!rules.is_expired(renewed, 3_000 + 2 * 2_000));
        // Killed right after a renewal at 1 s: some node sweeps at most a
        // heartbeat after the expiry, well inside the bound.
        let found_by = expires + rules.heartbeat().as_millis() as u64;
        assert!(found_by - 1_000 <= rules.bound().as_millis() as u64 * 4 / 5);
        assert_eq!(rules.expires_at(u64::MAX), u64::MAX);
    }

    #[test]
    fn bounds_are_limited() {
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
    fn events_serialize_as_posted() {
        let e = PresenceEvent {
            id: "e1".into(),
            kind: EventKind::UserOffline,
            timestamp: "2026-12-01T10:00:00.000Z".into(),
            user_id: Some("42".into()),
            topic: None,
        };
        assert_eq!(
            e.to_json(),
            r#"{"id":"e1","type":"user.offline","timestamp":"2026-12-01T10:00:00.000Z","user_id":"42"}"#
        );
        let back: PresenceEvent = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(back, e);
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert!(EventKind::UserOnline.is_user() && !EventKind::TopicVacated.is_user());
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
