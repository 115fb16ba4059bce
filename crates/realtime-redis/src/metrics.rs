//! Prometheus metrics of the Redis adapters: the bus's relay backlog, link state,
//! reconnects and traffic in each direction, the history store's operations and
//! the presence store's failures and reaps, pre-resolved so the hot paths only bump atomics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 1];

/// One direction of the relay: what waits, and what went through.
#[derive(Debug, Clone, Default)]
pub(crate) struct Flow {
    /// Envelopes waiting (inbound: for the engine; outbound: for Redis).
    pub(crate) backlog_envelopes: Gauge,
    pub(crate) backlog_bytes: Gauge,
    /// Envelopes that went through (inbound: to the engine; outbound: to Redis).
    pub(crate) envelopes: Counter,
    pub(crate) bytes: Counter,
}

impl Flow {
    pub(crate) fn queued(&self, bytes: usize) {
        self.backlog_envelopes.inc();
        self.backlog_bytes.inc_by(bytes as i64);
    }

    pub(crate) fn passed(&self, bytes: usize) {
        self.backlog_envelopes.dec();
        self.backlog_bytes.dec_by(bytes as i64);
        self.envelopes.inc();
        self.bytes.inc_by(bytes as u64);
    }
}

/// The state handles of one link.
#[derive(Debug, Clone, Default)]
pub(crate) struct LinkGauges {
    pub(crate) up: Gauge,
    pub(crate) reconnects: Counter,
}

/// What the history store did, and what it could not.
#[derive(Debug, Clone, Default)]
pub(crate) struct HistoryMetrics {
    /// Publications appended (and published) by Redis.
    pub(crate) appends: Counter,
    pub(crate) reads: Counter,
    pub(crate) resets: Counter,
    errors: Family<Labels, Counter>,
}

impl HistoryMetrics {
    /// The failures of one operation: `append`, `read` or `reset`.
    pub(crate) fn errors(&self, op: &'static str) -> Counter {
        self.errors.get_or_create_owned(&[("op", op)])
    }
}

/// What the presence store could not do, and the dead nodes it cleaned up.
#[derive(Debug, Clone, Default)]
pub(crate) struct PresenceMetrics {
    errors: Family<Labels, Counter>,
    /// Dead nodes whose entries this node removed.
    pub(crate) reaped: Counter,
}

impl PresenceMetrics {
    /// Operations, each exported at zero from the start.
    const OPS: [&'static str; 6] = ["write", "read", "leave", "resync", "heartbeat", "events"];

    pub(crate) fn new() -> Self {
        let m = PresenceMetrics::default();
        for op in Self::OPS {
            m.errors(op);
        }
        m
    }

    /// The failures of one operation (see [`Self::OPS`]).
    pub(crate) fn errors(&self, op: &'static str) -> Counter {
        self.errors.get_or_create_owned(&[("op", op)])
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "realtime_presence_redis_errors",
            "Presence operations on Redis that failed (Redis unreachable or refused), by op",
            self.errors.clone(),
        );
        registry.register(
            "realtime_presence_reaped_nodes",
            "Dead nodes whose presence entries this node removed from Redis after their lease expired",
            self.reaped.clone(),
        );
    }
}

/// Every metric of one bus and its history store.
#[derive(Debug, Clone, Default)]
pub(crate) struct BusMetrics {
    backlog_envelopes: Family<Labels, Gauge>,
    backlog_bytes: Family<Labels, Gauge>,
    envelopes: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    link_up: Family<Labels, Gauge>,
    reconnects: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    pub(crate) inbound: Flow,
    pub(crate) outbound: Flow,
    /// Envelopes received from Redis and discarded because the node fell behind.
    pub(crate) dropped_behind: Counter,
    /// Envelopes Redis answered a PUBLISH for with an error (an ACL change, ...).
    pub(crate) dropped_refused: Counter,
    pub(crate) history: HistoryMetrics,
}

impl BusMetrics {
    pub(crate) fn new() -> Self {
        let mut m = BusMetrics::default();
        m.inbound = m.flow("inbound");
        m.outbound = m.flow("outbound");
        m.dropped_behind = m.dropped.get_or_create_owned(&[("reason", "behind")]);
        m.dropped_refused = m.dropped.get_or_create_owned(&[("reason", "refused")]);
        // Exported at zero from the start, so a first failure is a visible change.
        for op in ["append", "read", "reset"] {
            m.history.errors(op);
        }
        m
    }

    fn flow(&self, direction: &'static str) -> Flow {
        let label = [("direction", direction)];
        Flow {
            backlog_envelopes: self.backlog_envelopes.get_or_create_owned(&label),
            backlog_bytes: self.backlog_bytes.get_or_create_owned(&label),
            envelopes: self.envelopes.get_or_create_owned(&label),
            bytes: self.bytes.get_or_create_owned(&label),
        }
    }

    pub(crate) fn link(&self, name: &'static str) -> LinkGauges {
        let label = [("link", name)];
        LinkGauges {
            up: self.link_up.get_or_create_owned(&label),
            reconnects: self.reconnects.get_or_create_owned(&label),
        }
    }

    /// Adds every metric to `registry` (the handles are shared, not copied).
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "realtime_bus_backlog_envelopes",
            "Envelopes waiting on the relay path, by direction (inbound: for this node; outbound: for Redis)",
            self.backlog_envelopes.clone(),
        );
        registry.register(
            "realtime_bus_backlog_bytes",
            "Bytes of envelopes waiting on the relay path, by direction",
            self.backlog_bytes.clone(),
        );
        registry.register(
            "realtime_bus_envelopes",
            "Envelopes relayed, by direction (inbound: handed to this node; outbound: handed to Redis)",
            self.envelopes.clone(),
        );
        registry.register(
            "realtime_bus_bytes",
            "Bytes of envelopes relayed, by direction",
            self.bytes.clone(),
        );
        registry.register(
            "realtime_bus_link_up",
            "Whether a Redis link of the bus is connected (1) or down (0), by link",
            self.link_up.clone(),
        );
        registry.register(
            "realtime_bus_reconnects",
            "Times a Redis link of the bus was restored after going down, by link",
            self.reconnects.clone(),
        );
        registry.register(
            "realtime_bus_envelopes_dropped",
            "Envelopes received from Redis and discarded, by reason (behind: the inbound backlog was full)",
            self.dropped.clone(),
        );
        registry.register(
            "realtime_history_appends",
            "Publications appended to a topic's history in Redis (and published with it)",
            self.history.appends.clone(),
        );
        registry.register(
            "realtime_history_reads",
            "Reads of a topic's history position and publications from Redis",
            self.history.reads.clone(),
        );
        registry.register(
            "realtime_history_resets",
            "Topic histories reset to a new epoch in Redis",
            self.history.resets.clone(),
        );
        registry.register(
            "realtime_history_errors",
            "History operations that failed (Redis unreachable, the publisher backlog full, or refused), by op",
            self.history.errors.clone(),
        );
    }
}
