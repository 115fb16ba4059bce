//! The proxy hooks' Prometheus metrics: calls by hook and outcome, and call
//! latency by hook. Every label set exists from the start, so a dashboard sees
//! zeros rather than gaps before the first call.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which hook a call was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Connect,
    Subscribe,
    Publish,
}

impl Hook {
    pub const ALL: [Hook; 3] = [Hook::Connect, Hook::Subscribe, Hook::Publish];

    /// The `hook` label, and the hook's name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Connect => "connect",
            Hook::Subscribe => "subscribe",
            Hook::Publish => "publish",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend allowed (a connect answered with a user, a publish allowed
    /// or replaced).
    Allowed,
    /// The backend refused, with its reason.
    Refused,
    /// No decision: down, slow, busy, non-2xx or garbage. Refused all the same.
    Unavailable,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Allowed, Outcome::Refused, Outcome::Unavailable];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Refused => "refused",
            Outcome::Unavailable => "unavailable",
        }
    }
}

type RequestLabels = [(&'static str, &'static str); 2];
type HookLabels = [(&'static str, &'static str); 1];
type Histograms = Family<HookLabels, Histogram, fn() -> Histogram>;

/// The hooks' counters; clones share them.
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    requests: Family<RequestLabels, Counter>,
    seconds: Histograms,
    // Resolved handles, indexed by hook, then outcome.
    by_outcome: [[Counter; 3]; 3],
    latency: [Histogram; 3],
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        ProxyMetrics::new()
    }
}

/// 1 ms to about 4 s: a local backend up to several times the default timeout.
fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 13))
}

impl ProxyMetrics {
    pub fn new() -> ProxyMetrics {
        let requests = Family::<RequestLabels, Counter>::default();
        let seconds: Histograms = Family::new_with_constructor(histogram);
        let by_outcome = Hook::ALL.map(|hook| {
            Outcome::ALL.map(|outcome| {
                requests
                    .get_or_create_owned(&[("hook", hook.as_str()), ("outcome", outcome.as_str())])
            })
        });
        let latency = Hook::ALL.map(|hook| seconds.get_or_create_owned(&[("hook", hook.as_str())]));
        ProxyMetrics {
            requests,
            seconds,
            by_outcome,
            latency,
        }
    }

    /// Counts one call of `hook` that came to `outcome` after `took`.
    pub fn observe(&self, hook: Hook, outcome: Outcome, took: Duration) {
        let o = Outcome::ALL.iter().position(|x| *x == outcome).unwrap_or(0);
        self.by_outcome[hook.index()][o].inc();
        self.latency[hook.index()].observe(took.as_secs_f64());
    }

    /// Adds both metrics to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "realtime_proxy_requests",
            "Calls to the backend proxy hooks, by hook and outcome",
            self.requests.clone(),
        );
        registry.register(
            "realtime_proxy_request_seconds",
            "Duration of one proxy hook call, waiting for a free slot included, by hook",
            self.seconds.clone(),
        );
    }
}
