//! Prometheus metrics of the engine, pre-resolved so the hot path only bumps atomics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use realtime_core::route::RouteKind;
use realtime_core::{AuthError, CloseCode, Transport};

type Labels = [(&'static str, &'static str); 1];

/// Why the engine counted an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// A client command was refused with an `error` frame.
    Protocol,
    /// A socket read or write failed.
    Socket,
    /// A client command was dropped by the connection's rate limit.
    RateLimited,
}

impl ErrorKind {
    const ALL: [ErrorKind; 3] = [
        ErrorKind::Protocol,
        ErrorKind::Socket,
        ErrorKind::RateLimited,
    ];
    fn label(self) -> &'static str {
        match self {
            ErrorKind::Protocol => "protocol",
            ErrorKind::Socket => "socket",
            ErrorKind::RateLimited => "rate_limited",
        }
    }
}

/// The `reason` of a disconnect: the close code's label, `client` when the
/// client closed first.
fn disconnect_label(code: Option<CloseCode>) -> &'static str {
    code.map_or("client", CloseCode::label)
}

/// Presence counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct PresenceMetrics {
    /// Memberships of presence topics recorded (subscribes).
    pub(crate) joins: Counter,
    /// Memberships of presence topics ended (unsubscribes, closes).
    pub(crate) leaves: Counter,
    /// Presence answers built from this node alone because the store could not
    /// be asked.
    pub(crate) degraded_answers: Counter,
    /// Members of dead nodes this node removed.
    pub(crate) reaped_members: Counter,
}

/// The engine's counters and gauges.
#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics {
    pub(crate) presence: PresenceMetrics,
    active_connections: Gauge,
    pub(crate) accepted: Counter,
    by_transport: Family<Labels, Gauge>,
    /// Resolved handles: WebSocket, SSE.
    by_transport_handles: [Gauge; 2],
    messages: Family<Labels, Counter>,
    deliveries: Family<Labels, Counter>,
    rejected_handshakes: Family<Labels, Counter>,
    disconnects: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    // Resolved handles, indexed like the enums they count.
    messages_by_route: [Counter; 5],
    deliveries_by_route: [Counter; 5],
    errors_by_kind: [Counter; 3],
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut m = Metrics::default();
        for (i, kind) in RouteKind::ALL.into_iter().enumerate() {
            m.messages_by_route[i] = m.messages.get_or_create_owned(&[("route", kind.as_str())]);
            m.deliveries_by_route[i] = m
                .deliveries
                .get_or_create_owned(&[("route", kind.as_str())]);
        }
        for (i, kind) in ErrorKind::ALL.into_iter().enumerate() {
            m.errors_by_kind[i] = m.errors.get_or_create_owned(&[("kind", kind.label())]);
        }
        for (i, transport) in [Transport::Websocket, Transport::Sse]
            .into_iter()
            .enumerate()
        {
            m.by_transport_handles[i] = m
                .by_transport
                .get_or_create_owned(&[("transport", transport.as_str())]);
        }
        for reason in AuthError::REASONS {
            m.rejected_handshakes
                .get_or_create_owned(&[("reason", reason)]);
        }
        // Every reason exported at zero from the start: a family with no child is
        // left out of /metrics, and a first slow consumer must be a visible change.
        for code in CloseCode::ALL.map(Some).into_iter().chain([None]) {
            m.disconnects
                .get_or_create_owned(&[("reason", disconnect_label(code))]);
        }
        m
    }

    fn transport(&self, transport: Transport) -> &Gauge {
        match transport {
            Transport::Websocket => &self.by_transport_handles[0],
            Transport::Sse => &self.by_transport_handles[1],
        }
    }

    /// A connection of `transport` opened.
    pub(crate) fn opened(&self, transport: Transport) {
        self.active_connections.inc();
        self.transport(transport).inc();
    }

    /// A connection of `transport` ended.
    pub(crate) fn closed(&self, transport: Transport) {
        self.active_connections.dec();
        self.transport(transport).dec();
    }

    pub(crate) fn sent(&self, route: RouteKind, delivered: usize) {
        let i = RouteKind::ALL.iter().position(|k| *k == route).unwrap_or(0);
        self.messages_by_route[i].inc();
        self.deliveries_by_route[i].inc_by(delivered as u64);
    }

    /// Frames of messages already counted by [`sent`](Self::sent) (or replayed
    /// from history) queued to more connections.
    pub(crate) fn delivered(&self, route: RouteKind, delivered: usize) {
        let i = RouteKind::ALL.iter().position(|k| *k == route).unwrap_or(0);
        self.deliveries_by_route[i].inc_by(delivered as u64);
    }

    pub(crate) fn rejected(&self, reason: &'static str) {
        self.rejected_handshakes
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    pub(crate) fn disconnected(&self, code: Option<CloseCode>) {
        self.disconnects
            .get_or_create(&[("reason", disconnect_label(code))])
            .inc();
    }

    /// Messages sent and frames delivered since start, over every route.
    pub(crate) fn totals(&self) -> (u64, u64) {
        let sum = |counters: &[Counter]| counters.iter().map(Counter::get).sum();
        (sum(&self.messages_by_route), sum(&self.deliveries_by_route))
    }

    pub(crate) fn error(&self, kind: ErrorKind) {
        let i = ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.errors_by_kind[i].inc();
    }

    /// Adds every metric to `registry` (the handles are shared, not copied).
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "realtime_connections",
            "Open connections (WebSocket and SSE)",
            self.active_connections.clone(),
        );
        registry.register(
            "realtime_connections_by_transport",
            "Open connections, by transport",
            self.by_transport.clone(),
        );
        registry.register(
            "realtime_connections_accepted",
            "Connections accepted",
            self.accepted.clone(),
        );
        registry.register(
            "realtime_messages",
            "Messages sent, by route",
            self.messages.clone(),
        );
        registry.register(
            "realtime_deliveries",
            "Frames queued to connections, by route",
            self.deliveries.clone(),
        );
        registry.register(
            "realtime_handshakes_rejected",
            "Handshakes (WebSocket and SSE) rejected, by reason",
            self.rejected_handshakes.clone(),
        );
        registry.register(
            "realtime_disconnects",
            "Connections closed, by reason",
            self.disconnects.clone(),
        );
        registry.register("realtime_errors", "Errors, by kind", self.errors.clone());
        let p = &self.presence;
        registry.register(
            "realtime_presence_joins",
            "Presence topic memberships recorded on this node",
            p.joins.clone(),
        );
        registry.register(
            "realtime_presence_leaves",
            "Presence topic memberships ended on this node",
            p.leaves.clone(),
        );
        registry.register(
            "realtime_presence_degraded_answers",
            "Presence answers built from this node alone because the store could not be asked",
            p.degraded_answers.clone(),
        );
        registry.register(
            "realtime_presence_reaped_members",
            "Presence members of dead nodes removed by this node",
            p.reaped_members.clone(),
        );
    }
}
