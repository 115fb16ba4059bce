//! A connection's deadlines on one timer, shared by every transport: the
//! heartbeat (a ping every `ping_interval`; on a WebSocket, nothing received
//! within `pong_timeout` of it means the client is gone), the token's expiry,
//! and how long a blocked write may stay blocked.

use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Instant, Sleep};

use crate::config::RealtimeConfig;

/// Moves the timer to `at` if that is earlier than where it is set. A later
/// deadline needs no reset (a timer operation): the timer fires early, finds
/// nothing due and is set then.
pub(crate) fn rearm(timer: Pin<&mut Sleep>, at: Instant) {
    if at < timer.deadline() {
        timer.reset(at);
    }
}

pub(crate) enum Beat {
    /// The timer fired for a deadline that has since moved: nothing is due.
    NotYet,
    SendPing,
    /// A ping went unanswered for `pong_timeout` (only where an answer is expected).
    Expired,
    TokenExpired,
    WriteStalled,
}

/// The session's deadlines, served by its one timer: a ping every
/// `ping_interval`, and, where the client answers pings (a WebSocket), if
/// nothing at all arrives within `pong_timeout` of a ping the client is
/// considered gone; the token's expiry; and how long the current
/// write may stay blocked (`write_timeout`). It borrows the durations from the
/// config rather than copying them into every idle connection's task.
pub(crate) struct Heartbeat<'a> {
    config: &'a RealtimeConfig,
    last_ping: Instant,
    awaiting: bool,
    /// Whether a ping expects an answer.
    answered: bool,
    /// The token's `exp` the expiry below was computed from.
    expires_at: Option<i64>,
    /// When the connection is closed with 3005 unless refreshed.
    expiry: Option<Instant>,
    /// When the write that is blocked now must have made progress by.
    write_deadline: Option<Instant>,
}

impl<'a> Heartbeat<'a> {
    /// Deadlines for a client that answers pings (any inbound frame counts).
    pub(crate) fn new(config: &'a RealtimeConfig) -> Self {
        Heartbeat {
            config,
            last_ping: Instant::now(),
            awaiting: false,
            answered: true,
            expires_at: None,
            expiry: None,
            write_deadline: None,
        }
    }

    /// Deadlines for a client that never answers (an SSE stream): a ping is a
    /// keep-alive only, so it never expires.
    pub(crate) fn one_way(config: &'a RealtimeConfig) -> Self {
        Heartbeat {
            answered: false,
            ..Heartbeat::new(config)
        }
    }

