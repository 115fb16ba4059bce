//! The [`Realtime`] service: the library's entry point. It owns the registry, routes
//! messages (locally, and through the cluster relay when there is one), reports
//! state and opens, closes and shuts down connections.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use axum::extract::ws::Utf8Bytes;
use futures_util::FutureExt;
use prometheus_client::registry::Registry as MetricsRegistry;
use realtime_core::message::rfc3339_millis;
use realtime_core::{
    CloseCode, ConnectionId, ConnectionInfo, HistoryLimits, Identity, NodeTag, Position,
    PreparedMessage, Route, ServerFrame, Topic, Transport,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::auth::TokenVerifier;
use crate::cluster::bus::{BusEvent, BusFuture, BusStatus, DirectoryEntry};
use crate::cluster::{ClusterConfig, Relay};
use crate::config::RealtimeConfig;
use crate::error::SendError;
use crate::handle::ConnectionHandle;
use crate::history::tracker::Trackers;
use crate::history::{HistoryStore, MemoryHistory, PositionFuture};
use crate::metrics::Metrics;
use crate::presence::engine::{PresenceState, STANDALONE_NODE};
use crate::presence::{MemoryPresence, PresenceStore};
use crate::registry::Registry;

/// The realtime engine. Cheap to clone: every clone shares one engine.
///
/// ```
/// use realtime::{Realtime, RealtimeConfig, JwtVerifier};
/// use realtime_core::ClaimRules;
/// use serde_json::json;
///
/// let verifier = JwtVerifier::hs256(b"secret", ClaimRules::default()).unwrap();
/// let rt = Realtime::new(verifier, RealtimeConfig::default());
/// let app: axum::Router = axum::Router::new().route("/ws", rt.websocket_route());
/// // From business code, anywhere:
/// let delivery = rt.send_to_user("42", json!({"type": "notification", "text": "hi"})).unwrap();
/// assert_eq!(delivery.local, 0); // nobody connected yet
/// assert!(!delivery.relayed); // a single node: nothing to relay
/// ```
#[derive(Clone)]
pub struct Realtime {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: RealtimeConfig,
    pub(crate) verifier: Box<dyn TokenVerifier>,
    pub(crate) registry: Registry,
    pub(crate) metrics: Metrics,
    pub(crate) accepting: AtomicBool,
    pub(crate) sessions: TaskTracker,
    /// The registry size, published on every change so callers can await it.
    connection_count: watch::Sender<usize>,
    /// This engine's node tag: the first bytes of every connection id it hands out.
    pub(crate) tag: NodeTag,
    /// Present when the engine is part of a cluster.
    pub(crate) relay: Option<Relay>,
    /// Where history topics keep their publications: the engine's own memory
    /// store on a single node, the cluster's shared store otherwise.
    pub(crate) history: Option<Arc<dyn HistoryStore>>,
    /// The history topics this node has local subscribers for.
    pub(crate) trackers: Trackers,
    /// Appends this engine requested (their `seq`).
    pub(crate) appends: AtomicU64,
    /// Where presence is kept: the engine's own memory store on a single node,
    /// the cluster's shared store otherwise.
    pub(crate) presence: PresenceState,
}

/// What a send did. Remote deliveries are asynchronous, so the count is local only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Connections on this node the message was queued to. On a history topic:
    /// the topic's subscribers on this node when it was sent (the store hands the
    /// publication back to them).
    pub local: usize,
    /// Whether the message was queued on the bus for the other nodes. With the
    /// Redis bus: accepted into the node's bounded publisher queue, which hands it
    /// to Redis asynchronously and in order; not an acknowledgement from Redis.
    pub relayed: bool,
    /// On a history topic, the position the publication got (`offset`, `epoch`).
    /// Always set by [`Realtime::publish_confirmed`]; set by the immediate sends
    /// only where the store answers at once (a single node).
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub position: Option<Position>,
}

/// A connection as reported by [`Realtime::connections`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectionSummary {
    #[cfg_attr(feature = "openapi", schema(value_type = uuid::Uuid))]
    pub id: ConnectionId,
    pub user_id: String,
    pub roles: Vec<String>,
    pub topics: Vec<String>,
    pub connected_at: String,
    pub metadata: serde_json::Map<String, Value>,
    /// How it is connected (`"websocket"` or `"sse"`). Directory records written
    /// before SSE existed read as WebSocket.
    #[serde(default)]
    pub transport: Transport,
}

