//! The per-connection command rate limit: a token bucket for commands, and a
//! second bucket of refusals that tells a client over its limit from an abuser.
//!
//! Time is an argument (seconds since any fixed origin), so the rules are tested
//! without a clock. A command costs one token; tokens refill at `rate` per second
//! up to `burst`. A command without a token is refused (`rate_limited`) and adds
//! one strike; strikes drain at `rate` per second too. When strikes exceed
//! `burst` the connection is an abuser and is closed (3013). So a client sending
//! up to about twice its rate only sees refusals; one that keeps sending faster is
//! disconnected within about `burst / (sent - 2 × rate)` seconds.

/// The configured limit. `rate == 0` switches limiting off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Commands per second, sustained.
    pub rate: f32,
    /// Commands that may arrive at once after a quiet period.
    pub burst: f32,
}

impl RateLimit {
    /// No limit.
    pub const OFF: RateLimit = RateLimit {
        rate: 0.0,
        burst: 0.0,
    };

    pub fn is_off(&self) -> bool {
        self.rate.is_nan() || self.rate <= 0.0
    }
}

/// What to do with one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Answer with a `rate_limited` error; the connection stays.
    Refuse,
    /// Close the connection with 3013.
    Disconnect,
}

/// One connection's buckets. 16 bytes, kept in its session.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f32,
    strikes: f32,
    /// Seconds (from the caller's origin) of the last update; f64 so precision
    /// holds over connections that live for weeks.
    at: f64,
}

impl Bucket {
    /// A full bucket at time `now`.
    pub fn new(limit: &RateLimit, now: f64) -> Self {
        Bucket {
            tokens: limit.burst.max(1.0),
            strikes: 0.0,
            at: now,
        }
    }

    /// Accounts for one command arriving at `now` (seconds, never decreasing).
    pub fn check(&mut self, limit: &RateLimit, now: f64) -> Verdict {
        if limit.is_off() {
            return Verdict::Allow;
        }
        let elapsed = (now - self.at).max(0.0);
        self.at = now;
        let refill = (elapsed * f64::from(limit.rate)) as f32;
        let capacity = limit.burst.max(1.0);
        self.tokens = (self.tokens + refill).min(capacity);
        self.strikes = (self.strikes - refill).max(0.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        self.strikes += 1.0;
        if self.strikes > capacity {
            Verdict::Disconnect
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        rate: 10.0,
        burst: 5.0,
    };

    /// Sends `n` commands evenly over `secs` seconds from `start`; counts verdicts.
    fn send(b: &mut Bucket, start: f64, n: usize, secs: f64) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for i in 0..n {
            match b.check(&LIMIT, start + secs * i as f64 / n as f64) {
                Verdict::Allow => counts.0 += 1,
                Verdict::Refuse => counts.1 += 1,
                Verdict::Disconnect => counts.2 += 1,
            }
        }
        counts
    }

    #[test]
    fn a_burst_is_allowed_then_refused() {
        let mut b = Bucket::new(&LIMIT, 0.0);
        assert_eq!(send(&mut b, 0.0, 5, 0.0), (5, 0, 0));
        assert_eq!(b.check(&LIMIT, 0.0), Verdict::Refuse);
    }

    #[test]
    fn tokens_refill_at_the_rate() {
        let mut b = Bucket::new(&LIMIT, 0.0);
        send(&mut b, 0.0, 5, 0.0);
        assert_eq!(b.check(&LIMIT, 0.05), Verdict::Refuse);
        assert_eq!(b.check(&LIMIT, 0.15), Verdict::Allow);
        // A long quiet period refills to the burst, not beyond.
        assert_eq!(send(&mut b, 100.0, 6, 0.0), (5, 1, 0));
    }

    #[test]
    fn a_client_at_its_rate_is_never_refused() {
        let mut b = Bucket::new(&LIMIT, 0.0);
        assert_eq!(send(&mut b, 0.0, 1000, 100.0), (1000, 0, 0));
    }

    #[test]
    fn a_client_at_twice_its_rate_is_refused_but_not_disconnected() {
        let mut b = Bucket::new(&LIMIT, 0.0);
        let (allowed, refused, disconnected) = send(&mut b, 0.0, 2000, 100.0);
        assert_eq!(disconnected, 0);
        assert!(refused > 900, "{refused}");
        assert!((1000..=1010).contains(&allowed), "{allowed}");
    }

    #[test]
    fn sustained_abuse_is_disconnected() {
        let mut b = Bucket::new(&LIMIT, 0.0);
        // 100/s against a 10/s limit: 5 burst + refills, strikes pile up.
        let verdicts: Vec<Verdict> = (0..100)
            .map(|i| b.check(&LIMIT, f64::from(i) / 100.0))
            .collect();
        let first = verdicts
            .iter()
            .position(|v| *v == Verdict::Disconnect)
            .expect("disconnected");
        assert!(first < 20, "disconnected after {first} commands");
    }

    #[test]
    fn off_allows_everything() {
        let mut b = Bucket::new(&RateLimit::OFF, 0.0);
        for _ in 0..10_000 {
            assert_eq!(b.check(&RateLimit::OFF, 0.0), Verdict::Allow);
        }
    }
}
