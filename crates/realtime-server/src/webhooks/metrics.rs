//! The webhook sender's Prometheus metrics: events handed to it, attempts by
//! outcome, attempt latency, deliveries held, and the queue's depth and drops
//! (read from the queue at each scrape).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use realtime::EventQueue;
use realtime_core::EventKind;

type Labels = [(&'static str, &'static str); 1];

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A 2xx answer.
    Delivered,
    /// Anything else, with attempts left: tried again after the backoff.
    Retried,
    /// Anything else on the last attempt: given up.
    Failed,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Delivered, Outcome::Retried, Outcome::Failed];

    fn label(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retried => "retried",
            Outcome::Failed => "failed",
        }
    }
}

/// The sender's counters; clones share them.
#[derive(Debug, Clone)]
pub struct WebhookMetrics {
    events: Family<Labels, Counter>,
    deliveries: Family<Labels, Counter>,
    pub(crate) seconds: Histogram,
    pub(crate) in_flight: Gauge,
    // Resolved handles, indexed like the enums they count.
    events_by_kind: [Counter; 4],
    deliveries_by_outcome: [Counter; 3],
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        WebhookMetrics::new()
    }
}

impl WebhookMetrics {
    pub fn new() -> WebhookMetrics {
        let events = Family::<Labels, Counter>::default();
        let deliveries = Family::<Labels, Counter>::default();
        let events_by_kind =
            EventKind::ALL.map(|k| events.get_or_create_owned(&[("type", k.as_str())]));
        let deliveries_by_outcome =
            Outcome::ALL.map(|o| deliveries.get_or_create_owned(&[("outcome", o.label())]));
        WebhookMetrics {
            events,
            deliveries,
            // 5 ms to about 10 s: a local receiver up to the default timeout.
            seconds: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            in_flight: Gauge::default(),
            events_by_kind,
            deliveries_by_outcome,
        }
    }

    pub(crate) fn event(&self, kind: EventKind) {
        let i = EventKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.events_by_kind[i].inc();
    }

    pub(crate) fn outcome(&self, outcome: Outcome) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.deliveries_by_outcome[i].inc();
    }

    /// Adds every metric to `registry`, the queue's depth and drops read from
    /// `queue` at each scrape.
    pub fn register(&self, registry: &mut Registry, queue: Arc<dyn EventQueue>) {
        registry.register(
            "realtime_webhook_events",
            "Webhook events handed to this node's sender, by type",
            self.events.clone(),
        );
        registry.register(
            "realtime_webhook_deliveries",
            "Webhook delivery attempts, by outcome",
            self.deliveries.clone(),
        );
        registry.register(
            "realtime_webhook_delivery_seconds",
            "Duration of one webhook delivery attempt",
            self.seconds.clone(),
        );
        registry.register(
            "realtime_webhook_in_flight",
            "Webhook events this node's sender holds: being posted or waiting to retry",
            self.in_flight.clone(),
        );
        registry.register_collector(Box::new(QueueCollector { queue }));
    }
}

/// The queue's own numbers, read when scraped rather than copied into gauges.
struct QueueCollector {
    queue: Arc<dyn EventQueue>,
}

impl std::fmt::Debug for QueueCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueCollector")
    }
}

impl Collector for QueueCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let depth = ConstGauge::new(i64::try_from(self.queue.depth()).unwrap_or(i64::MAX));
        depth.encode(encoder.encode_descriptor(
            "realtime_webhook_queue_depth",
            "Webhook events waiting to be handed to a sender",
            None,
            depth.metric_type(),
        )?)?;
        let dropped = ConstCounter::new(self.queue.dropped());
        dropped.encode(encoder.encode_descriptor(
            "realtime_webhook_dropped",
            "Webhook events dropped because the queue was full",
            None,
            dropped.metric_type(),
        )?)?;
        Ok(())
    }
}