impl std::fmt::Debug for Realtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Realtime")
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl Realtime {
    /// Builds a single-node engine that authenticates connections with `verifier`.
    pub fn new(verifier: impl TokenVerifier, config: RealtimeConfig) -> Self {
        Self::build(Box::new(verifier), config, None)
    }

    /// Builds an engine that shares work with other nodes through `cluster`.
    pub fn clustered(
        verifier: impl TokenVerifier,
        config: RealtimeConfig,
        cluster: ClusterConfig,
    ) -> Self {
        Self::build(Box::new(verifier), config, Some(cluster))
    }

    fn build(
        verifier: Box<dyn TokenVerifier>,
        config: RealtimeConfig,
        cluster: Option<ClusterConfig>,
    ) -> Self {
        let (high, low) = uuid::Uuid::new_v4().as_u64_pair();
        let tag = NodeTag::from_random(high ^ low);
        let wants_history = config.topic_policy.has_history();
        let (history, standalone_history) = match &cluster {
            None if wants_history => {
                let store = Arc::new(MemoryHistory::new());
                (Some(store.clone() as Arc<dyn HistoryStore>), Some(store))
            }
            None => (None, None),
            Some(cluster) => {
                if wants_history && cluster.history.is_none() {
                    tracing::error!(
                        "the topic policy keeps history but the cluster has no history store: \
                         publishing to and recovering on history topics will fail"
                    );
                }
                (cluster.history.clone(), None)
            }
        };
        let presence = presence_state(&config, cluster.as_ref());
        let node = cluster
            .as_ref()
            .map_or_else(|| STANDALONE_NODE.to_owned(), |c| c.node_id.clone());
        let rt = Realtime {
            inner: Arc::new(Inner {
                config,
                verifier,
                registry: Registry::default(),
                metrics: Metrics::new(),
                accepting: AtomicBool::new(true),
                sessions: TaskTracker::new(),
                connection_count: watch::Sender::new(0),
                tag,
                relay: cluster.map(|c| Relay::new(tag, c)),
                history,
                trackers: Trackers::default(),
                appends: AtomicU64::new(0),
                presence,
            }),
        };
        rt.start_presence(node);
        if let Some(store) = standalone_history {
            let weak = Arc::downgrade(&rt.inner);
            store.start(Arc::new(move |event: BusEvent<'_>| {
                if let (Some(inner), BusEvent::Envelope(bytes)) = (Weak::upgrade(&weak), event) {
                    Realtime { inner }.on_envelope(bytes);
                }
            }));
        }
        if let Some(relay) = &rt.inner.relay {
            let weak = Arc::downgrade(&rt.inner);
            relay.bus.start(
                Arc::new(move |event: BusEvent<'_>| {
                    if let Some(inner) = Weak::upgrade(&weak) {
                        let rt = Realtime { inner };
                        match event {
                            BusEvent::Envelope(bytes) => rt.on_envelope(bytes),
                            BusEvent::Resumed => rt.on_bus_resumed(),
                            BusEvent::Resubscribed => rt.on_bus_resubscribed(),
                        }
                    }
                }),
                relay.permanent_channels(),
            );
            let weak = Arc::downgrade(&rt.inner);
            relay.directory.start(
                relay.node_id.clone(),
                Arc::new(move || match Weak::upgrade(&weak) {
                    Some(inner) => Realtime { inner }.directory_snapshot(),
                    None => Vec::new(),
                }),
            );
        }
        rt
    }

    pub fn config(&self) -> &RealtimeConfig {
        &self.inner.config
    }

    /// Sends to every connection of `user_id`, on every node.
    pub fn send_to_user(&self, user_id: &str, message: Value) -> Result<Delivery, SendError> {
        self.send(Route::User(user_id.to_owned()), message)
    }

    /// Sends to every connection holding `role`, on every node.
    pub fn send_to_role(&self, role: &str, message: Value) -> Result<Delivery, SendError> {
        self.send(Route::Role(role.to_owned()), message)
    }

    /// Sends to every connection, on every node.
    pub fn broadcast(&self, message: Value) -> Result<Delivery, SendError> {
        self.send(Route::Broadcast, message)
    }

    /// Sends to one connection, wherever it is. For a connection on this node
    /// `local` is 1 when it was queued; for one on another node the message is
    /// relayed (see [`send_to_connection_confirmed`](Self::send_to_connection_confirmed)
    /// for an answer from the owning node).
    pub fn send_to_connection(
        &self,
        id: ConnectionId,
        message: Value,
    ) -> Result<Delivery, SendError> {
        self.send(Route::Connection(id), message)
    }

    /// Publishes to every subscriber of `topic`, on every node; the message gains a
    /// `topic` field.
    pub fn publish(&self, topic: &str, message: Value) -> Result<Delivery, SendError> {
        let topic = self.parse_topic(topic)?;
        self.send(Route::Topic(topic), message)
    }

    /// Sends `message` along `route`: validated, stamped, serialized once.
    ///
    /// On a history topic the message may not carry `offset` or `epoch`; it is
    /// handed to the history store, which numbers it and sends it to every
    /// subscriber, on this node too. `position` is set when the store answered at
    /// once (a single node); [`publish_confirmed`](Self::publish_confirmed) waits
    /// for it.
    pub fn send(&self, route: Route, message: Value) -> Result<Delivery, SendError> {
        let history = self.route_has_history(&route);
        let prepared =
            PreparedMessage::new_with(message, &now_rfc3339(), route_topic(&route), history)?;
        self.dispatch(&route, prepared)
    }

    /// As [`send`](Self::send), from raw JSON bytes (e.g. an HTTP request body).
    pub fn send_json(&self, route: Route, body: &[u8]) -> Result<Delivery, SendError> {
        let history = self.route_has_history(&route);
        let prepared =
            PreparedMessage::from_slice_with(body, &now_rfc3339(), route_topic(&route), history)?;
        self.dispatch(&route, prepared)
    }

    pub(crate) fn route_has_history(&self, route: &Route) -> bool {
        self.history_topic(route).is_some()
    }

    /// As [`dispatch`](Self::dispatch), waiting on a history topic for the store
    /// to assign the position.
    pub(crate) async fn dispatch_confirmed(
        &self,
        route: &Route,
        message: PreparedMessage,
    ) -> Result<Delivery, SendError> {
        let Some((topic, limits)) = self.history_topic(route) else {
            return self.dispatch(route, message);
        };
        let (mut delivery, position) = self.send_history(topic, limits, message)?;
        delivery.position = Some(position.await?);
        Ok(delivery)
    }

    fn history_topic<'r>(&self, route: &'r Route) -> Option<(&'r Topic, HistoryLimits)> {
        let Route::Topic(topic) = route else {
            return None;
        };
        Some((topic, self.history_limits(topic)?))
    }

    /// Hands a history topic's message to the store: what the send did
    /// (`position` not set yet) and the store's answer.
    fn send_history(
        &self,
        topic: &Topic,
        limits: HistoryLimits,
        message: PreparedMessage,
    ) -> Result<(Delivery, PositionFuture), SendError> {
        let delivery = Delivery {
            local: self.inner.registry.topic_subscribers(topic.as_str()),
            relayed: self.inner.relay.is_some(),
            position: None,
        };
        Ok((delivery, self.append(topic, limits, message)?))
    }

    /// Whether messages can reach the other nodes (always, for a single node).
    pub fn bus_status(&self) -> BusStatus {
        self.inner
            .relay
            .as_ref()
            .map_or(BusStatus::Up, Relay::status)
    }

    /// Delivers locally and relays to the other nodes when the route can reach them.
    /// While the bus is down nothing is delivered, locally either, so a refused send
    /// can be retried without duplicates.
    pub(crate) fn dispatch(
        &self,
        route: &Route,
        message: PreparedMessage,
    ) -> Result<Delivery, SendError> {
        if let Some((topic, limits)) = self.history_topic(route) {
            let (mut delivery, position) = self.send_history(topic, limits, message)?;
            // The request is taken at once; a store that answers later is not
            // waited for (the caller may drop the future).
            delivery.position = position.now_or_never().transpose()?;
            return Ok(delivery);
        }
        if let Some(relay) = &self.inner.relay {
            relay.ensure_up()?;
        }
        let relay = self.inner.relay.as_ref().filter(|_| match route {
            Route::Connection(id) => !self.is_local(id),
            _ => true,
        });
        let relayed = match relay {
            Some(relay) => {
                relay.relay_message(route, message.as_str())?;
                true
            }
            None => false,
        };
        Ok(Delivery {
            local: self.deliver(route, message),
            relayed,
            position: None,
        })
    }

    /// Whether a connection id was handed out by this node.
    pub fn is_local(&self, id: &ConnectionId) -> bool {
        NodeTag::of_connection(id) == self.inner.tag
    }

    /// Queues an already prepared message to every recipient of `route` on this
    /// node only. Returns how many connections it was queued to.
    pub fn deliver(&self, route: &Route, message: PreparedMessage) -> usize {
        self.deliver_frame(route, &Utf8Bytes::from(message.into_string()))
    }

    pub(crate) fn deliver_frame(&self, route: &Route, frame: &Utf8Bytes) -> usize {
        let reg = &self.inner.registry;
        let delivered = match route {
            Route::User(u) => reg.deliver_to_user(u, frame),
            Route::Role(r) => reg.deliver_to_role(r, frame),
            Route::Connection(id) => reg.deliver_to_connection(*id, frame),
            Route::Broadcast => reg.deliver_to_all(frame),
            Route::Topic(t) => reg.deliver_to_topic(t.as_str(), frame),
        };
        self.inner.metrics.sent(route.kind(), delivered);
        delivered
    }

    /// Validates a topic name against the configured length limit.
    pub fn parse_topic(&self, topic: &str) -> Result<Topic, realtime_core::InvalidTopic> {
        Topic::parse_with_max(topic, self.inner.config.max_topic_length)
    }

    /// Number of connections registered on this node.
    pub fn connection_count(&self) -> usize {
        self.inner.registry.len()
    }

    /// Watches the number of connections on this node: the receiver sees every
    /// change (open, close, disconnect), e.g. `rx.wait_for(|n| *n == 0).await`.
    pub fn watch_connection_count(&self) -> watch::Receiver<usize> {
        self.inner.connection_count.subscribe()
    }

    fn publish_connection_count(&self) {
        self.inner
            .connection_count
            .send_replace(self.inner.registry.len());
    }

    /// Every connection on this node, sorted by connect time.
    pub fn connections(&self) -> Vec<ConnectionSummary> {
        let mut list: Vec<ConnectionSummary> = self
            .inner
            .registry
            .all()
            .iter()
            .map(|h| summary(h))
            .collect();
        list.sort_by(|a, b| a.connected_at.cmp(&b.connected_at).then(a.id.cmp(&b.id)));
        list
    }

    /// One connection, if registered on this node.
    pub fn connection(&self, id: ConnectionId) -> Option<ConnectionSummary> {
        self.inner.registry.get(id).map(|h| summary(&h))
    }

    /// Topic → subscriber count, for every topic with at least one subscriber.
    pub fn topics(&self) -> BTreeMap<String, usize> {
        self.inner
            .registry
            .topic_counts()
            .into_iter()
            .map(|(t, n)| (t.as_str().to_owned(), n))
            .collect()
    }

    /// Graceful shutdown: refuse new connections, send `server-shutdown` to every
    /// connection, close each with 1001 once its queue is written, and wait up to
    /// `timeout` for the sockets to close. In a cluster the same budget covers
    /// draining the bus's publisher queue, so envelopes sent before the shutdown
    /// still reach the other nodes. Then the node leaves the cluster directory
    /// and the presence store (its members are gone at once, not after its
    /// lease), each bounded by `timeout`. Returns `true` if all sockets closed
    /// and the queue drained in time.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        self.inner.accepting.store(false, Ordering::Release);
        let timestamp = now_rfc3339();
        let frame = Utf8Bytes::from(
            ServerFrame::ServerShutdown {
                message: "server shutting down, reconnect shortly",
                timestamp: &timestamp,
            }
            .to_json(),
        );
        for handle in self.inner.registry.all() {
            handle.try_send(&frame);
            handle.close(CloseCode::ServerShutdown);
        }
        self.inner.sessions.close();
        let sessions = tokio::time::timeout_at(deadline, self.inner.sessions.wait());
        // Drained alongside the sockets: one budget, and a slow client cannot use
        // up the time the queued envelopes need.
        let flushed = self.drain_relay(deadline);
        let (closed, flushed) = futures_util::future::join(sessions, flushed).await;
        let directory = async {
            if let Some(relay) = &self.inner.relay {
                let _ = tokio::time::timeout(timeout, relay.directory.leave()).await;
            }
        };
        // Side by side: each within the same budget.
        futures_util::future::join(directory, self.leave_presence(timeout)).await;
        closed.is_ok() && flushed
    }

    /// Waits (until `deadline`) for everything queued for the other nodes so far
    /// to be handed to the bus; true at once without a cluster. [`shutdown`]
    /// does this itself; call it again for sends accepted after it returned
    /// (HTTP requests that were still in flight), as the standalone server does.
    ///
    /// [`shutdown`]: Self::shutdown
    pub async fn drain_relay(&self, deadline: tokio::time::Instant) -> bool {
        let Some(relay) = &self.inner.relay else {
            return true;
        };
        match tokio::time::timeout_at(deadline, relay.bus.flush()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "shutdown: the bus could not drain its queue");
                false
            }
            Err(_) => {
                tracing::warn!("shutdown: the bus queue did not drain in time");
                false
            }
        }
    }

    /// Whether new connections are accepted (false once shutdown began).
    pub fn is_accepting(&self) -> bool {
        self.inner.accepting.load(Ordering::Acquire)
    }

    /// Counts for dashboards: open connections, topics with subscribers, and the
    /// messages sent and frames delivered since start (rates come from two reads).
    pub fn stats(&self) -> Stats {
        let (messages, deliveries) = self.inner.metrics.totals();
        Stats {
            connections: self.connection_count(),
            topics: self.inner.registry.topic_count(),
            messages,
            deliveries,
        }
    }

    /// Registers the engine's metrics, and its message bus's, in an application's
    /// Prometheus registry.
    pub fn register_metrics(&self, registry: &mut MetricsRegistry) {
        self.inner.metrics.register(registry);
        if let Some(relay) = &self.inner.relay {
            relay.bus.register_metrics(registry);
        }
        self.inner.presence.store.register_metrics(registry);
    }

    /// The record of a connection about to open: a fresh id (naming this node)
    /// and the time. Hooks consulted before it opens see this record.
    pub(crate) fn new_connection(
        &self,
        identity: Identity,
        transport: Transport,
    ) -> ConnectionInfo {
        let id = self
            .inner
            .tag
            .connection_id(*uuid::Uuid::new_v4().as_bytes());
        ConnectionInfo::new(id, identity, now_rfc3339()).with_transport(transport)
    }

    /// Creates a connection and queues `first_frame` (the welcome). In a cluster it
    /// also subscribes the node to the connection's user and role channels and
    /// records it in the directory; the returned future resolves once that is done.
    /// The connection is reachable only after [`activate`](Self::activate), so the
    /// welcome is always its first frame and means "reachable from every node".
    /// `expires_at` is the token's `exp`.
    pub(crate) fn open_connection(
        &self,
        info: ConnectionInfo,
        expires_at: Option<i64>,
        first_frame: impl FnOnce(&ConnectionInfo) -> Option<String>,
    ) -> Result<(Arc<ConnectionHandle>, Option<BusFuture>), ConnectionLimitReached> {
        let config = &self.inner.config;
        if !self
            .inner
            .registry
            .reserve_user_slot(&info.user_id, config.max_connections_per_user)
        {
            self.inner.metrics.rejected("connection_limit");
            return Err(ConnectionLimitReached);
        }
        let handle = ConnectionHandle::new(
            info,
            expires_at,
            config.outbound_queue,
            config.outbound_queue_bytes,
        );
        if let Some(frame) = first_frame(handle.info()) {
            handle.try_send(&Utf8Bytes::from(frame));
        }
        let handle = Arc::new(handle);
        let ready = self.inner.relay.as_ref().map(|relay| {
            let info = handle.info();
            let interest = relay
                .acquire(relay.identity_channels(&info.user_id, info.roles.iter().map(|r| &**r)));
            let recorded = relay.upsert(summary(&handle));
            Box::pin(async move {
                let (a, b) = futures_util::future::join(interest, recorded).await;
                a.and(b)
            }) as BusFuture
        });
        self.inner.metrics.accepted.inc();
        self.inner.metrics.opened(handle.info().transport);
        Ok((handle, ready))
    }

    /// Makes an opened connection reachable.
    pub(crate) fn activate(&self, handle: &Arc<ConnectionHandle>) {
        // Before it is reachable: a subscribe can only follow.
        self.presence_connected(handle);
        self.inner.registry.insert(handle.clone());
        self.publish_connection_count();
    }

    /// Takes a connection out of every index and releases what it held in the
    /// cluster (channel interest, directory record). Returns its handle the first
    /// time only.
    pub(crate) fn unregister(&self, id: ConnectionId) -> Option<Arc<ConnectionHandle>> {
        let (handle, topics) = self.inner.registry.remove(id)?;
        for topic in &topics {
            if self.history_limits(topic).is_some() {
                self.inner
                    .trackers
                    .leave(topic.as_str(), id, &self.inner.registry);
            }
        }
        if let Some(relay) = &self.inner.relay {
            let info = handle.info();
            let mut channels =
                relay.identity_channels(&info.user_id, info.roles.iter().map(|r| &**r));
            channels.extend(topics.iter().map(|t| relay.channels.topic(t.as_str())));
            relay.release(channels);
            drop(relay.directory.remove(id));
        }
        self.presence_disconnected(&handle, &topics);
        self.publish_connection_count();
        Some(handle)
    }

    /// Accounts for the end of a connection whose session (or test handle) ended.
    /// Idempotent.
    pub(crate) fn connection_closed(&self, handle: &ConnectionHandle) {
        self.unregister(handle.id());
        if !handle.mark_finished() {
            return;
        }
        self.inner.registry.release_user_slot(
            &handle.info().user_id,
            self.inner.config.max_connections_per_user,
        );
        self.inner.metrics.closed(handle.info().transport);
        self.inner.metrics.disconnected(handle.close_code());
    }

    /// This node's connections as directory entries (for a directory resync).
    fn directory_snapshot(&self) -> Vec<DirectoryEntry> {
        let node = self
            .inner
            .relay
            .as_ref()
            .map_or_else(String::new, |r| r.node_id.clone());
        self.connections()
            .into_iter()
            .map(|connection| DirectoryEntry {
                node: node.clone(),
                connection,
            })
            .collect()
    }

    pub(crate) fn verify(&self, token: &str) -> Result<Identity, realtime_core::AuthError> {
        self.inner.verifier.verify(token, SystemTime::now())
    }
}

