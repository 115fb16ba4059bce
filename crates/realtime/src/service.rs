//! The [`Realtime`] service: the library's entry point. It owns the registry, routes
//! messages, changes subscriptions, reports state and shuts connections down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::extract::ws::Utf8Bytes;
use prometheus_client::registry::Registry as MetricsRegistry;
use realtime_core::message::rfc3339_millis;
use realtime_core::{
    CloseCode, ConnectionId, ConnectionInfo, Identity, PreparedMessage, Route, ServerFrame, Topic,
};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;

use crate::auth::TokenVerifier;
use crate::config::RealtimeConfig;
use crate::error::{SendError, SubscribeError};
use crate::handle::ConnectionHandle;
use crate::metrics::Metrics;
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
/// let delivered = rt.send_to_user("42", json!({"type": "notification", "text": "hi"})).unwrap();
/// assert_eq!(delivered, 0); // nobody connected yet
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
}

/// A connection as reported by [`Realtime::connections`].
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionSummary {
    pub id: ConnectionId,
    pub user_id: String,
    pub roles: Vec<String>,
    pub topics: Vec<String>,
    pub connected_at: String,
    pub metadata: serde_json::Map<String, Value>,
}

impl std::fmt::Debug for Realtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Realtime")
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl Realtime {
    /// Builds an engine that authenticates connections with `verifier`.
    pub fn new(verifier: impl TokenVerifier, config: RealtimeConfig) -> Self {
        Realtime {
            inner: Arc::new(Inner {
                config,
                verifier: Box::new(verifier),
                registry: Registry::default(),
                metrics: Metrics::new(),
                accepting: AtomicBool::new(true),
                sessions: TaskTracker::new(),
                connection_count: watch::Sender::new(0),
            }),
        }
    }

    pub fn config(&self) -> &RealtimeConfig {
        &self.inner.config
    }

    /// Sends to every connection of `user_id`. Returns how many connections it was queued to.
    pub fn send_to_user(&self, user_id: &str, message: Value) -> Result<usize, SendError> {
        self.send(Route::User(user_id.to_owned()), message)
    }

    /// Sends to every connection holding `role`.
    pub fn send_to_role(&self, role: &str, message: Value) -> Result<usize, SendError> {
        self.send(Route::Role(role.to_owned()), message)
    }

    /// Sends to every connection.
    pub fn broadcast(&self, message: Value) -> Result<usize, SendError> {
        self.send(Route::Broadcast, message)
    }

    /// Sends to one connection. Returns whether it was queued.
    pub fn send_to_connection(&self, id: ConnectionId, message: Value) -> Result<bool, SendError> {
        Ok(self.send(Route::Connection(id), message)? == 1)
    }

    /// Publishes to every subscriber of `topic`; the message gains a `topic` field.
    pub fn publish(&self, topic: &str, message: Value) -> Result<usize, SendError> {
        let topic = self.parse_topic(topic)?;
        self.send(Route::Topic(topic), message)
    }

    /// Sends `message` along `route`: validated, stamped, serialized once.
    pub fn send(&self, route: Route, message: Value) -> Result<usize, SendError> {
        let prepared = PreparedMessage::new(message, &now_rfc3339(), route_topic(&route))?;
        Ok(self.deliver(&route, prepared))
    }

    /// As [`send`](Self::send), from raw JSON bytes (e.g. an HTTP request body).
    pub fn send_json(&self, route: Route, body: &[u8]) -> Result<usize, SendError> {
        let prepared = PreparedMessage::from_slice(body, &now_rfc3339(), route_topic(&route))?;
        Ok(self.deliver(&route, prepared))
    }

    /// Queues an already prepared message to every local recipient of `route`.
    pub fn deliver(&self, route: &Route, message: PreparedMessage) -> usize {
        let frame = Utf8Bytes::from(message.into_string());
        let reg = &self.inner.registry;
        let delivered = match route {
            Route::User(u) => reg.deliver_to_user(u, &frame),
            Route::Role(r) => reg.deliver_to_role(r, &frame),
            Route::Connection(id) => reg.deliver_to_connection(*id, &frame),
            Route::Broadcast => reg.deliver_to_all(&frame),
            Route::Topic(t) => reg.deliver_to_topic(t.as_str(), &frame),
        };
        self.inner.metrics.sent(route.kind(), delivered);
        delivered
    }

    /// Validates a topic name against the configured length limit.
    pub fn parse_topic(&self, topic: &str) -> Result<Topic, realtime_core::InvalidTopic> {
        Topic::parse_with_max(topic, self.inner.config.max_topic_length)
    }

    /// Subscribes a connection to a topic on the server's authority (no topic policy).
    /// Returns `true` when it was not subscribed before.
    pub fn subscribe(&self, id: ConnectionId, topic: &str) -> Result<bool, SubscribeError> {
        let topic = self.parse_topic(topic)?;
        let handle = self.handle(id)?;
        self.inner
            .registry
            .subscribe(&handle, &topic)
            .map_err(|_| SubscribeError::UnknownConnection)
    }

    /// Unsubscribes a connection. Returns `true` when it was subscribed.
    pub fn unsubscribe(&self, id: ConnectionId, topic: &str) -> Result<bool, SubscribeError> {
        let topic = self.parse_topic(topic)?;
        let handle = self.handle(id)?;
        Ok(self.inner.registry.unsubscribe(&handle, topic.as_str()))
    }

    fn handle(&self, id: ConnectionId) -> Result<Arc<ConnectionHandle>, SubscribeError> {
        self.inner
            .registry
            .get(id)
            .ok_or(SubscribeError::UnknownConnection)
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

    /// Closes one connection with 3503 (do not reconnect). Returns whether it existed.
    pub fn disconnect(&self, id: ConnectionId) -> bool {
        self.close_connection(id, CloseCode::ForceDisconnect)
    }

    /// Closes every connection of a user with 3503. Returns how many were closed.
    pub fn disconnect_user(&self, user_id: &str) -> usize {
        self.inner
            .registry
            .of_user(user_id)
            .iter()
            .filter(|h| self.close_connection(h.id(), CloseCode::ForceDisconnect))
            .count()
    }

    /// Removes the connection from every index at once (so counts and sends see it
    /// gone immediately) and tells its session to close the socket with `code`.
    fn close_connection(&self, id: ConnectionId, code: CloseCode) -> bool {
        match self.inner.registry.remove(id) {
            Some(handle) => {
                self.publish_connection_count();
                handle.close(code);
                true
            }
            None => false,
        }
    }

    /// Graceful shutdown: refuse new connections, send `server-shutdown` to every
    /// connection, close each with 1001 once its queue is written, and wait up to
    /// `timeout` for the sockets to close. Returns `true` if all closed in time.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
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
        tokio::time::timeout(timeout, self.inner.sessions.wait())
            .await
            .is_ok()
    }

    /// Whether new connections are accepted (false once shutdown began).
    pub fn is_accepting(&self) -> bool {
        self.inner.accepting.load(Ordering::Acquire)
    }

    /// Registers the engine's metrics in an application's Prometheus registry.
    pub fn register_metrics(&self, registry: &mut MetricsRegistry) {
        self.inner.metrics.register(registry);
    }

    /// Creates and registers a connection. `first_frame` (the welcome) is queued
    /// before the connection becomes reachable, so it is always the first frame.
    pub(crate) fn open_connection(
        &self,
        identity: Identity,
        first_frame: impl FnOnce(&ConnectionInfo) -> Option<String>,
    ) -> (Arc<ConnectionHandle>, mpsc::Receiver<Utf8Bytes>) {
        let info = ConnectionInfo::new(uuid::Uuid::new_v4(), identity, now_rfc3339());
        let (handle, rx) = ConnectionHandle::new(info, self.inner.config.outbound_queue);
        if let Some(frame) = first_frame(handle.info()) {
            handle.try_send(&Utf8Bytes::from(frame));
        }
        let handle = Arc::new(handle);
        self.inner.registry.insert(handle.clone());
        self.inner.metrics.accepted.inc();
        self.inner.metrics.active_connections.inc();
        self.publish_connection_count();
        (handle, rx)
    }

    /// Unregisters a connection whose session ended. Idempotent.
    pub(crate) fn connection_closed(&self, handle: &ConnectionHandle) {
        self.inner.registry.remove(handle.id());
        if !handle.mark_finished() {
            return;
        }
        self.inner.metrics.active_connections.dec();
        self.inner.metrics.disconnected(handle.close_code());
        self.publish_connection_count();
    }

    pub(crate) fn verify(&self, token: &str) -> Result<Identity, realtime_core::AuthError> {
        self.inner.verifier.verify(token, SystemTime::now())
    }
}

fn route_topic(route: &Route) -> Option<&Topic> {
    match route {
        Route::Topic(t) => Some(t),
        _ => None,
    }
}

fn summary(h: &ConnectionHandle) -> ConnectionSummary {
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
    }
}

/// The current time as RFC 3339 UTC with milliseconds.
pub(crate) fn now_rfc3339() -> String {
    rfc3339_millis(OffsetDateTime::now_utc())
}