    /// Sets the token expiry (Unix seconds; the connection closes at it plus
    /// `expiry_grace`); returns whether it changed.
    pub(crate) fn expire_at(&mut self, expires_at: Option<i64>) -> bool {
        let grace = self.config.expiry_grace;
        if expires_at == self.expires_at {
            return false;
        }
        self.expires_at = expires_at;
        self.expiry = expires_at.and_then(|exp| {
            let at =
                UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(exp).unwrap_or(0)))?;
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            Instant::now().checked_add(left.checked_add(grace)?)
        });
        true
    }

    /// The earliest deadline.
    pub(crate) fn deadline(&self) -> Instant {
        let mut at = self.beat();
        for other in [self.expiry, self.write_deadline].into_iter().flatten() {
            at = at.min(other);
        }
        at
    }

    /// When the next ping is due, or the pong to the last one is overdue.
    fn beat(&self) -> Instant {
        if self.awaiting {
            self.last_ping + self.config.pong_timeout
        } else {
            self.last_ping + self.config.ping_interval
        }
    }

    /// Records inbound traffic.
    pub(crate) fn activity(&mut self) {
        self.awaiting = false;
    }

    /// Records that a write is blocked; returns whether that started its clock
    /// (the deadline may have moved earlier). Reads the clock only then.
    pub(crate) fn write_blocked(&mut self) -> bool {
        if self.write_deadline.is_some() {
            return false;
        }
        self.write_deadline = Instant::now().checked_add(self.config.write_timeout);
        self.write_deadline.is_some()
    }

    /// Records that the writer is not blocked (it wrote a chunk, or is idle).
    pub(crate) fn write_moved(&mut self) {
        self.write_deadline = None;
    }

    /// Records what a writer's poll found, the same for every transport: it
    /// moved (`more`) or has nothing left (`busy` false) clears the write clock;
    /// blocked with work left starts it, moving `timer` earlier when due sooner.
    pub(crate) fn after_write(&mut self, more: bool, busy: bool, timer: Pin<&mut Sleep>) {
        if more || !busy {
            self.write_moved();
        } else if self.write_blocked() {
            rearm(timer, self.deadline());
        }
    }

    pub(crate) fn on_timer(&mut self) -> Beat {
        let now = Instant::now();
        if self.expiry.is_some_and(|e| now >= e) {
            return Beat::TokenExpired;
        }
        if self.write_deadline.is_some_and(|d| now >= d) {
            return Beat::WriteStalled;
        }
        if now < self.beat() {
            return Beat::NotYet;
        }
        if self.awaiting {
            return Beat::Expired;
        }
        self.awaiting = self.answered;
        self.last_ping = now;
        Beat::SendPing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_now() -> i64 {
        crate::auth::unix_seconds(SystemTime::now())
    }

    fn config(grace: u64) -> RealtimeConfig {
        RealtimeConfig {
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            expiry_grace: Duration::from_secs(grace),
            ..RealtimeConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_token_expiry_shares_the_ping_timer() {
        let config = config(2);
        let mut beat = Heartbeat::new(&config);
        assert!(!beat.expire_at(None), "no expiry, no change");
        let ping_at = beat.deadline();
        // Expiring long after the next ping: the ping comes first.
        assert!(beat.expire_at(Some(unix_now() + 3600)));
        assert_eq!(beat.deadline(), ping_at);
        // Expiring before it: the timer fires at the expiry, plus the grace.
        assert!(beat.expire_at(Some(unix_now() + 5)));
        assert!(!beat.expire_at(beat.expires_at));
        let expiry = beat.deadline();
        assert!(expiry < ping_at);
        let left = expiry - Instant::now();
        assert!(
            left > Duration::from_secs(5) && left <= Duration::from_secs(7),
            "{left:?}"
        );
        tokio::time::advance(left).await;
        assert!(matches!(beat.on_timer(), Beat::TokenExpired));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_moves_the_deadline_back_to_the_ping() {
        let config = config(0);
        let mut beat = Heartbeat::new(&config);
        let ping_at = beat.deadline();
        beat.expire_at(Some(unix_now() + 1));
        assert!(beat.deadline() < ping_at);
        assert!(beat.expire_at(Some(unix_now() + 3600)));
        assert_eq!(beat.deadline(), ping_at);
        tokio::time::advance(Duration::from_secs(25)).await;
        assert!(matches!(beat.on_timer(), Beat::SendPing));
    }

    #[tokio::test(start_paused = true)]
    async fn an_already_expired_token_expires_at_once() {
        let config = config(0);
        let mut beat = Heartbeat::new(&config);
        beat.expire_at(Some(unix_now() - 10));
        assert!(matches!(beat.on_timer(), Beat::TokenExpired));
        // Absurd expiries neither overflow nor expire.
        let far_config = RealtimeConfig {
            expiry_grace: Duration::MAX,
            ..config
        };
        let mut far = Heartbeat::new(&far_config);
        far.expire_at(Some(i64::MAX - 1));
        assert!(matches!(far.on_timer(), Beat::NotYet));
        tokio::time::advance(Duration::from_secs(25)).await;
        assert!(matches!(far.on_timer(), Beat::SendPing));
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_shares_the_timer_and_stalls_after_the_write_timeout() {
        let config = config(0);
        let mut beat = Heartbeat::new(&config);
        let ping_at = beat.deadline();
        assert!(beat.write_blocked(), "the first block starts the clock");
        assert!(!beat.write_blocked(), "still the same blocked write");
        let stall_at = beat.deadline();
        assert_eq!(stall_at - Instant::now(), config.write_timeout);
        // Progress clears it; a timer set for it finds nothing due.
        beat.write_moved();
        assert_eq!(beat.deadline(), ping_at);
        tokio::time::advance(config.write_timeout).await;
        assert!(matches!(beat.on_timer(), Beat::NotYet));
        assert!(beat.write_blocked());
        tokio::time::advance(config.write_timeout).await;
        assert!(matches!(beat.on_timer(), Beat::WriteStalled));
    }

    #[tokio::test(start_paused = true)]
    async fn a_one_way_heartbeat_pings_on_and_never_expires() {
        let config = config(0);
        let mut beat = Heartbeat::one_way(&config);
        for _ in 0..3 {
            assert_eq!(beat.deadline() - Instant::now(), config.ping_interval);
            tokio::time::advance(config.ping_interval).await;
            assert!(matches!(beat.on_timer(), Beat::SendPing));
        }
        tokio::time::advance(config.pong_timeout).await;
        assert!(matches!(beat.on_timer(), Beat::NotYet));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_that_fires_early_only_reports_what_is_due() {
        let config = config(0);
        let mut beat = Heartbeat::new(&config);
        tokio::time::advance(config.ping_interval).await;
        assert!(matches!(beat.on_timer(), Beat::SendPing));
        // Set for the pong deadline, the timer fires after a pong moved it to the
        // next ping: nothing is due yet.
        beat.activity();
        tokio::time::advance(config.pong_timeout).await;
        assert!(matches!(beat.on_timer(), Beat::NotYet));
        tokio::time::advance(config.ping_interval - config.pong_timeout).await;
        assert!(matches!(beat.on_timer(), Beat::SendPing));
        tokio::time::advance(config.pong_timeout).await;
        assert!(matches!(beat.on_timer(), Beat::Expired));
    }
}