/// The presence store the engine uses: its own memory store on a single node,
/// the cluster's shared one, or (a cluster without one) its own again, whose
/// answers then cover this node only.
fn presence_state(config: &RealtimeConfig, cluster: Option<&ClusterConfig>) -> PresenceState {
    let enabled = config.topic_policy.has_presence();
    let own = || Arc::new(MemoryPresence::new()) as Arc<dyn PresenceStore>;
    match cluster.map(|c| c.presence.clone()) {
        None => PresenceState::new(own(), false, enabled),
        Some(Some(store)) => PresenceState::new(store, false, enabled),
        Some(None) => {
            if enabled {
                tracing::warn!(
                    "the topic policy keeps presence but the cluster has no presence store: \
                     presence answers cover this node only and say they are degraded"
                );
            }
            PresenceState::new(own(), true, enabled)
        }
    }
}

fn route_topic(route: &Route) -> Option<&Topic> {
    match route {
        Route::Topic(t) => Some(t),
        _ => None,
    }
}

/// What [`Realtime::stats`] reports, for this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stats {
    pub connections: usize,
    pub topics: usize,
    /// Messages sent (one per send, whatever the route) since start.
    pub messages: u64,
    /// Frames queued to connections since start.
    pub deliveries: u64,
}

/// The user already holds `max_connections_per_user` connections on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionLimitReached;

pub(crate) fn summary(h: &ConnectionHandle) -> ConnectionSummary {
    let info = h.info();
    ConnectionSummary {
        id: info.id,
        user_id: info.user_id.to_string(),
        roles: info.roles.iter().map(|r| r.to_string()).collect(),
        topics: h
            .topics()
            .into_iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        connected_at: info.connected_at.clone(),
        metadata: info.metadata.clone(),
        transport: info.transport,
    }
}

/// The current time as RFC 3339 UTC with milliseconds.
pub(crate) fn now_rfc3339() -> String {
    rfc3339_millis(OffsetDateTime::now_utc())
}
